package testenv

import (
	"context"
	"errors"
	"fmt"
	"net"
	"strings"
	"time"

	"github.com/petitiond/petitiond/internal/keyserver"
	"github.com/petitiond/petitiond/internal/sinkserver"
	"github.com/petitiond/petitiond/internal/wait"
)

// MailHosts are receiving SMTP servers standing in for each recipient
// domain's mail host, found through MX records on the environment's DNS
// server. They share one port on different loopback addresses (127.0.0.2,
// 127.0.0.3, ...), since MX delivery uses one port for every host.
type MailHosts struct {
	Port string
	// Sinks are the servers by recipient address; Restart replaces one.
	Sinks map[string]*sinkserver.Server
	addrs map[string]string
}

// portTries bounds the search for a port free on every host's address.
const portTries = 20

// StartMailHosts starts one sink per recipient and publishes an MX and an A
// record for each recipient's domain on dns.
func StartMailHosts(dns *keyserver.Server, rcpts []string) (*MailHosts, error) {
	var mh *MailHosts
	var err error
	for try := 0; try < portTries && mh == nil; try++ {
		mh, err = listenMailHosts(rcpts)
	}
	if mh == nil {
		return nil, fmt.Errorf("testenv: mail hosts on one shared port: %w", err)
	}
	for i, rcpt := range rcpts {
		d := domainOf(rcpt)
		for _, rr := range []string{
			fmt.Sprintf("%s. MX 10 mx.%s.", d, d),
			fmt.Sprintf("mx.%s. A %s", d, hostIP(i)),
		} {
			if err := dns.AddRecord(rr); err != nil {
				mh.Close()
				return nil, fmt.Errorf("testenv: mail host record: %w", err)
			}
		}
	}
	return mh, nil
}

// hostIP is the loopback address of the i-th recipient's mail host; the
// daemon and its clients stay on 127.0.0.1.
func hostIP(i int) string { return fmt.Sprintf("127.0.0.%d", i+2) }

// listenMailHosts takes the first host's free port for the others; another
// process may hold it on their addresses, and then the caller tries again.
func listenMailHosts(rcpts []string) (*MailHosts, error) {
	mh := &MailHosts{Sinks: map[string]*sinkserver.Server{}, addrs: map[string]string{}}
	for i, rcpt := range rcpts {
		addr := hostIP(i) + ":0"
		if mh.Port != "" {
			addr = net.JoinHostPort(hostIP(i), mh.Port)
		}
		s, err := sinkserver.Start(sinkserver.Options{Addr: addr, Hostname: "mx." + domainOf(rcpt)})
		if err != nil {
			mh.Close()
			return nil, err
		}
		_, mh.Port, _ = net.SplitHostPort(s.Addr)
		mh.Sinks[rcpt], mh.addrs[rcpt] = s, s.Addr
	}
	return mh, nil
}

func domainOf(addr string) string { return addr[strings.LastIndexByte(addr, '@')+1:] }

// Restart brings rcpt's stopped mail host back on the same address, as a
// new, empty server.
func (mh *MailHosts) Restart(rcpt string) error {
	var s *sinkserver.Server
	// The address may stay busy for a moment after Close.
	err := wait.Until(context.Background(), 5*time.Second, func() (bool, error) {
		var err error
		s, err = sinkserver.Start(sinkserver.Options{Addr: mh.addrs[rcpt], Hostname: "mx." + domainOf(rcpt)})
		return err == nil, nil
	})
	if err != nil {
		return fmt.Errorf("testenv: restart the mail host of %s: %w", rcpt, err)
	}
	mh.Sinks[rcpt] = s
	return nil
}

// Close stops every mail host.
func (mh *MailHosts) Close() error {
	var errs []error
	for _, s := range mh.Sinks {
		errs = append(errs, s.Close())
	}
	return errors.Join(errs...)
}
