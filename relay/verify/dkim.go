package verify

import (
	"bytes"
	"crypto"
	"crypto/ed25519"
	"crypto/rsa"
	"crypto/sha256"
	"crypto/subtle"
	"crypto/x509"
	"encoding/base64"
	"errors"
	"fmt"
	"hash"
	"net"
	"strconv"
	"strings"
	"sync"
	"time"
	"unicode"
)

// This file checks DKIM signatures (RFC 6376) on a message held in memory,
// as go-msgauth v0.7.0's dkim.Verify checks them, but one signature at a
// time: each header field is found once, as a slice of the message; the
// body is hashed once per canonicalisation, reading the message where it
// lies (no copy of it, no allocation per line); a signature is only
// checked when asked for, so the caller stops at the first that counts.
// Every step, its order and each failure's text follow go-msgauth's, and
// dkim_test.go checks both agree on signed, tampered and fuzzed messages.

// dkimHeader is a message's header, split into fields, and its body.
type dkimHeader struct {
	msg    []byte
	fields []span // each field with its continuation lines and their CRLFs
	body   []byte
	// bodyHash holds the body's SHA-256 per canonicalisation, once
	// computed (0 simple, 1 relaxed).
	bodyHash [2]*[sha256.Size]byte
}

type span struct{ start, end int }

// errNoHeaderEnd is the header of a message without the empty line that
// ends it; go-msgauth cannot read such a message at all.
var errNoHeaderEnd = errors.New("failed to read header: EOF")

// splitHeader reads msg's header as go-msgauth's reader does (textproto
// lines; a line starting with a space or tab continues the field before
// it). msg must have no bare LF: every line ends in CRLF, so a field's
// lines with their CRLFs are a slice of msg, which is what simple header
// canonicalisation hashes.
func splitHeader(msg []byte) (*dkimHeader, error) {
	h := &dkimHeader{msg: msg, fields: make([]span, 0, 16)}
	for pos := 0; ; {
		nl := bytes.IndexByte(msg[pos:], '\n')
		if nl < 0 {
			return nil, errNoHeaderEnd
		}
		end := pos + nl + 1
		line := msg[pos : end-1]
		line = bytes.TrimSuffix(line, []byte("\r"))
		switch {
		case len(line) == 0:
			h.body = msg[end:]
			return h, nil
		case len(h.fields) > 0 && (line[0] == ' ' || line[0] == '\t'):
			h.fields[len(h.fields)-1].end = end
		default:
			h.fields = append(h.fields, span{pos, end})
		}
		pos = end
	}
}

func (h *dkimHeader) field(i int) []byte { return h.msg[h.fields[i].start:h.fields[i].end] }

// fieldName is a field's name as go-msgauth compares it: before the first
// colon, trimmed.
func fieldName(f []byte) []byte {
	if i := bytes.IndexByte(f, ':'); i >= 0 {
		f = f[:i]
	}
	return bytes.TrimFunc(f, unicode.IsSpace)
}

// signatureFields returns the indexes of the DKIM-Signature fields, in
// header order.
func (h *dkimHeader) signatureFields() []int {
	var sigs []int
	for i := range h.fields {
		if bytes.EqualFold(fieldName(h.field(i)), []byte("DKIM-Signature")) {
			sigs = append(sigs, i)
		}
	}
	return sigs
}

// dkimSignature is one DKIM-Signature field, its tags read.
type dkimSignature struct {
	index int // of the field in the header
	// err is why the tags cannot be used (go-msgauth's checks before the
	// key lookup); the other fields are then as far as it got.
	err        *sigError
	domain     string // d=, white space removed, as signed (not lower-cased)
	identifier string // i=, or "@" + d=
	selector   string // s=, white space removed
	headerKeys []string
	tags       []tag
}

type tag struct{ name, value string }

func (s *dkimSignature) tag(name string) (string, bool) {
	for _, t := range s.tags {
		if t.name == name {
			return t.value, true
		}
	}
	return "", false
}

// sigError is why a signature is not valid, worded as a Verdict's Reason.
type sigError struct {
	reason string
	// temp is a key lookup that failed for now (go-msgauth's IsTempFail):
	// a retry may pass.
	temp bool
}

func permFail(reason string) *sigError { return &sigError{reason: reason} }

var requiredTags = []string{"v", "a", "b", "bh", "d", "h", "s"}

// parseSignature reads the tags of the signature field at index, and makes
// go-msgauth's checks that need no key: the version, the required tags,
// i= within d=, From signed, the times.
func (h *dkimHeader) parseSignature(index int, now time.Time) *dkimSignature {
	s := &dkimSignature{index: index}
	_, value, _ := strings.Cut(string(h.field(index)), ":")
	tags, err := parseTags(strings.TrimSpace(value))
	if err != nil {
		s.err = permFail("malformed signature tags: " + err.Error())
		return s
	}
	s.tags = tags
	if v, _ := s.tag("v"); v != "1" {
		s.err = permFail("incompatible signature version")
		return s
	}
	d, _ := s.tag("d")
	s.domain = stripSpace(d)
	for _, name := range requiredTags {
		if _, ok := s.tag(name); !ok {
			s.err = permFail("signature missing required tag")
			return s
		}
	}
	if i, ok := s.tag("i"); ok {
		s.identifier = stripSpace(i)
		if !strings.HasSuffix(s.identifier, "@"+s.domain) && !strings.HasSuffix(s.identifier, "."+s.domain) {
			s.err = permFail("domain mismatch")
			return s
		}
	} else {
		s.identifier = "@" + s.domain
	}
	hk, _ := s.tag("h")
	s.headerKeys = tagList(hk)
	if !coversFrom(s.headerKeys) {
		s.err = permFail("from not signed")
		return s
	}
	sel, _ := s.tag("s")
	s.selector = stripSpace(sel)
	if t, ok := s.tag("t"); ok {
		if _, err := strconv.ParseInt(stripSpace(t), 10, 64); err != nil {
			s.err = permFail("malformed time: " + err.Error())
			return s
		}
	}
	if x, ok := s.tag("x"); ok {
		sec, err := strconv.ParseInt(stripSpace(x), 10, 64)
		if err != nil {
			s.err = permFail("malformed expiration time: " + err.Error())
			return s
		}
		if now.After(time.Unix(sec, 0)) {
			s.err = permFail("expired")
			return s
		}
	}
	return s
}

// parseTags reads "name=value; ..." as go-msgauth does: split at ";",
// names and values trimmed, empty parts skipped, a repeated name refused.
func parseTags(s string) ([]tag, error) {
	tags := make([]tag, 0, 12)
	for part := range strings.SplitSeq(s, ";") {
		name, value, ok := strings.Cut(part, "=")
		if !ok {
			if strings.TrimSpace(part) == "" {
				continue
			}
			return nil, errors.New("dkim: malformed header params")
		}
		name = strings.TrimSpace(name)
		for _, t := range tags {
			if t.name == name {
				return nil, errors.New("dkim: duplicate tag name")
			}
		}
		tags = append(tags, tag{name, strings.TrimSpace(value)})
	}
	return tags, nil
}

// tagList splits a colon-separated tag value, white space removed.
func tagList(s string) []string {
	list := strings.Split(s, ":")
	for i, t := range list {
		list[i] = stripSpace(t)
	}
	return list
}

// dkimKey is a key record, read.
type dkimKey struct {
	pub       crypto.PublicKey // *rsa.PublicKey or ed25519.PublicKey
	algo      string           // "rsa" or "ed25519"
	hashAlgos []string         // h=, nil: any
	services  []string         // s=, nil: any
}

// parseKeyRecord reads a key record (RFC 6376 3.6.1) as go-msgauth does.
func parseKeyRecord(s string) (*dkimKey, *sigError) {
	tags, err := parseTags(s)
	if err != nil {
		return nil, permFail("key record error: " + err.Error())
	}
	get := func(name string) (string, bool) {
		for _, t := range tags {
			if t.name == name {
				return t.value, true
			}
		}
		return "", false
	}
	if v, ok := get("v"); ok && v != "DKIM1" {
		return nil, permFail("incompatible public key version")
	}
	p, ok := get("p")
	if !ok {
		return nil, permFail("key syntax error: missing public key data")
	}
	if p == "" {
		return nil, permFail("key revoked")
	}
	b, err := base64.StdEncoding.DecodeString(strings.ReplaceAll(p, " ", ""))
	if err != nil {
		return nil, permFail("key syntax error: " + err.Error())
	}
	k := &dkimKey{}
	switch algo, _ := get("k"); algo {
	case "rsa", "":
		pub, err := x509.ParsePKIXPublicKey(b)
		if err != nil {
			// RFC 6376 erratum 3017: RSAPublicKey is seen too.
			pub, err = x509.ParsePKCS1PublicKey(b)
			if err != nil {
				return nil, permFail("key syntax error: " + err.Error())
			}
		}
		rsaPub, ok := pub.(*rsa.PublicKey)
		if !ok {
			return nil, permFail("key syntax error: not an RSA public key")
		}
		// RFC 8301 3.2: no signature with a key under 1024 bits is valid.
		if rsaPub.Size()*8 < 1024 {
			return nil, permFail(fmt.Sprintf("key is too short: want 1024 bits, has %v bits", rsaPub.Size()*8))
		}
		k.pub, k.algo = rsaPub, "rsa"
	case "ed25519":
		if len(b) != ed25519.PublicKeySize {
			return nil, permFail(fmt.Sprintf("invalid Ed25519 public key size: %v bytes", len(b)))
		}
		k.pub, k.algo = ed25519.PublicKey(b), "ed25519"
	default:
		return nil, permFail("unsupported key algorithm")
	}
	if h, ok := get("h"); ok {
		k.hashAlgos = tagList(h)
	}
	if sv, ok := get("s"); ok {
		k.services = tagList(sv)
		for _, s := range k.services {
			if s == "*" {
				k.services = nil
				break
			}
		}
	}
	return k, nil
}

// keyRecords remembers key records already read, by their text: reading
// an RSA key (base64, ASN.1) costs more than hashing a letter.
type keyRecords struct {
	mu   sync.Mutex
	keys map[string]keyRecord
}

type keyRecord struct {
	key *dkimKey
	err *sigError
}

func (r *keyRecords) parse(record string) (*dkimKey, *sigError) {
	r.mu.Lock()
	kr, ok := r.keys[record]
	r.mu.Unlock()
	if ok {
		return kr.key, kr.err
	}
	k, err := parseKeyRecord(record)
	r.mu.Lock()
	if r.keys == nil || len(r.keys) >= keyCacheSize {
		r.keys = make(map[string]keyRecord)
	}
	r.keys[record] = keyRecord{k, err}
	r.mu.Unlock()
	return k, err
}

// keyLookup is the outcome of fetching a signature's key record.
type keyLookup struct {
	txts []string
	err  error // as asNetError returns it
}

// lookupReason words a failed key lookup; temp says whether a retry may
// pass (go-msgauth's test: a net.Error that is Temporary).
func lookupReason(err error) (reason string, temp bool) {
	var netErr net.Error
	temp = errors.As(err, &netErr) && netErr.Temporary()
	var dnsErr *net.DNSError
	switch {
	case !errors.As(err, &dnsErr):
		return "key lookup failed", temp
	case dnsErr.IsNotFound:
		return "key not found", temp
	case dnsErr.Timeout():
		return "key lookup timed out", temp
	case dnsErr.Temporary():
		return "key lookup failed temporarily", temp
	}
	return "key lookup failed", temp
}

// withoutBareLF returns msg with a CR put before every LF that has none,
// as go-msgauth reads lines and fixes the body; msg itself when it has
// none (the front end refuses such letters before they are verified).
func withoutBareLF(msg []byte) []byte {
	bare := false
	for i := bytes.IndexByte(msg, '\n'); i >= 0; {
		if i == 0 || msg[i-1] != '\r' {
			bare = true
			break
		}
		next := bytes.IndexByte(msg[i+1:], '\n')
		if next < 0 {
			break
		}
		i += 1 + next
	}
	if !bare {
		return msg
	}
	out := make([]byte, 0, len(msg)+len(msg)/32)
	for i, c := range msg {
		if c == '\n' && (i == 0 || msg[i-1] != '\r') {
			out = append(out, '\r')
		}
		out = append(out, c)
	}
	return out
}

// check verifies one signature whose tags parsed, with the key lookup
// fetched; it returns the key record that verified it (for its flags) or
// why not.
func (h *dkimHeader) check(s *dkimSignature, lookup func(name string) keyLookup, keys *keyRecords) (string, *sigError) {
	methods := []string{"dns/txt"}
	if q, ok := s.tag("q"); ok {
		methods = tagList(q)
	}
	dnsTXT := false
	for _, m := range methods {
		if m == "dns/txt" {
			dnsTXT = true
			break
		}
	}
	if !dnsTXT {
		return "", permFail("unsupported public key query method")
	}
	lk := lookup(s.selector + "._domainkey." + s.domain)
	if lk.err != nil {
		reason, temp := lookupReason(lk.err)
		return "", &sigError{reason: reason, temp: temp}
	}
	switch len(lk.txts) {
	case 0:
		return "", permFail("no valid key found")
	case 1:
	default:
		return "", permFail("multiple TXT records found for key")
	}
	record := lk.txts[0]
	key, kerr := keys.parse(record)
	if kerr != nil {
		return "", kerr
	}
	a, _ := s.tag("a")
	keyAlgo, hashAlgo, ok := strings.Cut(stripSpace(a), "-")
	if !ok {
		return "", permFail("malformed algorithm name")
	}
	if key.hashAlgos != nil && !contains(key.hashAlgos, hashAlgo) {
		return "", permFail("inappropriate hash algorithm")
	}
	switch hashAlgo {
	case "sha1":
		// RFC 8301 3.1: rsa-sha1 must not be used.
		return "", permFail("hash algorithm too weak: sha1")
	case "sha256":
	default:
		return "", permFail("unsupported hash algorithm")
	}
	if key.algo != keyAlgo {
		return "", permFail("inappropriate key algorithm")
	}
	if key.services != nil && !contains(key.services, "email") {
		return "", permFail("inappropriate service")
	}
	c, _ := s.tag("c")
	headerCan, bodyCan := parseCanonicalization(c)
	if headerCan < 0 {
		return "", permFail("unsupported header canonicalization algorithm")
	}
	if bodyCan < 0 {
		return "", permFail("unsupported body canonicalization algorithm")
	}
	// l= would let text be appended outside the signature.
	if _, ok := s.tag("l"); ok {
		return "", permFail("body length limit (l=)")
	}
	bhTag, _ := s.tag("bh")
	bh, err := base64.StdEncoding.DecodeString(stripSpace(bhTag))
	if err != nil {
		return "", permFail("malformed body hash: " + err.Error())
	}
	bTag, _ := s.tag("b")
	sig, err := base64.StdEncoding.DecodeString(stripSpace(bTag))
	if err != nil {
		return "", permFail("malformed signature: " + err.Error())
	}
	if subtle.ConstantTimeCompare(h.bodySum(bodyCan), bh) != 1 {
		return "", permFail("body hash mismatch")
	}
	sum := h.headerSum(s, headerCan)
	switch pub := key.pub.(type) {
	case *rsa.PublicKey:
		err = rsa.VerifyPKCS1v15(pub, crypto.SHA256, sum, sig)
	case ed25519.PublicKey:
		if !ed25519.Verify(pub, sum, sig) {
			err = errors.New("invalid Ed25519 signature")
		}
	}
	if err != nil {
		return "", permFail("bad signature")
	}
	return record, nil
}

func contains(list []string, s string) bool {
	for _, v := range list {
		if v == s {
			return true
		}
	}
	return false
}

// Canonicalisations, as indexes of dkimHeader.bodyHash.
const (
	canonSimple  = 0
	canonRelaxed = 1
)

// parseCanonicalization reads c= ("header/body", each "simple" by default);
// -1 is one go-msgauth does not know.
func parseCanonicalization(s string) (header, body int) {
	name := func(c string) int {
		switch c {
		case "simple":
			return canonSimple
		case "relaxed":
			return canonRelaxed
		}
		return -1
	}
	header, body = canonSimple, canonSimple
	cans := strings.SplitN(stripSpace(s), "/", 2)
	if cans[0] != "" {
		header = name(cans[0])
	}
	if len(cans) > 1 {
		body = name(cans[1])
	}
	return header, body
}

// bodySum is the body's hash under canonicalisation can, computed once.
func (h *dkimHeader) bodySum(can int) []byte {
	if h.bodyHash[can] == nil {
		w := newHashWriter()
		if can == canonRelaxed {
			relaxedBody(w, h.body)
		} else {
			simpleBody(w, h.body)
		}
		h.bodyHash[can] = w.sum()
	}
	return h.bodyHash[can][:]
}

// headerSum is the hash the signature s signs: the fields its h= names,
// picked from the bottom up, then its own field without the b= value and
// its final line break.
func (h *dkimHeader) headerSum(s *dkimSignature, can int) []byte {
	w := newHashWriter()
	picked := make(map[string]int, len(s.headerKeys))
	for _, key := range s.headerKeys {
		key = strings.ToLower(key)
		skip := picked[key]
		for i := len(h.fields) - 1; i >= 0; i-- {
			f := h.field(i)
			if !strings.EqualFold(string(fieldName(f)), key) {
				continue
			}
			if skip > 0 {
				skip--
				continue
			}
			picked[key]++
			writeHeaderField(w, f, can, true)
			break
		}
	}
	writeHeaderField(w, removeSignature(h.field(s.index)), can, false)
	return w.sum()[:]
}

// writeHeaderField writes field f canonicalised: as it is (simple), or
// with its name lower-cased and trimmed and its value's runs of white
// space and line breaks made one space, trimmed (relaxed); without its
// final line break unless end. (The signature's own field goes without:
// go-msgauth trims every CR and LF at its end, in either
// canonicalisation.)
func writeHeaderField(w *hashWriter, f []byte, can int, end bool) {
	if can == canonSimple {
		if !end {
			f = bytes.TrimRight(f, "\r\n")
		}
		w.Write(f)
		return
	}
	name, value, ok := bytes.Cut(f, []byte(":"))
	if !ok {
		w.Write([]byte(strings.TrimSpace(strings.ToLower(string(f)))))
		w.WriteByte(':')
		if end {
			w.Write(crlfBytes)
		}
		return
	}
	writeLowerTrim(w, name)
	w.WriteByte(':')
	first := true
	for len(value) > 0 {
		i := bytes.IndexFunc(value, isHeaderSpace)
		if i < 0 {
			i = len(value)
		}
		if i > 0 {
			if !first {
				w.WriteByte(' ')
			}
			w.Write(value[:i])
			first = false
		}
		value = value[i:]
		if len(value) > 0 {
			value = value[1:]
		}
	}
	if end {
		w.Write(crlfBytes)
	}
}

var crlfBytes = []byte("\r\n")

func isHeaderSpace(r rune) bool { return r == ' ' || r == '\t' || r == '\n' || r == '\r' }

// writeLowerTrim writes strings.TrimSpace(strings.ToLower(name)), without
// allocating for an ASCII name.
func writeLowerTrim(w *hashWriter, name []byte) {
	for _, c := range name {
		if c >= 0x80 {
			w.Write([]byte(strings.TrimSpace(strings.ToLower(string(name)))))
			return
		}
	}
	for _, c := range bytes.TrimSpace(name) {
		if 'A' <= c && c <= 'Z' {
			c += 'a' - 'A'
		}
		w.WriteByte(c)
	}
}

// removeSignature empties the b= tag's value of a signature field, as
// go-msgauth does with the expression `(b\s*=)[^;]+`: at every "b",
// optional white space and "=" followed by something other than ";", the
// run up to the next ";" is removed.
func removeSignature(f []byte) []byte {
	var out []byte
	last := 0
	for i := 0; i < len(f); i++ {
		if f[i] != 'b' {
			continue
		}
		j := i + 1
		for j < len(f) && isRegexpSpace(f[j]) {
			j++
		}
		if j >= len(f) || f[j] != '=' {
			continue
		}
		j++
		k := j
		for k < len(f) && f[k] != ';' {
			k++
		}
		if k == j {
			continue
		}
		out = append(out, f[last:j]...)
		last = k
		i = k - 1
	}
	if out == nil {
		return f
	}
	return append(out, f[last:]...)
}

// isRegexpSpace is \s in Go's regexp: [\t\n\f\r ].
func isRegexpSpace(c byte) bool {
	return c == ' ' || c == '\t' || c == '\n' || c == '\f' || c == '\r'
}

// hashWriter feeds a SHA-256 hash through a small buffer, so that
// canonicalisation can write byte runs of any length.
type hashWriter struct {
	h   hash.Hash
	buf [512]byte
	n   int
}

func newHashWriter() *hashWriter { return &hashWriter{h: sha256.New()} }

func (w *hashWriter) Write(b []byte) (int, error) {
	if len(b) >= len(w.buf) {
		w.flush()
		w.h.Write(b)
		return len(b), nil
	}
	if w.n+len(b) > len(w.buf) {
		w.flush()
	}
	w.n += copy(w.buf[w.n:], b)
	return len(b), nil
}

func (w *hashWriter) WriteByte(c byte) error {
	if w.n == len(w.buf) {
		w.flush()
	}
	w.buf[w.n] = c
	w.n++
	return nil
}

func (w *hashWriter) flush() {
	w.h.Write(w.buf[:w.n])
	w.n = 0
}

func (w *hashWriter) sum() *[sha256.Size]byte {
	w.flush()
	var s [sha256.Size]byte
	w.h.Sum(s[:0])
	return &s
}

// simpleBody writes body in simple canonicalisation: the CRLFs at its end
// taken off (unless it ends in a lone CR), then one CRLF.
func simpleBody(w *hashWriter, body []byte) {
	end := len(body)
	if end > 0 && body[end-1] == '\r' {
		w.Write(body)
	} else {
		for end >= 2 && body[end-2] == '\r' && body[end-1] == '\n' {
			end -= 2
		}
		w.Write(body[:end])
	}
	w.Write([]byte("\r\n"))
}

// relaxedBody writes body in relaxed canonicalisation, with go-msgauth's
// state machine: white space before a line break or the end is dropped,
// other runs of it become one space, line breaks at the end are dropped,
// and a body with anything left ends in CRLF.
func relaxedBody(w *hashWriter, body []byte) {
	wsp := false
	held := -1 // where the line breaks held back begin, after the last other byte
	written := false
	for i := 0; i < len(body); {
		switch body[i] {
		case ' ', '\t':
			wsp = true
			i++
		case '\r', '\n':
			wsp = false
			if held < 0 {
				held = i
			}
			i++
		default:
			if held >= 0 {
				for _, c := range body[held:i] {
					if c == '\r' || c == '\n' {
						w.WriteByte(c)
					}
				}
				held = -1
			}
			if wsp {
				w.WriteByte(' ')
				wsp = false
			}
			j := i + 1
			for j < len(body) && !isBodySpecial(body[j]) {
				j++
			}
			w.Write(body[i:j])
			written = true
			i = j
		}
	}
	if written {
		w.Write([]byte("\r\n"))
	}
}

func isBodySpecial(c byte) bool { return c == ' ' || c == '\t' || c == '\r' || c == '\n' }
