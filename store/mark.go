package store

import (
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"hash/crc32"
	"io/fs"
	"os"
	"path/filepath"
	"strconv"
	"strings"

	bolt "go.etcd.io/bbolt"

	"github.com/petitiond/petitiond/safeio"
)

// The mark is a second, independent record of how far the store has come:
// the highest letter number answered, the last event and the last batch,
// and a tag of the dedup secret. It is a small file beside the bbolt file,
// rewritten in place after every commit that moved one of them, so a
// rollback of the bbolt file (a damaged meta page makes bbolt fall back to
// the commit before; an old copy put in its place) shows at Open as a mark
// ahead of the file, and is reported instead of handing out letter IDs that
// were already answered 250.
//
// The mark is written after the commit it describes, and not fsynced: the
// commit is durable before the mark says so, so the mark can lag behind the
// file after a power cut (no false alarm) but is never ahead of a sound
// file. Skipping the fsync keeps the 250 path at one pair of fdatasyncs; the
// price is that a rollback coinciding with a power cut that lost the mark's
// last write goes unseen.

// MarkName is the mark's file name in the store directory.
const MarkName = "petitiond.mark"

const markMagic = "petitiond store mark 1\n"

// ErrRollback is a store file older than what petitiond already answered.
var ErrRollback = errors.New("the store file was rolled back")

// errMarkDamaged is a mark that cannot be read back.
var errMarkDamaged = errors.New("the store's mark file is damaged")

// Position is how far a store has come: what the mark records.
type Position struct {
	// Letters is the number of the last letter ID handed out.
	Letters uint64
	// Events is the sequence number of the last journal event.
	Events uint64
	// Batches is the number of the last batch closed.
	Batches uint64
}

// LetterID is the ID of the last letter handed out ("none" before the
// first).
func (p Position) LetterID() string {
	if p.Letters == 0 {
		return "none"
	}
	return fmt.Sprintf("L%08X", p.Letters)
}

func (p Position) behind(q Position) bool {
	return p.Letters < q.Letters || p.Events < q.Events || p.Batches < q.Batches
}

func maxPosition(p, q Position) Position {
	return Position{max(p.Letters, q.Letters), max(p.Events, q.Events), max(p.Batches, q.Batches)}
}

// mark is the decoded mark file.
type mark struct {
	secretTag string
	pos       Position
}

// secretTag names a dedup secret without revealing it.
func secretTag(secret []byte) string {
	h := sha256.Sum256(append([]byte("petitiond mark\x00"), secret...))
	return hex.EncodeToString(h[:8])
}

// encode makes the mark's bytes: fixed width, so every rewrite covers the
// last one exactly, and readable with cat.
func (m mark) encode() []byte {
	body := fmt.Sprintf("%ssecret %s\nletter %020d\nevent  %020d\nbatch  %020d\n",
		markMagic, m.secretTag, m.pos.Letters, m.pos.Events, m.pos.Batches)
	return fmt.Appendf(nil, "%scrc32  %08x\n", body, crc32.ChecksumIEEE([]byte(body)))
}

func decodeMark(b []byte) (mark, error) {
	text := string(b)
	i := strings.LastIndex(text, "crc32  ")
	if !strings.HasPrefix(text, markMagic) || i < 0 {
		return mark{}, errMarkDamaged
	}
	sum, err := strconv.ParseUint(strings.TrimSpace(text[i+len("crc32  "):]), 16, 32)
	if err != nil || uint32(sum) != crc32.ChecksumIEEE([]byte(text[:i])) {
		return mark{}, errMarkDamaged
	}
	var m mark
	for _, line := range strings.Split(strings.TrimSuffix(text[len(markMagic):i], "\n"), "\n") {
		key, val, _ := strings.Cut(line, " ")
		val = strings.TrimSpace(val)
		var n uint64
		if key != "secret" {
			if n, err = strconv.ParseUint(val, 10, 64); err != nil {
				return mark{}, errMarkDamaged
			}
		}
		switch key {
		case "secret":
			m.secretTag = val
		case "letter":
			m.pos.Letters = n
		case "event":
			m.pos.Events = n
		case "batch":
			m.pos.Batches = n
		}
	}
	return m, nil
}

// readMark reads the mark in dir; nil when there is none.
func readMark(dir string) (*mark, error) {
	path := filepath.Join(dir, MarkName)
	b, err := os.ReadFile(path)
	if errors.Is(err, fs.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("store: read %s: %w", path, err)
	}
	m, err := decodeMark(b)
	if err != nil {
		return nil, fmt.Errorf("store: %s: %w: petitiond cannot tell whether %s was rolled back. "+
			"If you know the store file is the latest, accept it with `petitiond restore`; "+
			"otherwise restore the latest backup (README, Backup and restore)", path, err, FileName)
	}
	return &m, nil
}

// writeMarkFile writes the mark durably (at Open and after a restore).
func writeMarkFile(dir string, m mark) (*os.File, error) {
	path := filepath.Join(dir, MarkName)
	f, err := os.OpenFile(path, os.O_RDWR|os.O_CREATE, 0o600)
	if err != nil {
		return nil, fmt.Errorf("store: open %s: %w", path, err)
	}
	b := m.encode()
	_, err = f.WriteAt(b, 0)
	if err == nil {
		err = f.Truncate(int64(len(b)))
	}
	if err == nil {
		err = f.Sync()
	}
	if err == nil {
		err = safeio.SyncDir(dir)
	}
	if err != nil {
		f.Close()
		return nil, fmt.Errorf("store: write %s: %w", path, err)
	}
	return f, nil
}

// position reads how far the file has come.
func position(tx *bolt.Tx) Position {
	meta := tx.Bucket(bucketMeta)
	return Position{
		Letters: getU64(meta, keyLetterSeq),
		Events:  tx.Bucket(bucketEvents).Sequence(),
		Batches: getU64(meta, ctrBatches),
	}
}

// advance moves the file's counters up to p, so that after an accepted
// rollback no letter ID, event number or batch number is handed out twice.
func advance(tx *bolt.Tx, p Position) error {
	meta := tx.Bucket(bucketMeta)
	if err := meta.Put(keyLetterSeq, u64(p.Letters)); err != nil {
		return err
	}
	if err := meta.Put(ctrBatches, u64(p.Batches)); err != nil {
		return err
	}
	return tx.Bucket(bucketEvents).SetSequence(p.Events)
}

// rollbackError explains a file behind its mark.
func rollbackError(path, markPath string, file, marked Position) error {
	return fmt.Errorf("store: %s: %w: it ends at letter %s, event %d and batch %d, but petitiond had "+
		"answered up to letter %s, event %d and batch %d (recorded in %s). Going on would hand out "+
		"IDs that were already answered. If the file was damaged, restore the latest backup; if you "+
		"restored a backup on purpose, accept it with `petitiond restore` (IDs then continue after %s). "+
		"README, Backup and restore",
		path, ErrRollback, file.LetterID(), file.Events, file.Batches,
		marked.LetterID(), marked.Events, marked.Batches, markPath, marked.LetterID())
}

// writeMark records pos after a commit, in place and without an fsync (see
// above). A failure is kept for CheckWritable and cleared by the next
// success.
func (s *Store) writeMark(pos Position) {
	if pos == s.marked {
		return
	}
	_, err := s.markFile.WriteAt(mark{secretTag: s.secretTag, pos: pos}.encode(), 0)
	if err != nil {
		err = fmt.Errorf("store: update %s: %w", s.markFile.Name(), err)
		s.markErr.Store(&err)
		return
	}
	s.marked = pos
	s.markErr.Store(nil)
}
