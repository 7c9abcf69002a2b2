package notify

import (
	"strings"
	"testing"

	"github.com/petitiond/petitiond/store"
)

func TestConfirmAddressRoundTrip(t *testing.T) {
	seen := map[string]bool{}
	for range 50 {
		tok, err := NewToken()
		if err != nil {
			t.Fatal(err)
		}
		if len(tok.ID) != idLen || len(tok.Secret) != secretLen || strings.Trim(tok.ID+tok.Secret, tokenAlphabet) != "" {
			t.Fatalf("token %+v: want %d+%d lower-case letters and digits", tok, idLen, secretLen)
		}
		if seen[tok.ID+tok.Secret] {
			t.Fatalf("token %+v made twice", tok)
		}
		seen[tok.ID+tok.Secret] = true
		addr := ConfirmAddress("libertad@campaign.example", tok)
		if !strings.HasPrefix(addr, "libertad+confirm-") || !strings.HasSuffix(addr, "@campaign.example") {
			t.Fatalf("confirmation address %q", addr)
		}
		via, got, ok := ParseConfirmAddress(addr)
		if !ok || via != "libertad@campaign.example" || got != tok {
			t.Fatalf("ParseConfirmAddress(%q) = %q, %+v, %v", addr, via, got, ok)
		}
	}
}

func TestParseConfirmAddress(t *testing.T) {
	const tok = "abcdefgh" + "ijklmnopqrstuvwxyz234567ab"
	for _, c := range []struct {
		rcpt, via string
		ok        bool
	}{
		{"libertad+confirm-" + tok + "@campaign.example", "libertad@campaign.example", true},
		{"a+b+confirm-" + tok + "@campaign.example", "a+b@campaign.example", true}, // a campaign address with a + of its own
		{"libertad+confirm-" + tok + "x@campaign.example", "", false},              // too long
		{"libertad+confirm-" + tok[1:] + "@campaign.example", "", false},           // too short
		{"libertad+confirm-" + strings.ToUpper(tok) + "@campaign.example", "", false},
		{"libertad+confirm-" + tok[:33] + "1@campaign.example", "", false}, // 1 is not base32
		{"+confirm-" + tok + "@campaign.example", "", false},
		{"libertad+confirm-" + tok + "@", "", false},
		{"libertad+confirm-" + tok, "", false},
		{"libertad@campaign.example", "", false},
		{"libertad+other-" + tok + "@campaign.example", "", false},
		{"", "", false},
	} {
		via, got, ok := ParseConfirmAddress(c.rcpt)
		if ok != c.ok || via != c.via {
			t.Errorf("ParseConfirmAddress(%q) = %q, %v; want %q, %v", c.rcpt, via, ok, c.via, c.ok)
		}
		if ok && (got.ID != tok[:8] || got.Secret != tok[8:]) {
			t.Errorf("ParseConfirmAddress(%q) token %+v", c.rcpt, got)
		}
	}
}

// FuzzParseConfirmAddress: whatever the recipient, the parser does not
// panic, and what it accepts is exactly the confirmation address of the
// campaign address and token it returns.
func FuzzParseConfirmAddress(f *testing.F) {
	f.Add("libertad+confirm-abcdefghijklmnopqrstuvwxyz234567ab@campaign.example")
	f.Add("libertad@campaign.example")
	f.Fuzz(func(t *testing.T, rcpt string) {
		via, tok, ok := ParseConfirmAddress(rcpt)
		if !ok {
			if via != "" || tok != (store.ConfirmToken{}) {
				t.Fatalf("refused %q but returned %q, %+v", rcpt, via, tok)
			}
			return
		}
		if len(tok.ID) != idLen || len(tok.Secret) != secretLen || strings.Trim(tok.ID+tok.Secret, tokenAlphabet) != "" {
			t.Fatalf("%q: token %+v", rcpt, tok)
		}
		if at := strings.LastIndexByte(via, '@'); at <= 0 || at == len(via)-1 {
			t.Fatalf("%q: campaign address %q", rcpt, via)
		}
		if again := ConfirmAddress(via, tok); again != rcpt {
			t.Fatalf("%q parsed as %q, %+v, which makes %q", rcpt, via, tok, again)
		}
	})
}
