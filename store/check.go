package store

import (
	"encoding/binary"
	"errors"
	"fmt"
	"hash/fnv"
	"io"
	"os"
	"runtime/debug"
	"strings"

	bolt "go.etcd.io/bbolt"
)

// ErrDamaged is a store file whose structure is broken: found at Open by the
// consistency check, or later by a read or write that hit a damaged page.
// petitiond never starts on such a file, and never starts a new store in
// its place: the way back is the latest backup (README, Backup and restore).
var ErrDamaged = errors.New("the store file is damaged")

// restoreAdvice ends every damage report: what the admin does next.
const restoreAdvice = "petitiond will not run on it, and will not start a new store over it " +
	"(a new store would count every supporter again): stop petitiond, restore the latest backup " +
	"(petitiond restore -in BACKUP; README, Backup and restore), and start it again"

// checkReportMax is how many problems a damage report lists; a badly damaged
// file can have thousands.
const checkReportMax = 5

// protect runs fn so that a damaged file comes back as an error, never as a
// crash: bbolt panics on pages that make no sense, and a page number that
// points past the file makes a memory fault, which SetPanicOnFault turns
// into a panic on this goroutine.
func protect(fn func() error) (err error) {
	defer debug.SetPanicOnFault(debug.SetPanicOnFault(true))
	defer func() {
		if r := recover(); r != nil {
			err = fmt.Errorf("%w: %v", ErrDamaged, r)
		}
	}()
	return fn()
}

// damaged words a damage report about the file at path.
func damaged(path string, err error) error {
	if !errors.Is(err, ErrDamaged) {
		err = fmt.Errorf("%w: %w", ErrDamaged, err)
	}
	return fmt.Errorf("store: %s: %w. %s", path, err, restoreAdvice)
}

// openBolt opens the bbolt file at path. A missing file is created (a new
// store); an empty one is refused: a file of 0 bytes is what a crash of the
// file system or a bad copy leaves, and bbolt would silently start a new
// store in it.
func openBolt(path string, opt *bolt.Options) (*bolt.DB, error) {
	if fi, err := os.Stat(path); err == nil {
		if fi.Size() == 0 {
			return nil, damaged(path, errors.New("the file is empty (0 bytes)"))
		}
		// bbolt would map the pages past the end and fault on them.
		if used, ok := usedBytes(path); ok && used > fi.Size() {
			return nil, damaged(path, fmt.Errorf("the file is %d bytes long, but its header says %d: it was cut short",
				fi.Size(), used))
		}
	}
	// Keep the file bbolt opens: if Open panics, nothing else would close
	// it and let go of its lock.
	var file *os.File
	o := *opt
	o.OpenFile = func(name string, flag int, perm os.FileMode) (*os.File, error) {
		f, err := os.OpenFile(name, flag, perm)
		file = f
		return f, err
	}
	var db *bolt.DB
	err := protect(func() error {
		var err error
		db, err = bolt.Open(path, 0o600, &o)
		return err
	})
	if err != nil {
		if db == nil && file != nil && errors.Is(err, ErrDamaged) {
			unlockFile(file)
			_ = file.Close()
		}
		if errors.Is(err, bolt.ErrTimeout) {
			return nil, fmt.Errorf("store: %s: %w (is petitiond already running?)", path, ErrLocked)
		}
		if errors.Is(err, os.ErrPermission) || errors.Is(err, os.ErrNotExist) {
			return nil, fmt.Errorf("store: open %s: %w", path, err)
		}
		// bbolt says only "invalid database" or "checksum error" for a
		// file whose first pages are not a bbolt header.
		return nil, damaged(path, err)
	}
	return db, nil
}

// checkFile checks the structure of the open file at path: that every
// bucket's pages can be walked, and
// bbolt's own consistency check (Tx.Check: every page reachable once or
// free, keys in order, the free list sound).
//
// The walk comes first, on this goroutine under protect: Tx.Check runs on a
// goroutine of its own, where a page number pointing outside the file would
// crash the process, so it only runs once the walk has touched, safely,
// every page it will visit. Both read every branch and leaf page header
// and every key, but not the values, so the cost grows with the number of
// records, not with the bytes of letters: see BenchmarkOpenCheck and the
// README (Backup and restore) for what it costs on a large store.
func checkFile(db *bolt.DB, path string) error {
	err := protect(func() error {
		return db.View(func(tx *bolt.Tx) error {
			pages := tx.Size() / int64(db.Info().PageSize)
			var walked int64
			err := tx.ForEach(func(_ []byte, b *bolt.Bucket) error {
				st := b.Stats()
				walked += int64(st.BranchPageN + st.BranchOverflowN + st.LeafPageN + st.LeafOverflowN)
				if walked > pages {
					return fmt.Errorf("its buckets claim more pages than the file's %d", pages)
				}
				return nil
			})
			if err != nil {
				return err
			}
			var problems []string
			n := 0
			for err := range tx.Check() {
				if n < checkReportMax {
					problems = append(problems, err.Error())
				}
				n++
			}
			if n > checkReportMax {
				problems = append(problems, fmt.Sprintf("and %d more", n-checkReportMax))
			}
			if n > 0 {
				return fmt.Errorf("consistency check: %s", strings.Join(problems, "; "))
			}
			return nil
		})
	})
	if err != nil {
		return damaged(path, err)
	}
	return nil
}

// bbolt's meta pages (go.etcd.io/bbolt/internal/common): after a 16-byte
// page header come magic, version, page size and flags (uint32 each), then
// the root bucket, its sequence, the free list page, the high water mark,
// the transaction ID and an FNV-64a checksum of all before it (uint64 each).
const (
	metaMagic     = 0xED0CDAED
	metaPageSize  = 16 + 8
	metaHWM       = 16 + 40
	metaTxid      = 16 + 48
	metaChecksum  = 16 + 56
	metaMaxOffset = 64 << 10 // the largest page size bbolt looks for meta page 1 at
)

// usedBytes reads the meta page bbolt will use (the valid one with the
// higher transaction ID) and returns the bytes its pages cover: the size
// the file must have at least. ok is false when no meta page is valid
// (bbolt then refuses the file itself).
func usedBytes(path string) (used int64, ok bool) {
	f, err := os.Open(path)
	if err != nil {
		return 0, false
	}
	defer f.Close()
	head := make([]byte, metaMaxOffset+metaChecksum+8)
	n, _ := io.ReadFull(f, head)
	head = head[:n]
	var best struct{ txid, used uint64 }
	meta := func(off int) {
		if off+metaChecksum+8 > len(head) {
			return
		}
		p := head[off:]
		le := binary.LittleEndian
		h := fnv.New64a()
		h.Write(p[16:metaChecksum])
		if le.Uint32(p[16:]) != metaMagic || le.Uint64(p[metaChecksum:]) != h.Sum64() {
			return
		}
		if txid := le.Uint64(p[metaTxid:]); !ok || txid > best.txid {
			best.txid, best.used, ok = txid, le.Uint64(p[metaHWM:])*uint64(le.Uint32(p[metaPageSize:])), true
		}
	}
	meta(0)
	if ok {
		meta(int(binary.LittleEndian.Uint32(head[metaPageSize:])))
	} else {
		// Meta page 0 is damaged: look for page 1 where bbolt does.
		for ps := 1024; ps <= metaMaxOffset; ps *= 2 {
			meta(ps)
		}
	}
	return int64(best.used), ok
}
