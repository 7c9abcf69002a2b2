package store

import (
	"context"
	"runtime"
	"sync/atomic"
	"testing"
	"time"
)

// BenchmarkPrefill is the cost of one synthetic counted sender, in chunks
// of 10,000 as the load tool makes them.
func BenchmarkPrefill(b *testing.B) {
	s := openStore(b, b.TempDir(), Options{})
	b.ResetTimer()
	if err := s.Prefill(context.Background(), b.N, 10000); err != nil {
		b.Fatal(err)
	}
	b.StopTimer()
	b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "senders/s")
}

// prefilledSenders is the store size issue 5 sets the scale target at:
// acceptance on top of it within 20% of an empty store.
const prefilledSenders = 1_000_000

// prefilledStore opens a store with prefilledSenders counted senders. It
// takes tens of seconds, hence only in benchmarks and never under -short.
func prefilledStore(b *testing.B) *Store {
	b.Helper()
	if testing.Short() {
		b.Skip("prefilling a million senders is slow")
	}
	s := openStore(b, b.TempDir(), Options{})
	start := time.Now()
	if err := s.Prefill(context.Background(), prefilledSenders, 10000); err != nil {
		b.Fatal(err)
	}
	b.Logf("prefilled %d senders in %v", prefilledSenders, time.Since(start).Round(time.Millisecond))
	return s
}

// BenchmarkAcceptPrefilled is BenchmarkAccept1 and BenchmarkAccept50 on a
// store holding a million counted senders. The sub-benchmarks share one
// prefilled store (the outer function runs once) and one sender counter, so
// every letter is from a new sender.
func BenchmarkAcceptPrefilled(b *testing.B) {
	s := prefilledStore(b)
	ctx := context.Background()
	var n atomic.Uint64
	b.Run("writers=1", func(b *testing.B) {
		b.SetBytes(int64(len(benchBody)))
		commits0, writes0 := s.CommitStats()
		for b.Loop() {
			if _, err := s.Accept(ctx, benchLetter(n.Add(1))); err != nil {
				b.Fatal(err)
			}
		}
		reportLettersPerCommit(b, s, commits0, writes0)
	})
	b.Run("writers=50", func(b *testing.B) {
		procs := runtime.GOMAXPROCS(0)
		b.SetParallelism((50 + procs - 1) / procs)
		b.SetBytes(int64(len(benchBody)))
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
	})
}
