package store

import (
	"archive/tar"
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path"
	"path/filepath"
	"strings"
	"time"

	bolt "go.etcd.io/bbolt"

	"github.com/petitiond/petitiond/safeio"
)

// A backup is a tar stream that `tar -x` reads, made while the daemon runs:
//
//   - "petitiond.db": the bbolt file as one read transaction sees it
//     (Tx.WriteTo), so it is consistent whatever commits meanwhile;
//   - "batches/<file>": the message of every batch that transaction names
//     (they live in files of their own, messages.go), read while it lasts;
//   - "petitiond-backup.json" last: what the backup holds (BackupSummary).
//     A stream without it was cut short.
//
// The store's mark is not in it: restoring an older backup must show as a
// rollback, which the admin accepts (Restore does).

// BackupSummaryName is the last entry of a backup.
const BackupSummaryName = "petitiond-backup.json"

const backupFormat = 1

// ErrNotBackup is a file or stream that is not a complete petitiond backup.
var ErrNotBackup = errors.New("not a complete petitiond backup")

// BackupSummary is what a backup holds.
type BackupSummary struct {
	Format  int       `json:"format"`
	Created time.Time `json:"created"`
	// StoreBytes is the size of the store file in it.
	StoreBytes int64 `json:"store_bytes"`
	// LastLetter is the last letter ID the store had handed out.
	LastLetter string `json:"last_letter"`
	Position
	// Messages is how many batch message files it holds.
	Messages int `json:"messages"`
	// Missing are message files a batch named that were gone when the
	// backup read them: a purge after retention racing the backup (the
	// restored store purges that batch again).
	Missing []string `json:"missing,omitempty"`
}

// Backup writes a backup of the running store to w (see above). The read
// transaction it holds does not delay writers: Open maps the file with room
// to grow (bbolt remaps, and so waits for readers, only when the file
// outgrows its mapping).
func (s *Store) Backup(ctx context.Context, w io.Writer) (*BackupSummary, error) {
	tw := tar.NewWriter(w)
	sum := &BackupSummary{Format: backupFormat, Created: s.now().UTC().Truncate(time.Second)}
	err := s.view(func(tx *bolt.Tx) error {
		sum.Position = position(tx)
		sum.LastLetter = sum.LetterID()
		sum.StoreBytes = tx.Size()
		hdr := &tar.Header{Typeflag: tar.TypeReg, Name: FileName, Mode: 0o600, Size: tx.Size(), ModTime: sum.Created}
		if err := tw.WriteHeader(hdr); err != nil {
			return err
		}
		if _, err := tx.WriteTo(tw); err != nil {
			return fmt.Errorf("copy %s: %w", FileName, err)
		}
		files, err := liveMessageFiles(tx)
		if err != nil {
			return err
		}
		for _, name := range files {
			if err := ctx.Err(); err != nil {
				return err
			}
			found, err := s.backupMessage(tw, name)
			if err != nil {
				return err
			}
			if found {
				sum.Messages++
			} else {
				sum.Missing = append(sum.Missing, name)
			}
		}
		return nil
	})
	if err == nil {
		err = writeSummary(tw, sum)
	}
	if err == nil {
		err = tw.Close()
	}
	if err != nil {
		return nil, fmt.Errorf("store: backup: %w", err)
	}
	return sum, nil
}

// liveMessageFiles lists the message files of the batches not purged (each
// batch's message, and its parts), in batch order.
func liveMessageFiles(tx *bolt.Tx) ([]string, error) {
	var files []string
	err := tx.Bucket(bucketBatches).ForEach(func(_, v []byte) error {
		var b Batch
		if err := json.Unmarshal(v, &b); err != nil {
			return fmt.Errorf("decode batch: %w", err)
		}
		if !b.Purged {
			files = append(files, b.Files()...)
		}
		return nil
	})
	return files, err
}

// backupMessage copies one message file into the backup; found is false
// when it is gone.
func (s *Store) backupMessage(tw *tar.Writer, name string) (found bool, err error) {
	f, err := os.Open(filepath.Join(s.msgDir, name))
	if errors.Is(err, fs.ErrNotExist) {
		return false, nil
	}
	if err != nil {
		return false, err
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		return false, err
	}
	hdr := &tar.Header{Typeflag: tar.TypeReg, Name: messageDir + "/" + name, Mode: 0o600, Size: fi.Size(), ModTime: fi.ModTime()}
	if err := tw.WriteHeader(hdr); err != nil {
		return false, err
	}
	// A message file is never written again once its batch names it.
	if _, err := io.CopyN(tw, f, fi.Size()); err != nil {
		return false, fmt.Errorf("copy message %s: %w", name, err)
	}
	return true, nil
}

func writeSummary(tw *tar.Writer, sum *BackupSummary) error {
	data, err := json.MarshalIndent(sum, "", "  ")
	if err != nil {
		return err
	}
	data = append(data, '\n')
	hdr := &tar.Header{Typeflag: tar.TypeReg, Name: BackupSummaryName, Mode: 0o600, Size: int64(len(data)), ModTime: sum.Created}
	if err := tw.WriteHeader(hdr); err != nil {
		return err
	}
	_, err = tw.Write(data)
	return err
}

// ReadBackup reads a backup stream to its end and checks that it is whole:
// the store file first, then only batch messages, then the summary, which
// must agree with what came before it. extract, when not nil, gets each
// file (its name as in the backup, and its bytes) except the summary.
func ReadBackup(r io.Reader, extract func(name string, r io.Reader) error) (*BackupSummary, error) {
	tr := tar.NewReader(r)
	var sum *BackupSummary
	var dbBytes int64
	var messages []string
	for i := 0; ; i++ {
		hdr, err := tr.Next()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			return nil, fmt.Errorf("store: read backup: %w (%w)", err, ErrNotBackup)
		}
		bad := func(why string) error {
			return fmt.Errorf("store: read backup: entry %d %q: %s: %w", i+1, hdr.Name, why, ErrNotBackup)
		}
		switch {
		case sum != nil:
			return nil, bad("after the summary")
		case hdr.Typeflag != tar.TypeReg:
			return nil, bad("not a plain file")
		case i == 0 && hdr.Name != FileName:
			return nil, bad("the first entry must be " + FileName)
		case i == 0:
			dbBytes = hdr.Size
		case hdr.Name == BackupSummaryName:
			sum = &BackupSummary{}
			if err := json.NewDecoder(io.LimitReader(tr, 1<<20)).Decode(sum); err != nil {
				return nil, bad(err.Error())
			}
			continue
		case !isMessageEntry(hdr.Name):
			return nil, bad("not a batch message")
		default:
			messages = append(messages, hdr.Name)
		}
		var err2 error
		if extract != nil {
			err2 = extract(hdr.Name, tr)
		}
		// Read to the end of the entry either way: a stream cut short
		// fails here.
		if _, err := io.Copy(io.Discard, tr); err2 == nil && err != nil {
			err2 = fmt.Errorf("store: read backup: %s: %w (%w)", hdr.Name, err, ErrNotBackup)
		}
		if err2 != nil {
			return nil, err2
		}
	}
	switch {
	case sum == nil:
		return nil, fmt.Errorf("store: read backup: no %s at its end (cut short?): %w", BackupSummaryName, ErrNotBackup)
	case sum.Format != backupFormat:
		return nil, fmt.Errorf("store: read backup: format %d, this petitiond reads %d: %w", sum.Format, backupFormat, ErrNotBackup)
	case sum.StoreBytes != dbBytes || sum.Messages != len(messages):
		return nil, fmt.Errorf("store: read backup: the summary says %d bytes and %d messages, the backup holds %d and %d: %w",
			sum.StoreBytes, sum.Messages, dbBytes, len(messages), ErrNotBackup)
	}
	return sum, nil
}

// isMessageEntry accepts "batches/<name>.eml" and nothing that could leave
// the directory it is extracted into.
func isMessageEntry(name string) bool {
	dir, file := path.Split(name)
	return dir == messageDir+"/" && strings.HasSuffix(file, messageExt) && !strings.HasPrefix(file, ".") &&
		!strings.ContainsAny(file, `\`)
}

// extractTo writes a backup's files below dir, durably.
func extractTo(dir string) func(name string, r io.Reader) error {
	return func(name string, r io.Reader) error {
		p := filepath.Join(dir, filepath.FromSlash(name))
		if err := safeio.MkdirAll(filepath.Dir(p), 0o700); err != nil {
			return fmt.Errorf("store: restore: %w", err)
		}
		if _, err := safeio.WriteNewFrom(p, r, 0o600); err != nil {
			return fmt.Errorf("store: restore: write %s: %w", p, err)
		}
		return nil
	}
}

// storeFileInfo checks the store file at path as Open would, and returns
// its secret's tag and how far it has come.
func storeFileInfo(path string) (tag string, pos Position, err error) {
	db, err := openBolt(path, &bolt.Options{Timeout: time.Second, FreelistType: bolt.FreelistMapType})
	if err != nil {
		return "", Position{}, err
	}
	defer db.Close()
	if err := checkFile(db, path); err != nil {
		return "", Position{}, err
	}
	err = protect(func() error {
		return db.View(func(tx *bolt.Tx) error {
			meta := tx.Bucket(bucketMeta)
			if meta == nil || meta.Get(keySecret) == nil || tx.Bucket(bucketEvents) == nil {
				return fmt.Errorf("store: %s is not a petitiond store: %w", path, ErrSchema)
			}
			if v := getU64(meta, keySchema); !readableSchema(v) {
				return fmt.Errorf("store: %s has schema version %d, this petitiond reads version %d: %w",
					path, v, SchemaVersion, ErrSchema)
			}
			tag, pos = secretTag(meta.Get(keySecret)), position(tx)
			return nil
		})
	})
	return tag, pos, err
}

// CheckBackup reads the backup file at path to its end and checks the store
// file in it as Open would, without touching any store: a backup worth
// keeping passes. The store file is unpacked into a temporary directory
// below tmp ("" for the system's), removed again.
func CheckBackup(path, tmp string) (*BackupSummary, error) {
	work, err := os.MkdirTemp(tmp, "petitiond-check-")
	if err != nil {
		return nil, fmt.Errorf("store: check backup: %w", err)
	}
	defer os.RemoveAll(work)
	return unpack(path, work)
}

// unpack extracts the backup at path into work and checks it.
func unpack(path, work string) (*BackupSummary, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, fmt.Errorf("store: %w", err)
	}
	defer f.Close()
	sum, err := ReadBackup(f, extractTo(work))
	if err != nil {
		return nil, fmt.Errorf("%w (%s)", err, path)
	}
	_, pos, err := storeFileInfo(filepath.Join(work, FileName))
	if err != nil {
		return nil, err
	}
	if pos != sum.Position {
		return nil, fmt.Errorf("store: %s: its store file is at %+v, its summary says %+v: %w", path, pos, sum.Position, ErrNotBackup)
	}
	return sum, nil
}

// Restored is what Restore did.
type Restored struct {
	Summary *BackupSummary
	// Replaced is where the store file it replaced was kept ("" when
	// there was none).
	Replaced string
	// Rollback is what the restore moved past: the numbers petitiond had
	// handed out after the backup was made (nil when it was the latest).
	Rollback *Rollback
}

// Restore replaces the store in dir with the backup at path, while petitiond
// is stopped (ErrLocked otherwise). The backup is unpacked and checked
// first; nothing in dir changes unless it passes, and a backup of another
// store (another dedup secret) is refused. The store file it replaces is
// kept beside it, renamed. The restored store is then opened once with
// AcceptRollback, so letter, event and batch numbers continue after the
// highest ever handed out.
func Restore(dir, path string) (*Restored, error) {
	dbPath := filepath.Join(dir, FileName)
	// A new machine may have no store directory yet.
	if _, err := mkdirAll(dir); err != nil {
		return nil, err
	}
	unlock, err := lockStore(dbPath)
	if err != nil {
		return nil, err
	}
	defer unlock()
	var r [6]byte
	_, _ = rand.Read(r[:])
	work := filepath.Join(dir, ".restore-"+hex.EncodeToString(r[:]))
	if err := os.Mkdir(work, 0o700); err != nil {
		return nil, fmt.Errorf("store: restore: %w", err)
	}
	defer os.RemoveAll(work)
	sum, err := unpack(path, work)
	if err != nil {
		return nil, err
	}
	tag, _, err := storeFileInfo(filepath.Join(work, FileName))
	if err != nil {
		return nil, err
	}
	if mk, err := readMark(dir); err == nil && mk != nil && mk.secretTag != tag {
		return nil, fmt.Errorf("store: %s is a backup of another store: its dedup secret is not the one recorded "+
			"in %s, so every supporter would be counted again. Nothing was changed", path, filepath.Join(dir, MarkName))
	}
	out := &Restored{Summary: sum}
	if _, err := os.Stat(dbPath); err == nil {
		out.Replaced = dbPath + ".replaced-" + time.Now().UTC().Format("20060102T150405Z")
		if err := os.Rename(dbPath, out.Replaced); err != nil {
			return nil, fmt.Errorf("store: restore: keep the old file: %w", err)
		}
	}
	if err := os.Rename(filepath.Join(work, FileName), dbPath); err != nil {
		return nil, fmt.Errorf("store: restore: %w", err)
	}
	if err := moveMessages(filepath.Join(work, messageDir), filepath.Join(dir, messageDir)); err != nil {
		return nil, err
	}
	if err := safeio.SyncDir(dir); err != nil {
		return nil, fmt.Errorf("store: restore: %w", err)
	}
	unlock()
	s, err := Open(dir, Options{AcceptRollback: true})
	if err != nil {
		return nil, err
	}
	out.Rollback = s.RolledBack()
	return out, s.Close()
}

// moveMessages moves the unpacked message files into the store's message
// directory; a file of the same name there holds the same bytes (names are
// unique per batch attempt).
func moveMessages(from, to string) error {
	entries, err := os.ReadDir(from)
	if errors.Is(err, fs.ErrNotExist) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("store: restore: %w", err)
	}
	if err := safeio.MkdirAll(to, 0o700); err != nil {
		return fmt.Errorf("store: restore: %w", err)
	}
	for _, e := range entries {
		name := e.Name()
		if err := os.Rename(filepath.Join(from, name), filepath.Join(to, name)); err != nil {
			return fmt.Errorf("store: restore: %w", err)
		}
	}
	if err := safeio.SyncDir(to); err != nil {
		return fmt.Errorf("store: restore: %w", err)
	}
	return nil
}
