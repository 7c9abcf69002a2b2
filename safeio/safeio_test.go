package safeio

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"testing"
	"testing/iotest"
)

func TestMkdirAll(t *testing.T) {
	root := t.TempDir()
	deep := filepath.Join(root, "a", "b", "c")
	if err := MkdirAll(deep, 0o700); err != nil {
		t.Fatal(err)
	}
	for _, d := range []string{filepath.Join(root, "a"), filepath.Join(root, "a", "b"), deep} {
		fi, err := os.Stat(d)
		if err != nil || !fi.IsDir() {
			t.Fatalf("%s: %v", d, err)
		}
		if perm := fi.Mode().Perm(); perm != 0o700 {
			t.Errorf("%s: mode %o, want 700", d, perm)
		}
	}
	if err := MkdirAll(deep, 0o700); err != nil {
		t.Errorf("again on an existing directory: %v", err)
	}
	file := filepath.Join(root, "file")
	if err := os.WriteFile(file, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	if err := MkdirAll(file, 0o700); err == nil {
		t.Error("MkdirAll over a file succeeded")
	}
	if err := MkdirAll(filepath.Join(file, "sub"), 0o700); err == nil {
		t.Error("MkdirAll below a file succeeded")
	}
}

func TestWriteNew(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "key")
	old := syscall.Umask(0o077)
	defer syscall.Umask(old)
	if err := WriteNew(path, []byte("secret"), 0o640); err != nil {
		t.Fatal(err)
	}
	fi, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	if perm := fi.Mode().Perm(); perm != 0o640 {
		t.Errorf("mode %o, want exactly 640 despite the umask", perm)
	}
	if b, _ := os.ReadFile(path); string(b) != "secret" {
		t.Errorf("content %q", b)
	}

	// An existing file is never replaced, nor removed.
	err = WriteNew(path, []byte("other"), 0o600)
	if !errors.Is(err, fs.ErrExist) {
		t.Errorf("WriteNew over an existing file = %v, want fs.ErrExist", err)
	}
	if b, _ := os.ReadFile(path); string(b) != "secret" {
		t.Errorf("existing file changed to %q", b)
	}

	if err := WriteNew(filepath.Join(dir, "missing", "x"), nil, 0o600); err == nil {
		t.Error("WriteNew into a missing directory succeeded")
	}
}

func TestSyncDir(t *testing.T) {
	if err := SyncDir(t.TempDir()); err != nil {
		t.Error(err)
	}
	if err := SyncDir(filepath.Join(t.TempDir(), "missing")); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("SyncDir of a missing directory = %v", err)
	}
}

// recordingFile is a real file that notes each call made on it, and fails
// the call named failOn with failErr.
type recordingFile struct {
	f       osFile
	calls   []string
	failOn  string
	failErr error
}

func (r *recordingFile) note(call string) error {
	r.calls = append(r.calls, call)
	if call == r.failOn {
		return r.failErr
	}
	return nil
}

func (r *recordingFile) Write(p []byte) (int, error) {
	if err := r.note(fmt.Sprintf("write %d", len(p))); err != nil {
		return 0, err
	}
	return r.f.Write(p)
}

func (r *recordingFile) Sync() error {
	if err := r.note("sync"); err != nil {
		return err
	}
	return r.f.Sync()
}

func (r *recordingFile) StartWriteback(off, n int64) error {
	if err := r.note(fmt.Sprintf("start %d+%d", off, n)); err != nil {
		return err
	}
	return r.f.StartWriteback(off, n)
}

func (r *recordingFile) WaitWriteback(off, n int64) error {
	if err := r.note(fmt.Sprintf("wait %d+%d", off, n)); err != nil {
		return err
	}
	return r.f.WaitWriteback(off, n)
}

// pattern is n bytes that differ from chunk to chunk, so a chunk written
// twice or out of place shows.
func pattern(n int) []byte {
	b := make([]byte, n)
	for i := range b {
		b[i] = byte(i*7 + i/writebackChunk)
	}
	return b
}

func newRecordingFile(t *testing.T) (*recordingFile, string) {
	t.Helper()
	path := filepath.Join(t.TempDir(), "f")
	f, err := os.Create(path)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { f.Close() })
	return &recordingFile{f: osFile{f}}, path
}

func TestWriteSyncedChunks(t *testing.T) {
	const c = writebackChunk
	for _, tc := range []struct {
		name  string
		size  int
		calls []string
	}{
		{"empty", 0, []string{"sync"}},
		{"under a chunk", 1000, []string{"write 1000", "sync"}},
		{"one chunk", c, []string{fmt.Sprintf("write %d", c), fmt.Sprintf("start 0+%d", c), "sync"}},
		{"three and a bit", 3*c + 10, []string{
			fmt.Sprintf("write %d", c), fmt.Sprintf("start 0+%d", c),
			fmt.Sprintf("write %d", c), fmt.Sprintf("start %d+%d", c, c), fmt.Sprintf("wait 0+%d", c),
			fmt.Sprintf("write %d", c), fmt.Sprintf("start %d+%d", 2*c, c), fmt.Sprintf("wait %d+%d", c, c),
			"write 10", "sync",
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			rf, path := newRecordingFile(t)
			data := pattern(tc.size)
			n, err := writeSynced(rf, bytes.NewReader(data))
			if err != nil || n != int64(tc.size) {
				t.Fatalf("writeSynced = %d, %v; want %d, nil", n, err, tc.size)
			}
			// Every byte is written and its writeback paced before the one
			// fsync, which comes last: the caller renames only after it.
			if !slices.Equal(rf.calls, tc.calls) {
				t.Errorf("calls\n%q\nwant\n%q", rf.calls, tc.calls)
			}
			got, err := os.ReadFile(path)
			if err != nil {
				t.Fatal(err)
			}
			if !bytes.Equal(got, data) {
				t.Errorf("file holds %d bytes, not the %d written", len(got), len(data))
			}
		})
	}
}

// A reader that hands out small pieces still fills whole chunks.
func TestWriteSyncedSmallReads(t *testing.T) {
	rf, path := newRecordingFile(t)
	data := pattern(2*writebackChunk + 3)
	if _, err := writeSynced(rf, iotest.OneByteReader(bytes.NewReader(data))); err != nil {
		t.Fatal(err)
	}
	var hints []string
	for _, c := range rf.calls {
		if !strings.HasPrefix(c, "write") {
			hints = append(hints, c)
		}
	}
	want := []string{fmt.Sprintf("start 0+%d", writebackChunk), fmt.Sprintf("start %d+%d", writebackChunk, writebackChunk),
		fmt.Sprintf("wait 0+%d", writebackChunk), "sync"}
	if !slices.Equal(hints, want) {
		t.Errorf("calls other than writes %q, want %q", hints, want)
	}
	if got, _ := os.ReadFile(path); !bytes.Equal(got, data) {
		t.Errorf("file holds %d bytes, not the %d written", len(got), len(data))
	}
}

func TestWriteSyncedErrors(t *testing.T) {
	const c = writebackChunk
	boom := errors.New("boom")
	for _, failOn := range []string{
		fmt.Sprintf("write %d", c), fmt.Sprintf("start 0+%d", c), fmt.Sprintf("wait 0+%d", c), "sync",
	} {
		t.Run(failOn, func(t *testing.T) {
			rf, _ := newRecordingFile(t)
			rf.failOn, rf.failErr = failOn, boom
			_, err := writeSynced(rf, bytes.NewReader(pattern(3*c)))
			if !errors.Is(err, boom) {
				t.Fatalf("writeSynced = %v, want the %q error", err, failOn)
			}
			// Nothing goes on after a failure, and no fsync vouches for it.
			if last := rf.calls[len(rf.calls)-1]; last != failOn {
				t.Errorf("calls went on after the failed %q: %q", failOn, rf.calls)
			}
		})
	}
}

// A real device error reaches the caller: /dev/full refuses every write.
func TestWriteSyncedDeviceFull(t *testing.T) {
	f, err := os.OpenFile("/dev/full", os.O_WRONLY, 0)
	if err != nil {
		t.Skip("no /dev/full:", err)
	}
	defer f.Close()
	if _, err := writeSynced(osFile{f}, bytes.NewReader(pattern(1000))); !errors.Is(err, syscall.ENOSPC) {
		t.Errorf("writeSynced to /dev/full = %v, want ENOSPC", err)
	}
}

// A write that fails part way leaves no file behind, whatever was written.
func TestWriteNewFromRemovesPartialFile(t *testing.T) {
	path := filepath.Join(t.TempDir(), "msg")
	boom := errors.New("reader broke")
	r := io.MultiReader(bytes.NewReader(pattern(writebackChunk+100)), iotest.ErrReader(boom))
	if _, err := WriteNewFrom(path, r, 0o600); !errors.Is(err, boom) {
		t.Fatalf("WriteNewFrom = %v, want the reader's error", err)
	}
	if _, err := os.Stat(path); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("partial file left behind: %v", err)
	}
}

// WriteNew of a message several chunks long stores it byte for byte.
func TestWriteNewLarge(t *testing.T) {
	path := filepath.Join(t.TempDir(), "msg")
	data := pattern(3<<20 + 17)
	if err := WriteNew(path, data, 0o600); err != nil {
		t.Fatal(err)
	}
	if got, _ := os.ReadFile(path); !bytes.Equal(got, data) {
		t.Errorf("file holds %d bytes, not the %d written", len(got), len(data))
	}
}
