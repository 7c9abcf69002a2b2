//go:build !crashtest

package store

// failpoint marks a moment a crash test may stop the process at; it does
// nothing in a normal build (see failpoint_crashtest.go).
func failpoint(string) {}
