package store

import (
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"

	"github.com/petitiond/petitiond/safeio"
)

// Batch messages live in files of their own below the store directory, not
// in the bbolt file: a 1,000-letter message is megabytes, and writing it in
// the commit that closes the batch would make every letter arriving then
// wait for its fsync. The file is written and synced first, by the closer's
// goroutine; the commit only names it.

// messageDir is where batch messages are kept, below the store directory.
const messageDir = "batches"

// messageExt ends the name of a batch message's file.
const messageExt = ".eml"

// writeMessage stores a batch message durably under a name of its own,
// label and a random part (two attempts to close batch N never share a
// file), and returns that name. A file cut short by a crash is named by no
// batch, so Open sweeps it. label is the batch number, or for a part
// "N-rI-pK" (batch N, recipient I, part K).
func (s *Store) writeMessage(label string, msg []byte) (string, error) {
	var r [8]byte
	if _, err := rand.Read(r[:]); err != nil {
		return "", fmt.Errorf("store: name the message of batch %s: %w", label, err)
	}
	name := fmt.Sprintf("%s-%s%s", label, hex.EncodeToString(r[:]), messageExt)
	path := filepath.Join(s.msgDir, name)
	err := safeio.WriteNew(path, msg, 0o600)
	if err == nil {
		if err = safeio.SyncDir(s.msgDir); err != nil {
			_ = os.Remove(path)
		}
	}
	if err != nil {
		return "", fmt.Errorf("store: write the message of batch %s: %w", label, err)
	}
	return name, nil
}

// readMessage returns a batch message written by writeMessage.
func (s *Store) readMessage(name string) ([]byte, error) {
	msg, err := os.ReadFile(filepath.Join(s.msgDir, name))
	if errors.Is(err, fs.ErrNotExist) {
		return nil, ErrNotFound
	}
	return msg, err
}

// removeMessage deletes a batch message's file, and the directory entry
// durably, so that a purged message cannot come back after a crash.
func (s *Store) removeMessage(name string) error {
	if err := os.Remove(filepath.Join(s.msgDir, name)); err != nil && !errors.Is(err, fs.ErrNotExist) {
		return fmt.Errorf("store: remove message file %s: %w", name, err)
	}
	return safeio.SyncDir(s.msgDir)
}

// sweepMessages removes the files no live batch names: what a crash left
// between writing a message and committing its batch, or a batch that lost
// a conflict. keep holds the names the batch records give.
func (s *Store) sweepMessages(keep map[string]bool) error {
	entries, err := os.ReadDir(s.msgDir)
	if err != nil {
		return fmt.Errorf("store: list %s: %w", s.msgDir, err)
	}
	removed := false
	for _, e := range entries {
		name := e.Name()
		if keep[name] || !strings.HasSuffix(name, messageExt) {
			continue
		}
		if err := os.Remove(filepath.Join(s.msgDir, name)); err != nil && !errors.Is(err, fs.ErrNotExist) {
			return fmt.Errorf("store: remove leftover message %s: %w", name, err)
		}
		removed = true
	}
	if removed {
		return safeio.SyncDir(s.msgDir)
	}
	return nil
}
