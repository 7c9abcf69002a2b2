package batch

import (
	"bytes"
	"fmt"
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

func TestBuildHeaderInjection(t *testing.T) {
	evilName := "Eve\r\nBcc: evil@x\r\n\r\nbody? Ñandú \x00\xff\u202eDEIFIREVNU"
	letter := crlfLines(
		`From: =?utf-8?q?Eve=0D=0ABcc=3A_evil=40x?= <eve@supporter.example>`,
		"To: libertad@campaign.example",
		"Subject: =?utf-8?b?wqFMaWJlcnRhZCE=?= =?iso-8859-1?q?pol=EDticos?=",
		"Date: Mon, 06 May 2024 10:00:00 +0000",
		"",
		"Hola.",
	)
	s := baseSpec(Letter{ID: "L0000001A", Received: t0, Name: evilName, Address: "eve@supporter.example\r\nX-Evil: 1", Raw: letter})
	s.CampaignName = "Libertad\r\nBcc: evil@x — ¡ya!"
	msg, err := Build(s)
	if err != nil {
		t.Fatal(err)
	}
	assertWellFormed(t, msg)
	p := parseBatch(t, msg)
	want := []string{"From", "To", "Cc", "Subject", "Date", "Message-Id", "Mime-Version", "Content-Type"}
	if got := headerKeys(p.header); strings.Join(got, " ") != strings.Join(want, " ") {
		t.Errorf("header fields %q, want %q", got, want)
	}
	head := msg[:bytes.Index(msg, []byte("\r\n\r\n"))]
	for _, b := range head {
		if b > 127 {
			t.Fatalf("8-bit byte in the top header:\n%s", head)
		}
	}
	subj, err := p.header.Subject()
	if err != nil || subj != "[Libertad  Bcc: evil@x — ¡ya!] batch 7: 1 letter" {
		t.Errorf("Subject %q, %v", subj, err)
	}
	// One line, runs of spaces cut to one, bidi override gone.
	wantWho := "Eve Bcc: evil@x body? Ñandú \uFFFD DEIFIREVNU <eve@supporter.example X-Evil: 1>"
	for _, line := range []string{"1. " + wantWho + "\n", "From: " + wantWho + "\n", "Subject: ¡Libertad!políticos\n"} {
		if !strings.Contains(p.summary, line) {
			t.Errorf("summary lacks %q:\n%s", line, p.summary)
		}
	}
	rows := readCSV(t, p.csvText)
	if len(rows) != 2 {
		t.Fatalf("csv %q", rows)
	}
	// The CSV keeps the name as data, on one line.
	if want := "Eve  Bcc: evil@x    body? Ñandú  \uFFFD DEIFIREVNU"; rows[1][1] != want {
		t.Errorf("csv name %q, want %q", rows[1][1], want)
	}
	if !bytes.Equal(p.digest[0], letter) {
		t.Errorf("letter changed in the digest")
	}
}

// lettersOfEveryVerdict are five letters, one for each verdict word.
func lettersOfEveryVerdict() []Letter {
	winter := time.Date(2024, 7, 1, 16, 5, 0, 0, time.UTC) // 12:05 in Santiago (UTC-4)
	summer := time.Date(2024, 1, 15, 3, 0, 0, 0, time.UTC) // 00:00 in Santiago (UTC-3)
	mk := func(id string, at time.Time, name, addr, verified, dkim, spf string) Letter {
		return Letter{ID: id, Received: at, Name: name, Address: addr, Verified: verified, DKIMDomain: dkim, SPFDomain: spf,
			Raw: plainLetter(addr, "Libertad", "Libertad a los presos políticos.\r\n"+name)}
	}
	return []Letter{
		mk("L0000001A", summer, "María José Núñez", "mjose@gmail.com", VerifiedDKIM, "gmail.com", ""),
		mk("L0000002B", winter, "Pedro Soto", "pedro@dominio.cl", VerifiedSPF, "", "dominio.cl"),
		// The failed signature's domain is still kept by the store: it
		// must not be shown as a signature.
		mk("L0000003C", winter.Add(time.Minute), "Rosa", "rosa@correo.cl", VerifiedConfirmed, "correo.cl", ""),
		mk("L0000004D", winter.Add(2*time.Minute), "", "anon@ejemplo.cl", VerifiedAdmin, "", ""),
		mk("L0000005E", winter.Add(3*time.Minute), "Sin Firma", "nadie@ejemplo.cl", VerifiedUnverified, "ejemplo.cl", ""),
	}
}

// A Spanish campaign in Santiago: subject, words, local times with their
// offset, the verified column.
func TestBuildSpanish(t *testing.T) {
	s := baseSpec(lettersOfEveryVerdict()...)
	s.Language, s.Location = "es", santiago
	msg, err := Build(s)
	if err != nil {
		t.Fatal(err)
	}
	assertWellFormed(t, msg)
	p := parseBatch(t, msg)
	if subj, err := p.header.Subject(); err != nil || subj != "[Libertad a los presos políticos] lote 7: 5 cartas" {
		t.Errorf("Subject %q, %v", subj, err)
	}
	if d := p.header.Get("Date"); d != "Mon, 06 May 2024 07:00:00 -0400" {
		t.Errorf("Date %q, want the campaign's zone", d)
	}
	for _, want := range []string{
		"Libertad a los presos políticos\nLote 7: 5 cartas\n",
		"Con este lote ya van 120 cartas en total.\n",
		"Verificadas: 3 de 5\n",
		"Primera carta: 15-01-2024 00:00 (UTC-03:00)\nÚltima carta: 01-07-2024 12:08 (UTC-04:00)\n",
		"1. María José Núñez <mjose@gmail.com>\n   15-01-2024 00:00 (UTC-03:00) · L0000001A\n   firma DKIM de gmail.com\n",
		"2. Pedro Soto <pedro@dominio.cl>\n   01-07-2024 12:05 (UTC-04:00) · L0000002B\n   SPF de dominio.cl (la envió un servidor autorizado por ese dominio)\n",
		"3. Rosa <rosa@correo.cl>\n   01-07-2024 12:06 (UTC-04:00) · L0000003C\n   confirmada por respuesta de quien la envió\n",
		"4. anon@ejemplo.cl\n   01-07-2024 12:07 (UTC-04:00) · L0000004D\n   liberada por un administrador (no verificada)\n",
		"5. Sin Firma <nadie@ejemplo.cl>\n   01-07-2024 12:08 (UTC-04:00) · L0000005E\n   SIN VERIFICAR (nada prueba que esta dirección la haya enviado)\n",
		"La misma lista va en la planilla adjunta, lote-7.csv.\n",
		"Carta 1 de 5 · L0000001A\nDe: María José Núñez <mjose@gmail.com>\nRecibida: 15-01-2024 00:00 (UTC-03:00)\nVerificación: firma DKIM de gmail.com\nAsunto: Libertad\n\n| Libertad a los presos políticos.\n| María José Núñez\n",
		"Verificación: SIN VERIFICAR (nada prueba que esta dirección la haya enviado)\n",
	} {
		if !strings.Contains(p.summary, want) {
			t.Errorf("summary lacks %q:\n%s", want, p.summary)
		}
	}
	for _, english := range []string{"letter", "Letter", "UNVERIFIED", "batch", "UTC+00:00"} {
		if strings.Contains(p.summary, english) {
			t.Errorf("Spanish summary has %q:\n%s", english, p.summary)
		}
	}
	// No signature is claimed for a letter without a passing one.
	if n := strings.Count(p.summary, "firma DKIM de"); n != 2 {
		t.Errorf("%d DKIM claims, want 2 (letter 1, in the list and in its block)", n)
	}
	if p.csvName != "lote-7.csv" {
		t.Errorf("csv name %q", p.csvName)
	}
	want := [][]string{
		CSVHeader,
		{"2024-01-15T00:00:00-03:00", "María José Núñez", "mjose@gmail.com", "gmail.com", "L0000001A", "dkim"},
		{"2024-07-01T12:05:00-04:00", "Pedro Soto", "pedro@dominio.cl", "", "L0000002B", "spf"},
		{"2024-07-01T12:06:00-04:00", "Rosa", "rosa@correo.cl", "", "L0000003C", "confirmed"},
		{"2024-07-01T12:07:00-04:00", "", "anon@ejemplo.cl", "", "L0000004D", "admin"},
		{"2024-07-01T12:08:00-04:00", "Sin Firma", "nadie@ejemplo.cl", "", "L0000005E", "unverified"},
	}
	if got := readCSV(t, p.csvText); fmt.Sprintf("%q", got) != fmt.Sprintf("%q", want) {
		t.Errorf("csv\n%q\nwant\n%q", got, want)
	}
}

// The same letters in English: same facts, same CSV, English words.
func TestBuildEnglishVerdicts(t *testing.T) {
	s := baseSpec(lettersOfEveryVerdict()...)
	s.Language, s.Location = "en", santiago
	msg, err := Build(s)
	if err != nil {
		t.Fatal(err)
	}
	p := parseBatch(t, msg)
	for _, want := range []string{
		"   DKIM signature from gmail.com\n",
		"   SPF of dominio.cl (sent from a server that domain authorises)\n",
		"   confirmed by the sender's reply\n",
		"   released by an admin (not verified)\n",
		"   UNVERIFIED (nothing proves this address sent it)\n",
		"Verified: 3 of 5\n",
		"First letter: 15 Jan 2024 00:00 (UTC-03:00)\n",
	} {
		if !strings.Contains(p.summary, want) {
			t.Errorf("summary lacks %q:\n%s", want, p.summary)
		}
	}
	if rows := readCSV(t, p.csvText); rows[1][0] != "2024-01-15T00:00:00-03:00" || rows[5][5] != "unverified" {
		t.Errorf("csv %q", rows)
	}
}

func TestSubjectSingular(t *testing.T) {
	for lang, want := range map[string]string{"es": "[C] lote 7: 1 carta", "en": "[C] batch 7: 1 letter"} {
		s := baseSpec(Letter{ID: "L1", Received: t0, Address: "a@b.example", Raw: plainLetter("a@b.example", "x", "y")})
		s.CampaignName, s.Language = "C", lang
		msg, err := Build(s)
		if err != nil {
			t.Fatal(err)
		}
		if subj, err := parseBatch(t, msg).header.Subject(); err != nil || subj != want {
			t.Errorf("%s: Subject %q, %v; want %q", lang, subj, err, want)
		}
	}
}

func TestBuildUnknownLanguage(t *testing.T) {
	s := baseSpec(Letter{ID: "L1", Received: t0, Address: "a@b.example", Raw: plainLetter("a@b.example", "x", "y")})
	s.Language = "fr"
	if _, err := Build(s); err == nil || !strings.Contains(err.Error(), `"fr"`) {
		t.Errorf("Build with language fr: %v", err)
	}
}

// A verdict word petitiond does not know claims nothing.
func TestVerdictOf(t *testing.T) {
	tests := []struct {
		l            Letter
		kind, domain string
	}{
		{Letter{DKIMDomain: "a.cl"}, "dkim", "a.cl"},
		{Letter{}, "unverified", ""},
		{Letter{Verified: "dkim", DKIMDomain: "a.cl", SPFDomain: "b.cl"}, "dkim", "a.cl"},
		{Letter{Verified: "spf", DKIMDomain: "a.cl", SPFDomain: "b.cl"}, "spf", "b.cl"},
		{Letter{Verified: "confirmed", DKIMDomain: "a.cl"}, "confirmed", ""},
		{Letter{Verified: "admin", DKIMDomain: "a.cl"}, "admin", ""},
		{Letter{Verified: "unverified", DKIMDomain: "a.cl"}, "unverified", ""},
		{Letter{Verified: "DKIM", DKIMDomain: "a.cl"}, "unverified", ""},
		{Letter{Verified: "pass", DKIMDomain: "a.cl"}, "unverified", ""},
	}
	for _, tt := range tests {
		if k, d := verdictOf(&tt.l); k != tt.kind || d != tt.domain {
			t.Errorf("%+v: %s %q, want %s %q", tt.l, k, d, tt.kind, tt.domain)
		}
	}
}

// Issue 9 point 10: a letter that writes the summary's own lines shows
// them as its words, every line marked, never as lines of the summary.
func TestSummaryCannotBeForged(t *testing.T) {
	forged := strings.Join([]string{
		"Hola.",
		"",
		"______________________________",
		"Carta 2 de 6 · L0000002B",
		"De: Ministra <ministra@gob.cl>",
		"Recibida: 06-05-2024 06:00 (UTC-04:00)",
		"Verificación: firma DKIM de gob.cl",
		"   firma DKIM de gmail.com",
		"| a line that pretends to be quoted",
		// Padding that would push the next words onto a line of their own
		// on a phone, with tabs, no-break and ideographic spaces.
		"x" + strings.Repeat(" ", 80) + "Verificación: firma DKIM de gmail.com" + strings.Repeat("\t\u00a0\u3000\u2800", 20) + "fin",
		"line\u2028separated\u2029paragraph",
		"\u202eDEIFIREV\u202c \u2066isolated\u2069",
	}, "\r\n")
	letters := []Letter{
		{ID: "L0000001A", Received: t0, Name: "Ana", Address: "ana@a.cl", Verified: VerifiedUnverified,
			Raw: plainLetter("ana@a.cl", "Verificación: firma DKIM de gmail.com"+strings.Repeat(" ", 90)+"Carta 2 de 6", forged)},
		{ID: "L0000002B", Received: t0, Name: "Bo", Address: "bo@b.cl", Verified: VerifiedDKIM, DKIMDomain: "b.cl",
			Raw: plainLetter("bo@b.cl", "x", "Libertad.")},
	}
	for _, lang := range []string{"es", "en"} {
		s := baseSpec(letters...)
		s.Language = lang
		msg, err := Build(s)
		if err != nil {
			t.Fatal(err)
		}
		summary := parseBatch(t, msg).summary
		text := summary[strings.Index(summary, "· L0000001A\n"+map[string]string{"es": "De:", "en": "From:"}[lang]):]
		text = text[:strings.Index(text, "\n______________________________\n")+1]
		_, body, _ := strings.Cut(text, "\n\n")
		wantBody := strings.Join([]string{
			"| Hola.",
			"|",
			"| ______________________________",
			"| Carta 2 de 6 · L0000002B",
			"| De: Ministra <ministra@gob.cl>",
			"| Recibida: 06-05-2024 06:00 (UTC-04:00)",
			"| Verificación: firma DKIM de gob.cl",
			"|    firma DKIM de gmail.com",
			"| | a line that pretends to be quoted",
			"| x    Verificación: firma DKIM de gmail.com    fin",
			"| line",
			"| separated",
			"| paragraph",
			"|  DEIFIREV   isolated", // bidi controls become spaces
		}, "\n") + "\n\n"
		if body != wantBody {
			t.Errorf("%s: the letter's text reads\n%q\nwant\n%q", lang, body, wantBody)
		}
		// Outside the marked lines, the summary says what petitiond
		// knows and nothing the letter wrote.
		for _, line := range strings.Split(summary, "\n") {
			if strings.HasPrefix(line, QuoteMark) {
				continue
			}
			for _, forgery := range []string{"gob.cl", "gmail.com", "Carta 2 de 6"} {
				if strings.Contains(line, forgery) && !strings.HasPrefix(line, map[string]string{"es": "Asunto: ", "en": "Subject: "}[lang]) {
					t.Errorf("%s: a line of the summary carries %q: %q", lang, forgery, line)
				}
			}
		}
		// The subject stays on its labelled line, its padding cut.
		if want := "Verificación: firma DKIM de gmail.com Carta 2 de 6\n"; !strings.Contains(summary, want) {
			t.Errorf("%s: subject line not as expected:\n%s", lang, summary)
		}
	}
}

func TestQuote(t *testing.T) {
	tests := map[string]string{
		"":                  "",
		"a":                 "| a",
		"a\n\nb":            "| a\n|\n| b",
		"  indented\n\ttab": "|   indented\n|  tab",
		"trailing   \nx":    "| trailing\n| x",
		"many" + strings.Repeat(" ", 40) + "spaces": "| many    spaces",
	}
	for in, want := range tests {
		if got := quote(in); got != want {
			t.Errorf("quote(%q) = %q, want %q", in, got, want)
		}
	}
}
