package keyserver

import (
	"bytes"
	"crypto"
	"crypto/ed25519"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/emersion/go-msgauth/dkim"

	"github.com/petitiond/petitiond/crlf"
	"github.com/petitiond/petitiond/dkimkey"
)

// Key is a DKIM signing key published (or to be published) at
// <Selector>._domainkey.<Domain>.
type Key struct {
	Domain   string
	Selector string
	Algo     string // "rsa" or "ed25519"
	Signer   crypto.Signer
	// Flags, if any, are published in the record's t= tag (RFC 6376
	// 3.6.1): "y" (testing), "s" (i= must not be a subdomain of d=).
	Flags []string
}

// NewKey makes a fresh key as `petitiond dkim-keygen` does: algo "rsa"
// (2048 bits, long enough to test splitting the TXT record) or "ed25519".
func NewKey(domain, selector, algo string) (*Key, error) {
	if domain == "" || selector == "" {
		return nil, errors.New("keyserver: new key: domain and selector are required")
	}
	signer, err := dkimkey.Generate(algo)
	if err != nil {
		return nil, fmt.Errorf("keyserver: %w", err)
	}
	return &Key{Domain: domain, Selector: selector, Algo: algo, Signer: signer}, nil
}

// TXT is the DNS TXT record value that publishes the public key, formatted
// by dkimkey exactly as `petitiond dkim-keygen` tells operators to publish it.
func (k *Key) TXT() string {
	v, err := dkimkey.TXTValue(k.Signer.Public())
	if err != nil {
		// Cannot happen for the RSA and ed25519 keys NewKey makes; an
		// empty p= means "revoked" to verifiers, which fails safe.
		return "v=DKIM1; p="
	}
	if len(k.Flags) > 0 {
		v += "; t=" + strings.Join(k.Flags, ":")
	}
	return v
}

func (k *Key) keyAlgo() string {
	if _, ok := k.Signer.Public().(ed25519.PublicKey); ok {
		return "ed25519"
	}
	return "rsa"
}

// SignOptions changes how Key.Sign signs.
type SignOptions struct {
	// BodyLength adds an l= tag covering the body as it is now, so text
	// appended later is outside the signature (what an attacker would
	// exploit; verifiers must refuse it).
	BodyLength bool
	// Expiration, if not zero, is the x= tag. A time in the past makes an
	// already expired signature.
	Expiration time.Time
	// HeaderKeys lists the signed header fields (h=). Nil means From, To,
	// Subject, Date, Message-ID. A list without From makes a signature that
	// does not cover the From field.
	HeaderKeys []string
	// Identifier, if set, is the i= tag ("user@domain" or "@domain"): the
	// domain must be d= or a subdomain of it.
	Identifier string
}

// defaultHeaderKeys are the fields signed when SignOptions.HeaderKeys is nil.
// Never modified.
var defaultHeaderKeys = []string{"From", "To", "Subject", "Date", "Message-ID"}

// Sign returns msg with a DKIM-Signature field prepended, signed with
// relaxed/relaxed canonicalisation. Lone LFs in msg are turned into CRLF
// first (so callers may write messages with "\n"); the result uses CRLF
// throughout.
//
// go-msgauth's signer does the work, except for what it refuses to make (an
// l= tag, a signature without From), which a small signer here makes in the
// same way.
func (k *Key) Sign(msg []byte, opt SignOptions) ([]byte, error) {
	msg = crlf.Normalize(msg)
	keys := opt.HeaderKeys
	if keys == nil {
		keys = defaultHeaderKeys
	}
	if opt.BodyLength || !hasFrom(keys) {
		sig, err := k.signature(msg, keys, opt)
		if err != nil {
			return nil, err
		}
		return append([]byte(sig), msg...), nil
	}
	var out bytes.Buffer
	err := dkim.Sign(&out, bytes.NewReader(msg), &dkim.SignOptions{
		Domain:                 k.Domain,
		Selector:               k.Selector,
		Signer:                 k.Signer,
		HeaderCanonicalization: dkim.CanonicalizationRelaxed,
		BodyCanonicalization:   dkim.CanonicalizationRelaxed,
		HeaderKeys:             keys,
		Expiration:             opt.Expiration,
		Identifier:             opt.Identifier,
	})
	if err != nil {
		return nil, fmt.Errorf("keyserver: sign for %s: %w", k.Domain, err)
	}
	return out.Bytes(), nil
}

func hasFrom(keys []string) bool {
	for _, k := range keys {
		if strings.EqualFold(k, "From") {
			return true
		}
	}
	return false
}

// signature computes a DKIM-Signature field (RFC 6376, relaxed/relaxed,
// sha256) for a CRLF message. It mirrors go-msgauth's signer (same header
// picking, same canonicalisation) and adds the options that one lacks.
func (k *Key) signature(msg []byte, headerKeys []string, opt SignOptions) (string, error) {
	header, body, ok := bytes.Cut(msg, []byte("\r\n\r\n"))
	if !ok {
		// A header with no body at all: the header ends with its last CRLF.
		if !bytes.HasSuffix(msg, []byte("\r\n")) {
			return "", errors.New("keyserver: sign: message has no end of header")
		}
		header, body = msg[:len(msg)-2], nil
	}
	fields := splitFields(string(header) + "\r\n")

	canonBody := relaxedBody(body)
	bh := sha256.Sum256(canonBody)

	tags := []string{
		"v=1",
		"a=" + k.keyAlgo() + "-sha256",
		"c=relaxed/relaxed",
		"d=" + k.Domain,
		"s=" + k.Selector,
		"t=" + strconv.FormatInt(time.Now().Unix(), 10),
	}
	if opt.Identifier != "" {
		tags = append(tags, "i="+opt.Identifier)
	}
	if !opt.Expiration.IsZero() {
		tags = append(tags, "x="+strconv.FormatInt(opt.Expiration.Unix(), 10))
	}
	if opt.BodyLength {
		tags = append(tags, "l="+strconv.Itoa(len(canonBody)))
	}
	tags = append(tags,
		"h="+strings.Join(headerKeys, ":"),
		"bh="+base64.StdEncoding.EncodeToString(bh[:]),
	)
	// b= comes last and empty while hashing; verifiers blank its value the
	// same way before hashing the field.
	unsigned := "DKIM-Signature: " + strings.Join(tags, ";\r\n\t") + ";\r\n\tb="

	h := sha256.New()
	picked := make(map[string]int)
	for _, key := range headerKeys {
		f := pickField(fields, key, picked)
		if f == "" {
			continue // a listed field that is absent contributes nothing
		}
		h.Write([]byte(relaxedHeader(f)))
	}
	h.Write([]byte(strings.TrimSuffix(relaxedHeader(unsigned), "\r\n")))
	hashed := h.Sum(nil)

	var sig []byte
	var err error
	if k.keyAlgo() == "ed25519" {
		// Ed25519 signs the hash as its message (RFC 8463), with no
		// pre-hash option.
		sig, err = k.Signer.Sign(rand.Reader, hashed, crypto.Hash(0))
	} else {
		sig, err = k.Signer.Sign(rand.Reader, hashed, crypto.SHA256)
	}
	if err != nil {
		return "", fmt.Errorf("keyserver: sign for %s: %w", k.Domain, err)
	}
	return unsigned + foldBase64(base64.StdEncoding.EncodeToString(sig)) + "\r\n", nil
}

// splitFields splits a header block (ending in CRLF) into fields, each with
// its continuation lines and final CRLF, as go-msgauth reads them.
func splitFields(header string) []string {
	var fields []string
	for line := range strings.SplitAfterSeq(header, "\r\n") {
		if line == "" {
			continue
		}
		if len(fields) > 0 && (line[0] == ' ' || line[0] == '\t') {
			fields[len(fields)-1] += line
			continue
		}
		fields = append(fields, line)
	}
	return fields
}

// pickField returns the next instance of key, counting from the bottom of
// the header (RFC 6376 5.4.2), or "" when none is left.
func pickField(fields []string, key string, picked map[string]int) string {
	key = strings.ToLower(key)
	skip := picked[key]
	for i := len(fields) - 1; i >= 0; i-- {
		name, _, _ := strings.Cut(fields[i], ":")
		if !strings.EqualFold(strings.TrimSpace(name), key) {
			continue
		}
		if skip == 0 {
			picked[key]++
			return fields[i]
		}
		skip--
	}
	return ""
}

// relaxedHeader is the "relaxed" header canonicalisation (RFC 6376 3.4.2).
func relaxedHeader(field string) string {
	name, value, _ := strings.Cut(field, ":")
	value = strings.Join(strings.FieldsFunc(value, func(r rune) bool {
		return r == ' ' || r == '\t' || r == '\r' || r == '\n'
	}), " ")
	return strings.ToLower(strings.TrimSpace(name)) + ":" + value + "\r\n"
}

// relaxedBody is the "relaxed" body canonicalisation (RFC 6376 3.4.4):
// whitespace runs become one space, trailing whitespace and trailing empty
// lines go, and a non-empty body ends with CRLF.
func relaxedBody(body []byte) []byte {
	lines := strings.Split(string(body), "\r\n")
	var out strings.Builder
	pendingEmpty := 0
	for _, line := range lines {
		var l strings.Builder
		wsp := false
		for i := 0; i < len(line); i++ {
			c := line[i]
			if c == ' ' || c == '\t' {
				wsp = true
				continue
			}
			if wsp {
				l.WriteByte(' ')
				wsp = false
			}
			l.WriteByte(c)
		}
		if l.Len() == 0 {
			pendingEmpty++
			continue
		}
		// Empty lines count only when something follows them.
		for range pendingEmpty {
			out.WriteString("\r\n")
		}
		pendingEmpty = 0
		out.WriteString(l.String())
		out.WriteString("\r\n")
	}
	return []byte(out.String())
}

// foldBase64 breaks a long b= value so no header line runs past ~78
// characters; whitespace inside b= is ignored by verifiers.
func foldBase64(s string) string {
	const width = 72
	var b strings.Builder
	for len(s) > width {
		b.WriteString(s[:width])
		b.WriteString("\r\n\t")
		s = s[width:]
	}
	b.WriteString(s)
	return b.String()
}
