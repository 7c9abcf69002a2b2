// Package batchmime reads a batch message back into its parts: the summary,
// the CSV rows and each letter's bytes exactly as received (a letter the
// digest carries base64-encoded is decoded). Tests, the demo's checks and
// anyone auditing a delivered batch use it; it walks the MIME tree one level
// at a time with the low-level reader, because go-message's mail reader
// flattens nested multiparts.
package batchmime

import (
	"bufio"
	"bytes"
	"encoding/base64"
	"encoding/csv"
	"errors"
	"fmt"
	"io"
	"mime"
	"mime/quotedprintable"
	"strings"
	"time"

	"github.com/emersion/go-message/textproto"
)

// The batch format as SPEC 7 states it, written out here rather than taken
// from relay/batch, so that tests reading a batch check the builder against
// the contract instead of against itself.
var csvHeader = []string{"received", "name", "address", "dkim_domain", "letter_id", "verified"}

// quoteMark starts every line of a letter's text in the summary.
const quoteMark = "|"

// Letter is one part of the digest.
type Letter struct {
	Header textproto.Header // the part's own header (Content-Type, CTE)
	Raw    []byte           // the letter, byte for byte, its transfer encoding undone
}

// Batch is a parsed batch message.
type Batch struct {
	Header  textproto.Header
	Parts   int    // top-level parts of the multipart/mixed
	Summary string // decoded, CRLF line breaks
	CSVName string // the CSV attachment's file name
	CSVBOM  bool   // the CSV starts with a UTF-8 byte order mark (which CSV leaves out)
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
			if _, dp, err := mime.ParseMediaType(p.Header.Get("Content-Disposition")); err == nil {
				b.CSVName = dp["filename"]
			}
			body, b.CSVBOM = bytes.CutPrefix(body, []byte(bom))
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
				raw, err := decode(lp)
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

const bom = "\ufeff"

// Row is one letter's row of the CSV.
type Row struct {
	Received   time.Time
	Name       string
	Address    string
	DKIMDomain string
	LetterID   string
	Verified   string // a SPEC 5 verdict word
}

// Rows reads the CSV's rows after checking its header; times must be RFC
// 3339.
func (b *Batch) Rows() ([]Row, error) {
	if len(b.CSV) == 0 {
		return nil, errors.New("batchmime: no CSV")
	}
	if got := strings.Join(b.CSV[0], ","); got != strings.Join(csvHeader, ",") {
		return nil, fmt.Errorf("batchmime: CSV header %q", got)
	}
	rows := make([]Row, 0, len(b.CSV)-1)
	for i, r := range b.CSV[1:] {
		if len(r) != len(csvHeader) {
			return nil, fmt.Errorf("batchmime: CSV row %d has %d fields", i+1, len(r))
		}
		at, err := time.Parse(time.RFC3339, r[0])
		if err != nil {
			return nil, fmt.Errorf("batchmime: CSV row %d: %w", i+1, err)
		}
		rows = append(rows, Row{Received: at, Name: r[1], Address: r[2], DKIMDomain: r[3], LetterID: r[4], Verified: r[5]})
	}
	return rows, nil
}

// QuotedTexts are the letters' own texts as the summary shows them, in
// order, each without its quote marks (quoteMark); a letter the
// summary has no text for has none here.
func (b *Batch) QuotedTexts() []string {
	var texts []string
	var cur []string
	flush := func() {
		if cur != nil {
			texts = append(texts, strings.Join(cur, "\n"))
			cur = nil
		}
	}
	for _, line := range summaryLines(b.Summary) {
		rest, ok := strings.CutPrefix(line, quoteMark)
		if !ok {
			flush()
			continue
		}
		cur = append(cur, strings.TrimPrefix(rest, " "))
	}
	flush()
	return texts
}

// Unquoted is the summary without the letters' own lines: what petitiond
// itself says, one line each.
func (b *Batch) Unquoted() []string {
	var lines []string
	for _, line := range summaryLines(b.Summary) {
		if !strings.HasPrefix(line, quoteMark) {
			lines = append(lines, line)
		}
	}
	return lines
}

func summaryLines(summary string) []string {
	return strings.Split(strings.ReplaceAll(summary, "\r\n", "\n"), "\n")
}
