package store

import (
	"bytes"
	"fmt"

	bolt "go.etcd.io/bbolt"
)

// bucketSenders finds a supporter's letters from the dedup key of their
// address, without reading every letter: senderKey(dedup key, letter ID) →
// nil, for every stored letter that has a dedup key, held ones included.
// Like the dedup index it holds no readable address.
var bucketSenders = []byte("senders")

// senderKey is a letter's entry in the sender index: the dedup key, then
// the letter ID, so one supporter's letters are one range of keys.
func senderKey(dedupKey []byte, id string) []byte {
	k := make([]byte, 0, len(dedupKey)+len(id))
	return append(append(k, dedupKey...), id...)
}

// indexSender records that letter id came from the supporter with dedupKey.
func indexSender(tx *bolt.Tx, dedupKey []byte, id string) error {
	if len(dedupKey) == 0 {
		return nil
	}
	if err := tx.Bucket(bucketSenders).Put(senderKey(dedupKey, id), nil); err != nil {
		return fmt.Errorf("index letter %s by sender: %w", id, err)
	}
	return nil
}

// senderLetterIDs lists the letter IDs the index holds for dedupKey, in
// ID order, which is arrival order.
func senderLetterIDs(tx *bolt.Tx, dedupKey []byte) []string {
	var ids []string
	c := tx.Bucket(bucketSenders).Cursor()
	for k, _ := c.Seek(dedupKey); k != nil && bytes.HasPrefix(k, dedupKey); k, _ = c.Next() {
		ids = append(ids, string(k[len(dedupKey):]))
	}
	return ids
}

// buildSenderIndex makes the sender index of a store written before it
// existed, from the dedup key each letter record keeps; a store that has it
// is left alone. It runs once, inside Open's transaction.
func buildSenderIndex(tx *bolt.Tx) error {
	if tx.Bucket(bucketSenders) != nil {
		return nil
	}
	idx, err := tx.CreateBucket(bucketSenders)
	if err != nil {
		return fmt.Errorf("create bucket %s: %w", bucketSenders, err)
	}
	return tx.Bucket(bucketLetters).ForEach(func(k, _ []byte) error {
		l, err := getLetter(tx, string(k))
		if err != nil {
			return err
		}
		if len(l.DedupKey) == 0 {
			return nil
		}
		return idx.Put(senderKey(l.DedupKey, l.ID), nil)
	})
}
