package dnsname

import (
	"strings"
	"testing"
)

func TestCheck(t *testing.T) {
	long63 := strings.Repeat("a", 63)
	// 4 labels of 63 plus 3 dots: 255 bytes; trimmed to 253 and 254.
	name253 := strings.Join([]string{long63, long63, long63, long63[:61]}, ".")
	for _, tc := range []struct {
		name     string
		domain   string // "" when CheckDomain accepts it, else a part of the error
		selector string // the same for CheckSelector
	}{
		{"example.org", "", ""},
		{"Example.ORG", "", ""},
		{"example.org.", "", "empty label"}, // fully qualified: a domain, not a selector
		{"mx1", "", ""},
		{"localhost", "", ""},
		{"xn--campaa-0wa.test", "", ""},
		{"1and1.example", "", ""}, // RFC 1123: a label may begin with a digit
		{"a-b.c-d", "", ""},
		{"pd1.batches", "", ""}, // a selector may have several labels
		{long63 + ".example", "", ""},
		{name253, "", ""},
		{name253 + "a", "longer than 253", "longer than 253"},
		{long63 + "a.example", `label "` + long63 + `a" is longer than 63`, "longer than 63"},
		{"", "it is empty", "it is empty"},
		{".", "it is empty", "empty label"},
		{"-sel-", "it begins or ends with '-'", "it begins or ends with '-'"},
		{"sel-", "begins or ends", "begins or ends"},
		{"a.-b", `label "-b" begins or ends with '-'`, "begins or ends"},
		{"s_1", `it has '_'`, `it has '_'`},
		{"_domainkey.example", `label "_domainkey" has '_'`, "'_'"},
		{"a b", `it has ' '`, `it has ' '`},
		{"s/../x", `has '/'`, `has '/'`},
		{"a;b=c", `has ';'`, `has ';'`},
		{"campaign..example", "empty label", "empty label"},
		{".example", "empty label", "empty label"},
		{"example.org..", "empty label", "empty label"},
		{"campaña.example", `label "campaña" has non-ASCII letters: write internationalised names in their ASCII (xn--) form`, "xn--"},
	} {
		for _, c := range []struct {
			what  string
			check func(string) error
			want  string
		}{{"CheckDomain", CheckDomain, tc.domain}, {"CheckSelector", CheckSelector, tc.selector}} {
			err := c.check(tc.name)
			switch {
			case c.want == "" && err != nil:
				t.Errorf("%s(%q) = %v, want nil", c.what, tc.name, err)
			case c.want != "" && err == nil:
				t.Errorf("%s(%q) = nil, want an error with %q", c.what, tc.name, c.want)
			case c.want != "" && !strings.Contains(err.Error(), c.want):
				t.Errorf("%s(%q) = %v, want it to say %q", c.what, tc.name, err, c.want)
			case err != nil && !strings.HasPrefix(err.Error(), `"`+tc.name+`" is not a DNS name: `):
				t.Errorf("%s(%q) = %v, want it to start by naming the value", c.what, tc.name, err)
			}
		}
	}
}

func TestAbsolute(t *testing.T) {
	for in, want := range map[string]string{"example.org": "example.org.", "example.org.": "example.org.", "": "", "localhost": "localhost."} {
		if got := Absolute(in); got != want {
			t.Errorf("Absolute(%q) = %q, want %q", in, got, want)
		}
	}
}
