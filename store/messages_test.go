package store

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"os"
	"path/filepath"
	"testing"
	"time"

	bolt "go.etcd.io/bbolt"
)

func messageFiles(t *testing.T, dir string) []string {
	t.Helper()
	entries, err := os.ReadDir(filepath.Join(dir, messageDir))
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, e := range entries {
		names = append(names, e.Name())
	}
	return names
}

// A batch's message is a file of its own, written before the commit; a
// commit that fails leaves no file, purging removes it, and Open removes
// what a crash left behind.
func TestBatchMessageFile(t *testing.T) {
	t.Parallel()
	clk := newClock()
	dir := t.TempDir()
	s, err := Open(dir, Options{Now: clk.Now, Retention: time.Hour})
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	acceptN(t, s, clk, 2)
	pb, err := s.NextBatch(10)
	if err != nil {
		t.Fatal(err)
	}
	nb := simpleBatch(pb, recipients[:1], clk.Now())
	b, err := s.CloseBatch(ctx, nb)
	if err != nil {
		t.Fatal(err)
	}
	files := messageFiles(t, dir)
	if len(files) != 1 || files[0] != b.File {
		t.Fatalf("message files %v, batch names %q", files, b.File)
	}
	if got, err := os.ReadFile(filepath.Join(dir, messageDir, b.File)); err != nil || !bytes.Equal(got, nb.Message) {
		t.Errorf("message file = %q, %v", got, err)
	}
	if fi, err := os.Stat(filepath.Join(dir, messageDir, b.File)); err != nil || fi.Mode().Perm()&0o077 != 0 {
		t.Errorf("message file mode %v, %v; want no group/other access", fi.Mode(), err)
	}
	// A stale build commits nothing and leaves no file.
	if _, err := s.CloseBatch(ctx, nb); !errors.Is(err, ErrConflict) {
		t.Fatalf("stale commit: %v", err)
	}
	if files := messageFiles(t, dir); len(files) != 1 {
		t.Errorf("message files after a conflict: %v", files)
	}

	// What a crash between writing and committing leaves is swept at Open;
	// the batch's own file stays.
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	for _, leftover := range []string{"2-0011223344556677.eml", "1-8899aabbccddeeff.eml"} {
		if err := os.WriteFile(filepath.Join(dir, messageDir, leftover), []byte("x"), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	s = openStore(t, dir, Options{Now: clk.Now, Retention: time.Hour})
	if files := messageFiles(t, dir); len(files) != 1 || files[0] != b.File {
		t.Errorf("message files after reopening = %v, want only %s", files, b.File)
	}
	if msg, err := s.BatchMessage(b.ID); err != nil || !bytes.Equal(msg, nb.Message) {
		t.Errorf("BatchMessage after reopening = %q, %v", msg, err)
	}

	// Purged: the file goes.
	if err := s.MarkDelivered(ctx, DeliveryRef{Batch: b.ID, Index: 0}, "250 ok"); err != nil {
		t.Fatal(err)
	}
	if err := s.Purge(ctx, b.ID); err != nil {
		t.Fatal(err)
	}
	if files := messageFiles(t, dir); len(files) != 0 {
		t.Errorf("message files after purge: %v", files)
	}
	if _, err := s.BatchMessage(b.ID); !errors.Is(err, ErrNotFound) {
		t.Errorf("BatchMessage after purge: %v, want ErrNotFound", err)
	}
}

// A batch closed by schema version 1 keeps its message in the bbolt file:
// it still reads, and purging removes it there.
func TestBatchMessageInVersion1Bucket(t *testing.T) {
	t.Parallel()
	clk := newClock()
	dir := t.TempDir()
	s, err := Open(dir, Options{Now: clk.Now})
	if err != nil {
		t.Fatal(err)
	}
	b := closeOne(t, s, clk, "ana@example.org", recipients[:1])
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	old := []byte("Subject: batch 1 as version 1 kept it\r\n\r\nletters\r\n")
	writeBolt(t, dir, func(tx *bolt.Tx) error {
		b.File = ""
		data, _ := json.Marshal(b)
		if err := tx.Bucket(bucketBatches).Put(u64(b.ID), data); err != nil {
			return err
		}
		return tx.Bucket(bucketBatchMsg).Put(u64(b.ID), old)
	})
	s = openStore(t, dir, Options{Now: clk.Now})
	if msg, err := s.BatchMessage(b.ID); err != nil || !bytes.Equal(msg, old) {
		t.Fatalf("BatchMessage of a version 1 batch = %q, %v", msg, err)
	}
	ctx := context.Background()
	if err := s.MarkDelivered(ctx, DeliveryRef{Batch: b.ID, Index: 0}, "250 ok"); err != nil {
		t.Fatal(err)
	}
	if err := s.Purge(ctx, b.ID); err != nil {
		t.Fatal(err)
	}
	if n := bucketLen(t, s, bucketBatchMsg); n != 0 {
		t.Errorf("%d messages left in the bucket after purge", n)
	}
}
