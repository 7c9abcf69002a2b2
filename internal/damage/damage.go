// Package damage breaks a store's bbolt file the ways disks, file systems
// and people do, for the tests that show petitiond refuses such a file with
// a clear error. It reads the file's layout itself (meta pages, page
// headers), so tests need not open the file with bbolt.
package damage

import (
	"encoding/binary"
	"errors"
	"fmt"
	"hash/fnv"
	"math/rand/v2"
	"os"
)

// bbolt's on-disk layout (go.etcd.io/bbolt, internal/common): every page
// starts with a 16-byte header (id uint64, flags uint16, count uint16,
// overflow uint32); pages 0 and 1 are meta pages whose body, after the
// header, is magic, version, page size, flags (uint32 each), the root
// bucket (root page, sequence: uint64 each), the free list page, the high
// water mark, the transaction ID and an FNV-64a checksum (uint64 each).
const (
	pageHeader  = 16
	metaMagic   = 0xED0CDAED
	offPageSize = pageHeader + 8
	offRoot     = pageHeader + 16
	offHWM      = pageHeader + 40
	offTxid     = pageHeader + 48
	offChecksum = pageHeader + 56
)

// Meta is what a meta page says.
type Meta struct {
	Page     int // 0 or 1
	Valid    bool
	PageSize int
	Root     uint64 // the root bucket's page
	HWM      uint64 // pages in use
	Txid     uint64
}

func readMeta(b []byte, page, pageSize int) Meta {
	m := Meta{Page: page}
	off := page * pageSize
	if len(b) < off+offChecksum+8 {
		return m
	}
	p := b[off:]
	le := binary.LittleEndian
	h := fnv.New64a()
	h.Write(p[pageHeader:offChecksum])
	m.Valid = le.Uint32(p[pageHeader:]) == metaMagic && le.Uint64(p[offChecksum:]) == h.Sum64()
	m.PageSize = int(le.Uint32(p[offPageSize:]))
	m.Root = le.Uint64(p[offRoot:])
	m.HWM = le.Uint64(p[offHWM:])
	m.Txid = le.Uint64(p[offTxid:])
	return m
}

// Metas reads both meta pages of the file at path.
func Metas(path string) ([2]Meta, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return [2]Meta{}, err
	}
	m0 := readMeta(b, 0, 0)
	if !m0.Valid {
		return [2]Meta{}, errors.New("damage: meta page 0 is not valid")
	}
	return [2]Meta{m0, readMeta(b, 1, m0.PageSize)}, nil
}

// newest is the meta page bbolt uses: the valid one with the higher
// transaction ID.
func newest(path string) (Meta, error) {
	ms, err := Metas(path)
	if err != nil {
		return Meta{}, err
	}
	if ms[1].Valid && ms[1].Txid > ms[0].Txid {
		return ms[1], nil
	}
	return ms[0], nil
}

// xorAt flips bits of the bytes at off.
func xorAt(path string, off int64, mask ...byte) error {
	f, err := os.OpenFile(path, os.O_RDWR, 0)
	if err != nil {
		return err
	}
	defer f.Close()
	buf := make([]byte, len(mask))
	if _, err := f.ReadAt(buf, off); err != nil {
		return fmt.Errorf("damage: read %s at %d: %w", path, off, err)
	}
	for i := range buf {
		buf[i] ^= mask[i]
	}
	if _, err := f.WriteAt(buf, off); err != nil {
		return err
	}
	return f.Sync()
}

// Empty truncates the file to 0 bytes.
func Empty(path string) error { return os.Truncate(path, 0) }

// Half truncates the file to half the bytes its pages use (bbolt grows
// the file ahead of use, so half the file could cut nothing).
func Half(path string) error {
	m, err := newest(path)
	if err != nil {
		return err
	}
	return os.Truncate(path, int64(m.HWM)*int64(m.PageSize)/2)
}

// FlipNewestMeta flips a byte of the meta page bbolt would use, so its
// checksum fails and bbolt falls back to the commit before it.
func FlipNewestMeta(path string) error {
	m, err := newest(path)
	if err != nil {
		return err
	}
	return xorAt(path, int64(m.Page*m.PageSize+offRoot), 0x01)
}

// FlipRootPage sets a page-type bit no page has on the root bucket's page,
// the one page every read and write goes through.
func FlipRootPage(path string) error {
	m, err := newest(path)
	if err != nil {
		return err
	}
	return xorAt(path, int64(m.Root)*int64(m.PageSize)+8, 0x20)
}

// FlipPage sets a page-type bit no page has on page id.
func FlipPage(path string, id uint64) error {
	m, err := newest(path)
	if err != nil {
		return err
	}
	if id < 2 || id >= m.HWM {
		return fmt.Errorf("damage: page %d is not a data page of %s (pages 2 to %d)", id, path, m.HWM-1)
	}
	return xorAt(path, int64(id)*int64(m.PageSize)+8, 0x20)
}

// FlipRandom flips one random bit in each of n random bytes of the pages in
// use past the meta pages, chosen by a generator seeded with seed, so a
// test damages the same bytes every run.
func FlipRandom(path string, seed uint64, n int) error {
	m, err := newest(path)
	if err != nil {
		return err
	}
	lo, hi := int64(2*m.PageSize), int64(m.HWM)*int64(m.PageSize)
	if hi <= lo {
		return fmt.Errorf("damage: %s has no data pages", path)
	}
	rng := rand.New(rand.NewPCG(seed, seed^0x9e3779b97f4a7c15))
	for range n {
		if err := xorAt(path, lo+rng.Int64N(hi-lo), 1<<rng.IntN(8)); err != nil {
			return err
		}
	}
	return nil
}
