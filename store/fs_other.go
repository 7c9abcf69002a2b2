//go:build !(linux || darwin || freebsd)

package store

import (
	"errors"
	"os"
)

func unlockFile(*os.File) {}

func freeBytes(string) (uint64, error) { return 0, errors.ErrUnsupported }
