// What the organisers' pages show of batches and letters, made by the same
// code as the batch message, so a page and the mail organisers received
// say the same thing.

package batch

import (
	"github.com/petitiond/petitiond/relay/catalog"
	"github.com/petitiond/petitiond/store"
)

// LetterOf is a stored letter as a batch carries it: its record's fields
// and verdict, and body (nil once purged after retention).
func LetterOf(l *store.Letter, body []byte) Letter {
	bl := Letter{ID: l.ID, Received: l.Received, Name: l.Name, Address: l.From, Raw: body,
		Verified: string(l.Verdict.Kind)}
	switch l.Verdict.Kind {
	case store.VerdictDKIM:
		bl.DKIMDomain = l.Verdict.Domain
	case store.VerdictSPF:
		bl.SPFDomain = l.Verdict.Domain
	}
	return bl
}

// Summary is what the summary of a batch built from s says: its counts and
// times, and for each letter its line and its text, quoted and with its
// notes, exactly as Build writes them. Only the facts of s that the
// summary uses matter (Number, CampaignName, RunningTotal, Letters).
func Summary(s Spec) catalog.Batch {
	if len(s.Letters) == 0 {
		return catalog.Batch{Number: s.Number, RunningTotal: s.RunningTotal, QuoteMark: QuoteMark}
	}
	letters := make([]preparedLetter, len(s.Letters))
	for i := range s.Letters {
		letters[i] = prepareLetter(&s.Letters[i])
	}
	return batchData(s, letters)
}

// LetterText is a letter's decoded subject and text as the summary finds
// them (its text/plain part, or its HTML without tags), unquoted: what a
// search looks in.
func LetterText(raw []byte) (subject, text string) {
	lt := readLetter(raw)
	return lt.subject, lt.text
}

// Row is a letter's line in the summary, without its text: who sent it,
// when, its ID and how it verified, every field made safe to print.
func Row(l *Letter) catalog.BatchLetter {
	p := prepareFields(l)
	return catalog.BatchLetter{ID: p.id, Who: p.who(), Received: p.received,
		Verdict: catalog.Verdict{Kind: p.verified, Domain: p.domain}}
}
