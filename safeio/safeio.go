// Package safeio writes files and directories so that they survive a crash
// or a power cut once the call returns: the file's data is fsynced, and so
// is the directory that holds each new entry (the kernel may otherwise lose
// the name while keeping the data). The store, the Maildir transport and
// `petitiond dkim-keygen` use it.
package safeio

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
)

// SyncDir fsyncs the directory dir, making the entries created or renamed
// in it durable.
func SyncDir(dir string) error {
	d, err := os.Open(dir)
	if err != nil {
		return err
	}
	serr := d.Sync()
	cerr := d.Close()
	if serr != nil {
		return serr
	}
	return cerr
}

// MkdirAll creates path and any missing parents with mode perm (before the
// umask), and fsyncs the parent of each directory it creates. An existing
// directory is fine; an existing file of that name is an error.
func MkdirAll(path string, perm fs.FileMode) error {
	err := os.Mkdir(path, perm)
	switch {
	case err == nil:
		return SyncDir(filepath.Dir(path))
	case errors.Is(err, fs.ErrExist):
		fi, serr := os.Stat(path)
		if serr != nil {
			return serr
		}
		if !fi.IsDir() {
			return fmt.Errorf("%s exists and is not a directory", path)
		}
		return nil
	case errors.Is(err, fs.ErrNotExist):
		parent := filepath.Dir(path)
		if parent == path {
			return err
		}
		if perr := MkdirAll(parent, perm); perr != nil {
			return perr
		}
		return MkdirAll(path, perm)
	default:
		return err
	}
}

// WriteNew creates path with exactly mode perm (whatever the umask), writes
// data and fsyncs it. It never replaces a file: if path exists it fails
// with an error that matches fs.ErrExist. On any other failure it removes
// what it created, so no partial file is left behind. Syncing the directory
// that holds path is the caller's choice (a file written to be renamed
// needs its final directory synced instead).
func WriteNew(path string, data []byte, perm fs.FileMode) error {
	_, err := WriteNewFrom(path, bytes.NewReader(data), perm)
	return err
}

// WriteNewFrom is WriteNew for data read from r until EOF; it returns the
// bytes written.
func WriteNewFrom(path string, r io.Reader, perm fs.FileMode) (n int64, err error) {
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_EXCL, perm)
	if err != nil {
		return 0, err
	}
	defer func() {
		if cerr := f.Close(); err == nil {
			err = cerr
		}
		if err != nil {
			os.Remove(path)
		}
	}()
	if err := f.Chmod(perm); err != nil {
		return 0, err
	}
	return writeSynced(osFile{f}, r)
}

// writebackChunk is how much of a file is written before its writeback is
// started. A batch message is megabytes: written whole and synced once, it
// would be queued on the disk in one piece, and every letter's fsync that
// comes meanwhile would wait behind all of it (on ext4 with data=ordered, a
// journal commit also waits for other files' dirty data). In chunks, at
// most two are in flight at a time.
const writebackChunk = 256 << 10

// syncFile is what writeSynced needs of a file: *os.File through osFile,
// whose writeback calls are the platform's (sync_file_range on Linux,
// nothing elsewhere).
type syncFile interface {
	Write(p []byte) (int, error)
	Sync() error
	// StartWriteback starts writing the bytes [off, off+n) to the disk
	// without waiting for them.
	StartWriteback(off, n int64) error
	// WaitWriteback waits until the bytes [off, off+n) are written out.
	// Neither makes them durable: only Sync does.
	WaitWriteback(off, n int64) error
}

// writeSynced copies r to f in chunks of writebackChunk: the writeback of
// each chunk starts as soon as it is written, and the writer waits for the
// chunk before it, so little dirty data waits at any time. Then it fsyncs
// f, last: only the fsync makes the data durable, and the caller renames
// the file or syncs its directory only after writeSynced returned nil.
func writeSynced(f syncFile, r io.Reader) (int64, error) {
	w := &chunkWriter{f: f}
	n, err := io.Copy(w, r)
	if err != nil {
		return n, err
	}
	return n, f.Sync()
}

// chunkWriter writes to f, starting the writeback of each full chunk.
type chunkWriter struct {
	f syncFile
	// written is how many bytes were written; started, how many had their
	// writeback started; the chunk before started has been waited for.
	written, started int64
}

func (w *chunkWriter) Write(p []byte) (int, error) {
	n := 0
	for len(p) > 0 {
		room := writebackChunk - int(w.written-w.started)
		k, err := w.f.Write(p[:min(room, len(p))])
		n += k
		w.written += int64(k)
		p = p[k:]
		if err != nil {
			return n, err
		}
		if w.written-w.started == writebackChunk {
			if err := w.startChunk(); err != nil {
				return n, err
			}
		}
	}
	return n, nil
}

// startChunk starts the writeback of the chunk just written and waits for
// the one before it.
func (w *chunkWriter) startChunk() error {
	off, n := w.started, w.written-w.started
	if err := w.f.StartWriteback(off, n); err != nil {
		return fmt.Errorf("start writeback: %w", err)
	}
	if off > 0 {
		// A failure here is a write error that a later fsync of this
		// file might no longer report: it must fail the write.
		if err := w.f.WaitWriteback(off-writebackChunk, writebackChunk); err != nil {
			return fmt.Errorf("wait for writeback: %w", err)
		}
	}
	w.started = w.written
	return nil
}
