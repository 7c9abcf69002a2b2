package main

import (
	"bytes"
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// dkim-keygen and check-config judge a selector or domain by the same rule
// and say the same thing, so keygen never prints [dkim] lines that
// check-config then refuses.
func TestKeygenAndCheckConfigAgreeOnNames(t *testing.T) {
	for _, tc := range []struct {
		flag, key, domain, selector string
	}{
		{"-selector", "dkim.selector", "campaign.test", "-sel-"},
		{"-selector", "dkim.selector", "campaign.test", "s_1"},
		{"-selector", "dkim.selector", "campaign.test", "pd1."},
		{"-domain", "dkim.domain", "campaign_x.test", "pd1"},
		{"-domain", "dkim.domain", "-campaign.test", "pd1"},
	} {
		t.Run(tc.flag+"="+tc.domain+"/"+tc.selector, func(t *testing.T) {
			dir := t.TempDir()
			keyFile := filepath.Join(dir, "dkim.key")

			var out, errOut bytes.Buffer
			code := run(context.Background(), []string{"dkim-keygen", "-domain", tc.domain, "-selector", tc.selector, "-out", keyFile}, &out, &errOut)
			if code != 2 {
				t.Fatalf("dkim-keygen: exit %d, want 2 (usage); stdout:\n%s", code, out.String())
			}
			if _, err := os.Stat(keyFile); err == nil {
				t.Error("dkim-keygen wrote a key for a name it refused")
			}
			keygenMsg := messageAfter(t, errOut.String(), "petitiond dkim-keygen: "+tc.flag+": ")

			cfg := filepath.Join(dir, "petitiond.toml")
			text := "[campaign]\nname = \"Libertad\"\naddresses = [\"libertad@campaign.test\"]\n" +
				"recipients = [\"familias@ofapp.test\"]\nfrom = \"relay@campaign.test\"\n" +
				"[dkim]\ndomain = \"" + tc.domain + "\"\nselector = \"" + tc.selector + "\"\nkey_file = \"" + keyFile + "\"\n"
			if err := os.WriteFile(cfg, []byte(text), 0o600); err != nil {
				t.Fatal(err)
			}
			out.Reset()
			errOut.Reset()
			if code := run(context.Background(), []string{"check-config", "-config", cfg}, &out, &errOut); code != 1 {
				t.Fatalf("check-config: exit %d, want 1; stderr:\n%s", code, errOut.String())
			}
			checkMsg := messageAfter(t, errOut.String(), tc.key+": ")

			if keygenMsg != checkMsg {
				t.Errorf("messages differ:\n dkim-keygen:  %s\n check-config: %s", keygenMsg, checkMsg)
			}
			if !strings.Contains(checkMsg, "is not a DNS name") {
				t.Errorf("message %q does not say what is wrong", checkMsg)
			}
		})
	}
}

// messageAfter returns the rest of the first line of out that contains
// prefix, after it.
func messageAfter(t *testing.T, out, prefix string) string {
	t.Helper()
	for line := range strings.SplitSeq(out, "\n") {
		if _, rest, ok := strings.Cut(line, prefix); ok {
			return rest
		}
	}
	t.Fatalf("no line with %q in:\n%s", prefix, out)
	return ""
}
