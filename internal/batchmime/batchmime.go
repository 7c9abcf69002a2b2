// Package batchmime reads a batch message back into its parts: the summary,
// the CSV rows and each letter's bytes exactly as they sit in the digest.
// Tests, the demo's checks and anyone auditing a delivered batch use it; it
// walks the MIME tree one level at a time with the low-level reader, because
// go-message's mail reader flattens nested multiparts and decodes bodies.
package batchmime

import (
	"bufio"
	"bytes"
	"encoding/base64"
	"encoding/csv"
	"fmt"
	"io"
	"mime"
	"mime/quotedprintable"
	"strings"

	"github.com/emersion/go-message/textproto"
)

// Letter is one part of the digest.
type Letter struct {
	Header textproto.Header // the part's own header (Content-Type, CTE)
	Raw    []byte           // the letter, byte for byte
}

// Batch is a parsed batch message.
type Batch struct {
	Header  textproto.Header
	Parts   int // top-level parts of the multipart/mixed
	Summary string
	CSV     [][]string
	Letters []Letter
}

// Read parses a batch message.
func Read(msg []byte) (*Batch, error) {
	br := bufio.NewReader(bytes.NewReader(msg))
	h, err := textproto.ReadHeader(br)
	if err != nil {
		return nil, fmt.Errorf("batchmime: header: %w", err)
	}
	b := &Batch{Header: h}
	ct, params, err := mime.ParseMediaType(h.Get("Content-Type"))
	if err != nil || ct != "multipart/mixed" {
		return nil, fmt.Errorf("batchmime: Content-Type %q is not multipart/mixed", h.Get("Content-Type"))
	}
	mr := textproto.NewMultipartReader(br, params["boundary"])
	for {
		p, err := mr.NextPart()
		if err == io.EOF {
			break
		}
		if err != nil {
			return nil, fmt.Errorf("batchmime: part %d: %w", b.Parts+1, err)
		}
		b.Parts++
		pct, pparams, _ := mime.ParseMediaType(p.Header.Get("Content-Type"))
		switch pct {
		case "text/plain":
			if b.Parts == 1 {
				body, err := decode(p)
				if err != nil {
					return nil, err
				}
				b.Summary = string(body)
			}
		case "text/csv":
			body, err := decode(p)
			if err != nil {
				return nil, err
			}
			if b.CSV, err = csv.NewReader(bytes.NewReader(body)).ReadAll(); err != nil {
				return nil, fmt.Errorf("batchmime: CSV: %w", err)
			}
		case "multipart/digest":
			dr := textproto.NewMultipartReader(p, pparams["boundary"])
			for {
				lp, err := dr.NextPart()
				if err == io.EOF {
					break
				}
				if err != nil {
					return nil, fmt.Errorf("batchmime: digest part %d: %w", len(b.Letters)+1, err)
				}
				raw, err := io.ReadAll(lp)
				if err != nil {
					return nil, fmt.Errorf("batchmime: digest part %d: %w", len(b.Letters)+1, err)
				}
				b.Letters = append(b.Letters, Letter{Header: lp.Header, Raw: raw})
			}
		}
	}
	return b, nil
}

// MessageID returns a letter's Message-ID without angle brackets.
func (l Letter) MessageID() (string, error) {
	h, err := textproto.ReadHeader(bufio.NewReader(bytes.NewReader(l.Raw)))
	if err != nil {
		return "", fmt.Errorf("batchmime: letter header: %w", err)
	}
	return strings.Trim(h.Get("Message-Id"), "<>"), nil
}

func decode(p *textproto.Part) ([]byte, error) {
	var r io.Reader = p
	switch strings.ToLower(p.Header.Get("Content-Transfer-Encoding")) {
	case "quoted-printable":
		r = quotedprintable.NewReader(p)
	case "base64":
		r = base64.NewDecoder(base64.StdEncoding, p)
	}
	b, err := io.ReadAll(r)
	if err != nil {
		return nil, fmt.Errorf("batchmime: decode part: %w", err)
	}
	return b, nil
}
