// Finding the text of each letter for the summary: its plain text part, or
// its HTML without tags, decoded to UTF-8 and made safe to show. The digest
// carries every letter unchanged; only the summary uses this.

package batch

import (
	"bytes"
	"errors"
	"io"
	"mime"
	"strings"
	"unicode"
	"unicode/utf8"

	"github.com/emersion/go-message"
	// Registers the common charsets (latin-1, windows-1252, ...) with
	// go-message, so letters in them are decoded to UTF-8.
	_ "github.com/emersion/go-message/charset"
	"github.com/emersion/go-message/mail"
	"golang.org/x/net/html"

	"github.com/petitiond/petitiond/oneline"
)

// maxLetterText caps one letter's text in the summary, so that a huge
// letter cannot crowd out the others; the digest keeps the whole letter.
const maxLetterText = 64 << 10

// maxMIMEDepth bounds how deep readLetter follows nested multiparts.
const maxMIMEDepth = 16

// readLetter returns a letter's decoded Subject and the text to show for it:
// its first inline text/plain part decoded to UTF-8, else its HTML with the
// tags removed, else a note in parentheses. It never fails: one bad letter
// must not stop a batch.
func readLetter(raw []byte) (subject, text string) {
	defer func() {
		// A safety net around a third-party parser fed hostile input: a
		// parser bug costs this letter its text, not the whole batch.
		if r := recover(); r != nil {
			text = "(could not be read: the MIME parser failed)"
		}
	}()
	e, err := message.Read(bytes.NewReader(raw))
	if err != nil && !message.IsUnknownCharset(err) && !message.IsUnknownEncoding(err) {
		return "", couldNotRead(err)
	}
	// On a decoding error Subject still returns the raw value, which is
	// better than nothing once cleaned.
	s, _ := (&mail.Header{Header: e.Header}).Subject()
	subject = oneline.Clean(s)

	var f textFinder
	f.walk(e, err, "text/plain", 0)
	switch {
	case f.plainFound:
		text = f.plain
	case f.htmlFound:
		text = "(this letter has no plain text part; its HTML is shown with the tags removed)\n\n" + f.html
	case f.err != nil:
		return subject, couldNotRead(f.err)
	default:
		return subject, "(no plain text part)"
	}
	if strings.TrimSpace(text) == "" {
		text = "(empty)"
	}
	if f.note != "" {
		text += "\n\n" + f.note
	}
	return subject, text
}

func couldNotRead(err error) string {
	return "(could not be read: " + oneline.Clean(err.Error()) + ")"
}

// textFinder walks a letter's MIME tree looking for its text.
type textFinder struct {
	plain, html           string
	plainFound, htmlFound bool
	note                  string // about the text found (charset, truncation, decoding)
	err                   error  // the first structural error met
}

// walk visits e and its children in order and reports whether the search
// is over. entityErr is the error go-message gave when it made e (unknown
// charset or transfer encoding); defaultType is what e is without a
// Content-Type (RFC 2046 5.1.5: message/rfc822 inside a digest).
func (f *textFinder) walk(e *message.Entity, entityErr error, defaultType string, depth int) bool {
	if depth > maxMIMEDepth {
		f.setErr(errors.New("MIME parts nested too deeply"))
		return true
	}
	mediaType := defaultType
	if v := e.Header.Get("Content-Type"); v != "" {
		// mime.ParseMediaType still gives the type when only a parameter
		// is bad; a field that cannot be parsed at all means text/plain
		// (RFC 2045 5.2).
		t, _, err := mime.ParseMediaType(v)
		if err != nil && !errors.Is(err, mime.ErrInvalidMediaParameter) {
			t = "text/plain"
		}
		mediaType = t
	}
	if mr := e.MultipartReader(); mr != nil {
		childDefault := "text/plain"
		if mediaType == "multipart/digest" {
			childDefault = "message/rfc822"
		}
		for {
			part, err := mr.NextPart()
			if err == io.EOF {
				return false
			}
			if err != nil && (part == nil || !(message.IsUnknownCharset(err) || message.IsUnknownEncoding(err))) {
				f.setErr(err)
				return true
			}
			if f.walk(part, err, childDefault, depth+1) {
				return true
			}
		}
	}
	if disp, _, _ := e.Header.ContentDisposition(); strings.EqualFold(disp, "attachment") {
		return false
	}
	switch mediaType {
	case "text/plain":
		body, note := readBody(e, entityErr)
		f.plain, f.plainFound, f.note = cleanText(body), true, note
		return true
	case "text/html":
		if !f.htmlFound {
			body, note := readBody(e, entityErr)
			f.html, f.htmlFound = cleanText(htmlToText(body)), true
			if f.note == "" {
				f.note = note
			}
		}
	}
	return false
}

func (f *textFinder) setErr(err error) {
	if f.err == nil {
		f.err = err
	}
}

// readBody reads up to maxLetterText decoded bytes of e's body, with a note
// on anything the reader should know about how it was decoded.
func readBody(e *message.Entity, entityErr error) (string, string) {
	var notes []string
	switch {
	case message.IsUnknownEncoding(entityErr):
		notes = append(notes, "(its transfer encoding is unknown here; shown as received)")
	case message.IsUnknownCharset(entityErr):
		notes = append(notes, "(its charset is unknown here; shown as received)")
	}
	body, err := io.ReadAll(io.LimitReader(e.Body, maxLetterText+1))
	if err != nil {
		notes = append(notes, "(the rest could not be decoded: "+oneline.Clean(err.Error())+")")
	}
	if len(body) > maxLetterText {
		body = body[:maxLetterText]
		// Do not cut a character in half.
		for i := 0; i < utf8.UTFMax && len(body) > 0; i++ {
			if r, size := utf8.DecodeLastRune(body); r != utf8.RuneError || size != 1 {
				break
			}
			body = body[:len(body)-1]
		}
		notes = append(notes, "(cut here; the whole letter is in the attached digest)")
	}
	return string(body), strings.Join(notes, "\n")
}

// cleanText makes a letter's text safe to show: valid UTF-8, LF line
// breaks, no control characters but tabs, no leading or trailing blank
// lines. It is one pass over the bytes because every letter's text goes
// through it.
func cleanText(s string) string {
	buf := make([]byte, 0, len(s))
	for i := 0; i < len(s); {
		c := s[i]
		if c < utf8.RuneSelf {
			switch {
			case c == '\r':
				buf = append(buf, '\n')
				if i+1 < len(s) && s[i+1] == '\n' {
					i++
				}
			case c == '\n' || c == '\t' || c >= ' ' && c != 0x7f:
				buf = append(buf, c)
			default:
				buf = append(buf, ' ')
			}
			i++
			continue
		}
		r, size := utf8.DecodeRuneInString(s[i:])
		switch {
		case r == utf8.RuneError && size == 1:
			buf = append(buf, "\uFFFD"...)
		case r == '\u2028' || r == '\u2029':
			buf = append(buf, '\n')
		case unicode.IsControl(r):
			buf = append(buf, ' ')
		default:
			buf = append(buf, s[i:i+size]...)
		}
		i += size
	}
	return strings.Trim(string(buf), "\n")
}

// htmlToText strips tags crudely: text outside script, style and head, with
// a line break at each block element. It is only for letters that came
// without a plain text part.
func htmlToText(src string) string {
	z := html.NewTokenizer(strings.NewReader(src))
	var b strings.Builder
	hidden := 0
	for {
		tt := z.Next()
		switch tt {
		case html.ErrorToken:
			return collapseBlankLines(b.String())
		case html.TextToken:
			if hidden == 0 {
				b.WriteString(strings.Join(strings.Fields(string(z.Text())), " "))
				if t := z.Raw(); len(t) > 0 && unicode.IsSpace(rune(t[len(t)-1])) {
					b.WriteByte(' ')
				}
			}
		case html.StartTagToken, html.EndTagToken, html.SelfClosingTagToken:
			name, _ := z.TagName()
			switch string(name) {
			case "script", "style", "head", "title":
				if tt == html.StartTagToken {
					hidden++
				} else if tt == html.EndTagToken && hidden > 0 {
					hidden--
				}
			case "br", "p", "div", "li", "tr", "h1", "h2", "h3", "h4", "h5", "h6", "blockquote", "pre", "table":
				b.WriteByte('\n')
			}
		}
	}
}

func collapseBlankLines(s string) string {
	lines := strings.Split(s, "\n")
	out := lines[:0]
	blank := 0
	for _, l := range lines {
		l = strings.TrimSpace(l)
		if l == "" {
			blank++
			if blank > 1 {
				continue
			}
		} else {
			blank = 0
		}
		out = append(out, l)
	}
	return strings.Join(out, "\n")
}
