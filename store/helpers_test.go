package store

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	bolt "go.etcd.io/bbolt"

	"github.com/petitiond/petitiond/internal/testclock"
)

// openStore opens a store in dir and closes it when the test ends.
// newClock is a clock the tests move by hand.
func newClock() *testclock.Manual {
	return testclock.NewManual(time.Date(2019, 10, 18, 12, 0, 0, 0, time.UTC))
}

func openStore(t testing.TB, dir string, opt Options) *Store {
	t.Helper()
	if opt.LockTimeout == 0 {
		opt.LockTimeout = 500 * time.Millisecond
	}
	s, err := Open(dir, opt)
	if err != nil {
		t.Fatalf("Open(%s): %v", dir, err)
	}
	t.Cleanup(func() { _ = s.Close() })
	return s
}

// verified is a counted letter from sender that passed DKIM.
func verified(clk *testclock.Manual, sender string) NewLetter {
	domain := sender[strings.IndexByte(sender, '@')+1:]
	return NewLetter{
		Received:     clk.Now(),
		From:         sender,
		Name:         "Supporter " + sender,
		RemoteIP:     "192.0.2.10",
		Verdict:      Verdict{Kind: VerdictDKIM, Domain: domain, Selector: "s1"},
		DedupAddress: strings.ToLower(sender),
		Body:         []byte(fmt.Sprintf("From: <%s>\r\nSubject: Libertad\r\n\r\nLiberen a los presos politicos. -- %s\r\n", sender, sender)),
	}
}

// unverified is a letter from sender without a passing signature; hold is
// "" (policy relay) or a Held* reason.
func unverified(clk *testclock.Manual, sender string, hold HeldReason) NewLetter {
	nl := verified(clk, sender)
	nl.Verdict = Verdict{Kind: VerdictUnverified, Reason: "no signature"}
	nl.Hold = hold
	return nl
}

func mustAccept(t testing.TB, s *Store, nl NewLetter) Accepted {
	t.Helper()
	res, err := s.Accept(context.Background(), nl)
	if err != nil {
		t.Fatalf("Accept(%s): %v", nl.From, err)
	}
	return res
}

func mustStats(t testing.TB, s *Store) Stats {
	t.Helper()
	st, err := s.Stats()
	if err != nil {
		t.Fatalf("Stats: %v", err)
	}
	return st
}

func mustLetter(t testing.TB, s *Store, id string) *Letter {
	t.Helper()
	l, err := s.Letter(id)
	if err != nil {
		t.Fatalf("Letter(%s): %v", id, err)
	}
	return l
}

// allEvents returns the whole journal, oldest first.
func allEvents(t testing.TB, s *Store) []Event {
	t.Helper()
	evs, err := s.Events(0, 0)
	if err != nil {
		t.Fatalf("Events: %v", err)
	}
	return evs
}

// eventsOfKind returns the journal events of one kind.
func eventsOfKind(t testing.TB, s *Store, kind EventKind) []Event {
	t.Helper()
	var out []Event
	for _, e := range allEvents(t, s) {
		if e.Event == kind {
			out = append(out, e)
		}
	}
	return out
}

// bucketLen counts the keys of one bucket.
func bucketLen(t testing.TB, s *Store, name []byte) int {
	t.Helper()
	n := 0
	err := s.view(func(tx *bolt.Tx) error {
		return tx.Bucket(name).ForEach(func(_, _ []byte) error { n++; return nil })
	})
	if err != nil {
		t.Fatalf("count bucket %s: %v", name, err)
	}
	return n
}

// waitFor polls cond until it holds or the deadline passes.
func waitFor(t testing.TB, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(time.Millisecond)
	}
}

// recv takes the next event from a feed, failing after a deadline.
func recv(t testing.TB, f *Feed) Event {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	e, err := f.Next(ctx)
	if err != nil {
		t.Fatalf("waiting for an event: %v", err)
	}
	return e
}

// simpleBatch is a deterministic build of a snapshot: the message lists the
// letters' IDs and bodies.
func simpleBatch(pb *PendingBatch, recipients []string, created time.Time) NewBatch {
	var sb strings.Builder
	fmt.Fprintf(&sb, "Subject: [test] batch %d: %d letters (total %d)\r\n\r\n", pb.Number, len(pb.Letters), pb.RunningTotal)
	nb := NewBatch{Number: pb.Number, RunningTotal: pb.RunningTotal, Created: created,
		MessageID: fmt.Sprintf("<batch-%d@campaign.example>", pb.Number), Recipients: recipients, Rule: CloseFull}
	for _, l := range pb.Letters {
		fmt.Fprintf(&sb, "--- %s\r\n%s", l.ID, l.Body)
		nb.LetterIDs = append(nb.LetterIDs, l.ID)
	}
	nb.Message = []byte(sb.String())
	return nb
}

// closeNext closes the next batch of up to max letters as the batch closer
// does (snapshot, build, commit), with simpleBatch as the builder; nil when
// no letter waits.
func closeNext(ctx context.Context, s *Store, max int, recipients []string) (*Batch, error) {
	pb, err := s.NextBatch(max)
	if err != nil || pb == nil {
		return nil, err
	}
	return s.CloseBatch(ctx, simpleBatch(pb, recipients, s.now()))
}

// holdLoop makes the commit loop busy with one write until the returned
// release func is called, so the test can queue writes that then share the
// next group.
func holdLoop(t *testing.T, s *Store) (release func()) {
	t.Helper()
	started := make(chan struct{})
	gate := make(chan struct{})
	done := make(chan error, 1)
	go func() {
		done <- s.update(context.Background(), func(*bolt.Tx, *writer) error {
			select {
			case <-started:
			default:
				close(started)
			}
			<-gate
			return nil
		})
	}()
	select {
	case <-started:
	case <-time.After(5 * time.Second):
		t.Fatal("commit loop never ran the blocking write")
	}
	var once sync.Once
	release = func() {
		once.Do(func() {
			close(gate)
			if err := <-done; err != nil {
				t.Errorf("blocking write: %v", err)
			}
		})
	}
	t.Cleanup(release)
	return release
}

var errInjected = errors.New("injected failure")

// failingWrite queues a write that fails, and returns its result channel.
func failingWrite(s *Store) <-chan error {
	ch := make(chan error, 1)
	go func() {
		ch <- s.update(context.Background(), func(*bolt.Tx, *writer) error { return errInjected })
	}()
	return ch
}

// at is a StartAttempt backoff that always answers t.
func at(t time.Time) func(attempts int) time.Time {
	return func(int) time.Time { return t }
}
