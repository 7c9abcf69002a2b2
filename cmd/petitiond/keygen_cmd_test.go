package main

import (
	"bytes"
	"context"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"

	"github.com/emersion/go-msgauth/dkim"

	"github.com/petitiond/petitiond/relay/batch"
)

// keygenRun runs the command as main does and returns its exit code and output.
func keygenRun(t *testing.T, args ...string) (code int, stdout, stderr string) {
	t.Helper()
	var out, errb bytes.Buffer
	code = run(context.Background(), append([]string{"dkim-keygen"}, args...), &out, &errb)
	return code, out.String(), errb.String()
}

// printedTXT finds the zone-file line for name in the output and joins its
// quoted strings, as a resolver joins the strings of one TXT record.
func printedTXT(t *testing.T, out, name string) string {
	t.Helper()
	for line := range strings.SplitSeq(out, "\n") {
		rest, ok := strings.CutPrefix(line, name+" IN TXT ")
		if !ok {
			continue
		}
		var joined strings.Builder
		for _, m := range regexp.MustCompile(`"([^"]*)"`).FindAllStringSubmatch(rest, -1) {
			if len(m[1]) > 255 {
				t.Errorf("TXT string of %d bytes (DNS allows 255)", len(m[1]))
			}
			joined.WriteString(m[1])
		}
		return joined.String()
	}
	t.Fatalf("no %q TXT line in output:\n%s", name, out)
	return ""
}

// The key the command writes loads as the daemon loads [dkim].key_file, and
// a batch it signs verifies against the record the command printed.
func TestKeygenKeySignsAndPrintedRecordVerifies(t *testing.T) {
	for _, algo := range []string{"ed25519", "rsa"} {
		t.Run(algo, func(t *testing.T) {
			path := filepath.Join(t.TempDir(), "dkim.key")
			code, out, errOut := keygenRun(t, "-domain", "campaign.test", "-selector", "pd1", "-algo", algo, "-out", path)
			if code != 0 {
				t.Fatalf("exit %d, stderr: %s", code, errOut)
			}
			fi, err := os.Stat(path)
			if err != nil {
				t.Fatal(err)
			}
			if perm := fi.Mode().Perm(); perm != 0o600 {
				t.Errorf("key file mode %o, want 600", perm)
			}
			pemBytes, _ := os.ReadFile(path)
			if !bytes.HasPrefix(pemBytes, []byte("-----BEGIN PRIVATE KEY-----\n")) {
				t.Errorf("key file does not start with a PKCS#8 PRIVATE KEY block:\n%s", pemBytes)
			}
			if !strings.Contains(out, `key_file = "`+path+`"`) || !strings.Contains(out, "[dkim]") {
				t.Errorf("output lacks the [dkim] lines for %s:\n%s", path, out)
			}

			txt := printedTXT(t, out, "pd1._domainkey.campaign.test.")
			if !strings.HasPrefix(txt, "v=DKIM1; k="+algo+"; p=") {
				t.Errorf("record = %q", txt)
			}

			signer, err := batch.LoadSigner("campaign.test", "pd1", path)
			if err != nil {
				t.Fatalf("LoadSigner: %v", err)
			}
			msg := "From: <relay@campaign.test>\r\nTo: <familias@ofapp.test>\r\nSubject: batch 1: 1 letters\r\n" +
				"Date: Fri, 27 Nov 2026 10:00:00 +0000\r\nMessage-ID: <batch-1@campaign.test>\r\n\r\nLibertad.\r\n"
			signed, err := signer.Sign([]byte(msg))
			if err != nil {
				t.Fatalf("Sign: %v", err)
			}
			var looked []string
			vs, err := dkim.VerifyWithOptions(bytes.NewReader(signed), &dkim.VerifyOptions{
				LookupTXT: func(name string) ([]string, error) {
					looked = append(looked, name)
					return []string{txt}, nil
				},
			})
			if err != nil || len(vs) != 1 {
				t.Fatalf("Verify: %v, %d verifications", err, len(vs))
			}
			if vs[0].Err != nil || vs[0].Domain != "campaign.test" {
				t.Errorf("verification: domain %q, err %v", vs[0].Domain, vs[0].Err)
			}
			if len(looked) != 1 || looked[0] != "pd1._domainkey.campaign.test" {
				t.Errorf("looked up %q", looked)
			}
		})
	}
}

func TestKeygenRefusesToOverwrite(t *testing.T) {
	path := filepath.Join(t.TempDir(), "dkim.key")
	if err := os.WriteFile(path, []byte("the published key\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	code, out, errOut := keygenRun(t, "-domain", "campaign.test", "-selector", "pd1", "-out", path)
	if code != 1 || !strings.Contains(errOut, "already exists") {
		t.Errorf("exit %d, stderr %q; want 1 and \"already exists\"", code, errOut)
	}
	if strings.Contains(out, "IN TXT") {
		t.Errorf("printed a record for a key it did not write:\n%s", out)
	}
	if b, _ := os.ReadFile(path); string(b) != "the published key\n" {
		t.Errorf("existing file changed to %q", b)
	}
}

func TestKeygenDefaultFileName(t *testing.T) {
	dir := t.TempDir()
	t.Chdir(dir)
	code, _, errOut := keygenRun(t, "-domain", "Campaña.test", "-selector", "pd1")
	if code != 0 {
		t.Fatalf("exit %d, stderr: %s", code, errOut)
	}
	// The domain is stored in its ASCII (IDNA) form, as DNS has it.
	if _, err := os.Stat(filepath.Join(dir, "xn--campaa-0wa.test.pd1.key")); err != nil {
		t.Errorf("default key file: %v", err)
	}
}

func TestKeygenUsage(t *testing.T) {
	dir := t.TempDir()
	out := filepath.Join(dir, "k.key")
	for _, tc := range []struct {
		name string
		args []string
		code int
	}{
		{"help", []string{"-h"}, 0},
		{"no domain", []string{"-selector", "s", "-out", out}, 2},
		{"no selector", []string{"-domain", "campaign.test", "-out", out}, 2},
		{"bad algo", []string{"-domain", "campaign.test", "-selector", "s", "-algo", "dsa", "-out", out}, 2},
		{"bad domain", []string{"-domain", "campaign test", "-selector", "s", "-out", out}, 2},
		{"bad selector", []string{"-domain", "campaign.test", "-selector", "s/../x", "-out", out}, 2},
		{"unknown flag", []string{"-domain", "campaign.test", "-selector", "s", "-bits", "4096"}, 2},
		{"stray argument", []string{"-domain", "campaign.test", "-selector", "s", "-out", out, "extra"}, 2},
	} {
		t.Run(tc.name, func(t *testing.T) {
			code, stdout, stderr := keygenRun(t, tc.args...)
			if code != tc.code {
				t.Errorf("exit %d, want %d; stderr: %s", code, tc.code, stderr)
			}
			if !strings.Contains(stderr, "usage: petitiond dkim-keygen") {
				t.Errorf("stderr lacks the usage line: %q", stderr)
			}
			if stdout != "" {
				t.Errorf("stdout = %q, want nothing", stdout)
			}
		})
	}
	if _, err := os.Stat(out); err == nil {
		t.Errorf("a failed invocation wrote %s", out)
	}
}
