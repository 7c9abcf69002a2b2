// Package catalog holds every text petitiond writes for people to read (the
// batch's subject and summary, the organisers' pages; the mail to
// supporters as it comes), one catalogue per language (campaign.language).
//
// A catalogue is a directory of Go text/template files embedded in the
// binary, es/ and en/; each {{define "key"}} is one message. Code asks for a
// message by its key with typed data and never builds a sentence out of
// fragments, so a translator sees and writes whole sentences, plurals and
// word order included. Every language must define the same keys
// (catalog_test.go fails otherwise).
//
// The output is plain text. A caller that puts it in HTML escapes it
// (html/template does when a page prints a Text result), and one that puts it
// in a header encodes it.
package catalog

import (
	"bytes"
	"embed"
	"fmt"
	"io"
	"io/fs"
	"slices"
	"strings"
	"sync"
	"text/template"
	"time"
)

//go:embed es en
var files embed.FS

// Languages are the catalogues there are, by directory name ("en", "es").
func Languages() []string {
	sets, _ := parsed()
	langs := make([]string, 0, len(sets))
	for l := range sets {
		langs = append(langs, l)
	}
	slices.Sort(langs)
	return langs
}

// timeLayoutKey names the message that is a Go time layout: how the
// language writes a date and time for a person, its UTC offset included.
const timeLayoutKey = "format.time"

// parsed reads every catalogue once. The sets are never executed, only
// cloned (New), so one parse serves every caller.
var parsed = sync.OnceValues(func() (map[string]*template.Template, error) {
	dirs, err := fs.ReadDir(files, ".")
	if err != nil {
		return nil, fmt.Errorf("catalog: %w", err)
	}
	sets := make(map[string]*template.Template, len(dirs))
	for _, d := range dirs {
		if !d.IsDir() {
			continue
		}
		lang := d.Name()
		t := template.New(lang).Option("missingkey=error").Funcs(template.FuncMap{
			// Bound to the catalogue's time zone by New.
			"time": func(time.Time) string { return "" },
		})
		if _, err := t.ParseFS(files, lang+"/*.tmpl"); err != nil {
			return nil, fmt.Errorf("catalog %s: %w", lang, err)
		}
		sets[lang] = t
	}
	return sets, nil
})

// Catalog is one language's messages, with the time zone its times are
// shown in.
type Catalog struct {
	lang       string
	loc        *time.Location
	timeLayout string
	t          *template.Template
}

// New returns the catalogue of lang ("es", "en") showing times in loc
// (campaign.timezone; nil means UTC).
func New(lang string, loc *time.Location) (*Catalog, error) {
	sets, err := parsed()
	if err != nil {
		return nil, err
	}
	base, ok := sets[lang]
	if !ok {
		return nil, fmt.Errorf("catalog: no catalogue for language %q (there are %s)", lang, strings.Join(Languages(), ", "))
	}
	if loc == nil {
		loc = time.UTC
	}
	t, err := base.Clone()
	if err != nil {
		return nil, fmt.Errorf("catalog %s: %w", lang, err)
	}
	c := &Catalog{lang: lang, loc: loc, t: t}
	t.Funcs(template.FuncMap{"time": c.Time})
	if c.timeLayout, err = c.Text(timeLayoutKey, nil); err != nil {
		return nil, err
	}
	return c, nil
}

// Lang is the catalogue's language.
func (c *Catalog) Lang() string { return c.lang }

// Location is the time zone the catalogue's times are shown in.
func (c *Catalog) Location() *time.Location { return c.loc }

// Text is the message key made with data.
func (c *Catalog) Text(key string, data any) (string, error) {
	var b bytes.Buffer
	if err := c.Write(&b, key, data); err != nil {
		return "", err
	}
	return b.String(), nil
}

// Write writes the message key made with data to w: for long messages, into
// a buffer grown to fit.
func (c *Catalog) Write(w io.Writer, key string, data any) error {
	if err := c.t.ExecuteTemplate(w, key, data); err != nil {
		return fmt.Errorf("catalog %s: %w", c.lang, err)
	}
	return nil
}

// Time is t as a person reads it in this language: local to the
// catalogue's time zone, with the UTC offset.
func (c *Catalog) Time(t time.Time) string {
	return t.In(c.loc).Format(c.timeLayout)
}

// Keys lists the messages of lang's catalogue, sorted.
func Keys(lang string) ([]string, error) {
	sets, err := parsed()
	if err != nil {
		return nil, err
	}
	base, ok := sets[lang]
	if !ok {
		return nil, fmt.Errorf("catalog: no catalogue for language %q", lang)
	}
	var keys []string
	for _, t := range base.Templates() {
		// The set's own name holds no message, only the files' text
		// between definitions.
		if name := t.Name(); name != lang && !strings.HasSuffix(name, ".tmpl") {
			keys = append(keys, name)
		}
	}
	slices.Sort(keys)
	return keys, nil
}
