package verify

import "fmt"

// Method says how a letter verified (SPEC 5). confirmed and admin are
// decided elsewhere, later.
type Method string

// The methods Decide can give.
const (
	MethodDKIM       Method = "dkim"
	MethodSPF        Method = "spf"
	MethodUnverified Method = "unverified"
)

// Decision combines the DKIM and SPF checks of one letter.
type Decision struct {
	Method Method
	// Domain is d= of the valid signature (dkim), or the MAIL FROM domain
	// (spf); "" when unverified.
	Domain   string
	Selector string // s= of the valid signature (dkim only)
	// TempFail is set when nothing verified but a check that could have
	// verified the letter failed temporarily: the front end answers 451
	// 4.7.5 so the sender retries.
	TempFail bool
	Reason   string // "pass", or both checks' reasons: short, for logs and batches
}

// Decide gives a letter's verdict (SPEC 5) from its DKIM verdict, its SPF
// result (the zero SPFResult when SPF was not checked) and its From domain:
//
//  1. a valid aligned DKIM signature: dkim, with its domain and selector;
//  2. else SPF pass for a MAIL FROM domain aligned with From: spf;
//  3. else, when a temporary failure kept an aligned signature or an
//     aligned MAIL FROM domain from a result: unverified with TempFail;
//  4. else unverified.
//
// A temporary error counts only where a pass would have verified: retrying
// an SPF check of an unaligned or null MAIL FROM cannot change the outcome.
func Decide(dkim Verdict, spfRes SPFResult, fromDomain string) Decision {
	if dkim.Pass {
		return Decision{Method: MethodDKIM, Domain: dkim.Domain, Selector: dkim.Selector, Reason: "pass"}
	}
	aligned := spfRes.AlignedWith(fromDomain)
	if spfRes.Status == SPFPass && aligned {
		return Decision{Method: MethodSPF, Domain: spfRes.Domain, Reason: "pass"}
	}
	return Decision{
		Method:   MethodUnverified,
		TempFail: dkim.TempFail || (spfRes.Status == SPFTempError && aligned),
		Reason:   fmt.Sprintf("dkim: %s; spf: %s", dkim.Reason, spfSummary(spfRes, aligned)),
	}
}

// spfSummary is an SPF result in a few words, for an unverified letter.
func spfSummary(r SPFResult, aligned bool) string {
	if r.Status == "" {
		return "not checked"
	}
	s := string(r.Status)
	if r.Domain != "" {
		s += " for " + r.Domain
		if r.Status == SPFPass && !aligned {
			return s + ", not aligned with From"
		}
	}
	if r.Reason != "" {
		s += " (" + r.Reason + ")"
	}
	return s
}
