package batch

import (
	"bytes"
	"crypto"
	"crypto/ed25519"
	"crypto/rsa"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"fmt"
	"os"

	"github.com/emersion/go-msgauth/dkim"
)

// signedHeaders returns the fields a batch signature covers. From is listed
// twice to oversign it: a second From added in transit (the one readers
// would show) breaks the signature. Cc is listed even when absent, so that
// one cannot be added either.
func signedHeaders() []string {
	return []string{"From", "From", "To", "Cc", "Subject", "Date", "Message-ID", "MIME-Version", "Content-Type"}
}

// minRSABits is the smallest RSA key RFC 8301 lets a signer use.
const minRSABits = 1024

// Signer DKIM-signs batch messages ([dkim] in the configuration). It holds
// no mutable state and may be used from several goroutines.
type Signer struct {
	domain, selector string
	key              crypto.Signer
}

// NewSigner returns a Signer for d=domain, s=selector with key, which must
// be an RSA (at least 1024 bits) or ed25519 private key.
func NewSigner(domain, selector string, key crypto.Signer) (*Signer, error) {
	if err := checkSigner(domain, selector, key); err != nil {
		return nil, fmt.Errorf("dkim: %w", err)
	}
	return &Signer{domain: domain, selector: selector, key: key}, nil
}

func checkSigner(domain, selector string, key crypto.Signer) error {
	if !isDNSName(domain) {
		return fmt.Errorf("domain %q is not a DNS name", domain)
	}
	if !isDNSName(selector) {
		return fmt.Errorf("selector %q is not a DNS name", selector)
	}
	if key == nil {
		return errors.New("no key")
	}
	switch pub := key.Public().(type) {
	case *rsa.PublicKey:
		if pub.N.BitLen() < minRSABits {
			return fmt.Errorf("RSA key of %d bits is too small (at least %d)", pub.N.BitLen(), minRSABits)
		}
	case ed25519.PublicKey:
	default:
		return fmt.Errorf("unsupported key type %T (want RSA or ed25519)", pub)
	}
	return nil
}

// LoadSigner is NewSigner with the key read from keyFile: PEM, either PKCS#8
// "PRIVATE KEY" (RSA or ed25519, as dkim-keygen writes) or PKCS#1 "RSA
// PRIVATE KEY". Errors name the file.
func LoadSigner(domain, selector, keyFile string) (*Signer, error) {
	data, err := os.ReadFile(keyFile)
	if err != nil {
		// The *PathError already names the file.
		return nil, fmt.Errorf("dkim: key file: %w", err)
	}
	key, err := parseKey(data)
	if err == nil {
		err = checkSigner(domain, selector, key)
	}
	if err != nil {
		return nil, fmt.Errorf("dkim: key file %s: %w", keyFile, err)
	}
	return &Signer{domain: domain, selector: selector, key: key}, nil
}

func parseKey(data []byte) (crypto.Signer, error) {
	rest := data
	for {
		var block *pem.Block
		block, rest = pem.Decode(rest)
		if block == nil {
			return nil, errors.New(`no PEM "PRIVATE KEY" or "RSA PRIVATE KEY" block`)
		}
		switch block.Type {
		case "PRIVATE KEY":
			k, err := x509.ParsePKCS8PrivateKey(block.Bytes)
			if err != nil {
				return nil, fmt.Errorf("PKCS#8 key: %w", err)
			}
			signer, ok := k.(crypto.Signer)
			if !ok {
				return nil, fmt.Errorf("unsupported key type %T", k)
			}
			return signer, nil
		case "RSA PRIVATE KEY":
			if _, encrypted := block.Headers["DEK-Info"]; encrypted {
				return nil, errors.New("the key is encrypted; DKIM keys must be stored unencrypted")
			}
			k, err := x509.ParsePKCS1PrivateKey(block.Bytes)
			if err != nil {
				return nil, fmt.Errorf("PKCS#1 key: %w", err)
			}
			return k, nil
		case "ENCRYPTED PRIVATE KEY":
			return nil, errors.New("the key is encrypted; DKIM keys must be stored unencrypted")
		case "OPENSSH PRIVATE KEY", "EC PRIVATE KEY":
			return nil, fmt.Errorf("%q keys are not supported: want PKCS#8 \"PRIVATE KEY\" (RSA or ed25519) or \"RSA PRIVATE KEY\"", block.Type)
		}
		// Other blocks (a certificate, EC parameters) may sit beside the key.
	}
}

// Domain is the signing domain (d=).
func (s *Signer) Domain() string { return s.domain }

// Selector is the selector (s=).
func (s *Signer) Selector() string { return s.selector }

// Sign returns msg with a DKIM-Signature field prepended: relaxed/relaxed,
// SHA-256, covering signedHeaders() and the whole body. The signature carries
// its time (t=), so sign a batch once and store the result: both recipients
// and every retry must get the same bytes. No expiry (x=) is set, because a
// delivery may be retried for days.
func (s *Signer) Sign(msg []byte) ([]byte, error) {
	var out bytes.Buffer
	out.Grow(len(msg) + 1024)
	err := dkim.Sign(&out, bytes.NewReader(msg), &dkim.SignOptions{
		Domain:                 s.domain,
		Selector:               s.selector,
		Signer:                 s.key,
		Hash:                   crypto.SHA256,
		HeaderCanonicalization: dkim.CanonicalizationRelaxed,
		BodyCanonicalization:   dkim.CanonicalizationRelaxed,
		HeaderKeys:             signedHeaders(),
	})
	if err != nil {
		return nil, fmt.Errorf("dkim: sign: %w", err)
	}
	return out.Bytes(), nil
}

// isDNSName reports whether s is a plausible ASCII DNS name; it keeps
// anything that could break the DKIM-Signature tag list out of d= and s=.
func isDNSName(s string) bool {
	if s == "" || len(s) > 253 {
		return false
	}
	label := 0
	for i := 0; i < len(s); i++ {
		c := s[i]
		switch {
		case c == '.':
			if label == 0 {
				return false
			}
			label = 0
		case c >= 'a' && c <= 'z', c >= 'A' && c <= 'Z', c >= '0' && c <= '9', c == '-', c == '_':
			label++
			if label > 63 {
				return false
			}
		default:
			return false
		}
	}
	return label > 0
}
