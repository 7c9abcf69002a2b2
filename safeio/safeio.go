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
	if n, err = io.Copy(f, r); err != nil {
		return n, err
	}
	return n, f.Sync()
}
