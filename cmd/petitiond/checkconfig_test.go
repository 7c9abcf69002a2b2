package main

import (
	"context"
	"crypto/x509"
	"encoding/pem"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/petitiond/petitiond/internal/sinkserver"
	"github.com/petitiond/petitiond/internal/smtpclient"
)

// configFiles makes the files the configs of the check-config tests name:
// a DKIM key for campaign.test, a garbage key, a TLS certificate and key,
// a password file, a plain file where a directory belongs.
type configFiles struct {
	dir, dkimKey, badKey, cert, key, password, file string
}

func makeConfigFiles(t *testing.T) configFiles {
	t.Helper()
	dir := t.TempDir()
	f := configFiles{dir: dir, dkimKey: filepath.Join(dir, "dkim.key"), badKey: filepath.Join(dir, "bad.key"),
		cert: filepath.Join(dir, "cert.pem"), key: filepath.Join(dir, "key.pem"),
		password: filepath.Join(dir, "password"), file: filepath.Join(dir, "a-file")}
	cliOK(t, "dkim-keygen", "-domain", "campaign.test", "-selector", "pd1", "-out", f.dkimKey)
	cert, _, err := sinkserver.SelfSigned("mx.campaign.test")
	if err != nil {
		t.Fatal(err)
	}
	der, err := x509.MarshalPKCS8PrivateKey(cert.PrivateKey)
	if err != nil {
		t.Fatal(err)
	}
	for path, data := range map[string][]byte{
		f.badKey:   []byte("-----BEGIN PRIVATE KEY-----\nbm90IGEga2V5\n-----END PRIVATE KEY-----\n"),
		f.cert:     pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: cert.Certificate[0]}),
		f.key:      pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: der}),
		f.password: []byte("s3cret\n"),
		f.file:     []byte("not a directory\n"),
	} {
		if err := os.WriteFile(path, data, 0o600); err != nil {
			t.Fatal(err)
		}
	}
	return f
}

// cfgSpec is a config of the check-config tests, on top of the test
// campaign: lines for [smtp] (listen, when absent, is a free loopback
// port), for [admin] (likewise), the store directory (default: under the
// test's directory) and tables to add.
type cfgSpec struct {
	smtp, admin, store, more string
}

// writeConfig writes spec as name.toml and returns its path and the SMTP
// address it listens on ("" when spec.smtp names its own).
func writeConfig(t *testing.T, f configFiles, name string, spec cfgSpec) (path, smtpAddr string) {
	t.Helper()
	if spec.store == "" {
		spec.store = filepath.Join(f.dir, name+"-data")
	}
	if !strings.Contains(spec.smtp, "listen") {
		smtpAddr = freePort(t)
		spec.smtp = fmt.Sprintf("listen = [%q]\n%s", smtpAddr, spec.smtp)
	}
	if !strings.Contains(spec.admin, "listen") {
		spec.admin = fmt.Sprintf("listen = %q\n%s", freePort(t), spec.admin)
	}
	text := fmt.Sprintf(`[campaign]
name = "Libertad"
addresses = ["libertad@campaign.test"]
recipients = ["familias@ofapp.test"]
from = "relay@campaign.test"
[smtp]
hostname = "mx.campaign.test"
%s
[admin]
%s
[store]
dir = %q
%s`, spec.smtp, spec.admin, spec.store, spec.more)
	path = filepath.Join(f.dir, name+".toml")
	if err := os.WriteFile(path, []byte(text), 0o600); err != nil {
		t.Fatal(err)
	}
	return path, smtpAddr
}

// serveBriefly runs serve in-process on path until it listens on smtpAddr,
// then stops it as SIGTERM would, or until it exits by itself; it returns
// the exit code and stderr.
func serveBriefly(t *testing.T, path, smtpAddr string) (int, string) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	type result struct {
		code   int
		stderr string
	}
	done := make(chan result, 1)
	go func() {
		code, _, errs := cli(ctx, "serve", "-config", path)
		done <- result{code, errs}
	}()
	deadline := time.Now().Add(20 * time.Second)
	for time.Now().Before(deadline) {
		select {
		case r := <-done:
			return r.code, r.stderr // refused (or failed) without being stopped
		default:
		}
		if c, err := smtpclient.Dial(smtpAddr, time.Second); err == nil {
			c.Quit()
			cancel()
			select {
			case r := <-done:
				return r.code, r.stderr
			case <-time.After(40 * time.Second):
				t.Fatal("serve did not stop")
			}
		}
		time.Sleep(20 * time.Millisecond)
	}
	t.Fatalf("serve neither listened on %s nor exited", smtpAddr)
	return 0, ""
}

// problems is the part of a command's error output that names problems:
// the lines after "petitiond NAME: ", without the command's name, so two
// commands' problems compare.
func problems(name, stderr string) string {
	var out []string
	for line := range strings.SplitSeq(strings.TrimSpace(stderr), "\n") {
		if strings.HasPrefix(line, "warning: ") || line == "" {
			continue
		}
		out = append(out, strings.TrimPrefix(line, "petitiond "+name+": "))
	}
	return strings.Join(out, "\n")
}

// TestServeAndCheckConfigAgree: on every config of a set, check-config and
// serve both accept, or both refuse with the same problems; each refusal
// names the key at fault. serve runs in-process with its context already
// ended: it starts (store, loopback listeners) and stops at once, or
// refuses.
func TestServeAndCheckConfigAgree(t *testing.T) {
	f := makeConfigFiles(t)
	dkim := func(domain, key string) string {
		return fmt.Sprintf("[dkim]\ndomain = %q\nselector = \"pd1\"\nkey_file = %q\n", domain, key)
	}
	tls := func(cert, key string) string { return fmt.Sprintf("tls_cert = %q\ntls_key = %q", cert, key) }
	auth := func(password string) string {
		return fmt.Sprintf("[delivery]\nsmarthost = \"127.0.0.1:2587\"\nusername = \"u\"\npassword_file = %q\n", password)
	}
	for _, c := range []struct {
		name    string
		spec    cfgSpec
		refusal string // "" when both accept; else what the problem names
	}{
		{name: "minimal"},
		{name: "signed", spec: cfgSpec{more: dkim("campaign.test", f.dkimKey)}},
		{name: "signed-by-subdomain", spec: cfgSpec{more: dkim("mail.campaign.test", f.dkimKey)}},
		{name: "tls", spec: cfgSpec{smtp: tls(f.cert, f.key)}},
		{name: "smarthost-auth", spec: cfgSpec{more: auth(f.password)}},
		{name: "admin-token", spec: cfgSpec{admin: `token = "s3cret"`}},
		{name: "dkim-key-missing", spec: cfgSpec{more: dkim("campaign.test", filepath.Join(f.dir, "none.key"))}, refusal: "dkim.key_file"},
		{name: "dkim-key-garbage", spec: cfgSpec{more: dkim("campaign.test", f.badKey)}, refusal: "dkim.key_file"},
		{name: "dkim-not-aligned", spec: cfgSpec{more: dkim("other.test", f.dkimKey)}, refusal: "dkim.domain"},
		{name: "tls-cert-missing", spec: cfgSpec{smtp: tls(filepath.Join(f.dir, "none.pem"), f.key)}, refusal: "smtp.tls_cert"},
		{name: "tls-key-not-the-cert", spec: cfgSpec{smtp: tls(f.cert, f.badKey)}, refusal: "smtp.tls_cert"},
		{name: "password-file-missing", spec: cfgSpec{more: auth(filepath.Join(f.dir, "none"))}, refusal: "delivery.password_file"},
		{name: "admin-open-without-token", spec: cfgSpec{admin: `listen = "0.0.0.0:8025"`}, refusal: "admin.listen"},
		{name: "admin-open-blank-token", spec: cfgSpec{admin: "listen = \"0.0.0.0:8025\"\ntoken = \" \""}, refusal: "admin.token"},
		{name: "store-dir-is-a-file", spec: cfgSpec{store: f.file}, refusal: "store.dir"},
		{name: "unknown-key", spec: cfgSpec{more: "[batch]\nmax_letter = 3\n"}, refusal: "batch.max_letter"},
	} {
		t.Run(c.name, func(t *testing.T) {
			t.Setenv(adminTokenEnv, "")
			path, smtpAddr := writeConfig(t, f, c.name, c.spec)
			checkCode, _, checkErr := cli(context.Background(), "check-config", "-config", path)
			serveCode, serveErr := serveBriefly(t, path, smtpAddr)
			if c.refusal == "" {
				if checkCode != 0 || serveCode != 0 {
					t.Fatalf("want both to accept: check-config exit %d:\n%s\nserve exit %d:\n%s", checkCode, checkErr, serveCode, serveErr)
				}
				return
			}
			if checkCode != 1 || serveCode != 1 {
				t.Fatalf("want both to refuse: check-config exit %d:\n%s\nserve exit %d:\n%s", checkCode, checkErr, serveCode, serveErr)
			}
			got, served := problems("check-config", checkErr), problems("serve", serveErr)
			if got != served {
				t.Errorf("different problems:\ncheck-config: %s\nserve:        %s", got, served)
			}
			if !strings.Contains(got, c.refusal) || !strings.Contains(got, path) {
				t.Errorf("problem %q does not name %s in %s", got, c.refusal, path)
			}
			if _, err := os.Stat(filepath.Join(f.dir, c.name+"-data")); !os.IsNotExist(err) {
				t.Errorf("serve made the store before it refused the config (%v)", err)
			}
		})
	}
}

// TestCheckConfigWarnings: what works but deserves a second look is a
// warning (exit 0, each line starting "warning:"); a config without those
// has none.
func TestCheckConfigWarnings(t *testing.T) {
	f := makeConfigFiles(t)
	t.Setenv(adminTokenEnv, "")
	// A public SMTP listener is only read here, never bound: serve is not
	// run on it.
	loose, _ := writeConfig(t, f, "loose", cfgSpec{smtp: `listen = ["0.0.0.0:2525", "127.0.0.1:2526"]`,
		more: "[secondary]\ntrusted = [\"127.0.0.3\"]\n"})
	code, out, errs := cli(context.Background(), "check-config", "-config", loose)
	if code != 0 || !strings.HasPrefix(out, "# "+loose+": OK") {
		t.Fatalf("exit %d, stdout %q, stderr %q", code, out, errs)
	}
	var warnings []string
	for line := range strings.SplitSeq(strings.TrimSpace(errs), "\n") {
		if !strings.HasPrefix(line, "warning: ") {
			t.Errorf("stderr line without warning: %q", line)
		}
		warnings = append(warnings, line)
	}
	for i, want := range []string{`smtp.listen "0.0.0.0:2525" is reachable from other machines and smtp.tls_cert is empty`,
		"[dkim] is empty: batches go out unsigned",
		"secondary.trusted is set and secondary.names is empty: forged Authentication-Results fields naming the secondaries cannot be removed",
		"admin.token is empty"} {
		if i >= len(warnings) || !strings.Contains(warnings[i], want) {
			t.Errorf("warning %d: want %q in %q", i, want, warnings)
		}
	}
	if len(warnings) != 4 {
		t.Errorf("%d warnings, want 4: %q", len(warnings), warnings)
	}

	tight, _ := writeConfig(t, f, "tight", cfgSpec{smtp: fmt.Sprintf("tls_cert = %q\ntls_key = %q", f.cert, f.key), admin: `token = "s3cret"`,
		more: fmt.Sprintf("[dkim]\ndomain = \"campaign.test\"\nselector = \"pd1\"\nkey_file = %q\n"+
			"[secondary]\ntrusted = [\"127.0.0.3\"]\nnames = [\"mx2.campaign.test\"]\n", f.dkimKey)})
	if code, _, errs := cli(context.Background(), "check-config", "-config", tight); code != 0 || errs != "" {
		t.Errorf("a config with nothing to warn about: exit %d, stderr %q", code, errs)
	}
	// The token from the environment counts as set.
	t.Setenv(adminTokenEnv, "from-env")
	if _, _, errs := cli(context.Background(), "check-config", "-config", loose); strings.Contains(errs, "admin.token") {
		t.Errorf("admin.token warning with the token in the environment: %q", errs)
	}
}
