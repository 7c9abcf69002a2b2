//go:build !unix

package inbound

import "errors"

// statfsFree cannot tell free space here: the check is skipped (with a log
// line), and a full disk shows as store write errors (451 4.3.0).
func statfsFree(string) func() (uint64, error) {
	return func() (uint64, error) { return 0, errors.New("inbound: free space unknown on this system") }
}
