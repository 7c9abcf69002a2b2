package testenv

import (
	"bytes"
	"fmt"
	"net/mail"
	"os"
	"path/filepath"

	"github.com/petitiond/petitiond/relay"
)

// SupporterMail lists the files in the supporters Maildir (delivery.mode
// "maildir"), the mail petitiond wrote to supporters, sorted by name.
func (e *Env) SupporterMail() ([]string, error) {
	return filepath.Glob(filepath.Join(relay.SupportersMaildir(e.Config), "new", "*"))
}

// ReadMail reads a message as a Maildir file or an SMTP copy holds it.
func ReadMail(path string) (*mail.Message, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	return ParseMail(b)
}

// ParseMail parses a message, CRLF or LF line ends.
func ParseMail(b []byte) (*mail.Message, error) {
	m, err := mail.ReadMessage(bytes.NewReader(b))
	if err != nil {
		return nil, fmt.Errorf("testenv: read a message: %w", err)
	}
	return m, nil
}

// ReplyTo is the address a message's Reply-To names: in a confirmation
// request, the confirmation address.
func ReplyTo(m *mail.Message) (string, error) {
	a, err := mail.ParseAddress(m.Header.Get("Reply-To"))
	if err != nil {
		return "", fmt.Errorf("testenv: Reply-To %q: %w", m.Header.Get("Reply-To"), err)
	}
	return a.Address, nil
}
