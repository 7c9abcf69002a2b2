package admin_test

import (
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/petitiond/petitiond/config"
	"github.com/petitiond/petitiond/relay/admin"
)

// TestTokenFile: with no admin.token, the daemon makes one at first start
// in <store.dir>/admin.token, mode 0600, opens the API with it alone, and
// keeps it across a restart; a configured token makes no file.
func TestTokenFile(t *testing.T) {
	p := startPages(t, nil)
	path := filepath.Join(p.Config.Store.Dir, admin.TokenFileName)
	fi, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	if fi.Mode().Perm() != 0o600 {
		t.Errorf("%s has mode %v, want 0600", path, fi.Mode().Perm())
	}
	if len(p.admin) < 40 {
		t.Errorf("token %q is too short to be random enough", p.admin)
	}
	if code, _, _ := p.get(t, "/api/stats"); code != http.StatusUnauthorized {
		t.Errorf("API without the token: %d", code)
	}
	if code, body, _ := p.get(t, "/api/stats", "Authorization", "Bearer "+p.admin); code != http.StatusOK {
		t.Errorf("API with the made token: %d %s", code, body)
	}
	p.Restart()
	if tok := p.AdminToken(); tok != p.admin {
		t.Errorf("the token changed across a restart")
	}
	if code, _, _ := p.get(t, "/api/stats", "Authorization", "Bearer "+p.admin); code != http.StatusOK {
		t.Errorf("API after a restart: %d", code)
	}

	q := startPages(t, func(c *config.Config) { c.Admin.Token = "configured-admin-token" })
	if _, err := os.Stat(filepath.Join(q.Config.Store.Dir, admin.TokenFileName)); !os.IsNotExist(err) {
		t.Errorf("a token file was made although admin.token is set (%v)", err)
	}
}

// TestActionsRefusedFromBrowsers (issue 9 point 1): an action needs the
// admin token as a Bearer header. A page in the admin's browser cannot
// act: a cross-origin form post (text/plain, no preflight) is refused on
// its Origin, and the login cookie, even the admin's, never acts.
func TestActionsRefusedFromBrowsers(t *testing.T) {
	p := startPages(t, nil)
	adminCookie, _, _ := p.login(t, p.admin)
	readerCookie, _, _ := p.login(t, readerToken)
	if adminCookie == nil || readerCookie == nil {
		t.Fatal("login set no cookie")
	}
	for _, action := range []string{"release", "drop"} {
		path := "/api/held/" + p.held + "/" + action
		for _, c := range []struct {
			name string
			hdr  []string
			want int
		}{
			{"cross-origin form post, no credentials", []string{"Content-Type", "text/plain", "Origin", "http://evil.example"}, http.StatusForbidden},
			{"cross-origin form post from a browser", []string{"Content-Type", "text/plain", "Origin", "http://evil.example", "Sec-Fetch-Site", "cross-site"}, http.StatusForbidden},
			{"cross-origin with the admin token", []string{"Origin", "http://evil.example", "Authorization", "Bearer " + p.admin}, http.StatusForbidden},
			{"opaque origin", []string{"Origin", "null", "Authorization", "Bearer " + p.admin}, http.StatusForbidden},
			{"same-origin with the admin's cookie", []string{"Origin", p.base, "Sec-Fetch-Site", "same-origin", "Cookie", adminCookie.String()}, http.StatusUnauthorized},
			{"same-origin with the reader's cookie", []string{"Origin", p.base, "Sec-Fetch-Site", "same-origin", "Cookie", readerCookie.String()}, http.StatusUnauthorized},
			{"the reader token as Bearer", []string{"Authorization", "Bearer " + readerToken}, http.StatusForbidden},
			{"the admin token as a cookie value", []string{"Cookie", "petitiond_session=" + p.admin}, http.StatusUnauthorized},
			{"no credentials", nil, http.StatusUnauthorized},
		} {
			code, body, _ := do(t, p.req(t, "POST", path, strings.NewReader("x"), c.hdr...))
			if code != c.want {
				t.Errorf("%s %s: %d %s, want %d", action, c.name, code, body, c.want)
			}
			p.stillHeld(t, action+" "+c.name)
		}
	}
	// The admin command's way: the Bearer header, no browser headers.
	code, body, _ := do(t, p.req(t, "POST", "/api/held/"+p.held+"/release", nil, "Authorization", "Bearer "+p.admin))
	if code != http.StatusOK || !strings.Contains(body, `"released"`) {
		t.Errorf("release with the admin token: %d %s", code, body)
	}
}

// TestRebindingRefused (issue 9 point 1): a request whose Host is not this
// listener's (a web page whose name was rebound to 127.0.0.1) gets nothing,
// token or not; the listener's own address, localhost and smtp.hostname
// are answered.
func TestRebindingRefused(t *testing.T) {
	p := startPages(t, nil)
	_, port, _ := strings.Cut(strings.TrimPrefix(p.base, "http://"), ":")
	auth := []string{"Authorization", "Bearer " + p.admin}
	for _, path := range []string{"/api/held", "/api/events", "/api/batches/1/message", "/debug/pprof/", "/", "/signers.csv", "/healthz", "/login"} {
		for _, host := range []string{"evil.example:" + port, "evil.example", "127.0.0.1.evil.example:" + port, "localhost.evil.example"} {
			code, body, _ := p.get(t, path, append([]string{"Host", host}, auth...)...)
			if code != http.StatusForbidden {
				t.Errorf("GET %s with Host %s: %d, want 403", path, host, code)
			}
			if strings.Contains(body, "Libertad") || strings.Contains(body, "maria@") {
				t.Errorf("GET %s with Host %s answered with content", path, host)
			}
		}
	}
	for _, host := range []string{"127.0.0.1:" + port, "localhost:" + port, "LOCALHOST.", "mx.campaign.test", "mx.campaign.test:" + port, "[::1]:" + port} {
		if code, body, _ := p.get(t, "/api/stats", append([]string{"Host", host}, auth...)...); code != http.StatusOK {
			t.Errorf("Host %s: %d %s, want 200", host, code, body)
		}
	}
}

// TestReaderOpensPagesOnly: the reader token opens the pages (by header or
// by the login cookie) and never the API, held letters, events or pprof;
// the admin token opens the pages too.
func TestReaderOpensPagesOnly(t *testing.T) {
	p := startPages(t, nil)
	readerCookie, _, _ := p.login(t, readerToken)
	adminCookie, _, _ := p.login(t, p.admin)
	pages := []string{"/", "/batches/1", "/batches/1/csv", "/batches/1/eml", "/search?q=maria", "/signers.csv"}
	closed := []string{"/api/stats", "/api/held", "/api/events", "/api/batches", "/api/batches/1/message", "/debug/pprof/", "/debug/pprof/goroutine"}
	for _, c := range []struct {
		name        string
		hdr         []string
		pages, apis int
	}{
		{"reader Bearer", []string{"Authorization", "Bearer " + readerToken}, 200, 403},
		{"reader cookie", []string{"Cookie", readerCookie.String()}, 200, 401},
		{"admin cookie", []string{"Cookie", adminCookie.String()}, 200, 401},
		{"admin Bearer", []string{"Authorization", "Bearer " + p.admin}, 200, 200},
	} {
		for _, path := range pages {
			if code, body, _ := p.get(t, path, c.hdr...); code != c.pages {
				t.Errorf("%s GET %s: %d, want %d\n%.300s", c.name, path, code, c.pages, body)
			}
		}
		for _, path := range closed {
			if code, _, _ := p.get(t, path, c.hdr...); code != c.apis {
				t.Errorf("%s GET %s: %d, want %d", c.name, path, code, c.apis)
			}
		}
	}
	// Nothing, a wrong token, or a forged, tampered or foreign cookie: a
	// browser is sent to the login form, a script gets 401.
	sig := readerCookie.Value[strings.IndexByte(readerCookie.Value, '.'):]
	forged := "YQAAAAB_____." + sig[1:] // role "a", far expiry, the reader's signature
	for _, hdr := range [][]string{nil, {"Cookie", "petitiond_session=" + forged}, {"Cookie", "petitiond_session=" + readerCookie.Value + "x"},
		{"Cookie", "petitiond_session=" + readerToken}} {
		code, _, h := p.get(t, "/batches/1", hdr...)
		if code != http.StatusSeeOther || h.Get("Location") != "/login?next="+url.QueryEscape("/batches/1") {
			t.Errorf("%v: %d to %q, want 303 to the login form", hdr, code, h.Get("Location"))
		}
	}
	if code, _, _ := p.get(t, "/", "Authorization", "Bearer nope"); code != http.StatusUnauthorized {
		t.Errorf("a wrong Bearer token on a page: %d, want 401", code)
	}
}

// TestLoginCookie: the cookie is HttpOnly, SameSite=Strict, for the whole
// listener, and not Secure over plain HTTP (Secure behind an HTTPS proxy);
// a wrong token sets none; the
// page to return to stays on this listener; logging out ends it.
func TestLoginCookie(t *testing.T) {
	p := startPages(t, nil)
	c, code, h := p.login(t, readerToken)
	if c == nil || code != http.StatusSeeOther || h.Get("Location") != "/" {
		t.Fatalf("login: %d to %q, cookie %v", code, h.Get("Location"), c)
	}
	raw := h.Get("Set-Cookie")
	for _, want := range []string{"HttpOnly", "SameSite=Strict", "Path=/", "Max-Age="} {
		if !strings.Contains(raw, want) {
			t.Errorf("Set-Cookie %q lacks %s", raw, want)
		}
	}
	if strings.Contains(raw, "Secure") || strings.Contains(raw, readerToken) {
		t.Errorf("Set-Cookie %q: Secure over plain HTTP, or the token itself", raw)
	}
	// Behind a TLS-terminating proxy (X-Forwarded-Proto: https) it is
	// Secure.
	form := url.Values{"token": {readerToken}}
	_, _, h = do(t, p.req(t, "POST", "/login", strings.NewReader(form.Encode()),
		"Content-Type", "application/x-www-form-urlencoded", "X-Forwarded-Proto", "https"))
	if raw := h.Get("Set-Cookie"); !strings.Contains(raw, "; Secure") || !strings.Contains(raw, "HttpOnly") {
		t.Errorf("Set-Cookie behind an HTTPS proxy %q, want Secure and HttpOnly", raw)
	}
	if c, code, _ := p.login(t, "not-the-token"); c != nil || code != http.StatusUnauthorized {
		t.Errorf("wrong token: %d, cookie %v", code, c)
	}
	for next, want := range map[string]string{
		"/batches/1": "/batches/1", "/search?q=maria": "/search?q=maria", "//evil.example/": "/",
		"https://evil.example/": "/", "/\\evil.example": "/", "javascript:alert(1)": "/", "": "/",
	} {
		form := url.Values{"token": {readerToken}, "next": {next}}
		_, _, h := do(t, p.req(t, "POST", "/login", strings.NewReader(form.Encode()), "Content-Type", "application/x-www-form-urlencoded"))
		if got := h.Get("Location"); got != want {
			t.Errorf("next %q: to %q, want %q", next, got, want)
		}
	}
	code, _, h = do(t, p.req(t, "POST", "/logout", nil, "Cookie", c.String(), "Origin", p.base))
	if code != http.StatusSeeOther || !strings.Contains(h.Get("Set-Cookie"), "Max-Age=0") {
		t.Errorf("logout: %d, Set-Cookie %q", code, h.Get("Set-Cookie"))
	}
	// A cross-origin login (login CSRF) is refused too.
	if code, _, _ := do(t, p.req(t, "POST", "/login", strings.NewReader(form.Encode()),
		"Content-Type", "application/x-www-form-urlencoded", "Origin", "http://evil.example")); code != http.StatusForbidden {
		t.Errorf("cross-origin login: %d, want 403", code)
	}
}

// TestHealthAndMetricsAccess: /healthz needs no token; /metrics needs the
// admin token only when admin.token is configured.
func TestHealthAndMetricsAccess(t *testing.T) {
	p := startPages(t, nil)
	if code, _, _ := p.get(t, "/healthz"); code != http.StatusOK {
		t.Errorf("healthz: %d", code)
	}
	if code, _, _ := p.get(t, "/metrics"); code != http.StatusOK {
		t.Errorf("metrics with the token made at first start: %d, want 200 without a token", code)
	}
	q := startPages(t, func(c *config.Config) { c.Admin.Token = "configured-admin-token" })
	if code, _, _ := q.get(t, "/healthz"); code != http.StatusOK {
		t.Errorf("healthz with a configured token: %d", code)
	}
	for tok, want := range map[string]int{"": 401, readerToken: 403, "configured-admin-token": 200} {
		var hdr []string
		if tok != "" {
			hdr = []string{"Authorization", "Bearer " + tok}
		}
		if code, _, _ := q.get(t, "/metrics", hdr...); code != want {
			t.Errorf("metrics with token %q and admin.token set: %d, want %d", tok, code, want)
		}
	}
}
