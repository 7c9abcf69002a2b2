package main

import (
	"bytes"
	"context"
	"mime"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/petitiond/petitiond/internal/batchmime"
)

// demoRun runs `petitiond demo -exit` with a bounded context, as main would.
func demoRun(t *testing.T, args ...string) (code int, stdout, stderr string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	var out, errb bytes.Buffer
	code = run(ctx, append([]string{"demo", "-exit"}, args...), &out, &errb)
	if ctx.Err() != nil {
		t.Fatalf("demo still running after 60s; output:\n%s\nstderr:\n%s", out.String(), errb.String())
	}
	return code, out.String(), errb.String()
}

// digestLetters counts the message/rfc822 parts of a batch's multipart/digest.
func digestLetters(t *testing.T, path string) int {
	t.Helper()
	msg, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	b, err := batchmime.Read(msg)
	if err != nil {
		t.Fatalf("%s: %v", path, err)
	}
	if b.Parts != 3 {
		t.Fatalf("%s has %d parts, want summary, CSV and digest", path, b.Parts)
	}
	letters := 0
	for _, l := range b.Letters {
		if ct, _, _ := mime.ParseMediaType(l.Header.Get("Content-Type")); ct == "message/rfc822" {
			letters++
		}
	}
	return letters
}

// The tour runs to completion on its own: every supporter's letter is in
// the one batch each recipient finds in its outbox, the unsigned one
// confirmed by a reply to the request in the supporters Maildir among
// them; the duplicate and the forged letter are not, and the forged one
// got no request; -keep leaves the folder to look at.
func TestDemoKeepsBatchesForBothRecipients(t *testing.T) {
	base := t.TempDir()
	code, out, errOut := demoRun(t, "-keep", "-dir", base)
	if code != 0 {
		t.Fatalf("exit %d\nstdout:\n%s\nstderr:\n%s", code, out, errOut)
	}
	for _, want := range []string{"batch 1: 13 letters", "already counted", "held for an admin", "counted 13, duplicates 1, held 1",
		"confirmation requests: sent 1, confirmed 1", "Reply-To: libertad+confirm-", "replies to it: 250 2.0.0",
		"swaks --server 127.0.0.1", "petitiond held release -admin http://127.0.0.1:"} {
		if !strings.Contains(out, want) {
			t.Errorf("output lacks %q:\n%s", want, out)
		}
	}

	dirs, _ := filepath.Glob(filepath.Join(base, "petitiond-demo-*"))
	if len(dirs) != 1 {
		t.Fatalf("demo folders in %s: %q, want one (kept)", base, dirs)
	}
	var copies [][]byte
	for _, rcpt := range []string{"familias@localhost", "copias@localhost"} {
		files, _ := filepath.Glob(filepath.Join(dirs[0], "store", "outbox", rcpt, "new", "*"))
		if len(files) != 1 {
			t.Fatalf("%s outbox: %d files, want 1 batch", rcpt, len(files))
		}
		if !strings.Contains(out, files[0]) {
			t.Errorf("output does not name %s", files[0])
		}
		if n := digestLetters(t, files[0]); n != 13 {
			t.Errorf("%s: digest holds %d letters, want 13", rcpt, n)
		}
		b, err := os.ReadFile(files[0])
		if err != nil {
			t.Fatal(err)
		}
		_, b, found := bytes.Cut(b, []byte("\nDelivered-To: "+rcpt+"\n")) // the one line that names the recipient
		if !found {
			t.Errorf("%s: no Delivered-To line", rcpt)
		}
		copies = append(copies, b)
	}
	if !bytes.Equal(copies[0], copies[1]) {
		t.Errorf("the recipients' copies differ")
	}
	b, err := batchmime.Read(copies[0])
	if err != nil {
		t.Fatal(err)
	}
	rows, err := b.Rows()
	if err != nil {
		t.Fatal(err)
	}
	confirmed := 0
	for _, r := range rows {
		if r.Verified == "confirmed" {
			confirmed++
			if r.Address != "pedro.vergara@sin-dkim.example" {
				t.Errorf("letter %s from %s is listed as confirmed", r.LetterID, r.Address)
			}
		}
	}
	if confirmed != 1 {
		t.Errorf("the batch's CSV lists %d letters confirmed by reply, want Pedro's", confirmed)
	}
	requests, _ := filepath.Glob(filepath.Join(dirs[0], "store", "outbox", "supporters", "new", "*"))
	if len(requests) != 1 {
		t.Fatalf("supporters Maildir: %d messages, want the one request (none for the forged letter)", len(requests))
	}
	if req, _ := os.ReadFile(requests[0]); !bytes.Contains(req, []byte("\nTo: <pedro.vergara@sin-dkim.example>\n")) {
		t.Errorf("the request is not Pedro's:\n%s", req)
	}
}

func TestDemoRemovesItsFolder(t *testing.T) {
	base := t.TempDir()
	code, out, errOut := demoRun(t, "-letters", "3", "-dir", base)
	if code != 0 {
		t.Fatalf("exit %d\nstdout:\n%s\nstderr:\n%s", code, out, errOut)
	}
	if !strings.Contains(out, "batch 1: 4 letters") {
		t.Errorf("output lacks the batch:\n%s", out)
	}
	left, err := os.ReadDir(base)
	if err != nil {
		t.Fatal(err)
	}
	if len(left) != 0 {
		t.Errorf("left in %s after the demo: %v", base, left)
	}
}

func TestDemoUsage(t *testing.T) {
	for _, tc := range []struct {
		args []string
		code int
	}{
		{[]string{"-h"}, 0},
		{[]string{"-letters", "0"}, 2},
		{[]string{"-letters", "100000"}, 2},
		{[]string{"extra"}, 2},
		{[]string{"-nope"}, 2},
	} {
		var out, errb bytes.Buffer
		if code := run(context.Background(), append([]string{"demo"}, tc.args...), &out, &errb); code != tc.code {
			t.Errorf("demo %q: exit %d, want %d; stderr: %s", tc.args, code, tc.code, errb.String())
		}
		if !strings.Contains(errb.String(), "usage: petitiond demo") {
			t.Errorf("demo %q: stderr lacks the usage line: %q", tc.args, errb.String())
		}
	}
}
