package deliver

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"github.com/petitiond/petitiond/safeio"
)

// Maildir writes a standard Maildir (tmp/new/cur) per recipient below Root:
// Root/<address>/new/<unique name>, where <address> is the recipient
// lower-cased with every byte outside [a-z0-9@._+=-] (and a leading dot)
// written as %XX, so distinct addresses never share a folder and none can
// climb out of Root.
//
// Each file is the message as a local mail reader expects it: LF line
// ends, with Return-Path and Delivered-To on top, as a local delivery agent
// writes them. Readers turn LF back into the CRLF that SMTP carries and DKIM
// signatures cover; the SMTP copies keep CRLF, byte for byte.
type Maildir struct {
	Root string
}

// Dir returns rcpt's Maildir (the folder holding tmp, new and cur).
func (m Maildir) Dir(rcpt string) string {
	return filepath.Join(m.Root, mailboxName(rcpt))
}

// Deliver writes the message to tmp, fsyncs it, renames it into new and
// fsyncs new, so a message is either complete in new/ or absent after a
// crash. Directories are created 0700, the file 0600. The Receipt names the
// file. Disk errors are temporary.
func (m Maildir) Deliver(ctx context.Context, from, rcpt string, msg []byte) (Receipt, error) {
	if err := ctx.Err(); err != nil {
		return Receipt{}, temporary("maildir: delivery to "+rcpt, err)
	}
	if m.Root == "" {
		return Receipt{}, permanent("maildir", errors.New("no root directory configured"))
	}
	if rcpt == "" || !strings.Contains(rcpt, "@") {
		return Receipt{}, permanent("maildir: recipient "+strconv.Quote(rcpt), errors.New("not an address"))
	}
	// Both go into header fields below: no line breaks.
	if err := checkPath(rcpt); err != nil {
		return Receipt{}, permanent("maildir: recipient "+strconv.Quote(rcpt), err)
	}
	if err := checkPath(from); err != nil {
		return Receipt{}, permanent("maildir: sender "+strconv.Quote(from), err)
	}
	name := mailboxName(rcpt)
	if len(name) > 255 {
		return Receipt{}, permanent("maildir: recipient "+rcpt, errors.New("address too long for a folder name"))
	}
	return writeMaildir(filepath.Join(m.Root, name), from, rcpt, msg)
}

// Mailbox writes every message into one Maildir, Dir, whoever it is for:
// in maildir mode, the mail to supporters goes there, for an admin (or
// the demo) to read, with Delivered-To naming the supporter.
type Mailbox struct {
	Dir string
}

// Deliver writes the message to the Maildir as Maildir.Deliver does.
func (m Mailbox) Deliver(ctx context.Context, from, rcpt string, msg []byte) (Receipt, error) {
	if err := ctx.Err(); err != nil {
		return Receipt{}, temporary("maildir: delivery to "+rcpt, err)
	}
	if m.Dir == "" {
		return Receipt{}, permanent("maildir", errors.New("no directory configured"))
	}
	if err := checkPath(rcpt); err != nil {
		return Receipt{}, permanent("maildir: recipient "+strconv.Quote(rcpt), err)
	}
	if err := checkPath(from); err != nil {
		return Receipt{}, permanent("maildir: sender "+strconv.Quote(from), err)
	}
	return writeMaildir(m.Dir, from, rcpt, msg)
}

// writeMaildir writes msg into the Maildir dir, made if missing (see
// Maildir.Deliver).
func writeMaildir(dir, from, rcpt string, msg []byte) (Receipt, error) {
	for _, d := range []string{dir, filepath.Join(dir, "tmp"), filepath.Join(dir, "new"), filepath.Join(dir, "cur")} {
		if err := safeio.MkdirAll(d, 0o700); err != nil {
			return Receipt{}, temporary("maildir: "+d, err)
		}
	}

	file := newLocalCopy(from, rcpt, msg)
	unique, err := uniqueName(file.size())
	if err != nil {
		return Receipt{}, temporary("maildir: unique name", err)
	}
	tmpPath := filepath.Join(dir, "tmp", unique)
	newPath := filepath.Join(dir, "new", unique)
	// Streamed, not copied whole: a batch message is megabytes, and every
	// allocation while letters arrive makes their sessions help the
	// garbage collector.
	if _, err := safeio.WriteNewFrom(tmpPath, file, 0o600); err != nil {
		return Receipt{}, temporary("maildir: write "+tmpPath, err)
	}
	if err := os.Rename(tmpPath, newPath); err != nil {
		os.Remove(tmpPath)
		return Receipt{}, temporary("maildir: rename into new", err)
	}
	if err := safeio.SyncDir(filepath.Join(dir, "new")); err != nil {
		// The file is in place but maybe not durable: report failure so the
		// scheduler retries; a second copy beats a lost one.
		return Receipt{}, temporary("maildir: sync "+filepath.Join(dir, "new"), err)
	}
	return Receipt{Path: newPath}, nil
}

// localCopy reads msg as a Maildir file: Return-Path (the envelope
// sender, RFC 5321 4.4) and Delivered-To on top, and CRLF turned into the
// LF that local mail files use. A lone CR or LF is left as it is.
type localCopy struct {
	head string
	msg  []byte // what is left to read
}

func newLocalCopy(from, rcpt string, msg []byte) *localCopy {
	return &localCopy{head: "Return-Path: <" + from + ">\nDelivered-To: " + rcpt + "\n", msg: msg}
}

// size is how many bytes are left to read.
func (c *localCopy) size() int {
	return len(c.head) + len(c.msg) - bytes.Count(c.msg, crlf)
}

var crlf = []byte("\r\n")

func (c *localCopy) Read(p []byte) (int, error) {
	n := copy(p, c.head)
	c.head = c.head[n:]
	for n < len(p) && len(c.msg) > 0 {
		i := bytes.Index(c.msg, crlf)
		switch {
		case i < 0:
			i = len(c.msg)
		case i == 0:
			p[n] = '\n'
			n++
			c.msg = c.msg[2:]
			continue
		}
		k := copy(p[n:], c.msg[:i])
		n += k
		c.msg = c.msg[k:]
	}
	if n == 0 && len(p) > 0 {
		return 0, io.EOF
	}
	return n, nil
}

// uniqueName follows the Maildir convention time.unique.host, with 128
// random bits as the unique part (no counter: no shared state between
// deliveries) and the size as Dovecot's ",S=" hint.
func uniqueName(size int) (string, error) {
	var b [16]byte
	if _, err := rand.Read(b[:]); err != nil {
		return "", err
	}
	host, err := os.Hostname()
	if err != nil || host == "" {
		host = "localhost"
	}
	// The Maildir spec escapes these two; they separate name and flags.
	host = strings.NewReplacer("/", `\057`, ":", `\072`).Replace(host)
	return fmt.Sprintf("%d.R%s.%s,S=%d", time.Now().Unix(), hex.EncodeToString(b[:]), host, size), nil
}

// mailboxName maps an address to a folder name injectively (see Maildir).
func mailboxName(rcpt string) string {
	lower := strings.ToLower(rcpt)
	var b strings.Builder
	for i := 0; i < len(lower); i++ {
		c := lower[i]
		safe := c >= 'a' && c <= 'z' || c >= '0' && c <= '9' ||
			strings.IndexByte("@._+=-", c) >= 0
		if c == '.' && i == 0 {
			safe = false // no hidden folder, no "." or ".."
		}
		if safe {
			b.WriteByte(c)
		} else {
			fmt.Fprintf(&b, "%%%02X", c)
		}
	}
	return b.String()
}
