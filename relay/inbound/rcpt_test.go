package inbound

import (
	"testing"

	"github.com/petitiond/petitiond/config"
)

func testServer(t testing.TB) *Server {
	t.Helper()
	cfg := config.Default()
	cfg.Campaign.Addresses = []string{"libertad@campaign.example", "Presos@Otra.example"}
	cfg.Campaign.From = "relay@campaign.example"
	s, err := New(cfg, nil, nil, Options{})
	if err != nil {
		t.Fatal(err)
	}
	return s
}

// foldEqual compares ASCII case-insensitively, byte by byte.
func foldEqual(a, b string) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range len(a) {
		x, y := a[i], b[i]
		if 'A' <= x && x <= 'Z' {
			x += 'a' - 'A'
		}
		if 'A' <= y && y <= 'Z' {
			y += 'a' - 'A'
		}
		if x != y {
			return false
		}
	}
	return true
}

// wantRecipient is SPEC 4's rule for RCPT TO, written plainly.
func wantRecipient(to string) (postmaster, ok bool) {
	for _, a := range []string{"libertad@campaign.example", "presos@otra.example"} {
		if foldEqual(to, a) {
			return false, true
		}
	}
	for _, a := range []string{"postmaster", "postmaster@campaign.example", "postmaster@otra.example", "relay@campaign.example"} {
		if foldEqual(to, a) {
			return true, true
		}
	}
	return false, false
}

func TestRecipient(t *testing.T) {
	s := testServer(t)
	for to, want := range map[string][2]bool{ // postmaster, ok
		"libertad@campaign.example":        {false, true},
		"LIBERTAD@Campaign.Example":        {false, true},
		"presos@otra.example":              {false, true},
		"postmaster":                       {true, true},
		"Postmaster":                       {true, true},
		"postmaster@campaign.example":      {true, true},
		"POSTMASTER@OTRA.EXAMPLE":          {true, true},
		"relay@campaign.example":           {true, true},
		"postmaster@elsewhere.example":     {false, false},
		"libertad@campaign.example.evil":   {false, false},
		"libertad@campaign.example ":       {false, false},
		"\u212aibertad@campaign.example":   {false, false}, // Kelvin sign: strings.ToLower makes it "k"
		"libertad+x@campaign.example":      {false, false},
		"":                                 {false, false},
		"postmaster@":                      {false, false},
		"libertad@campaign.example@x.test": {false, false},
	} {
		if _, pm, ok := s.recipient(to); pm != want[0] || ok != want[1] {
			t.Errorf("recipient(%q) = postmaster %v, ok %v; want %v, %v", to, pm, ok, want[0], want[1])
		}
	}
}

// FuzzRecipient: RCPT TO is taken exactly for the campaign's addresses,
// postmaster (bare or at a campaign domain) and campaign.from, in any ASCII
// case, and nothing else.
func FuzzRecipient(f *testing.F) {
	for _, seed := range []string{"libertad@campaign.example", "Postmaster", "postmaster@otra.example", "relay@campaign.example",
		"\u212aibertad@campaign.example", "postmaster@evil.example", "LIBERTAD@CAMPAIGN.EXAMPLE", "x@y", "@", ""} {
		f.Add(seed)
	}
	s := testServer(f)
	f.Fuzz(func(t *testing.T, to string) {
		addr, pm, ok := s.recipient(to)
		wantPM, wantOK := wantRecipient(to)
		if pm != wantPM || ok != wantOK {
			t.Fatalf("recipient(%q) = postmaster %v, ok %v; want %v, %v", to, pm, ok, wantPM, wantOK)
		}
		if ok && !foldEqual(addr, to) {
			t.Fatalf("recipient(%q) names it %q", to, addr)
		}
	})
}
