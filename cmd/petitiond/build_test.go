package main

import (
	"encoding/json"
	"os/exec"
	"path/filepath"
	"runtime"
	"slices"
	"strings"
	"testing"
)

// TestBinaryEmbedsZoneDatabase: campaign.timezone must load in a bare
// container without /usr/share/zoneinfo, which only the time/tzdata
// package in the binary guarantees (time.LoadLocation falls back to it).
func TestBinaryEmbedsZoneDatabase(t *testing.T) {
	goTool, err := exec.LookPath("go")
	if err != nil {
		t.Skip("the go command is not on PATH: cannot list the binary's packages")
	}
	out, err := exec.Command(goTool, "list", "-deps", ".").Output()
	if err != nil {
		t.Fatalf("go list -deps: %v", err)
	}
	if !slices.Contains(strings.Fields(string(out)), "time/tzdata") {
		t.Errorf("petitiond does not link time/tzdata: a container without a zone database could not load campaign.timezone")
	}
}

// TestBuiltBinaryNamesItsCommit: a binary built from a git checkout says,
// in `version -json`, the commit it was built from (runtime/debug's
// vcs.revision), as `git rev-parse HEAD` names it.
func TestBuiltBinaryNamesItsCommit(t *testing.T) {
	if testing.Short() {
		t.Skip("builds the real binary")
	}
	head, err := exec.Command("git", "rev-parse", "HEAD").Output()
	if err != nil {
		t.Skip("not a git checkout, or no git: the toolchain records no revision")
	}
	// -buildvcs=true: the machine's GOFLAGS may turn it off; a release
	// build from a checkout has it on.
	bin := filepath.Join(t.TempDir(), "petitiond")
	if out, err := exec.Command(filepath.Join(runtime.GOROOT(), "bin", "go"), "build", "-buildvcs=true", "-o", bin, ".").CombinedOutput(); err != nil {
		t.Fatalf("go build: %v\n%s", err, out)
	}
	out, err := exec.Command(bin, "version", "-json").Output()
	if err != nil {
		t.Fatalf("version -json: %v", err)
	}
	var b struct {
		Version, Revision string
		Go                string `json:"go"`
	}
	if err := json.Unmarshal(out, &b); err != nil {
		t.Fatalf("version -json %q: %v", out, err)
	}
	if b.Revision != strings.TrimSpace(string(head)) || b.Version == "" || !strings.HasPrefix(b.Go, "go") {
		t.Errorf("version -json = %s, want revision %s", out, head)
	}
}
