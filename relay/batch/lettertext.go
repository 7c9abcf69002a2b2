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
	"github.com/petitiond/petitiond/relay/catalog"
)

// maxLetterText caps one letter's text in the summary, so that a huge
// letter cannot crowd out the others; the digest keeps the whole letter.
const maxLetterText = 64 << 10

// maxMIMEDepth bounds how deep readLetter follows nested multiparts.
const maxMIMEDepth = 16

// letterText is what the summary shows of a letter: its decoded Subject,
// its text (one paragraph a line, cleaned by cleanText; "" when there is
// none to show), and notes on how it was read, for before and after it.
type letterText struct {
	subject       string
	text          string
	before, after []catalog.Note
}

// readLetter finds a letter's text: its first inline text/plain part
// decoded to UTF-8, else its HTML with the tags removed, else nothing, with
// notes saying which. It never fails: one bad letter must not stop a batch.
func readLetter(raw []byte) (lt letterText) {
	defer func() {
		// A safety net around a third-party parser fed hostile input: a
		// parser bug costs this letter its text, not the whole batch.
		if r := recover(); r != nil {
			lt = letterText{subject: lt.subject, before: []catalog.Note{unreadable(errors.New("the MIME parser failed"))}}
		}
	}()
	e, err := message.Read(bytes.NewReader(raw))
	if err != nil && !message.IsUnknownCharset(err) && !message.IsUnknownEncoding(err) {
		return letterText{before: []catalog.Note{unreadable(err)}}
	}
	// On a decoding error Subject still returns the raw value, which is
	// better than nothing once cleaned.
	s, _ := (&mail.Header{Header: e.Header}).Subject()
	lt.subject = oneline.Clean(s)

	var f textFinder
	f.walk(e, err, "text/plain", 0)
	switch {
	case f.plainFound:
		lt.text = f.plain
	case f.htmlFound:
		lt.text = f.html
		lt.before = append(lt.before, catalog.Note{Kind: "html_only"})
	case f.err != nil:
		lt.before = append(lt.before, unreadable(f.err))
		return lt
	default:
		lt.before = append(lt.before, catalog.Note{Kind: "no_text"})
		return lt
	}
	lt.before = append(lt.before, f.before...)
	lt.after = f.after
	if strings.TrimSpace(lt.text) == "" {
		lt.text = ""
		lt.before = append(lt.before, catalog.Note{Kind: "empty"})
	}
	return lt
}

func unreadable(err error) catalog.Note {
	return catalog.Note{Kind: "unreadable", Detail: oneline.Clean(err.Error())}
}

// textFinder walks a letter's MIME tree looking for its text.
type textFinder struct {
	plain, html           string
	plainFound, htmlFound bool
	before, after         []catalog.Note // about the text found (charset, decoding, truncation)
	err                   error          // the first structural error met
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
		body, before, after := readBody(e, entityErr)
		f.plain, f.plainFound, f.before, f.after = cleanText(body), true, before, after
		return true
	case "text/html":
		if !f.htmlFound {
			body, before, after := readBody(e, entityErr)
			f.html, f.htmlFound = cleanText(htmlToText(body)), true
			if f.before == nil && f.after == nil {
				f.before, f.after = before, after
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

// readBody reads up to maxLetterText decoded bytes of e's body, with notes
// on anything the reader should know about how it was decoded.
func readBody(e *message.Entity, entityErr error) (body string, before, after []catalog.Note) {
	switch {
	case message.IsUnknownEncoding(entityErr):
		before = append(before, catalog.Note{Kind: "unknown_encoding"})
	case message.IsUnknownCharset(entityErr):
		before = append(before, catalog.Note{Kind: "unknown_charset"})
	}
	b, err := io.ReadAll(io.LimitReader(e.Body, maxLetterText+1))
	if err != nil {
		after = append(after, catalog.Note{Kind: "decode_error", Detail: oneline.Clean(err.Error())})
	}
	if len(b) > maxLetterText {
		b = b[:maxLetterText]
		// Do not cut a character in half.
		for i := 0; i < utf8.UTFMax && len(b) > 0; i++ {
			if r, size := utf8.DecodeLastRune(b); r != utf8.RuneError || size != 1 {
				break
			}
			b = b[:len(b)-1]
		}
		after = append(after, catalog.Note{Kind: "cut"})
	}
	return string(b), before, after
}

// cleanText makes a letter's text safe to show: valid UTF-8, LF line
// breaks, no control or bidi characters but tabs, no leading or trailing
// blank lines. It is one pass over the bytes because every letter's text goes
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
		case oneline.Unsafe(r):
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
