package verify

import "testing"

func TestDecide(t *testing.T) {
	dkimPass := Verdict{Pass: true, Domain: "example.org", Selector: "s1", Reason: "pass"}
	unsigned := Verdict{Reason: "no signature", Unsigned: true}
	dkimTemp := Verdict{Domain: "example.org", Selector: "s1", Reason: "key lookup timed out", TempFail: true}
	spfRes := func(status SPFStatus, domain string) SPFResult {
		return SPFResult{Status: status, Domain: domain, Reason: "why"}
	}

	cases := []struct {
		name string
		dkim Verdict
		spf  SPFResult
		from string
		want Decision
	}{
		{"dkim pass, spf fail", dkimPass, spfRes(SPFFail, "example.org"), "example.org",
			Decision{Method: MethodDKIM, Domain: "example.org", Selector: "s1", Reason: "pass"}},
		{"dkim pass, spf temperror", dkimPass, spfRes(SPFTempError, "example.org"), "example.org",
			Decision{Method: MethodDKIM, Domain: "example.org", Selector: "s1", Reason: "pass"}},
		{"dkim pass, spf not checked", dkimPass, SPFResult{}, "example.org",
			Decision{Method: MethodDKIM, Domain: "example.org", Selector: "s1", Reason: "pass"}},
		{"spf pass, same domain", unsigned, spfRes(SPFPass, "example.org"), "example.org",
			Decision{Method: MethodSPF, Domain: "example.org", Reason: "pass"}},
		{"spf pass, subdomain of From's", unsigned, spfRes(SPFPass, "bounce.example.org"), "example.org",
			Decision{Method: MethodSPF, Domain: "bounce.example.org", Reason: "pass"}},
		{"spf pass, From in a subdomain", unsigned, spfRes(SPFPass, "example.org"), "lists.example.org",
			Decision{Method: MethodSPF, Domain: "example.org", Reason: "pass"}},
		{"spf pass beside an aligned dkim temp failure", dkimTemp, spfRes(SPFPass, "example.org"), "example.org",
			Decision{Method: MethodSPF, Domain: "example.org", Reason: "pass"}},
		{"spf pass, unaligned", unsigned, spfRes(SPFPass, "mailer.example.net"), "example.org",
			Decision{Method: MethodUnverified, Reason: "dkim: no signature; spf: pass for mailer.example.net, not aligned with From"}},
		{"spf pass, sibling under a public suffix", unsigned, spfRes(SPFPass, "other.co.uk"), "example.co.uk",
			Decision{Method: MethodUnverified, Reason: "dkim: no signature; spf: pass for other.co.uk, not aligned with From"}},
		{"softfail", unsigned, spfRes(SPFSoftFail, "example.org"), "example.org",
			Decision{Method: MethodUnverified, Reason: "dkim: no signature; spf: softfail for example.org (why)"}},
		{"fail", unsigned, spfRes(SPFFail, "example.org"), "example.org",
			Decision{Method: MethodUnverified, Reason: "dkim: no signature; spf: fail for example.org (why)"}},
		{"neutral", unsigned, spfRes(SPFNeutral, "example.org"), "example.org",
			Decision{Method: MethodUnverified, Reason: "dkim: no signature; spf: neutral for example.org (why)"}},
		{"none", unsigned, spfRes(SPFNone, "example.org"), "example.org",
			Decision{Method: MethodUnverified, Reason: "dkim: no signature; spf: none for example.org (why)"}},
		{"permerror", unsigned, spfRes(SPFPermError, "example.org"), "example.org",
			Decision{Method: MethodUnverified, Reason: "dkim: no signature; spf: permerror for example.org (why)"}},
		{"null sender", unsigned, SPFResult{Status: SPFNone, Reason: "null sender"}, "example.org",
			Decision{Method: MethodUnverified, Reason: "dkim: no signature; spf: none (null sender)"}},
		{"a null sender never passes", unsigned, SPFResult{Status: SPFPass}, "example.org",
			Decision{Method: MethodUnverified, Reason: "dkim: no signature; spf: pass"}},
		{"spf not checked", unsigned, SPFResult{}, "example.org",
			Decision{Method: MethodUnverified, Reason: "dkim: no signature; spf: not checked"}},
		{"spf temperror, aligned", unsigned, spfRes(SPFTempError, "bounce.example.org"), "example.org",
			Decision{Method: MethodUnverified, TempFail: true, Reason: "dkim: no signature; spf: temperror for bounce.example.org (why)"}},
		{"spf temperror, unaligned", unsigned, spfRes(SPFTempError, "mailer.example.net"), "example.org",
			Decision{Method: MethodUnverified, Reason: "dkim: no signature; spf: temperror for mailer.example.net (why)"}},
		{"dkim temp failure, spf fail", dkimTemp, spfRes(SPFFail, "example.org"), "example.org",
			Decision{Method: MethodUnverified, TempFail: true, Reason: "dkim: key lookup timed out; spf: fail for example.org (why)"}},
		{"dkim temp failure, spf not checked", dkimTemp, SPFResult{}, "example.org",
			Decision{Method: MethodUnverified, TempFail: true, Reason: "dkim: key lookup timed out; spf: not checked"}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			if got := Decide(tc.dkim, tc.spf, tc.from); got != tc.want {
				t.Errorf("Decide:\n got %+v\nwant %+v", got, tc.want)
			}
		})
	}
}

func TestSPFResultAlignedWith(t *testing.T) {
	for _, tc := range []struct {
		mailFrom, from string
		want           bool
	}{
		{"example.org", "example.org", true},
		{"bounce.example.org", "example.org", true},
		{"Example.ORG", "example.org.", true},
		{"example.net", "example.org", false},
		{"", "example.org", false},
		{"campaign.test", "mail.campaign.test", true},
	} {
		if got := (SPFResult{Domain: tc.mailFrom}).AlignedWith(tc.from); got != tc.want {
			t.Errorf("MAIL FROM domain %q, From %q: aligned %v, want %v", tc.mailFrom, tc.from, got, tc.want)
		}
	}
}
