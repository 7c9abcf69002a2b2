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
	"regexp"
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
	bin := buildBinary(t)
	cmd := exec.Command(bin, append(argv[1:], "-h")...)
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("%q -h: %v\n%s", argv[1:], err, out)
	}
	if !strings.Contains(string(out), "usage: petitiond "+argv[1]) {
		t.Errorf("%q -h printed no usage for %q:\n%s", argv[1:], argv[1], out)
	}
}

// buildBinary builds petitiond into the test's temp dir.
func buildBinary(t *testing.T) string {
	t.Helper()
	bin := filepath.Join(t.TempDir(), "petitiond")
	// go test puts its own go command first on PATH.
	gocmd, err := exec.LookPath("go")
	if err != nil {
		t.Skipf("no go command to build with: %v", err)
	}
	if out, err := exec.Command(gocmd, "build", "-o", bin, "github.com/petitiond/petitiond/cmd/petitiond").CombinedOutput(); err != nil {
		t.Fatalf("go build: %v\n%s", err, out)
	}
	return bin
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
	for _, want := range []string{"CGO_ENABLED=0", "EXPOSE 25 8025", `VOLUME ["/var/lib/petitiond"]`, `"serve"`,
		`HEALTHCHECK`, `CMD ["/usr/local/bin/petitiond", "health", "-config", "/etc/petitiond/petitiond.toml"]`} {
		if !strings.Contains(all, want) {
			t.Errorf("Containerfile lacks %q", want)
		}
	}
	for _, label := range []string{"title", "description", "source", "version", "revision"} {
		if !strings.Contains(all, "org.opencontainers.image."+label+"=") {
			t.Errorf("Containerfile lacks the OCI label org.opencontainers.image.%s", label)
		}
	}
}

// ignoreRule is one line of a .containerignore: a pattern, or with Keep a
// "!pattern" that takes a path back in.
type ignoreRule struct {
	re   *regexp.Regexp
	keep bool
}

// parseIgnore reads .containerignore as podman and docker do: one pattern a
// line, "#" comments, "**" any number of directories, "*" and "?" within
// one, "!" to take back; a pattern that matches a directory excludes what
// is below it; the last rule that matches decides.
func parseIgnore(t *testing.T, path string) []ignoreRule {
	t.Helper()
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	var rules []ignoreRule
	for line := range strings.SplitSeq(string(data), "\n") {
		line = strings.TrimSpace(line)
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		r := ignoreRule{}
		if r.keep = strings.HasPrefix(line, "!"); r.keep {
			line = line[1:]
		}
		var re strings.Builder
		re.WriteString("^")
		for i := 0; i < len(line); i++ {
			switch c := line[i]; {
			case strings.HasPrefix(line[i:], "**/"):
				re.WriteString("(.*/)?")
				i += 2
			case strings.HasPrefix(line[i:], "**"):
				re.WriteString(".*")
				i++
			case c == '*':
				re.WriteString("[^/]*")
			case c == '?':
				re.WriteString("[^/]")
			default:
				re.WriteString(regexp.QuoteMeta(string(c)))
			}
		}
		re.WriteString("(/.*)?$")
		r.re = regexp.MustCompile(re.String())
		rules = append(rules, r)
	}
	return rules
}

func ignored(rules []ignoreRule, path string) bool {
	out := false
	for _, r := range rules {
		if r.re.MatchString(path) {
			out = !r.keep
		}
	}
	return out
}

// The build context keeps stores, keys and tokens out wherever they lie,
// and keeps everything the build needs: every Go file, go.mod, go.sum, the
// embedded default config, the example config.
func TestContainerignore(t *testing.T) {
	rules := parseIgnore(t, filepath.Join("..", ".containerignore"))
	for _, path := range []string{"petitiond-data/petitiond.db", "petitiond-data/outbox/familias@ofapp.example/new/1",
		"cmd/petitiond/petitiond-data/petitiond.db", "elsewhere/store.db", "data/batches/000001.eml", "outbox/x",
		"petitiond-data/admin.token", "dkim.key", "tls/key.pem", "petitiond.toml", "petitiond"} {
		if !ignored(rules, path) {
			t.Errorf(".containerignore lets %s into the image build", path)
		}
	}
	if link, err := os.Readlink(filepath.Join("..", ".dockerignore")); err != nil || link != ".containerignore" {
		t.Errorf(".dockerignore is not a link to .containerignore (%q, %v): docker would send the stores", link, err)
	}
	kept := 0
	err := filepath.WalkDir("..", func(path string, d os.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel("..", path)
		if d.IsDir() {
			if d.Name() == ".git" || strings.HasPrefix(d.Name(), "petitiond-data") {
				return filepath.SkipDir
			}
			return nil
		}
		needed := strings.HasSuffix(rel, ".go") || rel == "go.mod" || rel == "go.sum" ||
			rel == filepath.Join("config", "default.toml") || rel == filepath.Join("deploy", "petitiond.toml")
		if needed {
			kept++
			if ignored(rules, filepath.ToSlash(rel)) {
				t.Errorf(".containerignore leaves %s out of the build", rel)
			}
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if kept < 50 {
		t.Errorf("only %d files the build needs were seen: the walk is wrong", kept)
	}
}

// The HEALTHCHECK runs a subcommand the binary has, with flags it accepts.
func TestHealthcheckRuns(t *testing.T) {
	if testing.Short() {
		t.Skip("builds the binary")
	}
	bin := buildBinary(t)
	out, err := exec.Command(bin, "health", "-config", "/etc/petitiond/petitiond.toml", "-h").CombinedOutput()
	if err != nil || !strings.Contains(string(out), "usage: petitiond health") {
		t.Errorf("health -h: %v\n%s", err, out)
	}
}

// The man page renders without a warning from groff (-ww), the renderer
// man(1) uses.
func TestManPageRenders(t *testing.T) {
	groff, err := exec.LookPath("groff")
	if err != nil {
		if os.Getenv("PETITIOND_CI") != "" {
			t.Fatal("groff is needed to check the man page (Debian groff-base)")
		}
		t.Skip("no groff")
	}
	cmd := exec.Command(groff, "-mandoc", "-Tutf8", "-ww", "-z", "petitiond.8")
	out, err := cmd.CombinedOutput()
	if err != nil || len(out) > 0 {
		t.Errorf("groff -ww on petitiond.8: %v\n%s", err, out)
	}
	text, err := exec.Command(groff, "-mandoc", "-Tutf8", "petitiond.8").Output()
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{"NAME", "SYNOPSIS", "COMMANDS", "petitiond held show", "EXIT STATUS"} {
		if !strings.Contains(stripOverstrike(string(text)), want) {
			t.Errorf("rendered page lacks %q", want)
		}
	}
}

// stripOverstrike removes the backspace bold and underline of groff's tty
// output.
func stripOverstrike(s string) string {
	var b strings.Builder
	r := []rune(s)
	for i := 0; i < len(r); i++ {
		if i+1 < len(r) && r[i+1] == '\b' {
			i++ // drop the overstruck character, keep the next
			continue
		}
		b.WriteRune(r[i])
	}
	return b.String()
}
