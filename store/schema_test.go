package store

import (
	"context"
	"encoding/json"
	"slices"
	"strings"
	"testing"
	"time"

	bolt "go.etcd.io/bbolt"
)

// Letters written by schema version 1 had a verdict with only "pass"; they
// read as dkim (pass) or unverified.
func TestVerdictReadsVersion1(t *testing.T) {
	t.Parallel()
	for raw, want := range map[string]Verdict{
		`{"pass":true,"domain":"ed.test","selector":"s1"}`:     {Kind: VerdictDKIM, Domain: "ed.test", Selector: "s1"},
		`{"pass":false,"reason":"no signature"}`:               {Kind: VerdictUnverified, Reason: "no signature"},
		`{}`:                                                   {Kind: VerdictUnverified},
		`{"kind":"spf","domain":"ed.test"}`:                    {Kind: VerdictSPF, Domain: "ed.test"},
		`{"kind":"admin","pass":true,"reason":"no signature"}`: {Kind: VerdictAdmin, Reason: "no signature"},
	} {
		var got Verdict
		if err := json.Unmarshal([]byte(raw), &got); err != nil || got != want {
			t.Errorf("Unmarshal(%s) = %+v, %v; want %+v", raw, got, err, want)
		}
	}
	data, err := json.Marshal(Verdict{Kind: VerdictDKIM, Domain: "ed.test"})
	if err != nil || string(data) != `{"kind":"dkim","domain":"ed.test"}` {
		t.Errorf("Marshal = %s, %v", data, err)
	}
}

// A version 1 store opens: its pending queue, keyed by letter ID, becomes
// the queue keyed by pending time, and its letters read as before.
func TestOpenConvertsVersion1(t *testing.T) {
	t.Parallel()
	clk := newClock()
	dir := t.TempDir()
	s, err := Open(dir, Options{Now: clk.Now})
	if err != nil {
		t.Fatal(err)
	}
	a := mustAccept(t, s, verified(clk, "ana@example.org"))
	clk.Advance(1)
	b := mustAccept(t, s, unverified(clk, "bo@example.org", ""))
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	// Turn the file into what version 1 wrote.
	writeBolt(t, dir, func(tx *bolt.Tx) error {
		if err := tx.DeleteBucket(bucketPending); err != nil {
			return err
		}
		old, err := tx.CreateBucket(bucketPendingV1)
		if err != nil {
			return err
		}
		for id, verdict := range map[string]string{a.ID: `{"pass":true,"domain":"example.org"}`, b.ID: `{"pass":false,"reason":"no signature"}`} {
			var rec map[string]any
			if err := json.Unmarshal(tx.Bucket(bucketLetters).Get([]byte(id)), &rec); err != nil {
				return err
			}
			delete(rec, "pending_since")
			rec["verdict"] = json.RawMessage(verdict)
			data, _ := json.Marshal(rec)
			if err := tx.Bucket(bucketLetters).Put([]byte(id), data); err != nil {
				return err
			}
			if err := old.Put([]byte(id), nil); err != nil {
				return err
			}
		}
		return tx.Bucket(bucketMeta).Put(keySchema, u64(1))
	})

	s = openStore(t, dir, Options{Now: clk.Now})
	p, err := s.Pending()
	if err != nil || p.Letters != 2 || !p.Oldest.Equal(mustLetter(t, s, a.ID).Received) {
		t.Errorf("Pending after the conversion = %+v, %v", p, err)
	}
	if got := mustLetter(t, s, a.ID).Verdict.Kind; got != VerdictDKIM {
		t.Errorf("version 1 passing verdict reads as %q, want dkim", got)
	}
	if got := mustLetter(t, s, b.ID).Verdict.Kind; got != VerdictUnverified {
		t.Errorf("version 1 failing verdict reads as %q, want unverified", got)
	}
	bt, err := closeNext(context.Background(), s, 10, recipients)
	if err != nil || bt == nil || len(bt.LetterIDs) != 2 || bt.LetterIDs[0] != a.ID {
		t.Fatalf("batch after the conversion = %+v, %v", bt, err)
	}
	if n := bucketLen(t, s, bucketPending); n != 0 {
		t.Errorf("pending queue holds %d after batching everything", n)
	}
	err = s.view(func(tx *bolt.Tx) error {
		if tx.Bucket(bucketPendingV1) != nil {
			t.Error("version 1 pending bucket still there")
		}
		if v := getU64(tx.Bucket(bucketMeta), keySchema); v != SchemaVersion {
			t.Errorf("schema version %d after the conversion", v)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
}

// A version 2 store opens as version 3. A petitiond of version 2 may not
// have kept the sender index or the held letters' expiry queue (it came
// before them, or ran on a file a newer one had written): the conversion
// builds them from the letter records, so a lookup (and so an erasure)
// finds every letter of a supporter, and every letter that must expire
// does.
func TestOpenConvertsVersion2(t *testing.T) {
	t.Parallel()
	clk := newClock()
	dir := t.TempDir()
	s := openStore(t, dir, Options{Now: clk.Now})
	counted := mustAccept(t, s, ana(clk, anaAddr)).ID
	held := mustAccept(t, s, unverified(clk, anaAddr, HeldUnverified)).ID
	kept := mustAccept(t, s, unverified(clk, anaAddr, "")).ID // policy relay: kept whole as a duplicate
	mustAccept(t, s, verified(clk, "bo@example.org"))
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	// What a version 2 petitiond that knew neither index left after
	// taking these letters: no entry in either.
	writeBolt(t, dir, func(tx *bolt.Tx) error {
		if err := tx.Bucket(bucketSenders).Delete(senderKey(s.DedupKey(strings.ToLower(anaAddr)), held)); err != nil {
			return err
		}
		for _, id := range []string{held, kept} {
			l, err := getLetter(tx, id)
			if err != nil {
				return err
			}
			if err := tx.Bucket(bucketHeldSince).Delete(pendingKey(l.Received, id)); err != nil {
				return err
			}
		}
		return tx.Bucket(bucketMeta).Put(keySchema, u64(2))
	})

	s = openStore(t, dir, Options{Now: clk.Now, HeldRetention: time.Hour})
	if got, want := recordIDs(mustLookup(t, s, anaSupporter())), []string{counted, held, kept}; !slices.Equal(got, want) {
		t.Errorf("lookup after the conversion: %v, want %v", got, want)
	}
	if n, _, err := s.ExpireHeld(context.Background(), clk.Advance(time.Hour)); err != nil || n != 2 {
		t.Errorf("ExpireHeld after the conversion = %d, %v; want the held letter and the kept duplicate", n, err)
	}
	err := s.view(func(tx *bolt.Tx) error {
		if v := getU64(tx.Bucket(bucketMeta), keySchema); v != 3 {
			t.Errorf("schema version %d after the conversion, want 3", v)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
}
