package store

import (
	"bytes"
	"fmt"
	"slices"

	bolt "go.etcd.io/bbolt"
)

// A supporter's letters are found from the dedup key of their address,
// without reading every letter: the counted one through the dedup index
// (key → letter ID), the others (held, or recorded as duplicates) through
// the sender index, bucketSenders: senderKey(dedup key, letter ID) → nil.
// Accept writes the sender index only for letters it does not count, so
// the common case, a new supporter, costs no page more per commit. Like the
// dedup index it holds no readable address.
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

// senderLetterIDs lists the IDs of the letters from the supporter with
// dedupKey, in ID order, which is arrival order.
func senderLetterIDs(tx *bolt.Tx, dedupKey []byte) []string {
	var ids []string
	if id := tx.Bucket(bucketDedup).Get(dedupKey); id != nil {
		ids = append(ids, string(id))
	}
	c := tx.Bucket(bucketSenders).Cursor()
	for k, _ := c.Seek(dedupKey); k != nil && bytes.HasPrefix(k, dedupKey); k, _ = c.Next() {
		if id := string(k[len(dedupKey):]); !slices.Contains(ids, id) {
			ids = append(ids, id)
		}
	}
	slices.Sort(ids)
	return ids
}
