// Package loadgen is the client half of petitiond's load measurements: it
// makes DKIM keys for many supporter domains, signs distinct letters from
// distinct supporters, and sends them over concurrent SMTP sessions, timing
// every end-of-DATA reply. cmd/petitiond-load and the relay's end-to-end
// benchmark use it, so both measure the same client.
package loadgen

import (
	"context"
	"fmt"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/petitiond/petitiond/internal/keyserver"
	"github.com/petitiond/petitiond/internal/smtpclient"
)

// Selector is the DKIM selector of every generated key.
const Selector = "load"

// NewKeys makes one signing key per supporter domain, "sup<i>.load.test":
// even-numbered domains get RSA-2048 (what most providers sign with), odd
// ones ed25519, so both verification paths are exercised. RSA key
// generation is slow, so the keys are made in parallel.
func NewKeys(ctx context.Context, domains int) ([]*keyserver.Key, error) {
	if domains < 1 {
		return nil, fmt.Errorf("loadgen: need at least one domain, not %d", domains)
	}
	keys := make([]*keyserver.Key, domains)
	errs := make([]error, domains)
	sem := make(chan struct{}, runtime.GOMAXPROCS(0))
	var wg sync.WaitGroup
	for i := range keys {
		wg.Go(func() {
			sem <- struct{}{}
			defer func() { <-sem }()
			if err := ctx.Err(); err != nil {
				errs[i] = err
				return
			}
			algo := "rsa"
			if i%2 == 1 {
				algo = "ed25519"
			}
			keys[i], errs[i] = keyserver.NewKey(fmt.Sprintf("sup%d.load.test", i), Selector, algo)
		})
	}
	wg.Wait()
	for _, err := range errs {
		if err != nil {
			return nil, fmt.Errorf("loadgen: make keys: %w", err)
		}
	}
	return keys, nil
}

// Letter is one prepared letter, ready for the wire.
type Letter struct {
	// From is the supporter's address: envelope sender and From: header.
	From string
	// Data is the signed message, dot-stuffed, with the end-of-data line.
	Data []byte
}

// Size is the message size without dot-stuffing and terminator, roughly.
func (l Letter) Size() int { return len(l.Data) - len(".\r\n") }

// paragraph fills letters up to the wanted size; the letter number is added
// to each so no two letters are alike.
const paragraph = "Exigimos la libertad inmediata de las presas y los presos politicos de la " +
	"revuelta de octubre de 2019 en Chile, y verdad, justicia y reparacion para sus familias."

// MakeLetters signs n distinct letters of about size bytes each, to rcpt,
// letter i from supporter "supporter<i>@<domain of key i mod len(keys)>".
// Signing is the client's cost, not the server's, so callers do this before
// the timed phase; it runs on every core.
func MakeLetters(ctx context.Context, keys []*keyserver.Key, n, size int, rcpt string) ([]Letter, error) {
	if len(keys) == 0 {
		return nil, fmt.Errorf("loadgen: make letters: no keys")
	}
	letters := make([]Letter, n)
	date := time.Now().Format(time.RFC1123Z)
	var next atomic.Int64
	var firstErr error
	var errOnce sync.Once
	var wg sync.WaitGroup
	for range runtime.GOMAXPROCS(0) {
		wg.Go(func() {
			for {
				i := int(next.Add(1) - 1)
				if i >= n {
					return
				}
				if err := ctx.Err(); err != nil {
					errOnce.Do(func() { firstErr = err })
					return
				}
				k := keys[i%len(keys)]
				from := "supporter" + strconv.Itoa(i) + "@" + k.Domain
				signed, err := k.Sign(letterText(i, from, rcpt, date, size), keyserver.SignOptions{})
				if err != nil {
					errOnce.Do(func() { firstErr = err })
					return
				}
				letters[i] = Letter{From: from, Data: smtpclient.DotStuff(signed)}
			}
		})
	}
	wg.Wait()
	if firstErr != nil {
		return nil, fmt.Errorf("loadgen: make letters: %w", firstErr)
	}
	return letters, nil
}

// letterText is letter i, unsigned, padded to about size bytes.
func letterText(i int, from, rcpt, date string, size int) []byte {
	var b strings.Builder
	b.Grow(size + 200)
	fmt.Fprintf(&b, "From: Supporter %d <%s>\r\nTo: <%s>\r\nSubject: Libertad a los presos politicos (%d)\r\n"+
		"Date: %s\r\nMessage-ID: <letter-%d@%s>\r\nMIME-Version: 1.0\r\n"+
		"Content-Type: text/plain; charset=utf-8\r\n\r\n",
		i, from, rcpt, i, date, i, from[strings.IndexByte(from, '@')+1:])
	// The DKIM-Signature field adds about 500 bytes (RSA) or 250 (ed25519).
	for line := 1; b.Len() < size-400; line++ {
		fmt.Fprintf(&b, "%d.%d %s\r\n", i, line, paragraph)
	}
	fmt.Fprintf(&b, "\r\nSupporter %d\r\n", i)
	return []byte(b.String())
}
