// Package deploy holds the deployment files (systemd unit, Containerfile,
// example config, DNS notes); these tests are static checks of them.
//
// systemd-analyze verify is not available where the tests run, so the unit
// is read here as the INI-like file it is: the checks say that the hardening
// keys are present with the intended values and that ExecStart runs a real
// subcommand with flags it accepts, not that systemd would accept every line.
package deploy

import (
	"bufio"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/petitiond/petitiond/config"
)

// unit is a parsed unit file: section → key → values, in file order (keys
// such as SystemCallFilter may repeat).
type unit map[string]map[string][]string

func parseUnit(t *testing.T, path string) unit {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	u := unit{}
	section := ""
	sc := bufio.NewScanner(f)
	for n := 1; sc.Scan(); n++ {
		line := strings.TrimSpace(sc.Text())
		switch {
		case line == "" || strings.HasPrefix(line, "#") || strings.HasPrefix(line, ";"):
			continue
		case strings.HasSuffix(line, `\`):
			t.Fatalf("%s:%d: continuation lines are not handled by this check", path, n)
		case strings.HasPrefix(line, "[") && strings.HasSuffix(line, "]"):
			section = line[1 : len(line)-1]
			if u[section] != nil {
				t.Errorf("%s:%d: section [%s] twice", path, n, section)
			}
			u[section] = map[string][]string{}
			continue
		}
		key, value, ok := strings.Cut(line, "=")
		if !ok || section == "" {
			t.Fatalf("%s:%d: not key=value inside a section: %q", path, n, line)
		}
		key = strings.TrimSpace(key)
		u[section][key] = append(u[section][key], strings.TrimSpace(value))
	}
	if err := sc.Err(); err != nil {
		t.Fatal(err)
	}
	return u
}

// one returns the single value of key in [Service].
func (u unit) one(t *testing.T, key string) string {
	t.Helper()
	v := u["Service"][key]
	if len(v) != 1 {
		t.Errorf("[Service] %s: %d values %q, want exactly one", key, len(v), v)
		return ""
	}
	return v[0]
}

func TestUnitHardening(t *testing.T) {
	u := parseUnit(t, "petitiond.service")
	for _, s := range []string{"Unit", "Service", "Install"} {
		if u[s] == nil {
			t.Errorf("no [%s] section", s)
		}
	}
	want := map[string]string{
		"StateDirectory":          "petitiond",
		"WorkingDirectory":        "/var/lib/petitiond",
		"ProtectSystem":           "strict",
		"ProtectHome":             "yes",
		"PrivateTmp":              "yes",
		"PrivateDevices":          "yes",
		"NoNewPrivileges":         "yes",
		"CapabilityBoundingSet":   "CAP_NET_BIND_SERVICE",
		"AmbientCapabilities":     "CAP_NET_BIND_SERVICE",
		"MemoryDenyWriteExecute":  "yes",
		"LockPersonality":         "yes",
		"Restart":                 "on-failure",
		"KillSignal":              "SIGTERM",
		"RestrictAddressFamilies": "AF_INET AF_INET6 AF_UNIX",
	}
	for key, val := range want {
		if got := u.one(t, key); got != val {
			t.Errorf("[Service] %s=%q, want %q", key, got, val)
		}
	}
	// Never root: a fixed unprivileged user or a dynamic one.
	if user := u["Service"]["User"]; !(len(user) == 1 && user[0] != "" && user[0] != "root") && !slices.Equal(u["Service"]["DynamicUser"], []string{"yes"}) {
		t.Errorf("[Service] has neither a non-root User= nor DynamicUser=yes")
	}
	if !slices.Contains(u["Service"]["SystemCallFilter"], "@system-service") {
		t.Errorf("[Service] SystemCallFilter=%q lacks @system-service", u["Service"]["SystemCallFilter"])
	}
	// relay.Run gives sessions and deliveries 30s after SIGTERM; systemd
	// must wait longer before it sends SIGKILL.
	if d, err := time.ParseDuration(u.one(t, "TimeoutStopSec")); err != nil || d <= 30*time.Second {
		t.Errorf("[Service] TimeoutStopSec=%q: want a duration over 30s", u.one(t, "TimeoutStopSec"))
	}
	if got := u["Install"]["WantedBy"]; !slices.Equal(got, []string{"multi-user.target"}) {
		t.Errorf("[Install] WantedBy=%q", got)
	}
}

// The example config keeps its store where the unit lets the daemon write:
// under ProtectSystem=strict that is only the StateDirectory.
func TestUnitMatchesExampleConfig(t *testing.T) {
	u := parseUnit(t, "petitiond.service")
	argv := strings.Fields(u.one(t, "ExecStart"))
	i := slices.Index(argv, "-config")
	if i < 0 || i+1 >= len(argv) {
		t.Fatalf("ExecStart %q has no -config FILE", argv)
	}
	if argv[i+1] != "/etc/petitiond/petitiond.toml" {
		t.Errorf("ExecStart reads %s, want /etc/petitiond/petitiond.toml (where the example config says to copy it)", argv[i+1])
	}
	data, err := os.ReadFile("petitiond.toml")
	if err != nil {
		t.Fatal(err)
	}
	cfg, err := config.Parse("petitiond.toml", data)
	if err != nil {
		t.Fatalf("example config: %v", err)
	}
	state := "/var/lib/" + u.one(t, "StateDirectory")
	if rel, err := filepath.Rel(state, cfg.Store.Dir); err != nil || strings.HasPrefix(rel, "..") {
		t.Errorf("example store.dir %q is outside the unit's StateDirectory %s (read-only under ProtectSystem=strict)", cfg.Store.Dir, state)
	}
}

// ExecStart runs a subcommand the binary has, with flags it accepts: the
// real binary, built here, given the unit's arguments plus -h, exits 0.
func TestUnitExecStartRuns(t *testing.T) {
	if testing.Short() {
		t.Skip("builds the binary")
	}
	u := parseUnit(t, "petitiond.service")
	argv := strings.Fields(u.one(t, "ExecStart"))
	if len(argv) < 2 || filepath.Base(argv[0]) != "petitiond" || !filepath.IsAbs(argv[0]) {
		t.Fatalf("ExecStart %q: want an absolute path to petitiond and a subcommand", argv)
	}
	bin := filepath.Join(t.TempDir(), "petitiond")
	// go test puts its own go command first on PATH.
	gocmd, err := exec.LookPath("go")
	if err != nil {
		t.Skipf("no go command to build with: %v", err)
	}
	if out, err := exec.Command(gocmd, "build", "-o", bin, "github.com/petitiond/petitiond/cmd/petitiond").CombinedOutput(); err != nil {
		t.Fatalf("go build: %v\n%s", err, out)
	}
	cmd := exec.Command(bin, append(argv[1:], "-h")...)
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("%q -h: %v\n%s", argv[1:], err, out)
	}
	if !strings.Contains(string(out), "usage: petitiond "+argv[1]) {
		t.Errorf("%q -h printed no usage for %q:\n%s", argv[1:], argv[1], out)
	}
}

// The Containerfile's few promises: a static build, a non-root user, the
// store on a volume, the two ports.
func TestContainerfile(t *testing.T) {
	data, err := os.ReadFile("Containerfile")
	if err != nil {
		t.Fatal(err)
	}
	var froms, users []string
	var text []string
	for line := range strings.SplitSeq(string(data), "\n") {
		line = strings.TrimSpace(line)
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		text = append(text, line)
		switch f := strings.Fields(line); strings.ToUpper(f[0]) {
		case "FROM":
			froms = append(froms, line)
		case "USER":
			users = append(users, f[1])
		}
	}
	all := strings.Join(text, "\n")
	if len(froms) < 2 || !strings.Contains(froms[0], "golang:1.26") {
		t.Errorf("FROM lines %q: want a golang:1.26 build stage and a final stage", froms)
	}
	if last := froms[len(froms)-1]; !strings.Contains(last, "distroless/static") && !strings.Contains(last, "scratch") {
		t.Errorf("final stage %q: want distroless/static or scratch", last)
	}
	if len(users) == 0 || users[len(users)-1] == "root" || strings.HasPrefix(users[len(users)-1], "0") {
		t.Errorf("USER %q: want a non-root user last", users)
	}
	for _, want := range []string{"CGO_ENABLED=0", "EXPOSE 25 8025", `VOLUME ["/var/lib/petitiond"]`, `"serve"`} {
		if !strings.Contains(all, want) {
			t.Errorf("Containerfile lacks %q", want)
		}
	}
}
