package verify

import (
	"strings"
	"testing"
)

func TestNormalizeAddress(t *testing.T) {
	all := FoldOptions{Subaddress: true, GmailDots: true}
	none := FoldOptions{}
	tests := []struct {
		in   string
		opt  FoldOptions
		want string
	}{
		{"ana@example.org", none, "ana@example.org"},
		{"Ana.Perez@Example.ORG", none, "ana.perez@example.org"},
		{"ANA@EXAMPLE.ORG.", none, "ana@example.org"},
		{"ana@bücher.example", none, "ana@xn--bcher-kva.example"},
		{"ana@BÜCHER.example", none, "ana@xn--bcher-kva.example"},
		{"ana@xn--bcher-kva.example", none, "ana@xn--bcher-kva.example"},
		{"josé@example.org", none, "josé@example.org"},
		{"JOSÉ@example.org", none, "josé@example.org"},
		{"ana+petition@example.org", none, "ana+petition@example.org"},
		{"ana+petition@example.org", all, "ana@example.org"},
		{"ana+a+b@example.org", all, "ana@example.org"},
		{"+only@example.org", all, "+only@example.org"},
		{"a.n.a@example.org", all, "a.n.a@example.org"}, // dots only fold at Gmail
		{"A.n.A@gmail.com", all, "ana@gmail.com"},
		{"a.n.a@googlemail.com", all, "ana@gmail.com"},
		{"a.n.a+x@GoogleMail.com", all, "ana@gmail.com"},
		{"a.n.a@gmail.com", none, "a.n.a@gmail.com"},
		{"a.n.a@googlemail.com", none, "a.n.a@googlemail.com"},
		{"a.n.a+x@gmail.com", FoldOptions{GmailDots: true}, "ana+x@gmail.com"},
		{"a.n.a+x@gmail.com", FoldOptions{Subaddress: true}, "a.n.a@gmail.com"},
		{"...@gmail.com", all, "...@gmail.com"},
		{"a.n.a@mail.gmail.com", all, "a.n.a@mail.gmail.com"},
		{"\"a@b\"@example.org", none, "\"a@b\"@example.org"}, // last @ splits
	}
	for _, tc := range tests {
		got, err := NormalizeAddress(tc.in, tc.opt)
		if err != nil || got != tc.want {
			t.Errorf("NormalizeAddress(%q, %+v) = %q, %v; want %q", tc.in, tc.opt, got, err, tc.want)
		}
	}
}

func TestNormalizeAddressErrors(t *testing.T) {
	for _, in := range []string{"", "ana", "@example.org", "ana@", "ana@.", "ana@\u00ad\u200d.example"} {
		if got, err := NormalizeAddress(in, FoldOptions{Subaddress: true, GmailDots: true}); err == nil {
			t.Errorf("NormalizeAddress(%q) = %q, want an error", in, got)
		}
	}
}

func TestOrganizationalDomain(t *testing.T) {
	for in, want := range map[string]string{
		"example.org":          "example.org",
		"Mail.Example.ORG.":    "example.org",
		"a.b.c.example.org":    "example.org",
		"www.example.co.uk":    "example.co.uk",
		"co.uk":                "co.uk", // a public suffix is its own
		"org":                  "org",
		"campaign.test":        "campaign.test", // unknown TLD: one-label suffix
		"mx.campaign.test":     "campaign.test",
		"x.y.campaign.invalid": "campaign.invalid",
		"bücher.example":       "xn--bcher-kva.example",
		"user.github.io":       "user.github.io", // private PSL section counts too
		"":                     "",
		"bad..name":            "bad..name",
		"192.0.2.1":            "192.0.2.1",
	} {
		if got := OrganizationalDomain(in); got != want {
			t.Errorf("OrganizationalDomain(%q) = %q, want %q", in, got, want)
		}
	}
}

func TestAligned(t *testing.T) {
	tests := []struct {
		sig, from string
		want      bool
	}{
		{"example.org", "example.org", true},
		{"EXAMPLE.org.", "example.ORG", true},
		{"mail.example.org", "example.org", true},
		{"example.org", "news.example.org", true},
		{"a.example.org", "b.example.org", true},
		{"example.org", "example.com", false},
		{"notexample.org", "example.org", false},
		{"example.org.evil.com", "example.org", false},
		{"example.co.uk", "other.co.uk", false},
		{"example.co.uk", "mail.example.co.uk", true},
		{"co.uk", "example.co.uk", false},
		{"co.uk", "co.uk", true},
		{"campaign.test", "campaign.test", true},
		{"mx.campaign.test", "campaign.test", true},
		{"other.test", "campaign.test", false},
		{"alice.github.io", "bob.github.io", false},
		{"xn--bcher-kva.example", "Bücher.example", true},
		{"", "", false},
		{"example.org", "", false},
	}
	for _, tc := range tests {
		if got := Aligned(tc.sig, tc.from); got != tc.want {
			t.Errorf("Aligned(%q, %q) = %v, want %v", tc.sig, tc.from, got, tc.want)
		}
	}
}

func FuzzNormalizeAddress(f *testing.F) {
	for _, s := range []string{
		"ana@example.org", "A.n.A+tag@GoogleMail.com", "ana@bücher.example", "@", "a@", "@b",
		"+@gmail.com", ".@gmail.com", "\"a@b\"@c", "ana@xn--.example", "ana@\u00ad.example",
	} {
		f.Add(s, true, true)
	}
	f.Fuzz(func(t *testing.T, addr string, sub, dots bool) {
		opt := FoldOptions{Subaddress: sub, GmailDots: dots}
		got, err := NormalizeAddress(addr, opt)
		if err != nil {
			return
		}
		at := strings.LastIndexByte(got, '@')
		if at <= 0 || at == len(got)-1 {
			t.Fatalf("NormalizeAddress(%q) = %q: empty part", addr, got)
		}
		if d := got[at+1:]; !isASCII(d) || d != strings.ToLower(d) {
			t.Fatalf("NormalizeAddress(%q) = %q: domain not lower-case ASCII", addr, got)
		}
		// A dedup key must be stable: normalising again changes nothing.
		again, err := NormalizeAddress(got, opt)
		if err != nil || again != got {
			t.Fatalf("NormalizeAddress(%q) = %q, then %q, %v", addr, got, again, err)
		}
		_ = OrganizationalDomain(got[at+1:])
		_ = Aligned(got[at+1:], addr)
	})
}

func BenchmarkNormalizeAddress(b *testing.B) {
	opt := FoldOptions{Subaddress: true, GmailDots: true}
	for _, addr := range []string{"Ana.Perez+campaign@GoogleMail.com", "ana@bücher.example"} {
		b.Run(addr, func(b *testing.B) {
			b.ReportAllocs()
			for b.Loop() {
				if _, err := NormalizeAddress(addr, opt); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}
