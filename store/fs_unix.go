//go:build linux || darwin || freebsd

package store

import (
	"os"
	"syscall"
)

// unlockFile drops the lock bbolt took on f. Closing f is not enough when
// bbolt panicked after mapping the file: the mapping keeps the open file,
// and with it the lock, alive.
func unlockFile(f *os.File) {
	_ = syscall.Flock(int(f.Fd()), syscall.LOCK_UN)
}

// freeBytes is the space on dir's file system that an unprivileged
// process may still write.
func freeBytes(dir string) (uint64, error) {
	var st syscall.Statfs_t
	if err := syscall.Statfs(dir, &st); err != nil {
		return 0, err
	}
	return uint64(st.Bavail) * uint64(st.Bsize), nil
}
