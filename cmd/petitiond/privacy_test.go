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

	"github.com/petitiond/petitiond/config"
	"github.com/petitiond/petitiond/internal/keyserver"
	"github.com/petitiond/petitiond/internal/testenv"
	"github.com/petitiond/petitiond/internal/traces"
	"github.com/petitiond/petitiond/relay/admin"
)

// A supporter's rights (SPEC 13), over SMTP and the commands. The supporter
// who asks has strings no one else writes, so finding one of them anywhere
// means it was not erased.
const (
	supporterAddr = "Rosalba.Quintanilla@ed.test"
	supporterName = "Rosalba Quintanilla Aravena"
	supporterText = "carta-de-rosalba-que-nadie-mas-escribe"
)

// supporterLetter is a signed letter from the supporter, as spelled, with
// her name and text.
func supporterLetter(e *testenv.Test, spelled string) []byte {
	msg := testenv.Letter(supporterName+" <"+spelled+">", e.CampaignAddr(), "Libertad, "+supporterName, supporterText)
	return e.Sign("ed.test", msg, keyserver.SignOptions{})
}

// supporterTraces lists the supporter's strings that files under dir hold.
func supporterTraces(t *testing.T, dir string, needles ...string) []string {
	t.Helper()
	found, err := traces.Find(dir, needles...)
	if err != nil {
		t.Fatal(err)
	}
	return found
}

// delivered waits until batch n reached every recipient.
func delivered(t *testing.T, e *testenv.Test, n string) admin.Batch {
	t.Helper()
	var b admin.Batch
	testenv.WaitFor(t, "batch "+n+" delivered", 15*time.Second, func() bool {
		var list []admin.Batch
		cliJSON(t, &list, "batches", "-json", "-admin", e.AdminURL())
		if len(list) == 0 {
			return false
		}
		cliJSON(t, &b, "batches", "show", "-json", "-admin", e.AdminURL(), n)
		return !slices.ContainsFunc(b.Recipients, func(r admin.Recipient) bool { return r.State != "delivered" })
	})
	return b
}

func stats(t *testing.T, e *testenv.Test) admin.Stats {
	t.Helper()
	var st admin.Stats
	cliJSON(t, &st, "stats", "-json", "-admin", e.AdminURL())
	return st
}

// TestLookupAnySpelling: lookup in another spelling of the address (case,
// a +tag, Gmail's dots and googlemail.com) finds a pending letter, with
// SPEC 13's JSON.
func TestLookupAnySpelling(t *testing.T) {
	e := startAdm(t, func(c *config.Config) { c.Batch.MaxWait = config.Duration{Duration: time.Hour} })
	id := e.Queued(e.Signed("gmail.com", "Rosa.Quintanilla+libertad@gmail.com"))
	e.Queued(e.Signed("gmail.com", "otra.persona@gmail.com"))

	var raw map[string]any
	cliJSON(t, &raw, "lookup", "-json", "-admin", e.AdminURL(), "ROSAQUINTANILLA@googlemail.com")
	if raw["address"] != "rosaquintanilla@gmail.com" {
		t.Errorf("lookup address = %v, want the normalised address", raw["address"])
	}
	letters, _ := raw["letters"].([]any)
	if len(letters) != 1 {
		t.Fatalf("lookup found %d letters, want 1: %v", len(letters), raw)
	}
	l := letters[0].(map[string]any)
	if l["id"] != id || l["state"] != "pending" || l["verdict"] != "dkim" || l["from"] != "Rosa.Quintanilla+libertad@gmail.com" {
		t.Errorf("lookup letter = %v", l)
	}
	if _, err := time.Parse(time.RFC3339, fmt.Sprint(l["received"])); err != nil {
		t.Errorf("received is not RFC 3339: %v", err)
	}
	if _, ok := l["batch"]; ok {
		t.Errorf("a pending letter has a batch: %v", l)
	}
	out := cliOK(t, "lookup", "-admin", e.AdminURL(), "rosa.quintanilla@gmail.com")
	if !strings.Contains(out, id) || !strings.Contains(out, "pending") {
		t.Errorf("lookup:\n%s", out)
	}
	if out := cliOK(t, "lookup", "-admin", e.AdminURL(), "nadie@ed.test"); !strings.Contains(out, "none stored") {
		t.Errorf("lookup of an unknown address:\n%s", out)
	}
	if code, _, errs := cli(context.Background(), "lookup", "-admin", e.AdminURL(), "no-at-sign"); code != 1 || !strings.Contains(errs, "no @") {
		t.Errorf("lookup of a non-address: exit %d, %q", code, errs)
	}
	if code, _, errs := cli(context.Background(), "erase", "-admin", e.AdminURL()); code != 2 || !strings.Contains(errs, "one supporter's address") {
		t.Errorf("erase without an address: exit %d, %q", code, errs)
	}
}

// TestEraseDeliveredSupporter: erasing a supporter whose letter was
// delivered keeps the tally, and removes her name and address from tail
// -json, lookup, held and batches export, and every file under store.dir.
func TestEraseDeliveredSupporter(t *testing.T) {
	e := testenv.Prepare(t, admConfig(nil))
	e.Smarthost() // SMTP delivery: nothing but the store under store.dir
	e.Start()
	t.Setenv(adminTokenEnv, e.AdminToken())
	id := e.Queued(supporterLetter(e, supporterAddr))
	e.Queued(e.Signed("ed.test", "bo@ed.test"))
	b := delivered(t, e, "1")
	if !slices.Contains(b.LetterIDs, id) {
		t.Fatalf("batch 1 = %v, lacks %s", b.LetterIDs, id)
	}
	// Later, an unsigned letter of hers waits in the held list.
	unsignedMsg := testenv.Letter(supporterName+" <rosalba.quintanilla@ed.test>", e.CampaignAddr(), "otra", supporterText)
	heldID := e.Queued(unsignedMsg)
	before := stats(t, e)
	if found := supporterTraces(t, e.Config.Store.Dir, supporterAddr, supporterName, supporterText); len(found) == 0 {
		t.Fatal("before the erasure no file holds the supporter: the test would prove nothing")
	}

	// The organisers' pages show her before: search, the batch, the list.
	pages := []string{"/search?q=rosalba", "/batches/1", "/signers.csv"}
	for _, path := range pages {
		if page := organisersPage(t, e, path); !showsSupporter(page) {
			t.Fatalf("before the erasure %s does not show her: the test would prove nothing", path)
		}
	}

	out := cliOK(t, "erase", "-admin", e.AdminURL(), "ROSALBA.quintanilla+x@ed.test")
	if !strings.Contains(out, id) || !strings.Contains(out, heldID) || strings.Contains(strings.ToLower(out), "rosalba") {
		t.Errorf("erase output names the wrong things:\n%s", out)
	}

	after := stats(t, e)
	if after.Counted != before.Counted || after.Counted != 2 || after.Held != before.Held-1 {
		t.Errorf("stats after the erasure %+v, before %+v: want counted kept, held one less", after, before)
	}
	tail := cliOK(t, "tail", "-json", "-n", "1000", "-admin", e.AdminURL())
	if strings.Contains(strings.ToLower(tail), "rosalba") {
		t.Errorf("tail -json still names the supporter:\n%s", tail)
	}
	var erased []admin.Event
	for line := range strings.SplitSeq(strings.TrimSpace(tail), "\n") {
		var ev admin.Event
		if err := json.Unmarshal([]byte(line), &ev); err != nil {
			t.Fatalf("tail -json line %q: %v", line, err)
		}
		if ev.Event == "erased" {
			erased = append(erased, ev)
		}
	}
	if len(erased) != 1 || !strings.Contains(erased[0].Reason, id) || !strings.Contains(erased[0].Reason, heldID) {
		t.Errorf("erased events %+v, want one naming %s and %s", erased, id, heldID)
	}
	var look admin.Lookup
	cliJSON(t, &look, "lookup", "-json", "-admin", e.AdminURL(), supporterAddr)
	if len(look.Letters) != 1 || look.Letters[0].ID != id || look.Letters[0].State != "erased" || look.Letters[0].Batch != 1 ||
		look.Letters[0].From != "" || look.Letters[0].Name != "" || look.Letters[0].Body || look.Events != 0 {
		t.Errorf("lookup after the erasure: %+v", look)
	}
	if held := cliOK(t, "held", "-json", "-admin", e.AdminURL()); strings.Contains(held, heldID) || strings.Contains(strings.ToLower(held), "rosalba") {
		t.Errorf("held after the erasure: %s", held)
	}
	code, exported, errs := cli(context.Background(), "batches", "export", "-admin", e.AdminURL(), "1")
	if code != 1 || !strings.Contains(errs, "erased") || exported != "" {
		t.Errorf("batches export of the erased batch: exit %d, %q, %d bytes", code, errs, len(exported))
	}
	if found := supporterTraces(t, e.Config.Store.Dir, supporterAddr, supporterName, supporterText); len(found) > 0 {
		t.Errorf("after the erasure, files under store.dir still hold: %v", found)
	}
	for _, path := range pages {
		if page := organisersPage(t, e, path); showsSupporter(page) {
			t.Errorf("after the erasure %s still shows her:\n%s", path, page)
		}
	}
	// A new letter from her is a duplicate: the batched one stays counted.
	if r := e.Send(supporterLetter(e, supporterAddr)); !strings.Contains(r.Text, "already counted") {
		t.Errorf("a new letter after the erasure: %s, want already counted", r.String())
	}
}

// TestErasePendingSupporter: a supporter erased before her letter was
// batched is withdrawn: counted drops by one, the next batch does not carry
// her, and a new letter from her counts again.
func TestErasePendingSupporter(t *testing.T) {
	e := testenv.Prepare(t, admConfig(func(c *config.Config) {
		c.Batch.MaxLetters = 3
		c.Batch.MaxWait = config.Duration{Duration: time.Hour}
	}))
	sink := e.Smarthost()
	e.Start()
	t.Setenv(adminTokenEnv, e.AdminToken())
	id := e.Queued(supporterLetter(e, supporterAddr))
	bo := e.Queued(e.Signed("ed.test", "bo@ed.test"))
	if st := stats(t, e); st.Counted != 2 || st.Pending != 2 {
		t.Fatalf("stats before: %+v", st)
	}

	var er admin.Erasure
	cliJSON(t, &er, "erase", "-json", "-admin", e.AdminURL(), supporterAddr)
	if !slices.Equal(er.Letters, []string{id}) || !slices.Equal(er.Withdrawn, []string{id}) || len(er.Batches) != 0 {
		t.Errorf("erase -json = %+v", er)
	}
	if st := stats(t, e); st.Counted != 1 || st.Pending != 1 {
		t.Errorf("stats after withdrawing her letter: %+v, want counted 1", st)
	}
	carla := e.Queued(e.Signed("ed.test", "carla@ed.test"))
	again := e.Queued(supporterLetter(e, strings.ToLower(supporterAddr)))
	if st := stats(t, e); st.Counted != 3 {
		t.Errorf("stats after her new letter: %+v, want it counted (3)", st)
	}
	b := delivered(t, e, "1")
	if !slices.Equal(b.LetterIDs, []string{bo, carla, again}) {
		t.Errorf("batch 1 carries %v, want %v (not the withdrawn %s)", b.LetterIDs, []string{bo, carla, again}, id)
	}
	for _, m := range sink.Messages() {
		if n := bytes.Count(m.Data, []byte(supporterText)); n == 0 || bytes.Contains(m.Data, []byte(id)) {
			t.Errorf("the batch delivered to %v carries the withdrawn letter %s, or not the new one", m.To, id)
		}
	}
}

// TestRetentionLeavesNoBodyInStoreFiles: once a batch's retention time
// passed, its letters' text is in no file under store.dir (free pages of
// the bbolt file included), and journal events lose sender and IP.
func TestRetentionLeavesNoBodyInStoreFiles(t *testing.T) {
	e := testenv.Prepare(t, admConfig(func(c *config.Config) {
		c.Store.Retention = config.Duration{Duration: time.Second}
	}))
	e.Smarthost()
	e.Start()
	t.Setenv(adminTokenEnv, e.AdminToken())
	id := e.Queued(supporterLetter(e, supporterAddr))
	delivered(t, e, "1")
	testenv.WaitFor(t, "the letter's text gone from every file under store.dir", 15*time.Second, func() bool {
		return len(supporterTraces(t, e.Config.Store.Dir, supporterText)) == 0
	})
	testenv.WaitFor(t, "the journal's events to lose the sender", 15*time.Second, func() bool {
		tail := cliOK(t, "tail", "-json", "-n", "1000", "-admin", e.AdminURL())
		return !strings.Contains(strings.ToLower(tail), "rosalba") && !strings.Contains(tail, `"ip"`)
	})
	// The letter record keeps who signed (SPEC 13 ages only the journal).
	var look admin.Lookup
	cliJSON(t, &look, "lookup", "-json", "-admin", e.AdminURL(), supporterAddr)
	if len(look.Letters) != 1 || look.Letters[0].ID != id || look.Letters[0].Body || look.Letters[0].From != supporterAddr {
		t.Errorf("lookup after retention: %+v", look)
	}
	if look.Batches[0].Message != "purged" {
		t.Errorf("batch after retention: %+v", look.Batches)
	}
}

// TestHeldLettersLeaveNoTraceInStoreFiles: an unsigned letter an admin
// dropped, and one nobody decided on that expired after
// store.held_retention, leave their name and text in no file under
// store.dir (free pages of the bbolt file included).
func TestHeldLettersLeaveNoTraceInStoreFiles(t *testing.T) {
	e := testenv.Prepare(t, admConfig(func(c *config.Config) {
		// Long enough for the drop to come first under load.
		c.Store.HeldRetention = config.Duration{Duration: 4 * time.Second}
	}))
	e.Start()
	t.Setenv(adminTokenEnv, e.AdminToken())
	const (
		droppedName, droppedText = "Remedios Calfucura Dropped", "carta-descartada-que-nadie-mas-escribe"
		expiredName, expiredText = "Eliana Huenchumil Expired", "carta-olvidada-que-nadie-mas-escribe"
	)
	// Long letters fill runs of pages: later writes that reuse a page or
	// two of a freed run cannot hide a missing wipe.
	long := func(text string) string { return strings.Repeat(text+"\r\n", 1500) }
	dropped := e.Queued(testenv.Letter(droppedName+" <remedios@ed.test>", e.CampaignAddr(), "carta", long(droppedText)))
	if found := supporterTraces(t, e.Config.Store.Dir, droppedName, droppedText); len(found) == 0 {
		t.Fatal("before the drop no file holds the letter: the test would prove nothing")
	}
	cliOK(t, "held", "drop", "-admin", e.AdminURL(), dropped)
	if found := supporterTraces(t, e.Config.Store.Dir, droppedName, droppedText); len(found) > 0 {
		t.Errorf("after held drop, files under store.dir still hold: %v", found)
	}

	expired := e.Queued(testenv.Letter(expiredName+" <eliana@ed.test>", e.CampaignAddr(), "carta", long(expiredText)))
	testenv.WaitFor(t, "the held letter to expire", 20*time.Second, func() bool {
		return !strings.Contains(cliOK(t, "held", "-json", "-admin", e.AdminURL()), expired)
	})
	testenv.WaitFor(t, "the expired letter gone from every file under store.dir", 15*time.Second, func() bool {
		return len(supporterTraces(t, e.Config.Store.Dir, expiredName, expiredText)) == 0
	})
}

// showsSupporter says whether a page shows the supporter's name, address
// or text (a search page repeats its query, so the query is not enough).
func showsSupporter(page string) bool {
	page = strings.ToLower(page)
	return strings.Contains(page, strings.ToLower(supporterName)) || strings.Contains(page, strings.ToLower(supporterAddr)) ||
		strings.Contains(page, supporterText)
}

// organisersPage reads one of the organisers' pages with the admin token.
func organisersPage(t *testing.T, e *testenv.Test, path string) string {
	t.Helper()
	req, err := http.NewRequest("GET", e.AdminURL()+path, nil)
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Authorization", "Bearer "+e.AdminToken())
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil || resp.StatusCode != http.StatusOK {
		t.Fatalf("GET %s: %d %v", path, resp.StatusCode, err)
	}
	return string(body)
}
