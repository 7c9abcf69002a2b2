package admin_test

import (
	"io"
	"net/http"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/petitiond/petitiond/config"
	"github.com/petitiond/petitiond/internal/keyserver"
	"github.com/petitiond/petitiond/internal/testenv"
	"github.com/petitiond/petitiond/store"
)

// The tests of the pages and access rules run a whole daemon on loopback
// (testenv: real store, SMTP, DNS for the DKIM keys, Maildir delivery) and
// speak HTTP to its admin listener, as a browser or a script would.

const (
	readerToken = "lector-de-prueba-0123456789"
	campaign    = "Libertad a los presos políticos"
)

// pagesEnv is a daemon with one delivered batch of three letters (one from
// an accented name, one from a display name that is HTML), one more
// counted letter waiting for the next batch, and one held letter.
type pagesEnv struct {
	*testenv.Test
	base  string // the admin listener's URL
	admin string // the admin token, made at first start
	held  string // the held letter's ID
	ids   []string
}

// The letters' senders and texts, which the tests look for.
const (
	mariaFrom  = "=?utf-8?q?Mar=C3=ADa_P=C3=A9rez?= <maria@ed.test>"
	mariaText  = "Exigimos la libertad de los presos políticos de la revuelta de octubre.\r\nCon cariño, María"
	scriptFrom = `"<script>alert(1)</script>" <script@rsa.test>`
	scriptText = "<b>hola</b> & <img src=x onerror=alert(2)> adiós"
	anaFrom    = "Ana Soto <ana.soto@gmail.com>"
	// A word longer than a phone's screen is wide.
	anaText = "Libertad para todas y todos.\r\nhttps://ejemplo.cl/?firma=" +
		"0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef"
	pedroFrom   = "=?utf-8?q?Pedro_N=C3=BA=C3=B1ez?= <pedro@ed.test>"
	pedroText   = "Que se haga justicia en Chile."
	heldFrom    = "Dan <dan@rsa.test>"
	heldText    = "Sin firma."
	letterTitle = "Libertad"
)

func startPages(t *testing.T, mutate func(*config.Config)) *pagesEnv {
	t.Helper()
	e := testenv.Start(t, func(c *config.Config) {
		c.Admin.Listen = "127.0.0.1:0"
		c.Admin.ReaderToken = readerToken
		c.Campaign.Name = campaign
		c.Batch.MaxLetters = 3
		c.Batch.MaxWait = config.Duration{Duration: time.Hour}
		if mutate != nil {
			mutate(c)
		}
	})
	p := &pagesEnv{Test: e, base: e.AdminURL(), admin: e.AdminToken()}
	sign := func(domain, from, text string) []byte {
		return e.Sign(domain, testenv.Letter(from, e.CampaignAddr(), letterTitle, text), keyserver.SignOptions{})
	}
	p.ids = append(p.ids,
		e.Queued(sign("ed.test", mariaFrom, mariaText)),
		e.Queued(sign("rsa.test", scriptFrom, scriptText)),
		e.Queued(sign("gmail.com", anaFrom, anaText)))
	testenv.WaitFor(t, "batch 1 delivered to both", 10*time.Second, func() bool {
		b, err := e.Store().Batch(1)
		return err == nil && b.Complete()
	})
	p.ids = append(p.ids, e.Queued(sign("ed.test", pedroFrom, pedroText)))
	p.held = e.Queued(e.Letter(heldFrom, letterTitle, heldText))
	return p
}

// noRedirect is a client that shows redirects instead of following them.
var noRedirect = &http.Client{
	CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse },
	Timeout:       30 * time.Second,
}

// req is a request to the admin listener; hdr holds header pairs.
func (p *pagesEnv) req(t *testing.T, method, path string, body io.Reader, hdr ...string) *http.Request {
	t.Helper()
	r, err := http.NewRequest(method, p.base+path, body)
	if err != nil {
		t.Fatal(err)
	}
	for i := 0; i+1 < len(hdr); i += 2 {
		if hdr[i] == "Host" {
			r.Host = hdr[i+1]
			continue
		}
		r.Header.Set(hdr[i], hdr[i+1])
	}
	return r
}

// do sends r and returns the status and body.
func do(t *testing.T, r *http.Request) (int, string, http.Header) {
	t.Helper()
	resp, err := noRedirect.Do(r)
	if err != nil {
		t.Fatalf("%s %s: %v", r.Method, r.URL, err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	return resp.StatusCode, string(b), resp.Header
}

// get fetches path with header pairs.
func (p *pagesEnv) get(t *testing.T, path string, hdr ...string) (int, string, http.Header) {
	t.Helper()
	return do(t, p.req(t, "GET", path, nil, hdr...))
}

// login posts token to the login form and returns the session cookie (nil
// when none was set) and the answer's status.
func (p *pagesEnv) login(t *testing.T, token string) (*http.Cookie, int, http.Header) {
	t.Helper()
	form := url.Values{"token": {token}, "next": {"/"}}
	r := p.req(t, "POST", "/login", strings.NewReader(form.Encode()),
		"Content-Type", "application/x-www-form-urlencoded", "Origin", p.base, "Sec-Fetch-Site", "same-origin")
	resp, err := noRedirect.Do(r)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	for _, c := range resp.Cookies() {
		if c.Name == "petitiond_session" && c.Value != "" {
			return c, resp.StatusCode, resp.Header
		}
	}
	return nil, resp.StatusCode, resp.Header
}

// stillHeld fails the test unless the held letter is still held.
func (p *pagesEnv) stillHeld(t *testing.T, after string) {
	t.Helper()
	l, err := p.Store().Letter(p.held)
	if err != nil {
		t.Fatal(err)
	}
	if l.State != store.StateHeld {
		t.Fatalf("after %s the held letter is %s", after, l.State)
	}
}
