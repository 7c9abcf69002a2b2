package safeio

import (
	"os"

	"golang.org/x/sys/unix"
)

// osFile is an *os.File whose writeback is driven with sync_file_range(2).
type osFile struct{ *os.File }

func (f osFile) StartWriteback(off, n int64) error {
	return f.syncRange(off, n, unix.SYNC_FILE_RANGE_WRITE)
}

func (f osFile) WaitWriteback(off, n int64) error {
	return f.syncRange(off, n, unix.SYNC_FILE_RANGE_WAIT_BEFORE|unix.SYNC_FILE_RANGE_WRITE|unix.SYNC_FILE_RANGE_WAIT_AFTER)
}

func (f osFile) syncRange(off, n int64, flags int) error {
	rc, err := f.SyscallConn()
	if err != nil {
		return err
	}
	var serr error
	if err := rc.Control(func(fd uintptr) {
		serr = unix.SyncFileRange(int(fd), off, n, flags)
	}); err != nil {
		return err
	}
	if serr != nil {
		return &os.PathError{Op: "sync_file_range", Path: f.Name(), Err: serr}
	}
	return nil
}
