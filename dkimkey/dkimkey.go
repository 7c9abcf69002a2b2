// Package dkimkey decides what a DKIM signing key is for petitiond: which
// kinds are accepted, the key file's format, and the DNS record that
// publishes a key. `petitiond dkim-keygen` writes keys and records with it,
// the batch signer reads key files with it, and the test key server
// (internal/keyserver) publishes keys with the same formatting, so what
// tests verify against is what operators are told to publish.
package dkimkey

import (
	"crypto"
	"crypto/ed25519"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"encoding/base64"
	"encoding/pem"
	"errors"
	"fmt"
	"strings"
)

// Algorithms that Generate accepts, as the k= tag names them (RFC 6376, RFC 8463).
const (
	Ed25519 = "ed25519"
	RSA     = "rsa"
)

// minRSABits is the smallest RSA key RFC 8301 lets a signer use.
const minRSABits = 1024

// rsaBits is the size of generated RSA keys: what mail providers use today
// (RFC 8301 allows 1024 to 4096; 2048 still fits a DNS TXT record comfortably).
const rsaBits = 2048

// maxTXTString is the longest character-string a TXT record may hold (RFC 1035 3.3).
const maxTXTString = 255

// Generate makes a fresh private key for algo: "ed25519" or "rsa" (rsaBits).
func Generate(algo string) (crypto.Signer, error) {
	switch algo {
	case Ed25519:
		_, k, err := ed25519.GenerateKey(rand.Reader)
		if err != nil {
			return nil, fmt.Errorf("dkimkey: new ed25519 key: %w", err)
		}
		return k, nil
	case RSA:
		k, err := rsa.GenerateKey(rand.Reader, rsaBits)
		if err != nil {
			return nil, fmt.Errorf("dkimkey: new rsa key: %w", err)
		}
		return k, nil
	}
	return nil, fmt.Errorf("dkimkey: unknown algorithm %q (want %s or %s)", algo, Ed25519, RSA)
}

// MarshalPEM encodes key as a PEM PKCS#8 "PRIVATE KEY" block, the form
// [dkim].key_file reads for both RSA and ed25519.
func MarshalPEM(key crypto.Signer) ([]byte, error) {
	der, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		return nil, fmt.Errorf("dkimkey: encode private key: %w", err)
	}
	return pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: der}), nil
}

// ParsePEM reads a key file: PEM, either PKCS#8 "PRIVATE KEY" (RSA or
// ed25519, as MarshalPEM writes) or PKCS#1 "RSA PRIVATE KEY". Other blocks
// (a certificate, EC parameters) may stand beside the key. The key is
// checked as checkKey does.
func ParsePEM(data []byte) (crypto.Signer, error) {
	key, err := parsePEM(data)
	if err != nil {
		return nil, err
	}
	if err := checkKey(key.Public()); err != nil {
		return nil, err
	}
	return key, nil
}

func parsePEM(data []byte) (crypto.Signer, error) {
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
	}
}

// checkKey reports whether pub belongs to a key DKIM may sign with: RSA of at
// least minRSABits, or ed25519.
func checkKey(pub crypto.PublicKey) error {
	switch pub := pub.(type) {
	case *rsa.PublicKey:
		if pub.N.BitLen() < minRSABits {
			return fmt.Errorf("RSA key of %d bits is too small (at least %d)", pub.N.BitLen(), minRSABits)
		}
		return nil
	case ed25519.PublicKey:
		return nil
	}
	return fmt.Errorf("unsupported key type %T (want RSA or ed25519)", pub)
}

// algoOf names pub's algorithm as the k= tag does: "rsa" or "ed25519".
func algoOf(pub crypto.PublicKey) (string, error) {
	switch pub.(type) {
	case *rsa.PublicKey:
		return RSA, nil
	case ed25519.PublicKey:
		return Ed25519, nil
	}
	return "", fmt.Errorf("dkimkey: unsupported public key type %T (want RSA or ed25519)", pub)
}

// TXTValue is the key record's value for pub: "v=DKIM1; k=...; p=...". The
// p= tag holds, for RSA, the PKIX SubjectPublicKeyInfo DER (what verifiers
// and other signers' tools use), and for ed25519 the raw 32-byte key (RFC 8463).
func TXTValue(pub crypto.PublicKey) (string, error) {
	algo, err := algoOf(pub)
	if err != nil {
		return "", err
	}
	var p []byte
	switch pub := pub.(type) {
	case *rsa.PublicKey:
		if p, err = x509.MarshalPKIXPublicKey(pub); err != nil {
			return "", fmt.Errorf("dkimkey: encode public key: %w", err)
		}
	case ed25519.PublicKey:
		p = pub
	}
	return "v=DKIM1; k=" + algo + "; p=" + base64.StdEncoding.EncodeToString(p), nil
}

// Name is the DNS name a key is published at: <selector>._domainkey.<domain>.
// (fully qualified, with the final dot).
func Name(domain, selector string) string {
	return selector + "._domainkey." + strings.TrimSuffix(domain, ".") + "."
}

// splitTXT cuts a TXT value into the character-strings of one record, each
// at most 255 bytes, as DNS requires; resolvers and verifiers join them again.
func splitTXT(v string) []string {
	if v == "" {
		return []string{""}
	}
	var parts []string
	for len(v) > maxTXTString {
		parts = append(parts, v[:maxTXTString])
		v = v[maxTXTString:]
	}
	return append(parts, v)
}

// TXTRecord is the zone-file line that publishes pub for domain and
// selector, its value split into quoted strings of at most 255 bytes:
//
//	sel._domainkey.example.org. IN TXT "v=DKIM1; k=ed25519; p=..."
func TXTRecord(domain, selector string, pub crypto.PublicKey) (string, error) {
	v, err := TXTValue(pub)
	if err != nil {
		return "", err
	}
	parts := splitTXT(v)
	for i, p := range parts {
		// The value is base64 and tag punctuation: nothing to escape. Check
		// anyway, so a future tag cannot silently break the zone file.
		if strings.ContainsAny(p, "\"\\") {
			return "", errors.New("dkimkey: TXT value needs zone-file escaping")
		}
		parts[i] = `"` + p + `"`
	}
	return Name(domain, selector) + " IN TXT " + strings.Join(parts, " "), nil
}
