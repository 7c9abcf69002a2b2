package batch

import (
	"bytes"
	"crypto"
	"crypto/ed25519"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"encoding/base64"
	"encoding/csv"
	"fmt"
	"io"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/emersion/go-message"
	"github.com/emersion/go-message/mail"
	"github.com/emersion/go-msgauth/dkim"

	"github.com/petitiond/petitiond/crlf"
)

// testKeys is a fake DNS: TXT records for DKIM selectors, by query name.
type testKeys map[string]string

func (k testKeys) lookupTXT(name string) ([]string, error) {
	if rec, ok := k[name]; ok {
		return []string{rec}, nil
	}
	return nil, fmt.Errorf("no TXT record for %s", name)
}

// addKey publishes the public half of key as selector._domainkey.domain.
func (k testKeys) addKey(t testing.TB, domain, selector string, key crypto.Signer) {
	t.Helper()
	var rec string
	switch pub := key.Public().(type) {
	case ed25519.PublicKey:
		rec = "v=DKIM1; k=ed25519; p=" + base64.StdEncoding.EncodeToString(pub)
	case *rsa.PublicKey:
		der, err := x509.MarshalPKIXPublicKey(pub)
		if err != nil {
			t.Fatal(err)
		}
		rec = "v=DKIM1; k=rsa; p=" + base64.StdEncoding.EncodeToString(der)
	default:
		t.Fatalf("key type %T", pub)
	}
	k[selector+"._domainkey."+domain] = rec
}

func (k testKeys) verify(t testing.TB, msg []byte) []*dkim.Verification {
	t.Helper()
	vs, err := dkim.VerifyWithOptions(bytes.NewReader(msg), &dkim.VerifyOptions{LookupTXT: k.lookupTXT})
	if err != nil {
		t.Fatalf("dkim verify: %v", err)
	}
	return vs
}

func newEd25519(t testing.TB) ed25519.PrivateKey {
	t.Helper()
	_, key, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	return key
}

func newRSA(t testing.TB) *rsa.PrivateKey {
	t.Helper()
	key, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		t.Fatal(err)
	}
	return key
}

// crlfLines joins lines with CRLF, ending with one.
func crlfLines(lines ...string) []byte {
	return []byte(strings.Join(lines, "\r\n") + "\r\n")
}

// plainLetter is a simple text/plain letter from addr.
func plainLetter(fromField, subject, body string) []byte {
	return crlfLines(
		"From: "+fromField,
		"To: libertad@campaign.example",
		"Subject: "+subject,
		"Date: Mon, 06 May 2024 10:00:00 +0000",
		"Message-ID: <"+fmt.Sprint(len(body))+"."+fmt.Sprint(len(subject))+"@supporter.example>",
		"MIME-Version: 1.0",
		"Content-Type: text/plain; charset=utf-8",
		"Content-Transfer-Encoding: 8bit",
		"",
		body,
	)
}

// dkimSign signs a letter the way a supporter's provider would.
func dkimSign(t testing.TB, raw []byte, domain, selector string, key crypto.Signer) []byte {
	t.Helper()
	var out bytes.Buffer
	err := dkim.Sign(&out, bytes.NewReader(raw), &dkim.SignOptions{
		Domain:                 domain,
		Selector:               selector,
		Signer:                 key,
		HeaderCanonicalization: dkim.CanonicalizationRelaxed,
		BodyCanonicalization:   dkim.CanonicalizationRelaxed,
		HeaderKeys:             []string{"From", "To", "Subject", "Date", "Message-ID", "Content-Type"},
	})
	if err != nil {
		t.Fatal(err)
	}
	return out.Bytes()
}

var t0 = time.Date(2024, 5, 6, 10, 0, 0, 0, time.UTC)

func baseSpec(letters ...Letter) Spec {
	return Spec{
		Number:       7,
		CampaignName: "Libertad a los presos políticos",
		From:         "relay@campaign.example",
		Recipients:   []string{"familias@ofapp.example", "copias@sr.example"},
		MessageID:    NewMessageID(7, "relay@campaign.example", t0.Add(time.Hour)),
		Date:         t0.Add(time.Hour),
		RunningTotal: 120,
		Letters:      letters,
	}
}

// parsedBatch is a batch message as a mail reader sees it.
type parsedBatch struct {
	header      mail.Header
	types       []string // the media types of the three top-level parts
	summary     string   // decoded
	csvName     string   // the CSV attachment's file name
	csvText     string   // decoded
	digestTypes []string // Content-Type of each digest part
	digestCTEs  []string
	digest      [][]byte // each digest part's body, decoded: the letter as received
}

// parseBatch parses msg with go-message, failing the test on anything that
// is not a well-formed batch.
func parseBatch(t testing.TB, msg []byte) *parsedBatch {
	t.Helper()
	e, err := message.Read(bytes.NewReader(msg))
	if err != nil {
		t.Fatalf("read message: %v", err)
	}
	p := &parsedBatch{header: mail.Header{Header: e.Header}}
	if mt, _, _ := e.Header.ContentType(); mt != "multipart/mixed" {
		t.Fatalf("top Content-Type %q", mt)
	}
	mr := e.MultipartReader()
	for i := 0; ; i++ {
		part, err := mr.NextPart()
		if err == io.EOF {
			break
		}
		if err != nil {
			t.Fatalf("part %d: %v", i, err)
		}
		mt, params, _ := part.Header.ContentType()
		p.types = append(p.types, mt)
		switch i {
		case 0, 1:
			if params["charset"] != "utf-8" {
				t.Errorf("part %d charset %q", i, params["charset"])
			}
			body, err := io.ReadAll(part.Body)
			if err != nil {
				t.Fatalf("part %d body: %v", i, err)
			}
			if i == 0 {
				// The quoted-printable line breaks decode as CRLF.
				p.summary = strings.ReplaceAll(string(body), "\r\n", "\n")
			} else {
				disp, dp, err := part.Header.ContentDisposition()
				if err != nil || disp != "attachment" {
					t.Errorf("csv disposition %q %v", disp, err)
				}
				p.csvName = dp["filename"]
				p.csvText = string(body)
			}
		case 2:
			dr := part.MultipartReader()
			if dr == nil {
				t.Fatalf("digest part is not multipart")
			}
			for {
				lp, err := dr.NextPart()
				if err == io.EOF {
					break
				}
				if err != nil {
					t.Fatalf("digest part: %v", err)
				}
				p.digestTypes = append(p.digestTypes, lp.Header.Get("Content-Type"))
				p.digestCTEs = append(p.digestCTEs, lp.Header.Get("Content-Transfer-Encoding"))
				// 7bit/8bit: go-message passes the bytes through; base64
				// it decodes.
				body, err := io.ReadAll(lp.Body)
				if err != nil {
					t.Fatalf("digest body: %v", err)
				}
				p.digest = append(p.digest, body)
			}
		}
	}
	if got := strings.Join(p.types, " "); got != "text/plain text/csv multipart/digest" {
		t.Fatalf("parts %q", got)
	}
	return p
}

// assertWellFormed checks the raw rules: CRLF only, no line over 998.
func assertWellFormed(t testing.TB, msg []byte) {
	t.Helper()
	if i := crlf.IndexBare(msg); i >= 0 {
		t.Fatalf("bare CR or LF at %d: %q", i, msg[max(0, i-40):min(len(msg), i+40)])
	}
	if !bytes.HasSuffix(msg, []byte("\r\n")) {
		t.Errorf("message does not end with CRLF")
	}
	head, _, _ := bytes.Cut(msg, []byte("\r\n\r\n"))
	for _, line := range bytes.Split(head, []byte("\r\n")) {
		if len(line) > 998 {
			t.Errorf("header line of %d bytes", len(line))
		}
		for _, c := range line {
			if c > 127 || c < ' ' && c != '\t' {
				t.Fatalf("header line with byte %#x: %q", c, line)
			}
		}
	}
}

// assertLinesFit checks that no line of msg, body included, is longer than
// 998 octets: what SMTP carries and 8bit allows.
func assertLinesFit(t testing.TB, msg []byte) {
	t.Helper()
	for i, line := range bytes.Split(msg, []byte("\r\n")) {
		if len(line) > 998 {
			t.Fatalf("line %d is %d octets long", i+1, len(line))
		}
	}
}

// readCSV reads the CSV attachment, which must start with a UTF-8 byte
// order mark.
func readCSV(t testing.TB, text string) [][]string {
	t.Helper()
	body, ok := strings.CutPrefix(text, "\ufeff")
	if !ok {
		t.Fatalf("CSV without a byte order mark: %q", text[:min(len(text), 40)])
	}
	rows, err := csv.NewReader(strings.NewReader(body)).ReadAll()
	if err != nil {
		t.Fatalf("csv: %v\n%s", err, body)
	}
	return rows
}

// headerKeys lists the top-level header field names in order.
func headerKeys(h mail.Header) []string {
	var keys []string
	for f := h.Fields(); f.Next(); {
		keys = append(keys, f.Key())
	}
	return keys
}

func TestBuild(t *testing.T) {
	keys := testKeys{}
	edKey, rsaKey := newEd25519(t), newRSA(t)
	keys.addKey(t, "supporter.example", "ed", edKey)
	keys.addKey(t, "mail.example.cl", "rsa", rsaKey)

	letters := []Letter{
		{
			ID: "L0000001A", Received: t0, Name: "Ana Pérez", Address: "ana@supporter.example", DKIMDomain: "supporter.example",
			Raw: dkimSign(t, plainLetter("Ana Pérez <ana@supporter.example>", "Libertad", "Exijo la libertad de los presos políticos.\r\nAna"), "supporter.example", "ed", edKey),
		},
		{
			ID: "L0000002B", Received: t0.Add(5 * time.Minute), Name: `Bob "the Builder", Jr.`, Address: "bob@mail.example.cl", DKIMDomain: "mail.example.cl",
			Raw: dkimSign(t, plainLetter(`"Bob \"the Builder\", Jr." <bob@mail.example.cl>`, "Carta", "Libertad ahora.\r\n"), "mail.example.cl", "rsa", rsaKey),
		},
		{
			ID: "L0000003C", Received: t0.Add(30 * time.Minute), Name: "", Address: "carla@unsigned.example",
			Raw: plainLetter("carla@unsigned.example", "Hola", "Sin firma."),
		},
	}
	s := baseSpec(letters...)
	msg, err := Build(s)
	if err != nil {
		t.Fatal(err)
	}
	assertWellFormed(t, msg)
	p := parseBatch(t, msg)

	// Headers: exactly these fields, in this order.
	want := []string{"From", "To", "Cc", "Subject", "Date", "Message-Id", "Mime-Version", "Content-Type", "Content-Transfer-Encoding"}
	if got := headerKeys(p.header); strings.Join(got, " ") != strings.Join(want, " ") {
		t.Errorf("header fields %q, want %q", got, want)
	}
	checkAddrs := func(key string, want ...string) {
		t.Helper()
		addrs, err := p.header.AddressList(key)
		if err != nil {
			t.Fatalf("%s: %v", key, err)
		}
		var got []string
		for _, a := range addrs {
			got = append(got, a.Address)
		}
		if strings.Join(got, ",") != strings.Join(want, ",") {
			t.Errorf("%s = %q, want %q", key, got, want)
		}
	}
	checkAddrs("From", "relay@campaign.example")
	checkAddrs("To", "familias@ofapp.example")
	checkAddrs("Cc", "copias@sr.example")
	if subj, err := p.header.Subject(); err != nil || subj != "[Libertad a los presos políticos] batch 7: 3 letters" {
		t.Errorf("Subject %q, %v", subj, err)
	}
	if raw := p.header.Get("Subject"); !strings.Contains(raw, "=?utf-8?") {
		t.Errorf("non-ASCII subject not RFC 2047-encoded: %q", raw)
	}
	if d, err := p.header.Date(); err != nil || !d.Equal(s.Date) {
		t.Errorf("Date %v, %v", d, err)
	}
	if id, err := p.header.MessageID(); err != nil || "<"+id+">" != s.MessageID {
		t.Errorf("Message-ID %q, %v, want %s", id, err, s.MessageID)
	}
	if v := p.header.Get("MIME-Version"); v != "1.0" {
		t.Errorf("MIME-Version %q", v)
	}

	// Summary (English: the Spec names no language).
	for _, want := range []string{
		"Batch 7: 3 letters\n", "Running total: 120 letters\n", "Verified: 2 of 3\n",
		"First letter: 6 May 2024 10:00 (UTC+00:00)\nLast letter: 6 May 2024 10:30 (UTC+00:00)\n",
		"1. Ana Pérez <ana@supporter.example>\n   6 May 2024 10:00 (UTC+00:00) · L0000001A\n   DKIM signature from supporter.example\n",
		"2. Bob \"the Builder\", Jr. <bob@mail.example.cl>\n   6 May 2024 10:05 (UTC+00:00) · L0000002B\n   DKIM signature from mail.example.cl\n",
		"3. carla@unsigned.example\n   6 May 2024 10:30 (UTC+00:00) · L0000003C\n   UNVERIFIED (nothing proves this address sent it)\n",
		"| Exijo la libertad de los presos políticos.\n| Ana\n",
		"| Libertad ahora.\n", "| Sin firma.\n",
	} {
		if !strings.Contains(p.summary, want) {
			t.Errorf("summary lacks %q:\n%s", want, p.summary)
		}
	}

	// CSV.
	if p.csvName != "batch-7.csv" {
		t.Errorf("csv filename %q", p.csvName)
	}
	rows := readCSV(t, p.csvText)
	wantRows := [][]string{
		{"received", "name", "address", "dkim_domain", "letter_id", "verified"},
		{"2024-05-06T10:00:00Z", "Ana Pérez", "ana@supporter.example", "supporter.example", "L0000001A", "dkim"},
		{"2024-05-06T10:05:00Z", `Bob "the Builder", Jr.`, "bob@mail.example.cl", "mail.example.cl", "L0000002B", "dkim"},
		{"2024-05-06T10:30:00Z", "", "carla@unsigned.example", "", "L0000003C", "unverified"},
	}
	if fmt.Sprintf("%q", rows) != fmt.Sprintf("%q", wantRows) {
		t.Errorf("csv rows\n%q\nwant\n%q", rows, wantRows)
	}

	// Digest: the letters untouched, still verifying.
	if len(p.digest) != len(letters) {
		t.Fatalf("%d digest parts, want %d", len(p.digest), len(letters))
	}
	for i, l := range letters {
		if !bytes.Equal(p.digest[i], l.Raw) {
			t.Errorf("digest part %d differs from the letter:\n%q\n%q", i, p.digest[i], l.Raw)
		}
		// Ana's name is raw UTF-8 in her From: (RFC 6532).
		if want := []string{"message/global", "message/rfc822", "message/rfc822"}[i]; p.digestTypes[i] != want {
			t.Errorf("digest part %d type %q, want %q", i, p.digestTypes[i], want)
		}
		if l.DKIMDomain == "" {
			continue
		}
		vs := keys.verify(t, p.digest[i])
		if len(vs) != 1 || vs[0].Err != nil || vs[0].Domain != l.DKIMDomain {
			t.Errorf("letter %s: DKIM from the digest: %+v", l.ID, vs[0])
		}
	}
	// Ana's letter is 8bit (é), Carla's 7bit.
	if p.digestCTEs[0] != "8bit" || p.digestCTEs[2] != "7bit" {
		t.Errorf("digest encodings %q", p.digestCTEs)
	}
	if p.header.Get("Content-Transfer-Encoding") != "8bit" {
		t.Errorf("an 8bit body must be labelled 8bit at the top")
	}
}

func TestBuildOneRecipientHasNoCc(t *testing.T) {
	s := baseSpec(Letter{ID: "L1", Received: t0, Address: "a@b.example", Raw: plainLetter("a@b.example", "x", "y")})
	s.Recipients = s.Recipients[:1]
	msg, err := Build(s)
	if err != nil {
		t.Fatal(err)
	}
	p := parseBatch(t, msg)
	if p.header.Has("Cc") {
		t.Errorf("Cc with one recipient: %q", p.header.Get("Cc"))
	}
	if p.header.Has("Content-Transfer-Encoding") || p.digestCTEs[0] != "7bit" {
		t.Errorf("7bit letter labelled 8bit")
	}
}

// A line over 998 bytes must reach the reader as it was received: go-message's own
// 7bit/8bit writer would wrap it and break the letter's signature, and the
// 8bit label would be false (RFC 2045 2.8), so it travels base64-encoded as
// message/global.
func TestBuildLongLinesUntouched(t *testing.T) {
	keys := testKeys{}
	key := newEd25519(t)
	keys.addKey(t, "supporter.example", "s", key)
	raw := dkimSign(t, plainLetter("a@supporter.example", "x", strings.Repeat("libertad ", 300)+"\r\nfin"), "supporter.example", "s", key)
	s := baseSpec(Letter{ID: "L1", Received: t0, Address: "a@supporter.example", DKIMDomain: "supporter.example", Raw: raw})
	msg, err := Build(s)
	if err != nil {
		t.Fatal(err)
	}
	p := parseBatch(t, msg)
	if !bytes.Equal(p.digest[0], raw) {
		t.Fatalf("long line changed")
	}
	if p.digestCTEs[0] != "base64" || p.digestTypes[0] != "message/global" {
		t.Errorf("a line over 998 bytes carried as %q in %q", p.digestTypes[0], p.digestCTEs[0])
	}
	assertLinesFit(t, msg)
	if vs := keys.verify(t, p.digest[0]); vs[0].Err != nil {
		t.Errorf("DKIM: %v", vs[0].Err)
	}
}

// Inbound never stores bare CR or LF; if one got through anyway the batch
// must still be well-formed.
func TestBuildRepairsBareLF(t *testing.T) {
	raw := []byte("From: a@b.example\nSubject: x\n\nline one\n.\r\nMAIL FROM:<x@y>\rz")
	s := baseSpec(Letter{ID: "L1", Received: t0, Address: "a@b.example", Raw: raw})
	msg, err := Build(s)
	if err != nil {
		t.Fatal(err)
	}
	assertWellFormed(t, msg)
	p := parseBatch(t, msg)
	if want := []byte("From: a@b.example\r\nSubject: x\r\n\r\nline one\r\n.\r\nMAIL FROM:<x@y>\r\nz"); !bytes.Equal(p.digest[0], want) {
		t.Errorf("digest %q, want %q", p.digest[0], want)
	}
	if !strings.Contains(p.summary, "line endings had to be repaired") {
		t.Errorf("repair not noted")
	}
}

func TestBuildDeterministic(t *testing.T) {
	var letters []Letter
	for i := range 20 {
		letters = append(letters, Letter{
			ID: fmt.Sprintf("L%08d", i), Received: t0.Add(time.Duration(i) * time.Minute),
			Name: fmt.Sprintf("Persona %d", i), Address: fmt.Sprintf("p%d@x.example", i),
			Raw: plainLetter(fmt.Sprintf("p%d@x.example", i), "carta", strings.Repeat("libertad ", i)),
		})
	}
	a, err := Build(baseSpec(letters...))
	if err != nil {
		t.Fatal(err)
	}
	b, err := Build(baseSpec(letters...))
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(a, b) {
		t.Fatal("two builds of one spec differ")
	}
	// The same instants in another time zone, as after a trip through
	// the store, give the same bytes.
	santiago := time.FixedZone("CLT", -4*3600)
	moved := baseSpec(letters...)
	moved.Date = moved.Date.In(santiago)
	moved.Letters = append([]Letter(nil), letters...)
	for i := range moved.Letters {
		moved.Letters[i].Received = moved.Letters[i].Received.In(santiago)
	}
	if m, err := Build(moved); err != nil || !bytes.Equal(a, m) {
		t.Errorf("a change of time zone changed the message (%v)", err)
	}
	letters[3].Name = "Otra"
	c, err := Build(baseSpec(letters...))
	if err != nil {
		t.Fatal(err)
	}
	if boundaries(t, a)[0] == boundaries(t, c)[0] {
		t.Errorf("the boundary does not follow the content")
	}
}

// boundaries returns the multipart/mixed and multipart/digest boundaries.
func boundaries(t testing.TB, msg []byte) [2]string {
	t.Helper()
	re := regexp.MustCompile(`Content-Type: multipart/(?:mixed|digest); boundary="([^"]+)"`)
	m := re.FindAllSubmatch(msg, -1)
	if len(m) != 2 {
		t.Fatalf("found %d boundaries", len(m))
	}
	return [2]string{string(m[0][1]), string(m[1][1])}
}

// A letter that contains the very boundary the batch would otherwise get
// (or anything like one) must not be able to break out of its part.
func TestBuildBoundaryInLetter(t *testing.T) {
	first := baseSpec(Letter{ID: "L1", Received: t0, Address: "a@b.example", Raw: plainLetter("a@b.example", "x", "hi")})
	msg, err := Build(first)
	if err != nil {
		t.Fatal(err)
	}
	bs := boundaries(t, msg)
	evil := plainLetter("a@b.example", "x", "--"+bs[0]+"\r\n--"+bs[1]+"--\r\n--=_petitiond-mixed-\r\n")
	s := baseSpec(Letter{ID: "L1", Received: t0, Address: "a@b.example", Raw: evil})
	msg, err = Build(s)
	if err != nil {
		t.Fatal(err)
	}
	p := parseBatch(t, msg)
	if len(p.digest) != 1 || !bytes.Equal(p.digest[0], evil) {
		t.Errorf("letter escaped its part")
	}
	// And the loop that rehashes: content that holds the first candidate.
	seed := contentHash([]byte("abc"))
	b := pickBoundary("=_x-", seed, []byte("abc"))
	if got := pickBoundary("=_x-", seed, []byte("abc"+b)); got == b || strings.Contains("abc"+b, got) {
		t.Errorf("boundary %q occurs in content", got)
	}
}

func TestBuildErrors(t *testing.T) {
	good := func() Spec {
		return baseSpec(Letter{ID: "L1", Received: t0, Address: "a@b.example", Raw: plainLetter("a@b.example", "x", "y")})
	}
	tests := map[string]func(*Spec){
		"no letters":          func(s *Spec) { s.Letters = nil },
		"no recipients":       func(s *Spec) { s.Recipients = nil },
		"bad from":            func(s *Spec) { s.From = "not an address" },
		"from with a newline": func(s *Spec) { s.From = "relay@campaign.example\r\nBcc: x@y" },
		"bad recipient":       func(s *Spec) { s.Recipients = []string{"a@b.example", "a@b.example\r\nBcc: x@y"} },
		"bad message-id":      func(s *Spec) { s.MessageID = "<a b@c>" },
		"message-id newline":  func(s *Spec) { s.MessageID = "<a@c>\r\nBcc: x@y" },
		"no message-id":       func(s *Spec) { s.MessageID = "" },
		"no date":             func(s *Spec) { s.Date = time.Time{} },
	}
	for name, mutate := range tests {
		t.Run(name, func(t *testing.T) {
			s := good()
			mutate(&s)
			if _, err := Build(s); err == nil {
				t.Errorf("Build succeeded")
			}
		})
	}
	if _, err := Build(good()); err != nil {
		t.Errorf("good spec: %v", err)
	}
}

func TestNewMessageID(t *testing.T) {
	created := time.Unix(1714989600, 123456789)
	tests := map[string]string{
		"relay@campaign.example":          "<batch-12.1714989600123456789@campaign.example>",
		"Relay <relay@Campaign.Example>":  "<batch-12.1714989600123456789@campaign.example>",
		"relay@campaña.example":           "<batch-12.1714989600123456789@xn--campaa-0wa.example>",
		"no-domain":                       "<batch-12.1714989600123456789@localhost>",
		"relay@bad domain\r\nBcc: x@y.cl": "<batch-12.1714989600123456789@localhost>",
	}
	for from, want := range tests {
		got := NewMessageID(12, from, created)
		if got != want {
			t.Errorf("NewMessageID(%q) = %q, want %q", from, got, want)
		}
		if err := checkMessageID(got); err != nil {
			t.Errorf("%q: %v", got, err)
		}
	}
}

// benchLetters makes n letters of about 3 KB, half of them DKIM-signed.
func benchLetters(b testing.TB, n int) []Letter {
	key := newEd25519(b)
	para := strings.Repeat("Exigimos la libertad de las presas y los presos políticos de la revuelta de octubre de 2019. ", 30)
	letters := make([]Letter, n)
	for i := range letters {
		addr := fmt.Sprintf("persona%d@supporter.example", i)
		raw := plainLetter(addr, "Libertad", para)
		dom := ""
		if i%2 == 0 {
			raw = dkimSign(b, raw, "supporter.example", "s", key)
			dom = "supporter.example"
		}
		letters[i] = Letter{
			ID: fmt.Sprintf("L%07dA", i), Received: t0.Add(time.Duration(i) * time.Second),
			Name: fmt.Sprintf("Persona Número %d", i), Address: addr, DKIMDomain: dom, Raw: raw,
		}
	}
	return letters
}

func BenchmarkBuild1000(b *testing.B) {
	s := baseSpec(benchLetters(b, 1000)...)
	size := 0
	for _, l := range s.Letters {
		size += len(l.Raw)
	}
	b.SetBytes(int64(size))
	b.ReportAllocs()
	for b.Loop() {
		if _, err := Build(s); err != nil {
			b.Fatal(err)
		}
	}
}

func TestBuild1000Letters(t *testing.T) {
	if testing.Short() {
		t.Skip("slow")
	}
	s := baseSpec(benchLetters(t, 1000)...)
	start := time.Now()
	msg, err := Build(s)
	elapsed := time.Since(start)
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("1000 letters: %d bytes in %v", len(msg), elapsed)
	p := parseBatch(t, msg)
	if len(p.digest) != 1000 {
		t.Fatalf("%d digest parts", len(p.digest))
	}
	if rows := readCSV(t, p.csvText); len(rows) != 1001 {
		t.Fatalf("csv: %d rows", len(rows))
	}
	for i, l := range s.Letters {
		if !bytes.Equal(p.digest[i], l.Raw) {
			t.Fatalf("digest part %d differs", i)
		}
	}
}

func FuzzBuild(f *testing.F) {
	f.Add([]byte("From: a@b.example\r\nSubject: x\r\n\r\nhello\r\n"), "Ana")
	f.Add([]byte("From: a@b.example\r\nContent-Type: multipart/mixed; boundary=x\r\n\r\n--x\r\nContent-Type: text/plain; charset=iso-8859-1\r\nContent-Transfer-Encoding: quoted-printable\r\n\r\n=E9\r\n--x--\r\n"), "Eve\r\nBcc: x@y")
	f.Add([]byte("Content-Type: multipart/digest; boundary=d\r\n\r\n--d\r\n\r\nFrom: x\r\n\r\n--d--"), "\xff\x00")
	f.Add([]byte("Content-Type: text/html\r\n\r\n<p>a<script>b"), "=1+1")
	f.Add([]byte("\r\n\r\n"), "")
	f.Add([]byte("no header\n\rbare"), "\u202e")
	f.Fuzz(func(t *testing.T, raw []byte, name string) {
		fixed := plainLetter("a@b.example", "x", "fixed letter")
		s := baseSpec(
			Letter{ID: "L1", Received: t0, Name: "Fixed", Address: "a@b.example", Raw: fixed},
			Letter{ID: "L2", Received: t0.Add(time.Second), Name: name, Address: name + "@x.example", Raw: raw},
		)
		s.CampaignName = name
		s.Language, s.Location = []string{"es", "en"}[len(raw)%2], santiago
		msg, err := Build(s)
		if err != nil {
			t.Fatalf("Build: %v", err)
		}
		assertWellFormed(t, msg)
		p := parseBatch(t, msg)
		if len(p.digest) != 2 || !bytes.Equal(p.digest[0], fixed) {
			t.Fatalf("digest: %d parts", len(p.digest))
		}
		if want := crlf.Normalize(raw); !bytes.Equal(p.digest[1], want) {
			t.Fatalf("digest part differs:\n%q\n%q", p.digest[1], want)
		}
		if rows := readCSV(t, p.csvText); len(rows) != 3 {
			t.Fatalf("csv %q", rows)
		}
		if _, err := (&p.header).Subject(); err != nil {
			t.Fatalf("subject: %v", err)
		}
		assertLinesFit(t, msg)
	})
}
