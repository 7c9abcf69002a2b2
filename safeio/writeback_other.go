//go:build !linux

package safeio

import "os"

// osFile is an *os.File; without sync_file_range(2) the writeback is left
// to the final fsync.
type osFile struct{ *os.File }

func (osFile) StartWriteback(off, n int64) error { return nil }

func (osFile) WaitWriteback(off, n int64) error { return nil }
