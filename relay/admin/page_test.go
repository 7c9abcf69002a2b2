package admin_test

import (
	"bytes"
	"encoding/csv"
	"html"
	"net/http"
	"net/url"
	"strings"
	"testing"
	"time"

	xhtml "golang.org/x/net/html"

	"github.com/petitiond/petitiond/config"
	"github.com/petitiond/petitiond/internal/batchmime"
	"github.com/petitiond/petitiond/relay/catalog"
)

// reader is the header a script with the reader token sends.
func reader() []string { return []string{"Authorization", "Bearer " + readerToken} }

// mustContain fails for every want not in page.
func mustContain(t *testing.T, what, page string, wants ...string) {
	t.Helper()
	missing := false
	for _, w := range wants {
		// html/template writes some characters as references ("+" as
		// "&#43;"): what a browser shows is the page unescaped.
		if !strings.Contains(page, w) && !strings.Contains(html.UnescapeString(page), w) {
			t.Errorf("%s lacks %q", what, w)
			missing = true
		}
	}
	if missing {
		t.Logf("%s:\n%s", what, page)
	}
}

// texts are the letters' texts of a batch page (its pre.text blocks), as a
// browser shows them.
func texts(t *testing.T, page string) []string {
	t.Helper()
	doc, err := xhtml.Parse(strings.NewReader(page))
	if err != nil {
		t.Fatal(err)
	}
	var out []string
	for n := range doc.Descendants() {
		if n.Type == xhtml.ElementNode && n.Data == "pre" {
			var b strings.Builder
			for c := range n.Descendants() {
				if c.Type == xhtml.TextNode {
					b.WriteString(c.Data)
				}
			}
			out = append(out, b.String())
		}
	}
	return out
}

// localTime is t as the Spanish pages show it, in America/Santiago.
func localTime(t *testing.T, at time.Time) string {
	t.Helper()
	loc, err := time.LoadLocation("America/Santiago")
	if err != nil {
		t.Fatal(err)
	}
	c, err := catalog.New("es", loc)
	if err != nil {
		t.Fatal(err)
	}
	return c.Time(at)
}

// TestHomePage: the campaign, the tally and each batch with each copy's
// state in Spanish and local time; the page has its language set, its
// title, and a policy that allows no script.
func TestHomePage(t *testing.T) {
	p := startPages(t, nil)
	code, page, h := p.get(t, "/", reader()...)
	if code != http.StatusOK || !strings.HasPrefix(h.Get("Content-Type"), "text/html") {
		t.Fatalf("home: %d %s", code, h.Get("Content-Type"))
	}
	b, err := p.Store().Batch(1)
	if err != nil {
		t.Fatal(err)
	}
	mustContain(t, "home", page, `<html lang="es">`, "<title>"+campaign+"</title>", "<h1>"+campaign+"</h1>",
		"4 cartas contadas", "1 carta espera el próximo lote.", "Se ha cerrado 1 lote.",
		"Retenidas hasta que un administrador las revise: 1.",
		`<a href="/batches/1">Lote 1: 3 cartas, cerrado el `+localTime(t, b.Created)+`</a>`,
		"familias@ofapp.test</span>: <span class=\"state-delivered\">entregado el "+localTime(t, b.Recipients[0].Done),
		"copias@sr.test</span>: <span class=\"state-delivered\">entregado el "+localTime(t, b.Recipients[1].Done))
	csp := h.Get("Content-Security-Policy")
	if !strings.Contains(csp, "default-src 'none'") || strings.Contains(csp, "script-src") || strings.Contains(csp, "unsafe") {
		t.Errorf("Content-Security-Policy %q", csp)
	}
	if h.Get("Cache-Control") != "no-store" || h.Get("X-Frame-Options") != "DENY" {
		t.Errorf("headers: %v", h)
	}
	if strings.Contains(page, "<script") {
		t.Errorf("the page has a script")
	}
}

// TestBatchPage: a batch's rows and each letter's text as its summary has
// them, names and text escaped (a <script> display name is text), the
// copies' states, and the CSV and .eml to download: the .eml is the
// message delivered, the CSV has the rows of the batch's own CSV.
func TestBatchPage(t *testing.T) {
	p := startPages(t, nil)
	code, page, _ := p.get(t, "/batches/1", reader()...)
	if code != http.StatusOK {
		t.Fatalf("batch page: %d", code)
	}
	letters, err := p.Store().LettersByID(p.ids[:3], false)
	if err != nil {
		t.Fatal(err)
	}
	mustContain(t, "batch page", page, "<title>Lote 1 · "+campaign+"</title>",
		"3 cartas, verificadas 3 de 3. Con este lote van 3 cartas en total.",
		"María Pérez &lt;maria@ed.test&gt;", "firma DKIM de ed.test", "firma DKIM de gmail.com",
		"&lt;script&gt;alert(1)&lt;/script&gt; &lt;script@rsa.test&gt;",
		localTime(t, letters[0].Received)+" · "+p.ids[0],
		"Carta 2 · "+p.ids[1], "entregado el ",
		`href="/batches/1/csv" download="lote-1.csv"`, `href="/batches/1/eml" download="lote-1.eml"`)
	for _, bad := range []string{"<script>alert", "<img src=x", "<b>hola"} {
		if strings.Contains(page, bad) {
			t.Errorf("batch page has %q unescaped", bad)
		}
	}

	// The .eml is the message delivered, byte for byte.
	code, eml, h := p.get(t, "/batches/1/eml", reader()...)
	want, err := p.Store().BatchMessage(1)
	if err != nil {
		t.Fatal(err)
	}
	if code != http.StatusOK || eml != string(want) || !strings.Contains(h.Get("Content-Disposition"), `filename="lote-1.eml"`) {
		t.Fatalf(".eml: %d, %d bytes (want %d), %q", code, len(eml), len(want), h.Get("Content-Disposition"))
	}
	delivered, err := batchmime.Read(want)
	if err != nil {
		t.Fatal(err)
	}

	// Each letter's text is the summary's, line for line.
	var shown []string
	for _, txt := range texts(t, page) {
		var lines []string
		for _, l := range strings.Split(txt, "\n") {
			lines = append(lines, strings.TrimPrefix(strings.TrimPrefix(l, "|"), " "))
		}
		shown = append(shown, strings.Join(lines, "\n"))
	}
	if got, want := strings.Join(shown, "\n--\n"), strings.Join(delivered.QuotedTexts(), "\n--\n"); got != want {
		t.Errorf("letters' texts on the page:\n%s\nin the batch's summary:\n%s", got, want)
	}
	if !strings.Contains(strings.Join(shown, "\n"), "<b>hola</b> & <img src=x onerror=alert(2)> adiós") {
		t.Errorf("the letter's text does not read as written: %q", shown)
	}

	// The CSV: the batch CSV's format, the same rows as the batch's own.
	code, raw, h := p.get(t, "/batches/1/csv", reader()...)
	if code != http.StatusOK || !strings.HasPrefix(h.Get("Content-Type"), "text/csv") ||
		!strings.Contains(h.Get("Content-Disposition"), `filename="lote-1.csv"`) {
		t.Fatalf("csv: %d %v", code, h)
	}
	got := readCSV(t, raw)
	rows, err := delivered.Rows()
	if err != nil {
		t.Fatal(err)
	}
	if len(got) != len(rows) {
		t.Fatalf("csv has %d rows, the batch's %d", len(got), len(rows))
	}
	for i, r := range rows {
		at, err := time.Parse(time.RFC3339, got[i][0])
		if err != nil || !at.Equal(r.Received) || got[i][1] != r.Name || got[i][2] != r.Address ||
			got[i][3] != r.DKIMDomain || got[i][4] != r.LetterID || got[i][5] != r.Verified {
			t.Errorf("csv row %d %q, the batch's %+v", i, got[i], r)
		}
		if _, off := at.Zone(); off != -3*3600 && off != -4*3600 {
			t.Errorf("csv time %s is not in Santiago's offset", got[i][0])
		}
	}

	if code, page, _ := p.get(t, "/batches/9", reader()...); code != http.StatusNotFound || !strings.Contains(page, "No existe el lote 9.") {
		t.Errorf("no such batch: %d\n%s", code, page)
	}
	for _, path := range []string{"/batches/x", "/batches/0/csv", "/batches/9/eml", "/batches/9/csv"} {
		if code, _, _ := p.get(t, path, reader()...); code != http.StatusNotFound {
			t.Errorf("%s: %d, want 404", path, code)
		}
	}
}

// readCSV checks the byte order mark and the header and returns the rows.
func readCSV(t *testing.T, raw string) [][]string {
	t.Helper()
	body, ok := strings.CutPrefix(raw, "\ufeff")
	if !ok {
		t.Fatalf("CSV without a byte order mark: %.40q", raw)
	}
	recs, err := csv.NewReader(strings.NewReader(body)).ReadAll()
	if err != nil {
		t.Fatal(err)
	}
	if len(recs) == 0 || strings.Join(recs[0], ",") != "received,name,address,dkim_domain,letter_id,verified" {
		t.Fatalf("CSV header %q", recs)
	}
	return recs[1:]
}

// TestSignersCSV: every counted letter, the batched ones and the one
// waiting, in the batch CSV's format; never a held letter.
func TestSignersCSV(t *testing.T) {
	p := startPages(t, nil)
	code, raw, h := p.get(t, "/signers.csv", reader()...)
	if code != http.StatusOK || !strings.Contains(h.Get("Content-Disposition"), `filename="firmas.csv"`) {
		t.Fatalf("signers.csv: %d %v", code, h)
	}
	rows := readCSV(t, raw)
	var ids []string
	for _, r := range rows {
		ids = append(ids, r[4])
	}
	if strings.Join(ids, " ") != strings.Join(p.ids, " ") {
		t.Errorf("signers.csv has %v, want the counted %v", ids, p.ids)
	}
	if strings.Contains(raw, "dan@rsa.test") {
		t.Errorf("signers.csv has the held letter")
	}
	if rows[3][1] != "Pedro Núñez" || rows[3][3] != "ed.test" || rows[3][5] != "dkim" {
		t.Errorf("the waiting letter's row: %q", rows[3])
	}
}

// TestSearch: sender names, addresses and texts, every word, any case,
// accents or none; counted letters only; the query shown back escaped.
func TestSearch(t *testing.T) {
	p := startPages(t, nil)
	search := func(q string) string {
		t.Helper()
		code, page, _ := p.get(t, "/search?q="+url.QueryEscape(q), reader()...)
		if code != http.StatusOK {
			t.Fatalf("search %q: %d", q, code)
		}
		return page
	}
	for _, c := range []struct {
		q     string
		found string
		has   []string
	}{
		{"maria", "1 carta tiene «maria».", []string{"María Pérez &lt;maria@ed.test&gt;", "en el lote 1", `href="/batches/1#` + p.ids[0] + `"`}},
		{"MARÍA pérez", "1 carta tiene «MARÍA pérez».", []string{"maria@ed.test"}},
		{"nunez", "1 carta tiene «nunez».", []string{"Pedro Núñez", "esperando el próximo lote"}},
		{"revuelta octubre", "1 carta tiene «revuelta octubre».", []string{"maria@ed.test",
			"Exigimos la libertad de los presos políticos de la revuelta de octubre."}},
		{"gmail.com", "1 carta tiene «gmail.com».", []string{"Ana Soto"}},
		{"libertad", "4 cartas tienen «libertad».", []string{"maria@ed.test", "ana.soto@gmail.com", "pedro@ed.test"}},
		{"todas libertad", "1 carta tiene «todas libertad».", []string{"ana.soto@gmail.com", "Libertad para todas y todos."}},
		{"<script>", "1 carta tiene «&lt;script&gt;».", []string{"&lt;script&gt;alert(1)&lt;/script&gt;"}},
		{"sin firma", "Ninguna carta tiene «sin firma».", nil},
		{"maria nunez", "Ninguna carta tiene «maria nunez».", nil},
	} {
		page := search(c.q)
		mustContain(t, "search "+c.q, page, append([]string{c.found}, c.has...)...)
		if strings.Contains(page, "dan@rsa.test") {
			t.Errorf("search %q shows the held letter", c.q)
		}
	}
	page := search(`"><script>alert(3)</script>`)
	if strings.Contains(page, "<script>alert(3)") || !strings.Contains(page, `value="&#34;&gt;&lt;script&gt;alert(3)&lt;/script&gt;"`) {
		t.Errorf("the query is not escaped:\n%s", page)
	}
	if page := search(""); strings.Contains(page, `id="found"`) {
		t.Errorf("an empty query searched")
	}
}

// TestEnglishPages: campaign.language "en" and another time zone.
func TestEnglishPages(t *testing.T) {
	p := startPages(t, func(c *config.Config) { c.Campaign.Language = "en"; c.Campaign.Timezone = "Europe/Madrid" })
	_, page, _ := p.get(t, "/", reader()...)
	b, _ := p.Store().Batch(1)
	loc, _ := time.LoadLocation("Europe/Madrid")
	c, _ := catalog.New("en", loc)
	mustContain(t, "home", page, `<html lang="en">`, "4 letters counted", "1 letter is waiting for the next batch.",
		"Batch 1: 3 letters, closed on "+c.Time(b.Created), "delivered on "+c.Time(b.Recipients[0].Done))
	_, page, _ = p.get(t, "/batches/1", reader()...)
	mustContain(t, "batch", page, "<title>Batch 1 · "+html.EscapeString(campaign)+"</title>", "DKIM signature from ed.test",
		`download="batch-1.csv"`)
	_, page, _ = p.get(t, "/search?q=maria", reader()...)
	mustContain(t, "search", page, "1 letter has “maria”.", "in batch 1")
	_, raw, _ := p.get(t, "/signers.csv", reader()...)
	if !bytes.HasPrefix([]byte(raw), []byte("\ufeffreceived,")) {
		t.Errorf("signers.csv: %.40q", raw)
	}
}
