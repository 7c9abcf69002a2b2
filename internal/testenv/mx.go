package testenv

import (
	"context"
	"log/slog"
	"net"
	"time"

	"github.com/petitiond/petitiond/config"
	"github.com/petitiond/petitiond/internal/smtpclient"
	"github.com/petitiond/petitiond/internal/wait"
	"github.com/petitiond/petitiond/store"
)

// SecondaryHostname is the secondary's smtp.hostname in an MX pair: the
// authserv-id of the Authentication-Results field it adds.
const SecondaryHostname = "mx2.campaign.test"

// MX is a primary and a secondary MX of the test campaign (SPEC 12): two
// daemons, each on a loopback address of its own and a store of its own,
// sharing one DNS server. The secondary forwards to the primary, which
// trusts the secondary's address and knows its name ([secondary] names).
type MX struct {
	Primary, Secondary *Test
}

// MXOptions say where the pair listens and how it is configured.
type MXOptions struct {
	// PrimaryIP and SecondaryIP are the daemons' loopback addresses.
	PrimaryIP, SecondaryIP string
	// Configure, if set, adjusts each config after the pair's own settings
	// (primary says which).
	Configure func(cfg *config.Config, primary bool)
	// Logger receives both daemons' logs; nil means the test's log.
	Logger *slog.Logger
}

// PrepareMX makes both daemons without starting them: the primary listens
// on PrimaryIP with a port fixed now, so that the secondary names it
// before either runs; the secondary listens on SecondaryIP and its
// connections to the primary leave from there, the address the primary
// trusts. Both take the test campaign.
func PrepareMX(t TB, opt MXOptions) *MX {
	t.Helper()
	primaryIP, secondaryIP, mutate := opt.PrimaryIP, opt.SecondaryIP, opt.Configure
	ln, err := net.Listen("tcp", net.JoinHostPort(primaryIP, "0"))
	if err != nil {
		t.Fatalf("testenv: a port on %s: %v", primaryIP, err)
	}
	primaryAddr := ln.Addr().String()
	ln.Close()
	p := PrepareWith(t, Options{Domains: SigningDomains(), Logger: opt.Logger, Configure: func(c *config.Config) {
		UseCampaign(c)
		c.SMTP.Listen = []string{primaryAddr}
		c.Secondary.Trusted = []string{secondaryIP}
		c.Secondary.Names = []string{SecondaryHostname}
		if mutate != nil {
			mutate(c, true)
		}
	}})
	s := PrepareWith(t, Options{DNS: p.DNS, Logger: opt.Logger, Configure: func(c *config.Config) {
		UseCampaign(c)
		c.SMTP.Listen = []string{net.JoinHostPort(secondaryIP, "0")}
		c.SMTP.Hostname = SecondaryHostname
		c.Secondary.Primary = primaryAddr
		if mutate != nil {
			mutate(c, false)
		}
	}})
	from := &net.TCPAddr{IP: net.ParseIP(secondaryIP)}
	s.Options.Dial = func(ctx context.Context, network, addr string) (net.Conn, error) {
		d := net.Dialer{LocalAddr: from}
		return d.DialContext(ctx, network, addr)
	}
	return &MX{Primary: p, Secondary: s}
}

// SendFrom delivers msg in a session of its own from a client at clientIP
// (a loopback address) that says EHLO helo and MAIL FROM:<mailFrom>, to the
// campaign address, and returns the reply to the letter.
func (e *Test) SendFrom(clientIP, helo, mailFrom string, msg []byte) smtpclient.Reply {
	e.t.Helper()
	c, err := smtpclient.DialFrom(clientIP, e.SMTPAddr(), ioTimeout)
	if err != nil {
		e.t.Fatalf("dial %s from %s: %v", e.SMTPAddr(), clientIP, err)
	}
	defer c.Quit()
	if r, err := c.Hello(helo); err != nil || r.Code != 250 {
		e.t.Fatalf("EHLO: %v %v", r, err)
	}
	r, err := c.Send(mailFrom, []string{e.CampaignAddr()}, msg)
	if err != nil {
		e.t.Fatalf("send a letter from %s: %v (reply %v)", clientIP, err, r)
	}
	return r
}

// WaitStats polls the daemon's store until cond holds for its tally.
func (e *Test) WaitStats(what string, cond func(st store.Stats) bool) {
	e.t.Helper()
	var last store.Stats
	err := wait.Until(context.Background(), 20*time.Second, func() (bool, error) {
		var err error
		last, err = e.Store().Stats()
		return err == nil && cond(last), err
	})
	if err != nil {
		e.t.Fatalf("waiting for %s: %v (last tally %+v)", what, err, last)
	}
}
