package admin

import (
	"context"
	"fmt"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"strings"
	"testing"
	"time"

	"github.com/petitiond/petitiond/store"
)

func TestHostAllowed(t *testing.T) {
	s := &Server{hosts: allowedNames("127.0.0.1:8025", []string{"MX.Campaign.Example.", ""}), listenIP: netip.MustParseAddr("127.0.0.1")}
	for host, want := range map[string]bool{
		"127.0.0.1:8025": true, "127.0.0.1": true, "127.9.9.9:1": true, "[::1]:8025": true, "localhost:8025": true,
		"LocalHost.": true, "mx.campaign.example": true, "mx.campaign.example.:8025": true,
		"": false, "evil.example:8025": false, "mx.campaign.example.evil.example": false, "localhost.evil.example": false,
		"192.0.2.1:8025": false, "[2001:db8::1]:8025": false, "0.0.0.0": false, "xn--localhost": false,
	} {
		if got := s.hostAllowed(host); got != want {
			t.Errorf("hostAllowed(%q) = %v, want %v", host, got, want)
		}
	}
	// Bound to every interface: any IP literal is this machine's, and a
	// literal cannot be rebound; names are still checked.
	s.listenIP = netip.MustParseAddr("0.0.0.0")
	if !s.hostAllowed("192.0.2.1:8025") || s.hostAllowed("evil.example") {
		t.Errorf("wildcard listener: IP literal or name judged wrongly")
	}
	if names := allowedNames("admin.internal:8025", []string{"mx.example"}); strings.Join(names, ",") != "admin.internal,mx.example" {
		t.Errorf("allowedNames: %q", names)
	}
}

func TestSessionCookie(t *testing.T) {
	tk := newTokens("admin-token", "reader-token")
	now := time.Date(2026, 5, 1, 12, 0, 0, 0, time.UTC)
	for _, r := range []role{roleAdmin, roleReader} {
		v := tk.session(r, now.Add(time.Hour))
		if got := tk.sessionRole(v, now); got != r {
			t.Errorf("role %c: read back as %c", r, got)
		}
		if got := tk.sessionRole(v, now.Add(time.Hour)); got != roleNone {
			t.Errorf("role %c: opens after it expired", r)
		}
		// Another token, as after the admin changed it: the session ends.
		other := newTokens("admin-token-2", "reader-token-2")
		if got := other.sessionRole(v, now); got != roleNone {
			t.Errorf("role %c: opens under new tokens", r)
		}
		for _, bad := range []string{"", ".", v + "x", "x" + v, strings.Replace(v, ".", "", 1), v[:len(v)-2]} {
			if got := tk.sessionRole(bad, now); got != roleNone {
				t.Errorf("role %c: %q opens", r, bad)
			}
		}
	}
	// Without a reader token, no reader session is made or read.
	noReader := newTokens("admin-token", "")
	if v := noReader.session(roleReader, now.Add(time.Hour)); v != "" {
		t.Errorf("reader session without a reader token: %q", v)
	}
	if got := noReader.sessionRole(tk.session(roleReader, now.Add(time.Hour)), now); got != roleNone {
		t.Errorf("a reader session opens where there is no reader token")
	}
	if tk.roleOf("") != roleNone || noReader.roleOf("") != roleNone {
		t.Errorf("the empty token opens something")
	}
}

func TestSafeNext(t *testing.T) {
	for next, want := range map[string]string{
		"/": "/", "/batches/3": "/batches/3", "/search?q=mar%C3%ADa": "/search?q=mar%C3%ADa", "": "/",
		"//evil.example": "/", "///evil.example": "/", "https://evil.example/": "/", "/\\evil.example": "/",
		"javascript:alert(1)": "/", "batches/3": "/", "/login": "/", "/a\r\nSet-Cookie: x": "/", "http:/x": "/",
	} {
		if got := safeNext(next); got != want {
			t.Errorf("safeNext(%q) = %q, want %q", next, got, want)
		}
	}
}

func TestFold(t *testing.T) {
	for in, want := range map[string]string{
		"María Pérez": "maria perez", "NÚÑEZ": "nunez", "Ñandú": "nandu", "plain": "plain", "Ça va": "ca va",
		"Zoë": "zoe", "Straße": "straße",
	} {
		if got := fold(in); got != want {
			t.Errorf("fold(%q) = %q, want %q", in, got, want)
		}
	}
	words, shown := queryWords("  María  maria\tPÉREZ \x1b[31m ")
	if strings.Join(words, " ") != "maria perez [31m" || strings.Contains(shown, "\x1b") {
		t.Errorf("queryWords: %q, shown %q", words, shown)
	}
	long, _ := queryWords(strings.Repeat("palabra", 10) + " " + strings.Repeat("a ", 20))
	if len(long) > searchMaxWords {
		t.Errorf("%d words kept", len(long))
	}
}

// TestSearchBound: a search reads at most its bound of letters, newest
// first, and says when it stopped before the oldest.
func TestSearchBound(t *testing.T) {
	st := openStore(t)
	ctx := context.Background()
	for i := range 30 {
		a := fmt.Sprintf("firmante%02d@ed.test", i)
		if _, err := st.Accept(ctx, store.NewLetter{From: a, Name: "Firmante", DedupAddress: a,
			Verdict: store.Verdict{Kind: store.VerdictDKIM, Domain: "ed.test"},
			Body:    []byte("Subject: x\r\n\r\nhola\r\n")}); err != nil {
			t.Fatal(err)
		}
	}
	s := startServerWith(t, st, Options{Listen: "127.0.0.1:0", Language: "es"})
	for _, c := range []struct {
		bound, found int
		cut          bool
	}{{10, 10, true}, {30, 30, false}, {100, 30, false}} {
		s.searchScan = c.bound
		res, hits, err := s.searchLetters(ctx, []string{"firmante"})
		if err != nil {
			t.Fatal(err)
		}
		if res.Found != c.found || res.Scanned != c.found || res.Cut != c.cut || len(hits) != c.found {
			t.Errorf("bound %d: %+v with %d hits, want %d found, cut %v", c.bound, res, len(hits), c.found, c.cut)
		}
		if len(hits) > 0 && hits[0].ID != "L0000001E" {
			t.Errorf("bound %d: first hit %s, want the newest", c.bound, hits[0].ID)
		}
	}
	s.searchScan = 10
	req := httptest.NewRequest("GET", "/search?q=firmante", nil)
	req.Header.Set("Authorization", "Bearer "+testToken)
	req.Host = "127.0.0.1"
	rec := httptest.NewRecorder()
	s.handler(false).ServeHTTP(rec, req)
	if rec.Code != http.StatusOK || !strings.Contains(rec.Body.String(), "revisó solo las 10 cartas más recientes") {
		t.Errorf("the page does not say the search was cut: %d\n%s", rec.Code, rec.Body.String())
	}
}
