package store

import (
	"bytes"
	"context"
	"fmt"
	"runtime"
	"strconv"
	"sync/atomic"
	"testing"
	"time"
)

// benchBody is a letter of about 3 KB.
var benchBody = func() []byte {
	var b bytes.Buffer
	b.WriteString("From: Supporter <s@example.org>\r\nTo: libertad@campaign.example\r\nSubject: Libertad\r\n\r\n")
	for b.Len() < 3000 {
		b.WriteString("Liberen a los presos politicos de la revuelta de octubre de 2019 en Chile.\r\n")
	}
	return b.Bytes()
}()

func benchLetter(n uint64) NewLetter {
	sender := fmt.Sprintf("s%d@example.org", n)
	return NewLetter{
		Received:     time.Now(),
		From:         sender,
		RemoteIP:     "192.0.2.1",
		Verdict:      Verdict{Kind: VerdictDKIM, Domain: "example.org", Selector: "s1"},
		DedupAddress: sender,
		Body:         benchBody,
	}
}

func reportLettersPerCommit(b *testing.B, s *Store, commits0, writes0 uint64) {
	commits, writes := s.CommitStats()
	if c := commits - commits0; c > 0 {
		b.ReportMetric(float64(writes-writes0)/float64(c), "letters/commit")
	}
}

// pageStats is what the file's pages cost: pages bbolt allocated (each
// written at its commit, the freelist's included) and write calls.
type pageStats struct{ alloc, writes int64 }

func readPageStats(s *Store) pageStats {
	st := s.db.Stats().TxStats
	return pageStats{alloc: st.GetPageAlloc(), writes: st.GetWrite()}
}

// reportPages reports the pages written per letter (meta pages aside: one
// per commit, counted in letters/commit).
func reportPages(b *testing.B, s *Store, before pageStats, letters int) {
	after := readPageStats(s)
	b.ReportMetric(float64(after.alloc-before.alloc)/float64(s.db.Info().PageSize)/float64(letters), "pages/letter")
}

// BenchmarkAccept1 is one SMTP session after another: one fsync per letter.
func BenchmarkAccept1(b *testing.B) {
	s := openStore(b, b.TempDir(), Options{})
	ctx := context.Background()
	b.SetBytes(int64(len(benchBody)))
	commits0, writes0 := s.CommitStats()
	pages0 := readPageStats(s)
	var n uint64
	for b.Loop() {
		n++
		if _, err := s.Accept(ctx, benchLetter(n)); err != nil {
			b.Fatal(err)
		}
	}
	reportLettersPerCommit(b, s, commits0, writes0)
	reportPages(b, s, pages0, int(n))
}

// BenchmarkAccept50 is about 50 concurrent sessions sharing fsyncs.
func BenchmarkAccept50(b *testing.B) {
	s := openStore(b, b.TempDir(), Options{})
	ctx := context.Background()
	procs := runtime.GOMAXPROCS(0)
	b.SetParallelism((50 + procs - 1) / procs)
	b.SetBytes(int64(len(benchBody)))
	var n atomic.Uint64
	commits0, writes0 := s.CommitStats()
	pages0 := readPageStats(s)
	b.ResetTimer()
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			if _, err := s.Accept(ctx, benchLetter(n.Add(1))); err != nil {
				b.Error(err)
				return
			}
		}
	})
	b.StopTimer()
	reportLettersPerCommit(b, s, commits0, writes0)
	reportPages(b, s, pages0, int(n.Load()))
}

// BenchmarkCloseBatch1000 closes batches of 1,000 letters of about 3 KB.
// read-ms is NextBatch, a read that runs beside the writer; message-ms
// writes and syncs a message file as CloseBatch does first, in the
// closer's goroutine, beside the writer; close-ms is the whole CloseBatch
// call, so close-ms minus message-ms is the one commit that a letter
// arriving at that moment waits behind.
func BenchmarkCloseBatch1000(b *testing.B) {
	ctx := context.Background()
	s := openStore(b, b.TempDir(), Options{})
	var n uint64
	var read, message, closing time.Duration
	for b.Loop() {
		b.StopTimer()
		for range 1000 {
			n++
			if _, err := s.Accept(ctx, benchLetter(n)); err != nil {
				b.Fatal(err)
			}
		}
		b.StartTimer()
		t0 := time.Now()
		pb, err := s.NextBatch(1000)
		if err != nil || pb == nil {
			b.Fatal(pb, err)
		}
		read += time.Since(t0)
		nb := simpleBatch(pb, []string{"familias@ofapp.example", "copias@sr.example"}, time.Now())
		t1 := time.Now()
		file, err := s.writeMessage(strconv.FormatUint(nb.Number, 10), nb.Message)
		if err != nil {
			b.Fatal(err)
		}
		message += time.Since(t1)
		if err := s.removeMessage(file); err != nil {
			b.Fatal(err)
		}
		t2 := time.Now()
		if _, err := s.CloseBatch(ctx, nb); err != nil {
			b.Fatal(err)
		}
		closing += time.Since(t2)
	}
	per := func(d time.Duration) float64 { return float64(d.Microseconds()) / float64(b.N) / 1000 }
	b.ReportMetric(per(read), "read-ms")
	b.ReportMetric(per(message), "message-ms")
	b.ReportMetric(per(closing), "close-ms")
}
