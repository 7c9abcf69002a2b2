package deliver

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"mime"
	"net/mail"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"testing/iotest"
	"time"

	"github.com/petitiond/petitiond/relay/batch"
)

func TestMaildirDeliver(t *testing.T) {
	root := filepath.Join(t.TempDir(), "outbox") // does not exist yet
	m := Maildir{Root: root}
	var tr Transport = m
	ctx := context.Background()

	var receipts []Receipt
	for i := 0; i < 2; i++ {
		r, err := tr.Deliver(ctx, envFrom, "Familias@OFAPP.example", []byte(testMsg))
		if err != nil {
			t.Fatal(err)
		}
		receipts = append(receipts, r)
	}

	dir := m.Dir("familias@ofapp.example")
	if dir != filepath.Join(root, "familias@ofapp.example") || m.Dir("Familias@OFAPP.example") != dir {
		t.Fatalf("Dir = %q", dir)
	}
	for _, d := range []string{root, dir, filepath.Join(dir, "tmp"), filepath.Join(dir, "new"), filepath.Join(dir, "cur")} {
		fi, err := os.Stat(d)
		if err != nil {
			t.Fatal(err)
		}
		if !fi.IsDir() || fi.Mode().Perm() != 0o700 {
			t.Errorf("%s: mode %v, want a 0700 directory", d, fi.Mode())
		}
	}
	if tmp, _ := os.ReadDir(filepath.Join(dir, "tmp")); len(tmp) != 0 {
		t.Errorf("tmp not empty: %v", tmp)
	}
	entries, err := os.ReadDir(filepath.Join(dir, "new"))
	if err != nil {
		t.Fatal(err)
	}
	if len(entries) != 2 || entries[0].Name() == entries[1].Name() {
		t.Fatalf("new/ holds %v, want two distinct files", entries)
	}
	// What a local delivery agent writes: envelope on top, LF line ends.
	want := "Return-Path: <relay@campaign.test>\n" +
		"Delivered-To: Familias@OFAPP.example\n" +
		"From: relay@campaign.test\n" +
		"To: familias@petition.test\n" +
		"Subject: batch 1: 2 letters\n" +
		"Message-ID: <batch-1@campaign.test>\n" +
		"\n" +
		"Libertad a los presos pol\xc3\xadticos.\n" +
		".a line starting with a dot\n" +
		".\n" +
		"end\n"
	written := map[string]bool{}
	for _, r := range receipts {
		written[r.Path] = true
		if r.String() != "written to "+r.Path {
			t.Errorf("receipt says %q", r)
		}
	}
	for _, e := range entries {
		p := filepath.Join(dir, "new", e.Name())
		if !written[p] {
			t.Errorf("%s was written but no receipt names it (receipts %v)", p, receipts)
		}
		checkMaildirName(t, p)
		fi, err := os.Stat(p)
		if err != nil {
			t.Fatal(err)
		}
		if fi.Mode().Perm() != 0o600 {
			t.Errorf("%s: mode %v, want 0600", p, fi.Mode())
		}
		b, err := os.ReadFile(p)
		if err != nil {
			t.Fatal(err)
		}
		if string(b) != want {
			t.Errorf("content:\n got %q\nwant %q", b, want)
		}
	}
}

// maildirName is the Maildir convention time.unique.host with Dovecot's
// size hint: seconds, "R" and 128 random bits in hex, the host name
// without "/" or ":", and ",S=" the file's size.
var maildirName = regexp.MustCompile(`^([0-9]+)\.R[0-9a-f]{32}\.[^/:]+,S=([0-9]+)$`)

func checkMaildirName(t *testing.T, path string) {
	t.Helper()
	m := maildirName.FindStringSubmatch(filepath.Base(path))
	if m == nil {
		t.Errorf("file name %q does not follow the Maildir convention", filepath.Base(path))
		return
	}
	fi, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	if m[2] != strconv.FormatInt(fi.Size(), 10) {
		t.Errorf("%s: S=%s but the file has %d bytes", path, m[2], fi.Size())
	}
	if sec, _ := strconv.ParseInt(m[1], 10, 64); time.Since(time.Unix(sec, 0)).Abs() > time.Hour {
		t.Errorf("%s: time part %s is not now", path, m[1])
	}
}

func TestMaildirHeaderInjectionRefused(t *testing.T) {
	m := Maildir{Root: t.TempDir()}
	for _, tc := range []struct{ from, rcpt string }{
		{"a@x.test>\nX-Injected: 1", rcptTo},
		{envFrom, "b@x.test\nX-Injected: 1"},
		{envFrom, "b@x.test\r"},
	} {
		if _, err := m.Deliver(context.Background(), tc.from, tc.rcpt, []byte(testMsg)); !IsPermanent(err) {
			t.Errorf("from %q rcpt %q: %v, want permanent", tc.from, tc.rcpt, err)
		}
	}
	if entries, _ := os.ReadDir(m.Root); len(entries) != 0 {
		t.Errorf("something was written: %v", entries)
	}
}

func TestMaildirPerRecipient(t *testing.T) {
	m := Maildir{Root: t.TempDir()}
	for _, rcpt := range []string{"familias@ofapp.example", "copias@sr.example"} {
		if _, err := m.Deliver(context.Background(), envFrom, rcpt, []byte(testMsg)); err != nil {
			t.Fatal(err)
		}
		if e, _ := os.ReadDir(filepath.Join(m.Dir(rcpt), "new")); len(e) != 1 {
			t.Errorf("%s: %d files in new/", rcpt, len(e))
		}
	}
}

func TestMailboxNameIsPathSafe(t *testing.T) {
	tests := map[string]string{
		"Ana.Perez+x@Example.ORG": "ana.perez+x@example.org",
		"../../etc/passwd@x":      "%2E.%2F..%2Fetc%2Fpasswd@x",
		".hidden@x":               "%2Ehidden@x",
		"a/b@x":                   "a%2Fb@x",
		"a%2Fb@x":                 "a%252fb@x", // '%' is escaped too: distinct from the line above
		"josé@x":                  "jos%C3%A9@x",
		`a\b c@x`:                 "a%5Cb%20c@x",
	}
	for in, want := range tests {
		got := mailboxName(in)
		if got != want {
			t.Errorf("mailboxName(%q) = %q, want %q", in, got, want)
		}
		if strings.Contains(got, "/") || got == "." || got == ".." {
			t.Errorf("mailboxName(%q) = %q is not a single safe path element", in, got)
		}
	}
	m := Maildir{Root: "/r"}
	if d := m.Dir("../../x@y"); filepath.Dir(d) != "/r" {
		t.Errorf("Dir escapes Root: %q", d)
	}
}

func TestMaildirErrors(t *testing.T) {
	ctx := context.Background()
	if _, err := (Maildir{}).Deliver(ctx, envFrom, rcptTo, []byte(testMsg)); !IsPermanent(err) {
		t.Errorf("no root: %v, want permanent", err)
	}
	m := Maildir{Root: t.TempDir()}
	if _, err := m.Deliver(ctx, envFrom, "not-an-address", []byte(testMsg)); !IsPermanent(err) {
		t.Errorf("bad rcpt: %v, want permanent", err)
	}
	if _, err := m.Deliver(ctx, envFrom, strings.Repeat("a", 300)+"@x", []byte(testMsg)); !IsPermanent(err) {
		t.Errorf("long rcpt: %v, want permanent", err)
	}

	// A file where the recipient's folder should be: a disk problem, so
	// temporary (an admin can fix it and the retry succeeds).
	if err := os.WriteFile(m.Dir(rcptTo), nil, 0o600); err != nil {
		t.Fatal(err)
	}
	_, err := m.Deliver(ctx, envFrom, rcptTo, []byte(testMsg))
	if err == nil || IsPermanent(err) {
		t.Errorf("blocked folder: %v, want temporary", err)
	}

	cctx, cancel := context.WithCancel(ctx)
	cancel()
	if _, err := m.Deliver(cctx, envFrom, "other@x.test", []byte(testMsg)); err == nil || IsPermanent(err) {
		t.Errorf("canceled: %v, want temporary", err)
	}
}

// readMaildirPy reads a Maildir with Python's mailbox module, as a mail
// reader would, and reports what it found in each message.
const readMaildirPy = `
import email.header, json, mailbox, sys
md = mailbox.Maildir(sys.argv[1], factory=None, create=False)
out = []
for key, msg in md.iteritems():
    raw = md.get_bytes(key)
    letters = [p for p in msg.walk() if p.get_content_type() == "message/rfc822"]
    out.append({
        "key": key,
        "subdir": msg.get_subdir(),
        "return_path": msg["Return-Path"],
        "delivered_to": msg["Delivered-To"],
        "subject": str(email.header.make_header(email.header.decode_header(msg["Subject"]))),
        "message_id": msg["Message-ID"],
        "content_type": msg.get_content_type(),
        "has_cr": b"\r" in raw,
        "letter_bodies": [l.get_payload()[0].get_payload(decode=True).decode("utf-8") for l in letters],
    })
json.dump(out, sys.stdout)
`

// TestMaildirReadByPython delivers a real batch (non-ASCII campaign name,
// 8-bit letters) and reads it back with Python's mailbox.Maildir.
func TestMaildirReadByPython(t *testing.T) {
	python := needTool(t, "python3")
	const campaign = "Cartas por la libertad — Ñuñoa"
	spec := batch.Spec{Number: 3, CampaignName: campaign, From: envFrom,
		Recipients: []string{"familias@ofapp.example", "copias@sr.example"}, MessageID: "<batch-3.1@campaign.test>",
		Date: time.Date(2025, 10, 18, 12, 0, 0, 0, time.UTC), RunningTotal: 2}
	bodies := []string{"Libertad a los presos políticos.\r\n", "Justicia para las víctimas.\r\n"}
	for i, body := range bodies {
		from := fmt.Sprintf("s%d@ed.test", i)
		spec.Letters = append(spec.Letters, batch.Letter{ID: fmt.Sprintf("L%08X", i+1), Received: spec.Date, Address: from, DKIMDomain: "ed.test",
			Raw: []byte("From: <" + from + ">\r\nSubject: Libertad\r\nContent-Type: text/plain; charset=utf-8\r\nContent-Transfer-Encoding: 8bit\r\n\r\n" + body)})
	}
	msg, err := batch.Build(spec)
	if err != nil {
		t.Fatal(err)
	}
	hdr, err := mail.ReadMessage(bytes.NewReader(msg))
	if err != nil {
		t.Fatal(err)
	}
	wantSubject, err := new(mime.WordDecoder).DecodeHeader(hdr.Header.Get("Subject"))
	if err != nil || !strings.Contains(wantSubject, campaign) {
		t.Fatalf("built Subject %q (%v) does not name the campaign", wantSubject, err)
	}

	m := Maildir{Root: t.TempDir()}
	rcpt := spec.Recipients[0]
	r, err := m.Deliver(testCtx(t), envFrom, rcpt, msg)
	if err != nil {
		t.Fatal(err)
	}
	checkMaildirName(t, r.Path)

	cmd := exec.CommandContext(testCtx(t), python, "-c", readMaildirPy, m.Dir(rcpt))
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("python: %v\n%s", err, stderr.Bytes())
	}
	var got []struct {
		Key          string   `json:"key"`
		Subdir       string   `json:"subdir"`
		ReturnPath   string   `json:"return_path"`
		DeliveredTo  string   `json:"delivered_to"`
		Subject      string   `json:"subject"`
		MessageID    string   `json:"message_id"`
		ContentType  string   `json:"content_type"`
		HasCR        bool     `json:"has_cr"`
		LetterBodies []string `json:"letter_bodies"`
	}
	if err := json.Unmarshal(out, &got); err != nil {
		t.Fatalf("python said %q: %v", out, err)
	}
	if len(got) != 1 {
		t.Fatalf("python found %d messages, want 1: %+v", len(got), got)
	}
	g := got[0]
	if g.Key != filepath.Base(r.Path) || g.Subdir != "new" {
		t.Errorf("key %q in %q, want %q in new", g.Key, g.Subdir, filepath.Base(r.Path))
	}
	if g.ReturnPath != "<"+envFrom+">" || g.DeliveredTo != rcpt {
		t.Errorf("Return-Path %q, Delivered-To %q", g.ReturnPath, g.DeliveredTo)
	}
	if g.Subject != wantSubject {
		t.Errorf("Subject %q, want %q", g.Subject, wantSubject)
	}
	if g.MessageID != spec.MessageID || g.ContentType != "multipart/mixed" {
		t.Errorf("Message-ID %q, Content-Type %q", g.MessageID, g.ContentType)
	}
	if g.HasCR {
		t.Error("the file has CR bytes; a Maildir file has LF line ends")
	}
	if len(g.LetterBodies) != len(bodies) {
		t.Fatalf("python found %d letters, want %d", len(g.LetterBodies), len(bodies))
	}
	for i, b := range bodies {
		if g.LetterBodies[i] != strings.ReplaceAll(b, "\r\n", "\n") {
			t.Errorf("letter %d reads %q, want %q", i+1, g.LetterBodies[i], b)
		}
	}
}

// The Maildir file is streamed from the message: whatever the size of the
// reads, it is the envelope fields and the message with every CRLF (and
// nothing else) made LF, and its size is known before it is read.
func TestLocalCopy(t *testing.T) {
	for _, msg := range []string{
		"",
		"a\r\nb\r\n",
		"\r\n\r\n\r\n",
		"lone CR\rlone LF\nCR CR LF\r\r\nLF CR\n\rend\r",
		"no line end",
		"ends in CR LF\r\n",
		strings.Repeat("line of a long message\r\n", 20000) + "last",
	} {
		head := "Return-Path: <" + envFrom + ">\nDelivered-To: r@x.example\n"
		want := head + strings.ReplaceAll(msg, "\r\n", "\n")
		if got := newLocalCopy(envFrom, "r@x.example", []byte(msg)).size(); got != len(want) {
			t.Errorf("size of %.20q = %d, want %d", msg, got, len(want))
		}
		for _, bufSize := range []int{1, 2, 3, 7, 32 << 10} {
			var out bytes.Buffer
			if _, err := io.CopyBuffer(struct{ io.Writer }{&out}, newLocalCopy(envFrom, "r@x.example", []byte(msg)), make([]byte, bufSize)); err != nil {
				t.Fatal(err)
			}
			if out.String() != want {
				t.Errorf("%.20q read %d bytes at a time gives %d bytes, want %d", msg, bufSize, out.Len(), len(want))
			}
		}
		if err := iotest.TestReader(newLocalCopy(envFrom, "r@x.example", []byte(msg)), []byte(want)); err != nil {
			t.Errorf("%.20q: %v", msg, err)
		}
	}
}

// A message of several megabytes (a batch of 1,000 letters) arrives whole.
func TestMaildirDeliverLarge(t *testing.T) {
	m := Maildir{Root: t.TempDir()}
	msg := strings.Repeat("From: a@b.example\r\nX-Line: "+strings.Repeat("x", 70)+"\r\n", 40000)
	r, err := m.Deliver(context.Background(), envFrom, "big@ofapp.example", []byte(msg))
	if err != nil {
		t.Fatal(err)
	}
	got, err := os.ReadFile(r.Path)
	if err != nil {
		t.Fatal(err)
	}
	want := "Return-Path: <" + envFrom + ">\nDelivered-To: big@ofapp.example\n" + strings.ReplaceAll(msg, "\r\n", "\n")
	if string(got) != want {
		t.Errorf("file holds %d bytes, want %d", len(got), len(want))
	}
	if !strings.HasSuffix(r.Path, ",S="+strconv.Itoa(len(want))) {
		t.Errorf("file name %s does not give its size %d", filepath.Base(r.Path), len(want))
	}
}

// BenchmarkMaildirDeliver3MB writes a batch message of 3 MB, the size of
// a thousand letters, to one recipient's Maildir.
func BenchmarkMaildirDeliver3MB(b *testing.B) {
	m := Maildir{Root: b.TempDir()}
	msg := []byte(strings.Repeat("X-Line: "+strings.Repeat("x", 70)+"\r\n", 3<<20/80))
	b.SetBytes(int64(len(msg)))
	b.ReportAllocs()
	for b.Loop() {
		r, err := m.Deliver(context.Background(), envFrom, "big@ofapp.example", msg)
		if err != nil {
			b.Fatal(err)
		}
		os.Remove(r.Path)
	}
}
