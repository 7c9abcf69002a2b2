package admin

import (
	"context"
	"fmt"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/petitiond/petitiond/store"
)

// benchServer is an admin server on a store of n counted letters of about
// 1 KiB of text each.
func benchServer(b *testing.B, n int) *Server {
	st := openStore(b)
	ctx := context.Background()
	text := strings.Repeat("Exigimos la libertad de los presos políticos de la revuelta de octubre. ", 14)
	for i := range n {
		a := fmt.Sprintf("firmante%06d@ed.test", i)
		body := fmt.Sprintf("From: Firmante %d <%s>\r\nSubject: Libertad\r\nContent-Type: text/plain; charset=utf-8\r\n\r\n%s\r\n", i, a, text)
		if _, err := st.Accept(ctx, store.NewLetter{From: a, Name: fmt.Sprintf("Firmante %d", i), DedupAddress: a,
			Verdict: store.Verdict{Kind: store.VerdictDKIM, Domain: "ed.test"}, Body: []byte(body)}); err != nil {
			b.Fatal(err)
		}
	}
	s, err := New(st, Options{Listen: "127.0.0.1:0", Token: testToken, Language: "es"})
	if err != nil {
		b.Fatal(err)
	}
	return s
}

// BenchmarkSearch: a search that matches no letter reads and extracts the
// text of every one; the figure per letter is what bounds a search.
func BenchmarkSearch(b *testing.B) {
	const n = 5000
	s := benchServer(b, n)
	b.ResetTimer()
	for b.Loop() {
		res, _, err := s.searchLetters(context.Background(), []string{"nadie", "escribio", "esto"})
		if err != nil || res.Scanned != n {
			b.Fatalf("%+v %v", res, err)
		}
	}
	b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N*n), "ns/letter")
}

// BenchmarkSignersCSV: every counted letter's row, records only.
func BenchmarkSignersCSV(b *testing.B) {
	const n = 5000
	s := benchServer(b, n)
	h := s.handler(false)
	b.ResetTimer()
	for b.Loop() {
		req := httptest.NewRequest("GET", "/signers.csv", nil)
		req.Host = "127.0.0.1"
		req.Header.Set("Authorization", "Bearer "+testToken)
		rec := httptest.NewRecorder()
		h.ServeHTTP(rec, req)
		if rec.Code != http.StatusOK || strings.Count(rec.Body.String(), "\n") != n+1 {
			b.Fatalf("%d, %d lines", rec.Code, strings.Count(rec.Body.String(), "\n"))
		}
	}
	b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N*n), "ns/letter")
}
