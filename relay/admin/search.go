package admin

// /search: the counted letters whose sender name, address or text has
// every word asked for, newest first. Words match inside words ("mar"
// finds "María"), ignoring case and accents: both sides are decomposed
// (NFD), their combining marks dropped and lower-cased, so "maria" finds
// "María" and "nunez" finds "Núñez".
//
// Cost: there is no text index, so a search reads letters and extracts
// each one's text (MIME decoding, at most 64 KiB of text a letter). It is
// bounded: at most searchMaxScan letters, newest first, read in pages of
// searchChunk (one short read transaction each); at most searchTimeout in
// all; one search at a time (another waits briefly, then gets "busy"). A
// search that stopped at its bound says so on the page. Reading a letter
// of 1 KiB of text costs about 0.12 ms (BenchmarkSearch), so the bound is
// reached in about 2.5 s.

import (
	"context"
	"errors"
	"net/http"
	"strings"
	"time"
	"unicode"
	"unicode/utf8"

	"golang.org/x/text/runes"
	"golang.org/x/text/transform"
	"golang.org/x/text/unicode/norm"

	"github.com/petitiond/petitiond/oneline"
	"github.com/petitiond/petitiond/relay/batch"
	"github.com/petitiond/petitiond/relay/catalog"
	"github.com/petitiond/petitiond/store"
)

const (
	searchMaxScan  = 20000
	searchChunk    = 250
	searchTimeout  = 5 * time.Second
	searchWait     = 2 * time.Second // for the search before to end
	searchMaxShown = 100
	searchMaxQuery = 200 // characters of the query kept
	searchMaxWords = 8
	excerptMax     = 240 // characters of a matching line shown
)

var errBusy = errors.New("another search is running")

// fold is s lower-cased without accents, for matching.
func fold(s string) string {
	ascii := true
	for i := 0; i < len(s); i++ {
		if s[i] >= utf8.RuneSelf {
			ascii = false
			break
		}
	}
	if !ascii {
		t := transform.Chain(norm.NFD, runes.Remove(runes.In(unicode.Mn)), norm.NFC)
		if out, _, err := transform.String(t, s); err == nil {
			s = out
		}
	}
	return strings.ToLower(s)
}

// queryWords are the distinct folded words of a query, at most
// searchMaxWords of them, and the query as shown back (one line, cut).
func queryWords(q string) (words []string, shown string) {
	shown = oneline.Clean(q)
	if utf8.RuneCountInString(shown) > searchMaxQuery {
		shown = string([]rune(shown)[:searchMaxQuery])
	}
	for _, w := range strings.Fields(fold(shown)) {
		if len(words) == searchMaxWords {
			break
		}
		if !contains(words, w) {
			words = append(words, w)
		}
	}
	return words, strings.TrimSpace(shown)
}

func contains(list []string, s string) bool {
	for _, x := range list {
		if x == s {
			return true
		}
	}
	return false
}

// hasAll reports whether the folded text has every word.
func hasAll(folded string, words []string) bool {
	for _, w := range words {
		if !strings.Contains(folded, w) {
			return false
		}
	}
	return true
}

// searchHit is one letter found.
type searchHit struct {
	catalog.BatchLetter
	State   catalog.LetterState
	Excerpt string // the first line of its text with one of the words
}

// match says whether l has every word in its sender's name and address,
// subject or text, and the line of text to show.
func match(l *store.BatchLetter, words []string) (bool, string) {
	who := fold(l.Name + "\n" + l.From)
	if hasAll(who, words) {
		return true, ""
	}
	if l.Body == nil {
		return false, ""
	}
	subject, text := batch.LetterText(l.Body)
	if !hasAll(who+"\n"+fold(subject)+"\n"+fold(text), words) {
		return false, ""
	}
	return true, excerpt(text, words)
}

// excerpt is the first line of text that has one of the words, cut to
// excerptMax characters.
func excerpt(text string, words []string) string {
	for line := range strings.Lines(text) {
		f := fold(line)
		for _, w := range words {
			if strings.Contains(f, w) {
				line = strings.TrimSpace(line)
				if utf8.RuneCountInString(line) > excerptMax {
					line = string([]rune(line)[:excerptMax]) + "…"
				}
				return line
			}
		}
	}
	return ""
}

// searchLetters scans for words, newest first, within the bounds above.
func (s *Server) searchLetters(ctx context.Context, words []string) (catalog.Search, []searchHit, error) {
	var res catalog.Search
	var hits []searchHit
	after := ""
	for {
		if res.Scanned >= s.searchScan || ctx.Err() != nil {
			// Stopped at a bound: is anything older left?
			more, err := s.st.ScanLetters(store.LetterScan{After: after, Backward: true, Limit: 1})
			if err != nil {
				return res, nil, err
			}
			res.Cut = len(more) > 0
			break
		}
		limit := min(searchChunk, s.searchScan-res.Scanned)
		page, err := s.st.ScanLetters(store.LetterScan{After: after, Backward: true, Limit: limit, Bodies: true})
		if err != nil {
			return res, nil, err
		}
		for i := range page {
			res.Scanned++
			l := &page[i]
			if !counted(&l.Letter) {
				continue
			}
			ok, ex := match(l, words)
			if !ok {
				continue
			}
			res.Found++
			if len(hits) < searchMaxShown {
				bl := batch.LetterOf(&l.Letter, nil)
				hits = append(hits, searchHit{BatchLetter: batch.Row(&bl), State: catalog.LetterState{Batch: l.Batch},
					Excerpt: ex})
			}
		}
		if len(page) < limit {
			break
		}
		after = page[len(page)-1].ID
	}
	res.Shown = len(hits)
	return res, hits, nil
}

// searchPage is /search?q=.
func (s *Server) searchPage(w http.ResponseWriter, r *http.Request) {
	words, shown := queryWords(r.URL.Query().Get("q"))
	data := struct {
		pageHead
		Query  string
		Asked  bool
		Result catalog.Search
		Hits   []searchHit
	}{pageHead: s.head(0), Query: shown, Asked: len(words) > 0}
	if data.Asked {
		wait := time.NewTimer(searchWait)
		defer wait.Stop()
		select {
		case s.search <- struct{}{}:
			defer func() { <-s.search }()
		case <-wait.C:
			s.pageError(w, r, 0, errBusy)
			return
		case <-r.Context().Done():
			return
		}
		ctx, cancel := context.WithTimeout(r.Context(), searchTimeout)
		defer cancel()
		res, hits, err := s.searchLetters(ctx, words)
		if err != nil {
			s.pageError(w, r, 0, err)
			return
		}
		res.Query = shown
		data.Result, data.Hits = res, hits
	}
	s.render(w, r, http.StatusOK, "search", data)
}
