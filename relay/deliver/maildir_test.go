package deliver

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestMaildirDeliver(t *testing.T) {
	root := filepath.Join(t.TempDir(), "outbox") // does not exist yet
	m := Maildir{Root: root}
	var tr Transport = m
	ctx := context.Background()

	for i := 0; i < 2; i++ {
		if err := tr.Deliver(ctx, envFrom, "Familias@OFAPP.example", []byte(testMsg)); err != nil {
			t.Fatal(err)
		}
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
	for _, e := range entries {
		if strings.ContainsAny(e.Name(), ":/") {
			t.Errorf("name %q has a Maildir separator", e.Name())
		}
		p := filepath.Join(dir, "new", e.Name())
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
		if string(b) != testMsg {
			t.Errorf("content changed: %q", b)
		}
	}
}

func TestMaildirPerRecipient(t *testing.T) {
	m := Maildir{Root: t.TempDir()}
	for _, rcpt := range []string{"familias@ofapp.example", "copias@sr.example"} {
		if err := m.Deliver(context.Background(), envFrom, rcpt, []byte(testMsg)); err != nil {
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
	if err := (Maildir{}).Deliver(ctx, envFrom, rcptTo, []byte(testMsg)); !IsPermanent(err) {
		t.Errorf("no root: %v, want permanent", err)
	}
	m := Maildir{Root: t.TempDir()}
	if err := m.Deliver(ctx, envFrom, "not-an-address", []byte(testMsg)); !IsPermanent(err) {
		t.Errorf("bad rcpt: %v, want permanent", err)
	}
	if err := m.Deliver(ctx, envFrom, strings.Repeat("a", 300)+"@x", []byte(testMsg)); !IsPermanent(err) {
		t.Errorf("long rcpt: %v, want permanent", err)
	}

	// A file where the recipient's folder should be: a disk problem, so
	// temporary (an admin can fix it and the retry succeeds).
	if err := os.WriteFile(m.Dir(rcptTo), nil, 0o600); err != nil {
		t.Fatal(err)
	}
	err := m.Deliver(ctx, envFrom, rcptTo, []byte(testMsg))
	if err == nil || IsPermanent(err) {
		t.Errorf("blocked folder: %v, want temporary", err)
	}

	cctx, cancel := context.WithCancel(ctx)
	cancel()
	if err := m.Deliver(cctx, envFrom, "other@x.test", []byte(testMsg)); err == nil || IsPermanent(err) {
		t.Errorf("canceled: %v, want temporary", err)
	}
}
