package store

import (
	"archive/tar"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"

	"github.com/petitiond/petitiond/internal/damage"
)

// backupTo writes a backup of s into a file in a directory of its own.
func backupTo(t *testing.T, s *Store) (string, *BackupSummary) {
	t.Helper()
	path := filepath.Join(t.TempDir(), "backup.tar")
	f, err := os.Create(path)
	if err != nil {
		t.Fatal(err)
	}
	sum, err := s.Backup(context.Background(), f)
	if err != nil {
		t.Fatalf("Backup: %v", err)
	}
	if err := f.Close(); err != nil {
		t.Fatal(err)
	}
	return path, sum
}

// TestBackupWhileWriting: a backup taken while letters keep arriving is a
// consistent store: it passes the check, holds every letter up to the
// last ID it names, and the message of every batch.
func TestBackupWhileWriting(t *testing.T) {
	t.Parallel()
	dir, _ := storeWithLetters(t)
	clk := newClock()
	s := openStore(t, dir, Options{Now: clk.Now})
	stop := make(chan struct{})
	var wg sync.WaitGroup
	wg.Go(func() {
		for i := 0; ; i++ {
			select {
			case <-stop:
				return
			default:
			}
			if _, err := s.Accept(context.Background(), verified(clk, fmt.Sprintf("w%d@example.org", i))); err != nil {
				t.Error(err)
				return
			}
		}
	})
	path, sum := backupTo(t, s)
	close(stop)
	wg.Wait()
	if sum.Messages != 1 || len(sum.Missing) != 0 || sum.Batches != 1 {
		t.Errorf("summary = %+v, want one batch and its message", sum)
	}
	got, err := CheckBackup(path, t.TempDir())
	if err != nil {
		t.Fatalf("CheckBackup: %v", err)
	}
	if got.Position != sum.Position || got.LastLetter != sum.LastLetter {
		t.Errorf("CheckBackup read %+v, Backup wrote %+v", got, sum)
	}
	// Unpacked by hand (tar -x), it is a store with every letter up to
	// the last ID and the batch's message.
	restored := t.TempDir()
	f, _ := os.Open(path)
	defer f.Close()
	if _, err := ReadBackup(f, extractTo(restored)); err != nil {
		t.Fatal(err)
	}
	r := openStore(t, restored, Options{})
	for n := uint64(1); n <= sum.Letters; n++ {
		id := fmt.Sprintf("L%08X", n)
		if _, err := r.Letter(id); err != nil {
			t.Errorf("letter %s (of %s) missing from the backup: %v", id, sum.LastLetter, err)
		}
	}
	want, _ := s.BatchMessage(1)
	if msg, err := r.BatchMessage(1); err != nil || !bytes.Equal(msg, want) {
		t.Errorf("batch 1's message from the backup: %d bytes, %v", len(msg), err)
	}
}

// TestRestoreOlderBackup: restoring a backup older than the store keeps
// the replaced file, and the numbers go on after the highest ever handed
// out; the restored store has the batch message back.
func TestRestoreOlderBackup(t *testing.T) {
	t.Parallel()
	dir, _ := storeWithLetters(t)
	clk := newClock()
	s := openStore(t, dir, Options{Now: clk.Now})
	path, sum := backupTo(t, s)
	later := mustAccept(t, s, verified(clk, "later@example.org")).ID
	s.Close()
	// The message directory is lost with the disk, say.
	os.RemoveAll(filepath.Join(dir, messageDir))

	res, err := Restore(dir, path)
	if err != nil {
		t.Fatalf("Restore: %v", err)
	}
	if res.Rollback == nil || res.Rollback.Marked.LetterID() != later || res.Rollback.File != sum.Position {
		t.Errorf("Restore rollback = %+v, want from %+v up to %s", res.Rollback, sum.Position, later)
	}
	if _, err := os.Stat(res.Replaced); err != nil || !strings.HasPrefix(res.Replaced, filepath.Join(dir, FileName)) {
		t.Errorf("replaced file not kept: %q %v", res.Replaced, err)
	}
	s = openStore(t, dir, Options{Now: clk.Now})
	if _, err := s.Letter(later); !errors.Is(err, ErrNotFound) {
		t.Errorf("letter %s, answered after the backup, is in the restored store: %v", later, err)
	}
	if id := mustAccept(t, s, verified(clk, "next@example.org")).ID; id <= later {
		t.Errorf("first letter after the restore got %s, want after %s", id, later)
	}
	if _, err := s.BatchMessage(1); err != nil {
		t.Errorf("batch 1's message after the restore: %v", err)
	}
}

// TestRestoreRefuses: while the store is open, a backup of another store,
// and a damaged backup are refused, and the store is left as it was.
func TestRestoreRefuses(t *testing.T) {
	t.Parallel()
	dir, _ := storeWithLetters(t)
	s := openStore(t, dir, Options{})
	path, _ := backupTo(t, s)
	if _, err := Restore(dir, path); !errors.Is(err, ErrLocked) {
		t.Errorf("Restore while the store is open: %v, want ErrLocked", err)
	}
	s.Close()
	before := fileSum(t, filepath.Join(dir, FileName))

	other := openStore(t, t.TempDir(), Options{})
	otherPath, _ := backupTo(t, other)
	if _, err := Restore(dir, otherPath); err == nil || !strings.Contains(err.Error(), "another store") {
		t.Errorf("Restore of another store's backup: %v", err)
	}

	// The store file inside the backup, damaged.
	damagedPath := rewriteBackup(t, path, damage.FlipRootPage)
	if _, err := Restore(dir, damagedPath); !errors.Is(err, ErrDamaged) {
		t.Errorf("Restore of a damaged backup: %v, want ErrDamaged", err)
	}
	if fileSum(t, filepath.Join(dir, FileName)) != before {
		t.Error("a refused restore changed the store file")
	}
	entries, _ := os.ReadDir(dir)
	for _, e := range entries {
		if strings.HasPrefix(e.Name(), ".restore-") || strings.Contains(e.Name(), "replaced") {
			t.Errorf("a refused restore left %s behind", e.Name())
		}
	}
}

// rewriteBackup copies the backup at path with its store file changed by
// breakIt.
func rewriteBackup(t *testing.T, path string, breakIt func(string) error) string {
	t.Helper()
	work := t.TempDir()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	var out bytes.Buffer
	tw := tar.NewWriter(&out)
	tr := tar.NewReader(f)
	for {
		hdr, err := tr.Next()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
		data, _ := io.ReadAll(tr)
		if hdr.Name == FileName {
			db := filepath.Join(work, FileName)
			os.WriteFile(db, data, 0o600)
			if err := breakIt(db); err != nil {
				t.Fatal(err)
			}
			data, _ = os.ReadFile(db)
		}
		tw.WriteHeader(hdr)
		tw.Write(data)
	}
	tw.Close()
	broken := filepath.Join(work, "broken.tar")
	os.WriteFile(broken, out.Bytes(), 0o600)
	return broken
}

// TestReadBackupRefusesIncomplete: a stream cut anywhere, or with an entry
// that is not the store's, is not a backup.
func TestReadBackupRefusesIncomplete(t *testing.T) {
	t.Parallel()
	dir, _ := storeWithLetters(t)
	s := openStore(t, dir, Options{})
	var buf bytes.Buffer
	if _, err := s.Backup(context.Background(), &buf); err != nil {
		t.Fatal(err)
	}
	full := buf.Bytes()
	if _, err := ReadBackup(bytes.NewReader(full), nil); err != nil {
		t.Fatalf("whole backup: %v", err)
	}
	summary := bytes.Index(full, []byte(`"format"`))
	for _, cut := range []int{0, 100, 512, len(full) / 2, summary - 600, summary + 10} {
		if _, err := ReadBackup(bytes.NewReader(full[:cut]), nil); !errors.Is(err, ErrNotBackup) {
			t.Errorf("backup cut at %d of %d bytes: %v, want ErrNotBackup", cut, len(full), err)
		}
	}
	for _, name := range []string{"../petitiond.db", "batches/../../x.eml", "notes.txt", "batches/sub/x.eml"} {
		var b bytes.Buffer
		tw := tar.NewWriter(&b)
		tw.WriteHeader(&tar.Header{Typeflag: tar.TypeReg, Name: FileName, Size: 1, Mode: 0o600})
		tw.Write([]byte{0})
		tw.WriteHeader(&tar.Header{Typeflag: tar.TypeReg, Name: name, Size: 1, Mode: 0o600})
		tw.Write([]byte{0})
		tw.Close()
		extracted := false
		_, err := ReadBackup(&b, func(n string, _ io.Reader) error {
			extracted = extracted || n == name
			return nil
		})
		if !errors.Is(err, ErrNotBackup) || extracted {
			t.Errorf("entry %q: %v (extracted %v), want ErrNotBackup before extracting", name, err, extracted)
		}
	}
}

// TestRestoreOnNewMachine: a backup restored where no store directory is
// yet makes one, and starts from the backup's numbers.
func TestRestoreOnNewMachine(t *testing.T) {
	t.Parallel()
	dir, last := storeWithLetters(t)
	s := openStore(t, dir, Options{})
	path, _ := backupTo(t, s)
	s.Close()
	fresh := filepath.Join(t.TempDir(), "new", "data")
	res, err := Restore(fresh, path)
	if err != nil {
		t.Fatalf("Restore into a new directory: %v", err)
	}
	if res.Replaced != "" || res.Rollback != nil {
		t.Errorf("Restore = %+v, want nothing replaced or rolled back", res)
	}
	r := openStore(t, fresh, Options{})
	if _, err := r.Letter(last); err != nil {
		t.Errorf("letter %s after the restore: %v", last, err)
	}
}
