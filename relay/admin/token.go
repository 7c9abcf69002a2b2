package admin

import (
	"crypto/rand"
	"encoding/base64"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"

	"github.com/petitiond/petitiond/safeio"
)

// TokenFileName is the file in store.dir that holds the admin token made at
// first start when neither admin.token nor PETITIOND_ADMIN_TOKEN is set
// (SPEC 10). The daemon writes it; the admin commands read it.
const TokenFileName = "admin.token"

// TokenFile is the token file's path for the store directory dir.
func TokenFile(dir string) string { return filepath.Join(dir, TokenFileName) }

// ReadTokenFile reads the token in dir's token file. A missing file is an
// error that matches fs.ErrNotExist.
func ReadTokenFile(dir string) (string, error) {
	path := TokenFile(dir)
	b, err := os.ReadFile(path)
	if err != nil {
		return "", fmt.Errorf("admin token file: %w", err)
	}
	// A person may have written the file with an editor: one final line
	// ending is not part of the token.
	tok := strings.TrimSuffix(strings.TrimSuffix(string(b), "\n"), "\r")
	if tok == "" || strings.ContainsFunc(tok, func(r rune) bool { return r <= ' ' || r == 0x7f }) {
		return "", fmt.Errorf("admin token file %s is empty or holds blanks or control characters: "+
			"delete it and restart petitiond to make a new one", path)
	}
	return tok, nil
}

// LoadOrCreateToken returns the token in dir's token file, making the file
// first (mode 0600, fsynced with its directory) with a new random token when
// there is none. created says which. The store directory must exist and be
// this process's alone (the store's lock), so no other writer races it.
func LoadOrCreateToken(dir string) (token string, created bool, err error) {
	tok, err := ReadTokenFile(dir)
	if err == nil {
		return tok, false, nil
	}
	if !errors.Is(err, fs.ErrNotExist) {
		return "", false, err
	}
	tok, err = NewToken()
	if err != nil {
		return "", false, err
	}
	path := TokenFile(dir)
	if err := safeio.WriteNew(path, []byte(tok+"\n"), 0o600); err != nil {
		return "", false, fmt.Errorf("admin: write the admin token file %s: %w", path, err)
	}
	if err := safeio.SyncDir(dir); err != nil {
		return "", false, fmt.Errorf("admin: sync %s: %w", dir, err)
	}
	return tok, true, nil
}

// NewToken is a fresh random token: 256 bits, URL-safe base64, so it can be
// pasted into a header, an environment variable or the login form as it is.
func NewToken() (string, error) {
	b := make([]byte, 32)
	if _, err := rand.Read(b); err != nil {
		return "", fmt.Errorf("admin: make a token: %w", err)
	}
	return base64.RawURLEncoding.EncodeToString(b), nil
}
