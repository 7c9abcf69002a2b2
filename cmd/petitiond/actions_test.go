package main

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"slices"
	"strings"
	"testing"
	"time"
	"unicode/utf8"

	"github.com/petitiond/petitiond/config"
	"github.com/petitiond/petitiond/internal/sinkserver"
	"github.com/petitiond/petitiond/internal/testenv"
	"github.com/petitiond/petitiond/relay/admin"
)

// A bounce of a batch, as postmaster mail arrives: 8-bit bytes that are not
// UTF-8, a tab, a line of 990 octets, a line that starts with a dot.
var bounce = []byte("Return-Path: <>\r\nFrom: Mail Delivery System <MAILER-DAEMON@ofapp.test>\r\n" +
	"To: <postmaster@campaign.test>\r\nSubject: Undelivered Mail Returned to Sender\r\n" +
	"Content-Type: text/plain; charset=iso-8859-1\r\nContent-Transfer-Encoding: 8bit\r\n\r\n" +
	"No se pudo entregar a familias@ofapp.test: buz\xf3n lleno.\r\n\tdetalle\r\n" +
	".una linea con punto\r\n" + strings.Repeat("x", 990) + "\r\n")

// TestAdminHeldShow: held show prints a held message byte for byte,
// postmaster mail included, in text and -json; the listing names the
// subject.
func TestAdminHeldShow(t *testing.T) {
	e := startAdm(t, nil)
	pm := e.Queued(bounce, "postmaster@campaign.test")
	letter := e.Queued(e.Letter("dan@ed.test", "=?UTF-8?Q?Liberen_a_los_presos_pol=C3=ADticos?=", testenv.Body))

	stored, err := e.Store().HeldMessage(pm)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.HasSuffix(stored, bounce) {
		t.Fatalf("the store does not hold the bounce as sent:\n%q", stored)
	}
	out := cliOK(t, "held", "show", "-admin", e.AdminURL(), pm)
	if out != string(stored) {
		t.Errorf("held show differs from the message as received (%d vs %d bytes):\n%q", len(out), len(stored), out)
	}
	// A lower-case ID is the same letter.
	if out := cliOK(t, "held", "show", "-admin", e.AdminURL(), strings.ToLower(pm)); out != string(stored) {
		t.Errorf("held show of a lower-case ID: %d bytes", len(out))
	}
	var shown struct {
		ID      string `json:"id"`
		Size    int    `json:"size"`
		Message []byte `json:"message_base64"`
	}
	cliJSON(t, &shown, "held", "show", "-json", "-admin", e.AdminURL(), pm)
	if shown.ID != pm || shown.Size != len(stored) || !bytes.Equal(shown.Message, stored) {
		t.Errorf("held show -json = %s, %d bytes, equal %v", shown.ID, shown.Size, bytes.Equal(shown.Message, stored))
	}

	var held []admin.HeldLetter
	cliJSON(t, &held, "held", "-json", "-admin", e.AdminURL())
	if len(held) != 2 || held[0].Subject != "Undelivered Mail Returned to Sender" || held[0].Reason != "postmaster" ||
		held[1].ID != letter || held[1].Subject != "Liberen a los presos políticos" {
		t.Errorf("held -json = %+v", held)
	}
	list := cliOK(t, "held", "-admin", e.AdminURL())
	for _, want := range []string{"SUBJECT", "Undelivered Mail Returned to Sender", "Liberen a los presos políticos", "postmaster"} {
		if !strings.Contains(list, want) {
			t.Errorf("held lacks %q:\n%s", want, list)
		}
	}

	// A letter that is not held, or none: exit 1 with the reason.
	for id, says := range map[string]string{"L0000FFFF": "not found", pm + "X": "not found"} {
		if code, _, errs := cli(context.Background(), "held", "show", "-admin", e.AdminURL(), id); code != 1 || !strings.Contains(errs, says) {
			t.Errorf("held show %s: exit %d, %q", id, code, errs)
		}
	}
	cliOK(t, "held", "release", "-admin", e.AdminURL(), letter)
	if code, _, errs := cli(context.Background(), "held", "show", "-admin", e.AdminURL(), letter); code != 1 || !strings.Contains(errs, "not held") {
		t.Errorf("held show of a released letter: exit %d, %q", code, errs)
	}
}

// TestAdminHeldBulk: release and drop take several IDs, or -all with
// -reason; each letter gets its line, one that cannot be decided fails the
// command without stopping the others, and letters released together go
// into one batch.
func TestAdminHeldBulk(t *testing.T) {
	e := startAdm(t, func(c *config.Config) { c.Batch.MaxWait = config.Duration{Duration: 500 * time.Millisecond} })
	var ids []string
	for _, who := range []string{"ana", "bo", "carla", "dan", "eva", "fede"} {
		ids = append(ids, e.Queued(unsigned(e, who+"@ed.test")))
	}
	pm := e.Queued(bounce, "postmaster@campaign.test")
	// Paused, no batch closes between the releases, however slow they are.
	cliOK(t, "pause", "-admin", e.AdminURL())

	// Two by name, text.
	out := cliOK(t, "held", "release", "-admin", e.AdminURL(), ids[0], ids[1])
	for _, id := range ids[:2] {
		if !strings.Contains(out, id+" released: counted") {
			t.Errorf("held release of two: %q lacks %s", out, id)
		}
	}
	// One good, one already released, one unknown: exit 1 naming the two.
	code, out, errs := cli(context.Background(), "held", "drop", "-admin", e.AdminURL(), ids[2], ids[0], "L0000FFFF")
	if code != 1 || !strings.Contains(out, ids[2]+" dropped") || !strings.Contains(errs, "2 of 3 letters could not be dropped") ||
		!strings.Contains(errs, ids[0]+": letter "+ids[0]+" is pending, not held") || !strings.Contains(errs, "L0000FFFF: letter L0000FFFF: not found") {
		t.Errorf("drop with two bad IDs: exit %d\nstdout %q\nstderr %q", code, out, errs)
	}

	// -all -reason unverified, JSON: the three left, not the postmaster mail.
	var d admin.Decisions
	cliJSON(t, &d, "held", "release", "-all", "-reason", "unverified", "-json", "-admin", e.AdminURL())
	var got []string
	for _, r := range d.Results {
		if r.Outcome != "released" || r.Error != "" {
			t.Errorf("result %+v", r)
		}
		got = append(got, r.ID)
	}
	if !slices.Equal(got, ids[3:]) || d.Skipped != 0 {
		t.Errorf("released %v (skipped %d), want %v", got, d.Skipped, ids[3:])
	}
	// Nothing of that reason is left; release -all leaves postmaster mail.
	if out := cliOK(t, "held", "release", "-all", "-reason", "unverified", "-admin", e.AdminURL()); !strings.Contains(out, "no held letters held for unverified") {
		t.Errorf("second release -all -reason: %q", out)
	}
	if out := cliOK(t, "held", "release", "-all", "-admin", e.AdminURL()); !strings.Contains(out, "1 postmaster letter left held") {
		t.Errorf("release -all with postmaster mail held: %q", out)
	}
	if out := cliOK(t, "held", "drop", "-all", "-reason", "postmaster", "-admin", e.AdminURL()); !strings.Contains(out, pm+" dropped") {
		t.Errorf("drop -all -reason postmaster: %q", out)
	}
	if held := cliOK(t, "held", "-admin", e.AdminURL()); !strings.Contains(held, "no held letters") {
		t.Errorf("held after everything was decided: %q", held)
	}

	// The five released letters wait together: one batch.
	cliOK(t, "resume", "-admin", e.AdminURL())
	var batches []admin.Batch
	testenv.WaitFor(t, "the released letters' batch", 10*time.Second, func() bool {
		cliJSON(t, &batches, "batches", "-json", "-admin", e.AdminURL())
		return len(batches) > 0
	})
	var b admin.Batch
	cliJSON(t, &b, "batches", "show", "-json", "-admin", e.AdminURL(), "1")
	if len(batches) != 1 || b.Letters != 5 {
		t.Errorf("batches %+v; batch 1 has %d letters, want one batch of the 5 released", batches, b.Letters)
	}
}

// TestAdminPause: while paused, letters are accepted and counted but no
// batch closes; the pause shows in stats, /healthz and /metrics, survives
// a restart, and resume lets the batch close and go.
func TestAdminPause(t *testing.T) {
	e := startAdm(t, nil) // max_wait 200ms, maildir delivery
	var p admin.PauseState
	cliJSON(t, &p, "pause", "-json", "-reason", "the families asked us to wait", "-admin", e.AdminURL())
	if !p.Paused || !p.Changed || p.Since == nil || p.Reason != "the families asked us to wait" {
		t.Fatalf("pause -json = %+v", p)
	}
	if out := cliOK(t, "pause", "-admin", e.AdminURL()); !strings.Contains(out, "already paused since") || !strings.Contains(out, "the families asked us to wait") {
		t.Errorf("pause again: %q", out)
	}
	id := e.Queued(e.Signed("ed.test", "ana@ed.test"))

	var st admin.Stats
	cliJSON(t, &st, "stats", "-json", "-admin", e.AdminURL())
	if !st.Paused || st.PauseReason != "the families asked us to wait" || st.Counted != 1 || st.Pending != 1 {
		t.Errorf("stats while paused: %+v", st)
	}
	if out := cliOK(t, "stats", "-admin", e.AdminURL()); !strings.Contains(out, "paused      yes") {
		t.Errorf("stats does not say it is paused:\n%s", out)
	}
	if h := healthz(t, e.AdminURL()); h.Status != "paused" || !h.Paused {
		t.Errorf("healthz while paused: %+v", h)
	}
	if !strings.Contains(httpGet(t, e.AdminURL()+"/metrics"), "\npetitiond_paused 1\n") {
		t.Error("metrics do not say petitiond_paused 1")
	}
	// Well past max_wait, and across a restart, no batch closes.
	e.Restart()
	deadline := time.Now().Add(time.Second)
	for time.Now().Before(deadline) {
		cliJSON(t, &st, "stats", "-json", "-admin", e.AdminURL())
		if st.Batches != 0 || !st.Paused {
			t.Fatalf("while paused: %+v", st)
		}
		time.Sleep(50 * time.Millisecond)
	}

	out := cliOK(t, "resume", "-admin", e.AdminURL())
	if !strings.Contains(out, "resumed") {
		t.Errorf("resume: %q", out)
	}
	testenv.WaitFor(t, "the batch delivered after resume", 10*time.Second, func() bool {
		return len(e.Delivered(testenv.Familias)) == 1 && len(e.Delivered(testenv.Copias)) == 1
	})
	var b admin.Batch
	cliJSON(t, &b, "batches", "show", "-json", "-admin", e.AdminURL(), "1")
	if !slices.Equal(b.LetterIDs, []string{id}) {
		t.Errorf("batch 1 = %+v, want letter %s", b, id)
	}
	if out := cliOK(t, "resume", "-admin", e.AdminURL()); !strings.Contains(out, "not paused") {
		t.Errorf("resume again: %q", out)
	}
	var rp admin.PauseState
	if cliJSON(t, &rp, "resume", "-json", "-admin", e.AdminURL()); rp.Paused || rp.Changed || rp.Since != nil {
		t.Errorf("resume -json when not paused = %+v", rp)
	}
	cliOK(t, "pause", "-admin", e.AdminURL())
	if cliJSON(t, &rp, "resume", "-json", "-admin", e.AdminURL()); rp.Paused || !rp.Changed {
		t.Errorf("resume -json when paused = %+v, want changed, not paused", rp)
	}
	if h := healthz(t, e.AdminURL()); h.Status != "ok" || h.Paused {
		t.Errorf("healthz after resume: %+v", h)
	}
	var evs []admin.Event
	for _, line := range strings.Split(strings.TrimSpace(cliOK(t, "tail", "-json", "-n", "20", "-admin", e.AdminURL())), "\n") {
		var ev admin.Event
		if err := json.Unmarshal([]byte(line), &ev); err != nil {
			t.Fatal(err)
		}
		evs = append(evs, ev)
	}
	kinds := map[string]int{}
	for _, ev := range evs {
		kinds[string(ev.Event)]++
	}
	if kinds["paused"] != 2 || kinds["resumed"] != 2 {
		t.Errorf("journal has %d paused and %d resumed events, want two each", kinds["paused"], kinds["resumed"])
	}
}

// TestAdminFlush: deferred copies wait retry_min (an hour here); batches
// flush tries them now, or, while paused, as soon as the daemon resumes.
func TestAdminFlush(t *testing.T) {
	e := testenv.Prepare(t, admConfig(func(c *config.Config) {
		c.Delivery.RetryMin = config.Duration{Duration: time.Hour}
		c.Delivery.RetryMax = config.Duration{Duration: 2 * time.Hour}
	}))
	sink := e.Smarthost()
	sink.FailRcpt(&sinkserver.Fault{Code: 451, Enhanced: [3]int{4, 3, 0}, Msg: "try again later"})
	e.Start()
	t.Setenv(adminTokenEnv, e.AdminToken())
	e.Queued(e.Signed("ed.test", "ana@ed.test"))
	deferred := func() bool {
		var list []admin.Batch
		cliJSON(t, &list, "batches", "-json", "-admin", e.AdminURL())
		return len(list) == 1 && list[0].Recipients[0].State == "deferred" && list[0].Recipients[1].State == "deferred"
	}
	testenv.WaitFor(t, "both copies deferred", 10*time.Second, deferred)
	if out := cliOK(t, "batches", "-admin", e.AdminURL()); !strings.Contains(out, "next try") || !strings.Contains(out, "451") {
		t.Errorf("batches does not show the deferral: %q", out)
	}

	sink.FailRcpt(nil)
	// Paused, a flush makes the copies due but nothing is sent.
	cliOK(t, "pause", "-admin", e.AdminURL())
	var r admin.FlushResult
	cliJSON(t, &r, "batches", "flush", "-json", "-admin", e.AdminURL())
	if r.Flushed != 2 || !r.Paused {
		t.Errorf("batches flush -json while paused = %+v, want 2 flushed, paused", r)
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Second)
	defer cancel()
	if msgs, err := sink.Wait(ctx, 1); err == nil {
		t.Fatalf("%d copies sent while paused", len(msgs))
	}
	if out := cliOK(t, "resume", "-admin", e.AdminURL()); !strings.Contains(out, "resumed") {
		t.Errorf("resume: %q", out)
	}
	if _, err := sink.Wait(context.Background(), 2); err != nil {
		t.Fatalf("the flushed copies never came after resume: %v", err)
	}
	testenv.WaitFor(t, "both copies delivered", 10*time.Second, func() bool {
		var b admin.Batch
		cliJSON(t, &b, "batches", "show", "-json", "-admin", e.AdminURL(), "1")
		return b.Recipients[0].State == "delivered" && b.Recipients[1].State == "delivered"
	})
	if out := cliOK(t, "batches", "flush", "-admin", e.AdminURL()); !strings.Contains(out, "0 deferred copies will be tried now") {
		t.Errorf("flush with nothing deferred: %q", out)
	}
}

// TestAdminHealthAndVersion: health says ok (exit 0) in text and JSON;
// version and -version on any command print the Go version.
func TestAdminHealthAndVersion(t *testing.T) {
	e := startAdm(t, nil)
	if out := cliOK(t, "health", "-admin", e.AdminURL()); strings.TrimSpace(out) != "ok" {
		t.Errorf("health: %q", out)
	}
	var h admin.Health
	cliJSON(t, &h, "health", "-json", "-admin", e.AdminURL())
	if h.Status != "ok" || h.Store != "ok" || h.SMTP != "ok" {
		t.Errorf("health -json = %+v", h)
	}
	want := admin.ReadBuild().GoVersion
	for _, args := range [][]string{{"version"}, {"-version"}, {"held", "-version"}, {"stats", "-json", "-version"}, {"check-config", "-version"}, {"dkim-keygen", "-version"}} {
		if out := cliOK(t, args...); !strings.HasPrefix(out, "petitiond ") || !strings.Contains(out, want) {
			t.Errorf("%v: %q, want the version with %s", args, out, want)
		}
	}
	var b admin.Build
	cliJSON(t, &b, "version", "-json")
	if b.GoVersion != want || b.Version == "" {
		t.Errorf("version -json = %+v", b)
	}
	// A daemon that is not there: exit 1.
	e.Stop()
	if code, _, errs := cli(context.Background(), "health", "-admin", e.AdminURL()); code != 1 || !strings.Contains(errs, "not running") {
		t.Errorf("health with no daemon: exit %d, %q", code, errs)
	}
}

// osc52 is a terminal escape that writes the clipboard ("hello"), then a
// CR and a forged line.
const osc52 = "\x1b]52;c;aGVsbG8=\x07"

// TestAdminOutputIsTerminalSafe: values that came from the network reach
// the admin's terminal escaped, in every command's text and JSON output.
func TestAdminOutputIsTerminalSafe(t *testing.T) {
	e := startAdm(t, nil)
	c := e.Dial()
	defer c.Quit()
	c.Hello("client.test")
	from := "x@evil" + osc52 + ".test" // go-smtp takes any byte in the domain
	// A bare LF: rejected, journalled with the MAIL FROM as its sender.
	if r, err := c.Send(from, []string{testenv.CampaignAddr}, []byte("From: a@b\r\nSubject: x\n\r\nbody\r\n")); err != nil || r.Code != 554 {
		t.Fatalf("bare LF from %q: %v %v", from, r, err)
	}
	// Postmaster mail with a crafted Subject and no valid From: held, under the MAIL FROM.
	c.Cmd("RSET")
	msg := []byte("Subject: " + osc52 + "\x1b[2KFORGED\xc2\x9b\u202etxt.exe\r\n\r\nbody\r\n")
	if r, err := c.Send(from, []string{"postmaster@campaign.test"}, msg); err != nil || r.Code != 250 {
		t.Fatalf("postmaster mail: %v %v", r, err)
	}
	ids := heldIDs(t, e)
	if len(ids) != 1 {
		t.Fatalf("held %v, want the postmaster mail", ids)
	}
	url, id := e.AdminURL(), ids[0]
	for _, args := range [][]string{
		{"tail", "-n", "5", "-admin", url}, {"tail", "-json", "-n", "5", "-admin", url},
		{"held", "-admin", url}, {"held", "-json", "-admin", url}, {"stats", "-admin", url},
		{"held", "show", "-json", "-admin", url, id},
		{"held", "release", "-admin", url, id}, {"held", "drop", "-json", "-admin", url, id, "L0000FFFF"},
	} {
		_, out, errs := cli(context.Background(), args...)
		for _, text := range []string{out, errs} {
			if bad := firstUnsafe(text); bad != "" {
				t.Errorf("petitiond %v writes %s to the terminal:\n%q", args, bad, text)
			}
		}
		if args[0] == "tail" && !strings.Contains(out, `\u001b]52`) && !strings.Contains(out, `\x1b]52`) {
			t.Errorf("petitiond %v does not show the escape as text:\n%s", args, out)
		}
	}
	// held show to a terminal escapes too (to a file or pipe it is exact:
	// TestAdminHeldShow).
	var screen bytes.Buffer
	if _, err := (messageEscaper{&screen}).Write(msg); err != nil {
		t.Fatal(err)
	}
	if bad := firstUnsafe(screen.String()); bad != "" || !strings.Contains(screen.String(), `\x1b]52;c;aGVsbG8=\x07`) {
		t.Errorf("a message shown on a terminal: %s in %q", bad, screen.String())
	}
}

// TestBatchOutputIsTerminalSafe: a recipient's server that answers with
// escape sequences in its reply text reaches the admin's terminal through
// batches and batches show (and lookup and erase of the letter's sender)
// only as visible text.
func TestBatchOutputIsTerminalSafe(t *testing.T) {
	e := testenv.Prepare(t, admConfig(func(c *config.Config) {
		c.Delivery.RetryMin = config.Duration{Duration: time.Hour}
		c.Delivery.RetryMax = config.Duration{Duration: 2 * time.Hour}
	}))
	e.Smarthost().FailRcpt(&sinkserver.Fault{Code: 451, Enhanced: [3]int{4, 3, 0}, Msg: "busy " + osc52 + "\x1b[2KFORGED\xc2\x9b"})
	e.Start()
	t.Setenv(adminTokenEnv, e.AdminToken())
	e.Queued(e.Signed("ed.test", "ana@ed.test"))
	testenv.WaitFor(t, "both copies deferred", 10*time.Second, func() bool {
		var list []admin.Batch
		cliJSON(t, &list, "batches", "-json", "-admin", e.AdminURL())
		return len(list) == 1 && list[0].Recipients[0].State == "deferred" && list[0].Recipients[1].State == "deferred"
	})
	url := e.AdminURL()
	for _, args := range [][]string{
		{"batches", "-admin", url}, {"batches", "show", "-admin", url, "1"},
		{"lookup", "-admin", url, "ana@ed.test"}, {"erase", "-admin", url, "ana@ed.test"},
	} {
		_, out, errs := cli(context.Background(), args...)
		for _, text := range []string{out, errs} {
			if bad := firstUnsafe(text); bad != "" {
				t.Errorf("petitiond %v writes %s to the terminal:\n%q", args, bad, text)
			}
		}
		if args[0] == "batches" && len(args) == 3 && !strings.Contains(out, `\x1b]52`) {
			t.Errorf("petitiond %v does not show the reply's escape as text:\n%s", args, out)
		}
	}
}

// heldIDs lists the held letters' IDs.
func heldIDs(t *testing.T, e *testenv.Test) []string {
	t.Helper()
	var held []admin.HeldLetter
	cliJSON(t, &held, "held", "-json", "-admin", e.AdminURL())
	var ids []string
	for _, l := range held {
		ids = append(ids, l.ID)
	}
	return ids
}

// firstUnsafe names the first character in s a terminal would act on: a
// control other than the line break, DEL, a C1 control, a bidi control.
func firstUnsafe(s string) string {
	for i, r := range s {
		switch {
		case r == '\n':
		case r == utf8.RuneError:
			return fmt.Sprintf("an invalid byte at %d", i)
		case r < 0x20 || r == 0x7f || (r >= 0x80 && r < 0xa0) || (r >= 0x202a && r <= 0x202e) || (r >= 0x2066 && r <= 0x2069):
			return fmt.Sprintf("%U at %d", r, i)
		}
	}
	return ""
}

func httpGet(t *testing.T, url string) string {
	t.Helper()
	resp, err := http.Get(url)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return string(b)
}

func healthz(t *testing.T, base string) admin.Health {
	t.Helper()
	var h admin.Health
	if err := json.Unmarshal([]byte(httpGet(t, base+"/healthz")), &h); err != nil {
		t.Fatalf("healthz: %v", err)
	}
	return h
}
