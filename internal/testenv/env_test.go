package testenv

import (
	"net"
	"strings"
	"testing"
	"time"

	"github.com/petitiond/petitiond/config"
	"github.com/petitiond/petitiond/internal/keyserver"
	"github.com/petitiond/petitiond/store"
)

// TestRestart: a restarted daemon is back on the same addresses with the
// same store.
func TestRestart(t *testing.T) {
	e := Start(t, func(c *config.Config) { c.Admin.Listen = "127.0.0.1:0" })
	smtpAddr, adminURL := e.SMTPAddr(), e.AdminURL()
	if strings.HasSuffix(smtpAddr, ":0") || strings.HasSuffix(adminURL, ":0") {
		t.Fatalf("ports not kept: %s %s", smtpAddr, adminURL)
	}
	id := e.Queued(e.Signed("ed.test", "bo@ed.test"))
	e.Restart()
	if e.SMTPAddr() != smtpAddr || e.AdminURL() != adminURL {
		t.Errorf("after restart on %s %s, want %s %s", e.SMTPAddr(), e.AdminURL(), smtpAddr, adminURL)
	}
	if l, err := e.Store().Letter(id); err != nil || l.From != "bo@ed.test" {
		t.Errorf("letter %s after restart: %+v %v", id, l, err)
	}
	if r := e.Send(e.Signed("ed.test", "Bo <bo@ed.test>")); !strings.Contains(r.Text, "already counted") {
		t.Errorf("the sender counted before the restart: %s", r)
	}
}

// TestNewRefusesBadConfig: a config that does not validate is an error
// naming the key.
func TestNewRefusesBadConfig(t *testing.T) {
	_, err := New(Options{Dir: t.TempDir(), Configure: func(c *config.Config) { c.Campaign.Addresses = nil }})
	if err == nil || !strings.Contains(err.Error(), "campaign.addresses") {
		t.Fatalf("bad config: %v", err)
	}
}

// TestSigningDomains: a key is made once per signing domain, and only for
// those.
func TestSigningDomains(t *testing.T) {
	dns, err := StartDNS("sel", Domain{Name: "ed.test", Algo: "ed25519"})
	if err != nil {
		t.Fatal(err)
	}
	defer dns.Close()
	if _, err := dns.Sign("other.test", []byte("From: a@other.test\r\n\r\nx\r\n"), keyserver.SignOptions{}); err == nil {
		t.Errorf("signed for a domain the server does not publish")
	}
	k1, err := dns.Key("ed.test")
	if err != nil {
		t.Fatal(err)
	}
	if k2, _ := dns.Key("ed.test"); k2 != k1 {
		t.Errorf("a second key made for ed.test")
	}
}

// TestStartFailure: a daemon that cannot listen is an error, and what it
// opened is closed: its store opens again at once.
func TestStartFailure(t *testing.T) {
	busy, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer busy.Close()
	e := Prepare(t, func(c *config.Config) { c.SMTP.Listen = []string{busy.Addr().String()} })
	if err := e.Env.Start(); err == nil {
		t.Fatalf("started on a port in use")
	}
	if e.Daemon() != nil {
		t.Errorf("a daemon is left running")
	}
	st, err := store.Open(e.Config.Store.Dir, store.Options{LockTimeout: time.Second})
	if err != nil {
		t.Fatalf("store after the failed start: %v", err)
	}
	st.Close()
}
