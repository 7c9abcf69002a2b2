package store

import (
	"bytes"
	"context"
	"fmt"
	"runtime"
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

// BenchmarkAccept1 is one SMTP session after another: one fsync per letter.
func BenchmarkAccept1(b *testing.B) {
	s := openStore(b, b.TempDir(), Options{})
	ctx := context.Background()
	b.SetBytes(int64(len(benchBody)))
	commits0, writes0 := s.CommitStats()
	var n uint64
	for b.Loop() {
		n++
		if _, err := s.Accept(ctx, benchLetter(n)); err != nil {
			b.Fatal(err)
		}
	}
	reportLettersPerCommit(b, s, commits0, writes0)
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
}
