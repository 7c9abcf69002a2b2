package admin

// The organisers' pages (SPEC 10): plain HTML from html/template, no
// script, in campaign.language with times in campaign.timezone. The words
// come from relay/catalog; the page templates in pages/ only lay them out.
// Whatever comes from a letter (names, addresses, text) is data that
// html/template escapes, and the Content-Security-Policy allows no script
// at all, so a hostile letter can at most show its own words.

import (
	"bytes"
	"crypto/sha256"
	"embed"
	"encoding/base64"
	"errors"
	"fmt"
	"html/template"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/petitiond/petitiond/oneline"
	"github.com/petitiond/petitiond/relay/batch"
	"github.com/petitiond/petitiond/relay/catalog"
	"github.com/petitiond/petitiond/store"
)

//go:embed pages
var pageFiles embed.FS

// pages holds the parsed page templates and the catalogue they speak.
type pages struct {
	cat  *catalog.Catalog
	tmpl map[string]*template.Template // by page: home, batch, search, login, error
	csp  string
}

func newPages(lang string, loc *time.Location) (*pages, error) {
	if lang == "" {
		lang = "en"
	}
	cat, err := catalog.New(lang, loc)
	if err != nil {
		return nil, err
	}
	css, err := pageFiles.ReadFile("pages/style.css")
	if err != nil {
		return nil, err
	}
	p := &pages{cat: cat, tmpl: map[string]*template.Template{}}
	// The one style sheet is inline, allowed by its hash: no other style,
	// no script, no frame, forms only to this listener.
	sum := sha256.Sum256(css)
	p.csp = "default-src 'none'; style-src 'sha256-" + base64.StdEncoding.EncodeToString(sum[:]) + "'; " +
		"img-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'"
	funcs := template.FuncMap{
		"t":     cat.Text,
		"time":  cat.Time,
		"lang":  cat.Lang,
		"style": func() template.CSS { return template.CSS(css) },
	}
	for _, name := range []string{"home", "batch", "search", "login", "error"} {
		t, err := template.New(name).Funcs(funcs).ParseFS(pageFiles, "pages/layout.html", "pages/"+name+".html")
		if err != nil {
			return nil, fmt.Errorf("page template %s: %w", name, err)
		}
		p.tmpl[name] = t
	}
	return p, nil
}

// render writes page name with data, status 200. It is made in a buffer
// first, so a failure is a clean error page, not half a page.
func (s *Server) render(w http.ResponseWriter, r *http.Request, status int, name string, data any) {
	var b bytes.Buffer
	if err := s.pages.tmpl[name].ExecuteTemplate(&b, "layout", data); err != nil {
		s.log.Error("writing an organisers' page failed", "page", name, "path", r.URL.Path, "err", err)
		w.Header().Set("Content-Type", "text/plain; charset=utf-8")
		w.WriteHeader(http.StatusInternalServerError)
		fmt.Fprintln(w, "internal error; the daemon's log has the cause")
		return
	}
	h := w.Header()
	h.Set("Content-Type", "text/html; charset=utf-8")
	h.Set("Content-Security-Policy", s.pages.csp)
	h.Set("X-Frame-Options", "DENY")
	// Who signed is sensitive: no copy in a shared cache or the
	// browser's history cache.
	h.Set("Cache-Control", "no-store")
	w.WriteHeader(status)
	_, _ = w.Write(b.Bytes())
}

// text is a catalogue message for a page's Go code (file names, errors).
func (s *Server) text(key string, data any) string {
	t, err := s.pages.cat.Text(key, data)
	if err != nil {
		s.log.Error("catalogue message failed", "key", key, "err", err)
		return key
	}
	return t
}

// pageHead is what every page's layout reads.
type pageHead struct {
	Page catalog.Page
	Nav  bool
}

func (s *Server) head(batch uint64) pageHead {
	return pageHead{Page: catalog.Page{Campaign: oneline.Clean(s.opt.Campaign), Batch: batch}, Nav: true}
}

// pageError answers a page request that failed: not found in the
// catalogue's words, anything else generically with the cause in the log.
func (s *Server) pageError(w http.ResponseWriter, r *http.Request, batch uint64, err error) {
	status, key := http.StatusInternalServerError, "page.error.internal"
	switch {
	case errors.Is(err, store.ErrNotFound):
		status, key = http.StatusNotFound, "page.error.not_found"
	case errors.Is(err, errBusy):
		status, key = http.StatusServiceUnavailable, "page.error.busy"
	case errors.Is(err, store.ErrClosed):
		status = http.StatusServiceUnavailable
	default:
		s.log.Error("organisers' page failed", "path", r.URL.Path, "err", err)
	}
	h := s.head(batch)
	s.render(w, r, status, "error", struct {
		pageHead
		Message string
	}{h, s.text(key, h.Page)})
}

// copyView is one recipient's copy of a batch on a page.
type copyView struct {
	Address string
	State   catalog.Delivery
}

func (s *Server) copies(b *store.Batch) []copyView {
	now := s.now()
	out := make([]copyView, 0, len(b.Recipients))
	for _, d := range b.Recipients {
		st := catalog.Delivery{State: string(d.State), Done: d.Done, Error: oneline.Clean(d.LastError)}
		if (d.State == store.DeliveryQueued || d.State == store.DeliveryDeferred) && d.NextAttempt.After(now) {
			st.Next = d.NextAttempt
		}
		if d.State == store.DeliveryDeferred && st.Next.IsZero() {
			// Due now: "retrying" with no time would read as if it had
			// stopped; say it is queued, as it is.
			st.State = string(store.DeliveryQueued)
		}
		out = append(out, copyView{Address: oneline.Clean(d.Address), State: st})
	}
	return out
}

// home is "/": the campaign, the tally and every batch, newest first, with
// where each recipient's copy is.
func (s *Server) home(w http.ResponseWriter, r *http.Request) {
	st, err := s.st.Stats()
	if err != nil {
		s.pageError(w, r, 0, err)
		return
	}
	batches, err := s.st.Batches()
	if err != nil {
		s.pageError(w, r, 0, err)
		return
	}
	type batchView struct {
		Number uint64
		Line   catalog.BatchLine
		Copies []copyView
	}
	data := struct {
		pageHead
		Tally   catalog.Tally
		Batches []batchView
	}{pageHead: s.head(0), Tally: catalog.Tally{Counted: st.Counted, Pending: st.Pending, Batches: st.Batches,
		Duplicates: st.Duplicates, Held: st.Held}}
	for _, b := range slices.Backward(batches) {
		data.Batches = append(data.Batches, batchView{Number: b.ID,
			Line:   catalog.BatchLine{Number: b.ID, Count: len(b.LetterIDs), Created: b.Created},
			Copies: s.copies(&b)})
	}
	s.render(w, r, http.StatusOK, "home", data)
}

// pageBatchID reads the batch number of a page's path; 0, which no batch
// has, when it is not one.
func pageBatchID(r *http.Request) uint64 {
	id, err := strconv.ParseUint(r.PathValue("id"), 10, 64)
	if err != nil {
		return 0
	}
	return id
}

// batchView is a batch with its letters as its summary shows them.
type batchView struct {
	rec     *store.Batch
	summary catalog.Batch
	gone    []bool // per letter: its body is no longer stored
}

// loadBatch reads batch id and its letters with their bodies (unless
// purged) and makes its summary with relay/batch's own code.
func (s *Server) loadBatch(id uint64) (*batchView, error) {
	b, err := s.st.Batch(id)
	if err != nil {
		return nil, err
	}
	withText := !b.Purged
	letters, err := s.st.LettersByID(b.LetterIDs, withText)
	if err != nil {
		return nil, err
	}
	// The running total as the batch's summary gave it: every letter
	// batched up to this one.
	all, err := s.st.Batches()
	if err != nil {
		return nil, err
	}
	var total uint64
	for _, o := range all {
		if o.ID <= id {
			total += uint64(len(o.LetterIDs))
		}
	}
	spec := batch.Spec{Number: id, CampaignName: s.opt.Campaign, RunningTotal: total}
	v := &batchView{rec: b, gone: make([]bool, len(letters))}
	for i := range letters {
		spec.Letters = append(spec.Letters, batch.LetterOf(&letters[i].Letter, letters[i].Body))
		v.gone[i] = withText && letters[i].Body == nil
	}
	v.summary = batch.Summary(spec)
	v.summary.CSVName = s.text("batch.csv_filename", v.summary)
	return v, nil
}

// batchPage is /batches/N: the batch's summary rows, each letter's text as
// the summary has it, where each copy is, and the downloads.
func (s *Server) batchPage(w http.ResponseWriter, r *http.Request) {
	id := pageBatchID(r)
	v, err := s.loadBatch(id)
	if err != nil {
		s.pageError(w, r, id, err)
		return
	}
	s.render(w, r, http.StatusOK, "batch", struct {
		pageHead
		Batch   catalog.Batch
		Copies  []copyView
		Purged  bool
		Gone    []bool
		EMLName string
	}{s.head(id), v.summary, s.copies(v.rec), v.rec.Purged, v.gone, s.text("page.batch.eml_filename", v.summary)})
}

// batchCSV is the batch's list in the batch CSV's format.
func (s *Server) batchCSV(w http.ResponseWriter, r *http.Request) {
	id := pageBatchID(r)
	b, err := s.st.Batch(id)
	if err != nil {
		s.pageError(w, r, id, err)
		return
	}
	letters, err := s.st.LettersByID(b.LetterIDs, false)
	if err != nil {
		s.pageError(w, r, id, err)
		return
	}
	var buf bytes.Buffer
	cw := batch.NewCSVWriter(&buf, s.pages.cat.Location())
	for i := range letters {
		l := batch.LetterOf(&letters[i].Letter, nil)
		if err := cw.Write(&l); err != nil {
			s.pageError(w, r, id, err)
			return
		}
	}
	if err := cw.Flush(); err != nil {
		s.pageError(w, r, id, err)
		return
	}
	download(w, "text/csv; charset=utf-8", s.text("batch.csv_filename", catalog.Batch{Number: id}))
	_, _ = w.Write(buf.Bytes())
}

// batchEML is the batch's message exactly as delivered.
func (s *Server) batchEML(w http.ResponseWriter, r *http.Request) {
	id := pageBatchID(r)
	msg, err := s.st.BatchMessage(id)
	if err != nil {
		s.pageError(w, r, id, err)
		return
	}
	download(w, "message/rfc822", s.text("page.batch.eml_filename", catalog.Batch{Number: id}))
	w.Header().Set("Content-Length", strconv.Itoa(len(msg)))
	_, _ = w.Write(msg)
}

// download sets the headers of a file to save: its type and name, and no
// caching (it names who signed).
func download(w http.ResponseWriter, contentType, name string) {
	h := w.Header()
	h.Set("Content-Type", contentType)
	h.Set("Content-Disposition", contentDisposition(name))
	h.Set("Cache-Control", "no-store")
}

// contentDisposition names a download: an ASCII fallback and the UTF-8
// name (RFC 6266), the name being the catalogue's, never a letter's.
func contentDisposition(name string) string {
	ascii := strings.Map(func(r rune) rune {
		if r < 0x20 || r >= 0x7f || r == '"' || r == '\\' {
			return '_'
		}
		return r
	}, name)
	return fmt.Sprintf(`attachment; filename="%s"; filename*=UTF-8''%s`, ascii, pathEscape(name))
}

// pathEscape is RFC 5987's value encoding.
func pathEscape(s string) string {
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		c := s[i]
		if c < 0x80 && (c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || strings.IndexByte("!#$&+-.^_`|~", c) >= 0) {
			b.WriteByte(c)
			continue
		}
		fmt.Fprintf(&b, "%%%02X", c)
	}
	return b.String()
}

// signersCSV is /signers.csv: every counted letter so far, oldest first,
// in the batch CSV's format. It reads the letters' records (never their
// bodies) a thousand at a time, each page in a short read transaction, and
// streams the rows: its cost grows with the letters stored, about 10 µs a
// letter (BenchmarkSignersCSV), a second per 100,000.
func (s *Server) signersCSV(w http.ResponseWriter, r *http.Request) {
	download(w, "text/csv; charset=utf-8", s.text("page.signers_filename", nil))
	cw := batch.NewCSVWriter(w, s.pages.cat.Location())
	after := ""
	for {
		if err := r.Context().Err(); err != nil {
			return // the reader went away
		}
		page, err := s.st.ScanLetters(store.LetterScan{After: after})
		if err != nil {
			// The header may be out: the truncated file must not pass
			// for a whole one, so the connection is cut.
			s.log.Error("signers.csv: reading the letters failed", "err", err)
			panic(http.ErrAbortHandler)
		}
		for i := range page {
			if !counted(&page[i].Letter) {
				continue
			}
			l := batch.LetterOf(&page[i].Letter, nil)
			if err := cw.Write(&l); err != nil {
				return
			}
		}
		if len(page) == 0 {
			break
		}
		after = page[len(page)-1].ID
	}
	_ = cw.Flush()
}

// counted reports whether a letter is counted: waiting for a batch or in
// one (not held, not a duplicate).
func counted(l *store.Letter) bool {
	return l.State == store.StatePending || l.State == store.StateBatched
}
