package catalog

import (
	"slices"
	"strings"
	"testing"
	"time"
)

var santiago = func() *time.Location {
	loc, err := time.LoadLocation("America/Santiago")
	if err != nil {
		panic(err)
	}
	return loc
}()

var verdictKinds = []string{"dkim", "spf", "confirmed", "admin", "unverified"}

var noteKinds = []string{"repaired", "html_only", "unknown_charset", "unknown_encoding", "no_text", "empty", "unreadable", "decode_error", "cut"}

func sampleBatch() Batch {
	t := time.Date(2024, 5, 6, 10, 0, 0, 0, time.UTC)
	b := Batch{Campaign: "Libertad a los presos políticos", Number: 7, Count: 2, Verified: 1, RunningTotal: 120,
		First: t, Last: t.Add(time.Hour), CSVName: "lote-7.csv", QuoteMark: "|"}
	for i, k := range verdictKinds {
		b.Letters = append(b.Letters, BatchLetter{N: i + 1, ID: "L0000001A", Who: "Ana Pérez <ana@ejemplo.cl>",
			Received: t, Verdict: Verdict{Kind: k, Domain: "ejemplo.cl"}, Subject: "Libertad",
			Before: []Note{{Kind: "html_only"}}, After: []Note{{Kind: "cut"}}, Quoted: "| Libertad."})
	}
	return b
}

// samples holds data for every message; a message without one fails the
// test, so each new key comes with data it is known to work with.
var samples = map[string]any{
	"format.time":              nil,
	"verdict":                  Verdict{Kind: "dkim", Domain: "gmail.com"},
	"batch.subject":            sampleBatch(),
	"batch.csv_filename":       sampleBatch(),
	"batch.digest_description": sampleBatch(),
	"batch.note":               Note{Kind: "unreadable", Detail: "EOF"},
	"batch.summary":            sampleBatch(),

	"page.title.home":         samplePage,
	"page.title.batch":        samplePage,
	"page.title.search":       samplePage,
	"page.title.login":        samplePage,
	"page.nav.home":           nil,
	"page.nav.search":         nil,
	"page.nav.signers":        nil,
	"page.nav.logout":         nil,
	"page.tally.counted":      sampleTally,
	"page.tally.pending":      sampleTally,
	"page.tally.batches":      sampleTally,
	"page.tally.others":       sampleTally,
	"page.batches.heading":    nil,
	"page.batch.line":         BatchLine{Number: 3, Count: 2, Created: time.Date(2024, 5, 6, 10, 0, 0, 0, time.UTC)},
	"page.delivery":           Delivery{State: "deferred", Next: time.Date(2024, 5, 6, 10, 0, 0, 0, time.UTC), Error: "451 4.3.0 later"},
	"page.batch.heading":      sampleBatch(),
	"page.batch.facts":        sampleBatch(),
	"page.batch.span":         sampleBatch(),
	"page.batch.copies":       nil,
	"page.batch.downloads":    nil,
	"page.batch.csv_link":     sampleBatch(),
	"page.batch.eml_link":     nil,
	"page.batch.eml_filename": sampleBatch(),
	"page.batch.signers":      nil,
	"page.batch.texts":        nil,
	"page.batch.texts_help":   sampleBatch(),
	"page.batch.letter":       sampleBatch().Letters[0],
	"page.batch.purged":       nil,
	"page.label.from":         nil,
	"page.label.received":     nil,
	"page.label.verified":     nil,
	"page.label.subject":      nil,
	"page.letter.gone":        nil,
	"page.letter.state":       LetterState{Batch: 3},
	"page.search.heading":     nil,
	"page.search.label":       nil,
	"page.search.button":      nil,
	"page.search.help":        nil,
	"page.search.results":     Search{Query: "maria", Found: 120, Shown: 100, Scanned: 20000, Cut: true},
	"page.search.cut":         Search{Query: "maria", Found: 120, Shown: 100, Scanned: 20000, Cut: true},
	"page.login.heading":      nil,
	"page.login.intro":        samplePage,
	"page.login.label":        nil,
	"page.login.button":       nil,
	"page.login.wrong":        nil,
	"page.signers_filename":   nil,
	"page.error.not_found":    samplePage,
	"page.error.busy":         nil,
	"page.error.internal":     nil,

	"supporter.confirm.subject": sampleSupporter,
	"supporter.confirm.body":    sampleSupporter,
	"supporter.receipt.subject": sampleSupporter,
	"supporter.receipt.body":    sampleSupporter,
}

var sampleSupporter = Supporter{Campaign: "Libertad a los presos políticos", Address: "ana@sin-firma.example",
	LetterID: "L0000001A", Received: time.Date(2024, 5, 6, 10, 0, 0, 0, time.UTC),
	Expires: time.Date(2024, 5, 13, 10, 0, 0, 0, time.UTC), Count: 120}

var samplePage = Page{Campaign: "Libertad a los presos políticos", Batch: 3}

var sampleTally = Tally{Counted: 1234, Pending: 12, Batches: 13, Duplicates: 40, Held: 2}

func TestLanguages(t *testing.T) {
	if got := Languages(); !slices.Equal(got, []string{"en", "es"}) {
		t.Errorf("languages %q", got)
	}
	if _, err := New("fr", nil); err == nil || !strings.Contains(err.Error(), `"fr"`) {
		t.Errorf("an unknown language: %v", err)
	}
}

// Every catalogue defines the same messages, and each one runs with its
// sample data in every language.
func TestCataloguesMatch(t *testing.T) {
	langs := Languages()
	keys := map[string][]string{}
	for _, l := range langs {
		k, err := Keys(l)
		if err != nil {
			t.Fatal(err)
		}
		if len(k) == 0 {
			t.Fatalf("%s: no messages", l)
		}
		keys[l] = k
	}
	for _, a := range langs {
		for _, b := range langs {
			for _, k := range keys[a] {
				if !slices.Contains(keys[b], k) {
					t.Errorf("%q is in the %s catalogue but not in %s", k, a, b)
				}
			}
		}
	}
	for _, l := range langs {
		c, err := New(l, santiago)
		if err != nil {
			t.Fatal(err)
		}
		for _, k := range keys[l] {
			data, ok := samples[k]
			if !ok {
				t.Errorf("no sample data for %q: add one to samples", k)
				continue
			}
			out, err := c.Text(k, data)
			if err != nil {
				t.Errorf("%s %q: %v", l, k, err)
			} else if strings.TrimSpace(out) == "" {
				t.Errorf("%s %q is empty", l, k)
			}
		}
	}
}

// Each verdict and note has words of its own in each language: none falls
// through to the word it was given, and no two read the same.
func TestVerdictsAndNotesHaveWords(t *testing.T) {
	for _, l := range Languages() {
		c, err := New(l, nil)
		if err != nil {
			t.Fatal(err)
		}
		seen := map[string]string{}
		for _, k := range verdictKinds {
			out, err := c.Text("verdict", Verdict{Kind: k, Domain: "dominio.cl"})
			if err != nil {
				t.Fatal(err)
			}
			if prev, dup := seen[out]; dup {
				t.Errorf("%s: verdicts %s and %s both read %q", l, prev, k, out)
			}
			seen[out] = k
			if strings.Contains(out, "\n") {
				t.Errorf("%s: verdict %s spans lines: %q", l, k, out)
			}
		}
		for _, k := range noteKinds {
			out, err := c.Text("batch.note", Note{Kind: k, Detail: "detalle"})
			if err != nil {
				t.Fatal(err)
			}
			if out == "("+k+")" || strings.Contains(out, "\n") {
				t.Errorf("%s: note %s reads %q", l, k, out)
			}
			if (k == "unreadable" || k == "decode_error") && !strings.Contains(out, "detalle") {
				t.Errorf("%s: note %s drops its detail: %q", l, k, out)
			}
		}
	}
}

func TestVerdictWords(t *testing.T) {
	tests := []struct {
		lang string
		v    Verdict
		want string
	}{
		{"es", Verdict{"dkim", "gmail.com"}, "firma DKIM de gmail.com"},
		{"es", Verdict{"spf", "dominio.cl"}, "SPF de dominio.cl (la envió un servidor autorizado por ese dominio)"},
		{"es", Verdict{"confirmed", ""}, "confirmada por respuesta de quien la envió"},
		{"es", Verdict{"admin", ""}, "liberada por un administrador (no verificada)"},
		{"es", Verdict{"unverified", ""}, "SIN VERIFICAR (nada prueba que esta dirección la haya enviado)"},
		{"es", Verdict{"", ""}, "SIN VERIFICAR (nada prueba que esta dirección la haya enviado)"},
		{"en", Verdict{"dkim", "gmail.com"}, "DKIM signature from gmail.com"},
		{"en", Verdict{"spf", "dominio.cl"}, "SPF of dominio.cl (sent from a server that domain authorises)"},
		{"en", Verdict{"unverified", ""}, "UNVERIFIED (nothing proves this address sent it)"},
	}
	for _, tt := range tests {
		c, err := New(tt.lang, nil)
		if err != nil {
			t.Fatal(err)
		}
		if got, err := c.Text("verdict", tt.v); err != nil || got != tt.want {
			t.Errorf("%s %+v: %q, %v; want %q", tt.lang, tt.v, got, err, tt.want)
		}
	}
}

func TestTimeIsLocalWithOffset(t *testing.T) {
	winter := time.Date(2024, 7, 1, 16, 5, 0, 0, time.UTC)  // Chile: UTC-4
	summer := time.Date(2024, 1, 15, 16, 5, 0, 0, time.UTC) // Chile: UTC-3
	tests := []struct {
		lang string
		loc  *time.Location
		t    time.Time
		want string
	}{
		{"es", santiago, winter, "01-07-2024 12:05 (UTC-04:00)"},
		{"es", santiago, summer, "15-01-2024 13:05 (UTC-03:00)"},
		{"en", santiago, winter, "1 Jul 2024 12:05 (UTC-04:00)"},
		{"en", nil, winter, "1 Jul 2024 16:05 (UTC+00:00)"},
	}
	for _, tt := range tests {
		c, err := New(tt.lang, tt.loc)
		if err != nil {
			t.Fatal(err)
		}
		if got := c.Time(tt.t); got != tt.want {
			t.Errorf("%s %v: %q, want %q", tt.lang, tt.loc, got, tt.want)
		}
	}
	// The same in a template, through the catalogue's own zone.
	c, _ := New("es", santiago)
	b := sampleBatch()
	b.First = winter
	out, err := c.Text("batch.summary", b)
	if err != nil || !strings.Contains(out, "Primera carta: 01-07-2024 12:05 (UTC-04:00)") {
		t.Errorf("summary time: %v\n%s", err, out)
	}
}

func TestSubjectPlural(t *testing.T) {
	tests := []struct {
		lang  string
		count int
		want  string
	}{
		{"es", 1, "[C] lote 3: 1 carta"},
		{"es", 2, "[C] lote 3: 2 cartas"},
		{"en", 1, "[C] batch 3: 1 letter"},
		{"en", 25, "[C] batch 3: 25 letters"},
	}
	for _, tt := range tests {
		c, _ := New(tt.lang, nil)
		got, err := c.Text("batch.subject", Batch{Campaign: "C", Number: 3, Count: tt.count})
		if err != nil || got != tt.want {
			t.Errorf("%s %d: %q, %v; want %q", tt.lang, tt.count, got, err, tt.want)
		}
	}
}

// A missing field is an error, not "<no value>" in a letter to organisers.
func TestMissingDataFails(t *testing.T) {
	c, _ := New("es", nil)
	if out, err := c.Text("batch.subject", map[string]any{"Number": 1}); err == nil {
		t.Errorf("no error; got %q", out)
	}
	if _, err := c.Text("no.such.key", nil); err == nil {
		t.Errorf("an unknown key gave no error")
	}
}

// A part of a split batch says so in its subject, its file name and its
// summary, in each language, and numbers its letters in the whole batch.
func TestBatchPart(t *testing.T) {
	part := sampleBatch()
	part.Part, part.Parts, part.BatchCount, part.FirstN, part.LastN = 2, 3, 20, 9, 13
	for i := range part.Letters {
		part.Letters[i].N = 9 + i
	}
	one := part
	one.LastN = 9
	for _, c := range []struct {
		lang                          string
		data                          Batch
		subject, csv, intro, numbered string
	}{
		{"es", part, "[Libertad a los presos políticos] lote 7, parte 2 de 3: 2 cartas", "lote-7-parte-2.csv",
			"Este lote tiene 20 cartas. Su servidor de correo no lo aceptó en un solo mensaje, por su tamaño, así que sus cartas llegan en 3 mensajes más pequeños. Este trae las cartas 9 a 13.\n",
			"Carta 13 de 20 · "},
		{"es", one, "", "", "Este trae la carta 9.\n", "Carta 9 de 20 · "},
		{"en", part, "[Libertad a los presos políticos] batch 7, part 2 of 3: 2 letters", "batch-7-part-2.csv",
			"This batch has 20 letters. Your mail server did not accept it as one message, as it was too large, so its letters come in 3 smaller messages. This one carries letters 9 to 13.\n",
			"Letter 13 of 20 · "},
		{"en", one, "", "", "This one carries letter 9.\n", "Letter 9 of 20 · "},
	} {
		cat, err := New(c.lang, nil)
		if err != nil {
			t.Fatal(err)
		}
		for key, want := range map[string]string{"batch.subject": c.subject, "batch.csv_filename": c.csv} {
			if got, err := cat.Text(key, c.data); want != "" && (err != nil || got != want) {
				t.Errorf("%s %s = %q, %v; want %q", c.lang, key, got, err, want)
			}
		}
		summary, err := cat.Text("batch.summary", c.data)
		if err != nil {
			t.Fatal(err)
		}
		head, _, _ := strings.Cut(summary, "\n\n")
		if !strings.HasSuffix(head, ", "+map[string]string{"es": "parte", "en": "part"}[c.lang]+" 2 "+map[string]string{"es": "de", "en": "of"}[c.lang]+" 3: 2 "+map[string]string{"es": "cartas", "en": "letters"}[c.lang]) {
			t.Errorf("%s summary starts %q", c.lang, head)
		}
		for _, want := range []string{c.intro, c.numbered} {
			if !strings.Contains(summary, want) {
				t.Errorf("%s summary lacks %q:\n%s", c.lang, want, summary)
			}
		}
	}
}
