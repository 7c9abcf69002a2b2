package relay_test

import (
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/petitiond/petitiond/config"
	"github.com/petitiond/petitiond/internal/smtpclient"
	"github.com/petitiond/petitiond/internal/testenv"
	"github.com/petitiond/petitiond/relay"
	"github.com/petitiond/petitiond/relay/inbound"
)

// sendFrom sends msg from the local address ip (any of 127.0.0.0/8) and
// returns the reply to it.
func sendFrom(t *testing.T, e *testenv.Test, ip string, msg []byte) smtpclient.Reply {
	t.Helper()
	c, err := smtpclient.DialFrom(ip, e.SMTPAddr(), 10*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Quit()
	if r, err := c.Hello("client.test"); err != nil || r.Code != 250 {
		t.Fatalf("EHLO: %v %v", r, err)
	}
	r, err := c.Send("bounce@client.test", []string{campaignAddr}, msg)
	if err != nil {
		t.Fatalf("send: %v", err)
	}
	return r
}

// TestUnverifiedMailCapped: unverified letters stored per sender domain and
// per client network (/24) are capped per hour; past the cap they get 451
// 4.7.1 and are not stored, while verified letters still count (issue 9
// point 4).
func TestUnverifiedMailCapped(t *testing.T) {
	const limit = 8 << 10
	e := testenv.PrepareWith(t, testenv.Options{Domains: testenv.SigningDomains(),
		Daemon:    relay.Options{SMTPLimits: inbound.Limits{UnverifiedBytesPerHour: limit}},
		Configure: func(c *config.Config) { testenv.UseCampaign(c); c.SMTP.MaxPerIP = 50 }})
	e.Start()
	unsigned := func(from string) []byte {
		return e.Letter(from, "hi", strings.Repeat("an unsigned letter of about a kilobyte. ", 25))
	}

	// One network, one domain: stored until the cap, then refused.
	held := 0
	var r smtpclient.Reply
	for i := range 20 {
		r = sendFrom(t, e, "127.0.0.1", unsigned(fmt.Sprintf("s%d@flood.test", i)))
		if r.Code != 250 {
			break
		}
		held++
	}
	expectReply(t, "unverified letter past the cap", r, "451 4.7.1")
	refusalSession(t, r)
	if held == 0 || held >= 20 {
		t.Fatalf("%d letters stored before the cap of %d bytes", held, limit)
	}
	if st, _ := e.Store().Stats(); st.Held != uint64(held) {
		t.Errorf("%d letters held, want the %d answered 250", st.Held, held)
	}

	// A verified letter from the same network still counts.
	expectReply(t, "signed letter from the capped network", sendFrom(t, e, "127.0.0.1", e.Signed("ed.test", "bo@ed.test")), "250 2.0.0 queued as L")
	// The capped domain from another network: refused for its domain.
	expectReply(t, "capped domain from another network", sendFrom(t, e, "127.0.1.1", unsigned("x@flood.test")), "451 4.7.1")
	// Another domain from the capped network: refused for its network.
	expectReply(t, "another domain from the capped network", sendFrom(t, e, "127.0.0.9", unsigned("y@other.test")), "451 4.7.1")
	// Another domain from another network: stored.
	expectReply(t, "another domain from another network", sendFrom(t, e, "127.0.1.1", unsigned("z@other.test")), "250 2.0.0 queued as L")

	if st, _ := e.Store().Stats(); st.Held != uint64(held+1) || st.Counted != 1 {
		t.Errorf("held %d counted %d; want %d and 1", st.Held, st.Counted, held+1)
	}
}

// TestInFlightBudget: while letters in flight hold the whole memory budget,
// a new letter waits, then gets 451 4.3.1 and is not stored; once they are
// answered the budget is free again (issue 9 point 5).
func TestInFlightBudget(t *testing.T) {
	const max = 64 << 10
	e := testenv.PrepareWith(t, testenv.Options{Domains: testenv.SigningDomains(),
		// The smallest budget: one letter of the largest size.
		Daemon: relay.Options{SMTPLimits: inbound.Limits{InFlightBytes: 1, InFlightWait: 200 * time.Millisecond}},
		Configure: func(c *config.Config) {
			testenv.UseCampaign(c)
			c.SMTP.MaxMessageBytes = max
		}})
	e.Start()

	// A client that declares the largest size takes the whole budget at
	// DATA and sends half its letter.
	big := e.Signed("ed.test", "bo@ed.test")
	holder := e.Dial()
	defer holder.Close()
	for _, cmd := range []string{"EHLO holder.test", fmt.Sprintf("MAIL FROM:<bo@ed.test> SIZE=%d", max), "RCPT TO:<" + campaignAddr + ">", "DATA"} {
		if r, err := holder.Cmd("%s", cmd); err != nil || r.Code >= 400 {
			t.Fatalf("%s: %v %v", cmd, r, err)
		}
	}
	data := smtpclient.DotStuff(big)
	if err := holder.Raw(data[:len(data)/2]); err != nil {
		t.Fatal(err)
	}

	// Meanwhile another letter finds no room. The holder has surely
	// reached DATA's read by the time this one is answered: retry until
	// the refusal shows, bounded.
	var r smtpclient.Reply
	tries := 0
	testenv.WaitFor(t, "a letter refused for the budget", 10*time.Second, func() bool {
		tries++
		r = e.Send(e.Signed("rsa.test", fmt.Sprintf("ana%d@rsa.test", tries)))
		return r.Code == 451
	})
	expectReply(t, "letter while the budget is used up", r, "451 4.3.1")
	refusalSession(t, r)

	// The holder finishes: stored, and the budget is free again.
	if err := holder.Raw(data[len(data)/2:]); err != nil {
		t.Fatal(err)
	}
	hr, err := holder.ReadReply()
	if err != nil {
		t.Fatal(err)
	}
	expectReply(t, "the letter that held the budget", hr, "250 2.0.0 queued as L")
	expectReply(t, "a letter after the budget came back", e.Send(e.Signed("rsa.test", "eva@rsa.test")), "250 2.0.0 queued as L")
	// The refused letter was not stored (tries-1 went in before the
	// holder took the budget, if any).
	if st, _ := e.Store().Stats(); st.Counted != uint64(2+tries-1) {
		t.Errorf("counted %d, want %d", st.Counted, 2+tries-1)
	}
}
