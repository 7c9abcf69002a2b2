package main

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/petitiond/petitiond/config"
	"github.com/petitiond/petitiond/internal/testenv"
	"github.com/petitiond/petitiond/relay/admin"
)

// TestTokenFileUsedByCommands: with no token set anywhere, the daemon
// makes <store.dir>/admin.token (0600) and the admin commands, given the
// same config, read it: nothing to copy by hand.
func TestTokenFileUsedByCommands(t *testing.T) {
	e := testenv.Start(t, admConfig(nil))
	t.Setenv(adminTokenEnv, "")
	file := admin.TokenFile(e.Config.Store.Dir)
	fi, err := os.Stat(file)
	if err != nil {
		t.Fatal(err)
	}
	if fi.Mode().Perm() != 0o600 {
		t.Errorf("%s: mode %v, want 0600", file, fi.Mode().Perm())
	}
	path := filepath.Join(t.TempDir(), "petitiond.toml")
	toml := fmt.Sprintf("[campaign]\nname = \"x\"\naddresses = [%q]\nrecipients = [%q]\nfrom = %q\n"+
		"[store]\ndir = %q\n[admin]\nlisten = %q\n", testenv.CampaignAddr, testenv.Familias, testenv.CampaignFrom,
		e.Config.Store.Dir, e.Config.Admin.Listen)
	if err := os.WriteFile(path, []byte(toml), 0o600); err != nil {
		t.Fatal(err)
	}
	if out := cliOK(t, "stats", "-config", path); !strings.Contains(out, "counted") {
		t.Errorf("stats with the token file: %q", out)
	}
	// Without the file (another store.dir), the daemon refuses and the
	// command says what to set.
	other := strings.Replace(toml, e.Config.Store.Dir, t.TempDir(), 1)
	if err := os.WriteFile(path, []byte(other), 0o600); err != nil {
		t.Fatal(err)
	}
	if code, _, errs := cli(t.Context(), "stats", "-config", path); code != 1 || !strings.Contains(errs, "401") {
		t.Errorf("no token found: exit %d, %q", code, errs)
	}
}

// TestFindAdminToken: PETITIOND_ADMIN_TOKEN, else admin.token, else the
// file in store.dir; a file that is not a token is an error naming it.
func TestFindAdminToken(t *testing.T) {
	dir := t.TempDir()
	cfg := config.Default()
	cfg.Store.Dir = dir
	t.Setenv(adminTokenEnv, "")
	if tok, err := findAdminToken(cfg); tok != "" || err != nil {
		t.Errorf("nothing anywhere: %q, %v", tok, err)
	}
	if err := os.WriteFile(admin.TokenFile(dir), []byte("from-file\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	if tok, err := findAdminToken(cfg); tok != "from-file" || err != nil {
		t.Errorf("file: %q, %v", tok, err)
	}
	cfg.Admin.Token = "from-config"
	if tok, _ := findAdminToken(cfg); tok != "from-config" {
		t.Errorf("config over the file: %q", tok)
	}
	t.Setenv(adminTokenEnv, "from-env")
	if tok, _ := findAdminToken(cfg); tok != "from-env" {
		t.Errorf("environment over the config: %q", tok)
	}
	t.Setenv(adminTokenEnv, "")
	cfg.Admin.Token = ""
	if err := os.WriteFile(admin.TokenFile(dir), []byte("two words\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := findAdminToken(cfg); err == nil || !strings.Contains(err.Error(), admin.TokenFile(dir)) {
		t.Errorf("a malformed file: %v", err)
	}
}
