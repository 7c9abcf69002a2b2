package notify

import (
	"crypto/rand"
	"encoding/base32"
	"fmt"
	"strings"

	"github.com/petitiond/petitiond/store"
)

// A confirmation address is a campaign address with a token as its
// subaddress: <local>+confirm-<token>@<domain> (SPEC 11). The token is 34
// lower-case letters and digits (base32): 8 for the ID that finds the
// request (40 random bits), then 26 for the secret (128 random bits). Only
// the store ever sees the secret, and keeps only its hash.
const (
	confirmTag = "+confirm-"
	idBytes    = 5
	secretSize = 16
	idLen      = 8  // base32 of idBytes
	secretLen  = 26 // base32 of secretSize, unpadded
	tokenLen   = idLen + secretLen
)

// tokenAlphabet is base32's, in lower case: letters and the digits 2 to 7.
const tokenAlphabet = "abcdefghijklmnopqrstuvwxyz234567"

var tokenEncoding = base32.NewEncoding(tokenAlphabet).WithPadding(base32.NoPadding)

// NewToken makes a token with fresh random ID and secret.
func NewToken() (store.ConfirmToken, error) {
	var b [idBytes + secretSize]byte
	if _, err := rand.Read(b[:]); err != nil {
		return store.ConfirmToken{}, fmt.Errorf("notify: make a confirmation token: %w", err)
	}
	return store.ConfirmToken{ID: tokenEncoding.EncodeToString(b[:idBytes]),
		Secret: tokenEncoding.EncodeToString(b[idBytes:])}, nil
}

// ConfirmAddress is the confirmation address of tok for the campaign
// address via.
func ConfirmAddress(via string, tok store.ConfirmToken) string {
	at := strings.LastIndexByte(via, '@')
	return via[:at] + confirmTag + tok.ID + tok.Secret + via[at:]
}

// ParseConfirmAddress reads a recipient, its ASCII letters lower-cased
// as the front end compares addresses, as a confirmation address: the
// campaign address it belongs to and the token. ok is false for anything
// else, which is then not a confirmation address at all. It does not say
// whether via is a campaign address, nor whether the token is known.
func ParseConfirmAddress(rcpt string) (via string, tok store.ConfirmToken, ok bool) {
	at := strings.LastIndexByte(rcpt, '@')
	if at < 0 {
		return "", store.ConfirmToken{}, false
	}
	local, domain := rcpt[:at], rcpt[at+1:]
	i := strings.LastIndex(local, confirmTag)
	if i <= 0 || domain == "" {
		return "", store.ConfirmToken{}, false
	}
	token := local[i+len(confirmTag):]
	if len(token) != tokenLen || strings.Trim(token, tokenAlphabet) != "" {
		return "", store.ConfirmToken{}, false
	}
	return local[:i] + "@" + domain, store.ConfirmToken{ID: token[:idLen], Secret: token[idLen:]}, true
}
