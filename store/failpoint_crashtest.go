//go:build crashtest

package store

import (
	"fmt"
	"os"
	"time"
)

// failpointEnv names the failpoint a binary built with -tags crashtest
// stops at.
const failpointEnv = "PETITIOND_FAILPOINT"

// failpoint, in a binary built for the crash tests, stops forever at the
// failpoint named by PETITIOND_FAILPOINT, after saying so on stderr, so a
// test can SIGKILL the process at exactly that moment. A normal build has
// an empty failpoint instead.
func failpoint(name string) {
	if os.Getenv(failpointEnv) != name {
		return
	}
	fmt.Fprintf(os.Stderr, "failpoint %s reached\n", name)
	for {
		time.Sleep(time.Hour)
	}
}
