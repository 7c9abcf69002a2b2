package store

import (
	"context"
	"encoding/json"
	"fmt"
	"time"

	bolt "go.etcd.io/bbolt"
)

// CheckWritable commits an empty write through the commit loop and returns
// once it is fsynced. bbolt writes a new meta page (and freelist) even for an
// empty transaction, so this fails when the disk, the file or the commit loop
// does: what /healthz must notice; and when the mark could not be updated
// (mark.go). It counts as one write in CommitStats.
func (s *Store) CheckWritable(ctx context.Context) error {
	if err := s.update(ctx, func(*bolt.Tx, *writer) error { return nil }); err != nil {
		return fmt.Errorf("store: health check write: %w", err)
	}
	if err := s.markErr.Load(); err != nil {
		return *err
	}
	return nil
}

// OldestUndelivered returns when the oldest batch that some recipient does
// not have yet was closed (failed copies included: they wait for an admin),
// or the zero time when every batch reached every recipient.
func (s *Store) OldestUndelivered() (time.Time, error) {
	var oldest time.Time
	err := s.view(func(tx *bolt.Tx) error {
		// Batch numbers grow with time, so the first incomplete batch in
		// key order is the oldest.
		c := tx.Bucket(bucketBatches).Cursor()
		for k, v := c.First(); k != nil; k, v = c.Next() {
			var b Batch
			if err := json.Unmarshal(v, &b); err != nil {
				return fmt.Errorf("decode batch: %w", err)
			}
			if !b.Complete() {
				oldest = b.Created
				return nil
			}
		}
		return nil
	})
	if err != nil {
		return time.Time{}, fmt.Errorf("store: oldest undelivered batch: %w", err)
	}
	return oldest, nil
}
