//go:build unix

package inbound

import (
	"fmt"
	"syscall"
)

// statfsFree is the space an unprivileged process may still write on the
// file system that holds dir.
func statfsFree(dir string) func() (uint64, error) {
	return func() (uint64, error) {
		var st syscall.Statfs_t
		if err := syscall.Statfs(dir, &st); err != nil {
			return 0, fmt.Errorf("inbound: free space of %s: %w", dir, err)
		}
		return uint64(st.Bavail) * uint64(st.Bsize), nil
	}
}
