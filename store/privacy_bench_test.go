package store

import (
	"context"
	"strings"
	"sync"
	"testing"
	"time"
)

// fillStore accepts n letters of about 3 KB, batches and delivers them.
func fillStore(b *testing.B, s *Store, n int) {
	b.Helper()
	ctx := context.Background()
	// 50 sessions at once, so the letters share commits.
	var wg sync.WaitGroup
	errs := make(chan error, 50)
	for w := range 50 {
		wg.Go(func() {
			for i := w; i < n; i += 50 {
				if _, err := s.Accept(ctx, benchLetter(uint64(i))); err != nil {
					errs <- err
					return
				}
			}
		})
	}
	wg.Wait()
	close(errs)
	if err := <-errs; err != nil {
		b.Fatal(err)
	}
	for {
		bt, err := closeNext(ctx, s, 1000, []string{"familias@ofapp.test"})
		if err != nil {
			b.Fatal(err)
		}
		if bt == nil {
			return
		}
		if err := s.MarkDelivered(ctx, DeliveryRef{Batch: bt.ID}, "250 ok"); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkErase is one supporter's erasure, wipe included, on a store of
// 20,000 delivered letters: each iteration erases a supporter whose letter
// is pending.
func BenchmarkErase(b *testing.B) {
	s := openStore(b, b.TempDir(), Options{JournalMax: 100000})
	fillStore(b, s, 20000)
	ctx := context.Background()
	var zeroed, looked int
	n := uint64(1 << 40)
	for b.Loop() {
		n++
		nl := benchLetter(n)
		if _, err := s.Accept(ctx, nl); err != nil {
			b.Fatal(err)
		}
		er, err := s.Erase(ctx, Supporter{Address: nl.DedupAddress, Same: func(a string) bool { return strings.EqualFold(a, nl.From) }})
		if err != nil {
			b.Fatal(err)
		}
		zeroed += er.Wipe.Zeroed
		looked += er.Wipe.Pages
	}
	b.ReportMetric(float64(zeroed)/float64(b.N), "pages-zeroed/op")
	b.ReportMetric(float64(looked)/float64(b.N), "free-pages/op")
}

// BenchmarkWipeAfterPurge is the wipe after the retention purge of 20,000
// letter bodies (about 80 MiB): what a retention run costs at most.
func BenchmarkWipeAfterPurge(b *testing.B) {
	for b.Loop() {
		b.StopTimer()
		s := purgedStore(b)
		b.StartTimer()
		st, err := s.Wipe(context.Background())
		if err != nil {
			b.Fatal(err)
		}
		if st.Zeroed == 0 {
			b.Fatal("nothing zeroed")
		}
		b.ReportMetric(float64(st.Zeroed*4096)/(1<<20), "MiB-zeroed")
	}
}

// BenchmarkAcceptDuringWipe is one session's letters while the wipe after
// a large purge runs: the slowest shows what the wipe's chunks cost a 250.
func BenchmarkAcceptDuringWipe(b *testing.B) {
	s := purgedStore(b)
	done := make(chan error, 1)
	go func() {
		_, err := s.Wipe(context.Background())
		done <- err
	}()
	var slowest time.Duration
	n := uint64(1 << 40)
	for b.Loop() {
		n++
		start := time.Now()
		if _, err := s.Accept(context.Background(), benchLetter(n)); err != nil {
			b.Fatal(err)
		}
		slowest = max(slowest, time.Since(start))
	}
	if err := <-done; err != nil {
		b.Fatal(err)
	}
	b.ReportMetric(float64(slowest.Microseconds())/1000, "slowest-ms")
}

// purgedStore is a store of 20,000 delivered letters whose bodies were
// just purged after retention: about 80 MiB of free pages to wipe.
func purgedStore(b *testing.B) *Store {
	b.Helper()
	clk := newClock()
	s := openStore(b, b.TempDir(), Options{Now: clk.Now, Retention: time.Hour})
	fillStore(b, s, 20000)
	clk.Advance(2 * time.Hour)
	due, _, err := s.DuePurges(clk.Now())
	if err != nil {
		b.Fatal(err)
	}
	for _, id := range due {
		if err := s.Purge(context.Background(), id); err != nil {
			b.Fatal(err)
		}
	}
	return s
}
