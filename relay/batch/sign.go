package batch

import (
	"bytes"
	"crypto"
	"fmt"
	"os"
	"strings"

	"github.com/emersion/go-msgauth/dkim"

	"github.com/petitiond/petitiond/dkimkey"
	"github.com/petitiond/petitiond/dnsname"
)

// signedHeaders returns the fields a batch signature covers. From is listed
// twice to oversign it: a second From added in transit (the one readers
// would show) breaks the signature. Cc is listed even when absent, so that
// one cannot be added either.
func signedHeaders() []string {
	return []string{"From", "From", "To", "Cc", "Subject", "Date", "Message-ID", "MIME-Version", "Content-Type"}
}

// Signer DKIM-signs batch messages ([dkim] in the configuration). It holds
// no mutable state and may be used from several goroutines.
type Signer struct {
	domain, selector string
	key              crypto.Signer
}

// LoadSigner returns a Signer for d=domain, s=selector with the key read
// from keyFile (see dkimkey.ParsePEM for the formats). A fully qualified
// domain ("example.org.") signs as d=example.org. Errors name the file.
func LoadSigner(domain, selector, keyFile string) (*Signer, error) {
	if err := dnsname.CheckDomain(domain); err != nil {
		return nil, fmt.Errorf("dkim: domain: %w", err)
	}
	if err := dnsname.CheckSelector(selector); err != nil {
		return nil, fmt.Errorf("dkim: selector: %w", err)
	}
	data, err := os.ReadFile(keyFile)
	if err != nil {
		// The *PathError already names the file.
		return nil, fmt.Errorf("dkim: key file: %w", err)
	}
	key, err := dkimkey.ParsePEM(data)
	if err != nil {
		return nil, fmt.Errorf("dkim: key file %s: %w", keyFile, err)
	}
	return &Signer{domain: strings.TrimSuffix(domain, "."), selector: selector, key: key}, nil
}

// Sign returns msg with a DKIM-Signature field prepended: relaxed/relaxed,
// SHA-256, covering signedHeaders() and the whole body. The signature carries
// its time (t=), so sign a batch once and store the result: both recipients
// and every retry must get the same bytes. No expiry (x=) is set, because a
// delivery may be retried for days.
func (s *Signer) Sign(msg []byte) ([]byte, error) {
	return s.SignFields(msg, signedHeaders())
}

// SignFields is Sign covering the header fields given (a field listed
// twice is oversigned), for messages other than batches.
func (s *Signer) SignFields(msg []byte, fields []string) ([]byte, error) {
	var out bytes.Buffer
	out.Grow(len(msg) + 1024)
	err := dkim.Sign(&out, bytes.NewReader(msg), &dkim.SignOptions{
		Domain:                 s.domain,
		Selector:               s.selector,
		Signer:                 s.key,
		Hash:                   crypto.SHA256,
		HeaderCanonicalization: dkim.CanonicalizationRelaxed,
		BodyCanonicalization:   dkim.CanonicalizationRelaxed,
		HeaderKeys:             fields,
	})
	if err != nil {
		return nil, fmt.Errorf("dkim: sign: %w", err)
	}
	return out.Bytes(), nil
}
