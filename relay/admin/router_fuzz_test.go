package admin

import (
	"context"
	"io"
	"net/http"
	"net/http/httptest"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/petitiond/petitiond/store"
)

// FuzzRouter sends the admin listener's whole handler (Host check,
// cross-origin check, routes and their access levels) arbitrary requests,
// with credentials and browser headers picked from a set, and checks the
// access rules hold for each: nothing changes state without the admin
// token as a Bearer header; a foreign Host gets nothing; the reader token
// and cookies never open the API; a cross-origin browser request never
// acts; nothing panics.
func FuzzRouter(f *testing.F) {
	st := openStore(f)
	ctx := context.Background()
	for _, nl := range []store.NewLetter{
		{From: "dan@rsa.test", DedupAddress: "dan@rsa.test", Hold: store.HeldUnverified, Body: []byte("Subject: x\r\n\r\nsin firma\r\n")},
		{From: "bounce@x.test", Hold: store.HeldPostmaster, Body: []byte("Subject: bounce\r\n\r\nx\r\n")},
		{From: "ana@ed.test", Name: "Ana", DedupAddress: "ana@ed.test", Verdict: store.Verdict{Kind: store.VerdictDKIM, Domain: "ed.test"},
			Body: []byte("Subject: Libertad\r\n\r\nLibertad.\r\n")},
	} {
		if _, err := st.Accept(ctx, nl); err != nil {
			f.Fatal(err)
		}
	}
	const adminTok, readerTok = "fuzz-admin-token", "fuzz-reader-token"
	s, err := New(st, Options{Listen: "127.0.0.1:8025", Token: adminTok, ReaderToken: readerTok, Hosts: []string{"mx.campaign.test"},
		Campaign: "Libertad", Language: "es"})
	if err != nil {
		f.Fatal(err)
	}
	h := s.handler(true)
	now := time.Now()
	hosts := []string{"127.0.0.1:8025", "localhost", "mx.campaign.test", "evil.example", "", "127.0.0.1.evil.example"}
	auths := []string{"", "Bearer " + adminTok, "Bearer " + readerTok, "Bearer wrong", "Basic " + adminTok, "bearer " + adminTok}
	cookies := []string{"", sessionCookie + "=" + s.tokens.session(roleAdmin, now.Add(time.Hour)),
		sessionCookie + "=" + s.tokens.session(roleReader, now.Add(time.Hour)), sessionCookie + "=" + adminTok,
		sessionCookie + "=" + s.tokens.session(roleAdmin, now.Add(-time.Hour))}
	origins := []string{"", "http://127.0.0.1:8025", "http://evil.example", "null"}
	fetchSites := []string{"", "same-origin", "cross-site", "none", "same-site"}

	f.Add("POST", "/api/held/L00000001/release", "x", uint8(0), uint8(0), uint8(0), uint8(2), uint8(2))
	f.Add("POST", "/api/held/L00000001/drop", "", uint8(0), uint8(2), uint8(1), uint8(0), uint8(0))
	f.Add("GET", "/api/held", "", uint8(3), uint8(1), uint8(0), uint8(0), uint8(0))
	f.Add("GET", "/debug/pprof/", "", uint8(0), uint8(2), uint8(2), uint8(0), uint8(0))
	f.Add("GET", "/search?q=ana", "", uint8(1), uint8(0), uint8(2), uint8(0), uint8(0))
	f.Add("POST", "/login", "token="+readerTok+"&next=//evil.example", uint8(0), uint8(0), uint8(0), uint8(1), uint8(1))
	f.Add("POST", "/api/batches/1/retry", "", uint8(2), uint8(5), uint8(0), uint8(0), uint8(0))
	f.Add("GET", "/batches/1", "", uint8(0), uint8(0), uint8(3), uint8(0), uint8(0))
	f.Add("PUT", "/api/held/L00000002/release", "", uint8(0), uint8(1), uint8(0), uint8(3), uint8(4))
	f.Add("GET", "/signers.csv", "", uint8(0), uint8(0), uint8(1), uint8(0), uint8(0))

	f.Fuzz(func(t *testing.T, method, target, body string, host, auth, cookie, origin, site uint8) {
		pick := func(list []string, i uint8) string { return list[int(i)%len(list)] }
		hostV, authV := pick(hosts, host), pick(auths, auth)
		originV, siteV := pick(origins, origin), pick(fetchSites, site)
		req, err := http.NewRequest(method, "http://127.0.0.1:8025"+target, strings.NewReader(body))
		if err != nil || !strings.HasPrefix(target, "/") {
			return
		}
		req.Host = hostV
		for k, v := range map[string]string{"Authorization": authV, "Cookie": pick(cookies, cookie), "Origin": originV,
			"Sec-Fetch-Site": siteV, "Content-Type": "application/x-www-form-urlencoded"} {
			if v != "" {
				req.Header.Set(k, v)
			}
		}
		rctx, cancel := context.WithTimeout(context.Background(), 200*time.Millisecond)
		defer cancel()
		req = req.WithContext(rctx)

		before := heldIDs(t, st)
		rec := httptest.NewRecorder()
		func() {
			defer func() {
				if r := recover(); r != nil && r != http.ErrAbortHandler {
					t.Fatalf("%s %s panicked: %v", method, target, r)
				}
			}()
			h.ServeHTTP(rec, req)
		}()
		_, _ = io.Copy(io.Discard, rec.Result().Body)
		ok := rec.Code >= 200 && rec.Code < 300

		isAdmin := strings.EqualFold(strings.SplitN(authV, " ", 2)[0], "Bearer") && strings.HasSuffix(authV, " "+adminTok)
		if !isAdmin && !slices.Equal(before, heldIDs(t, st)) {
			t.Fatalf("%s %s without the admin Bearer token changed the held letters: %v -> %v", method, target, before, heldIDs(t, st))
		}
		if !s.hostAllowed(hostV) && rec.Code != http.StatusForbidden {
			t.Fatalf("%s %s with Host %q: %d, want 403", method, target, hostV, rec.Code)
		}
		path := req.URL.Path
		if ok && !isAdmin && (strings.HasPrefix(path, "/api/") || strings.HasPrefix(path, "/debug/")) {
			t.Fatalf("%s %s opened without the admin token (auth %q, cookie %d): %d", method, target, authV, cookie, rec.Code)
		}
		unsafe := method != "GET" && method != "HEAD" && method != "OPTIONS"
		crossSite := siteV == "cross-site" || siteV == "same-site" || (siteV == "" && (originV == "null" || originV == "http://evil.example"))
		if ok && unsafe && crossSite {
			t.Fatalf("%s %s from another site (Origin %q, Sec-Fetch-Site %q): %d", method, target, originV, siteV, rec.Code)
		}
	})
}

func heldIDs(t *testing.T, st *store.Store) []string {
	held, err := st.Held()
	if err != nil {
		t.Fatal(err)
	}
	var ids []string
	for _, l := range held {
		ids = append(ids, l.ID)
	}
	return ids
}
