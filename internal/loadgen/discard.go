package loadgen

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"sync"
	"time"

	"github.com/emersion/go-smtp"
)

// Discard is an SMTP server that accepts every message and throws it away
// (reading it to the end): the baseline that shows what SMTP over loopback
// costs with the same client and the same SMTP library as petitiond, like
// Postfix's smtp-sink.
type Discard struct {
	srv  *smtp.Server
	ln   net.Listener
	done chan error

	closeOnce sync.Once
	closeErr  error
}

// StartDiscard listens on addr (say "127.0.0.1:0") and serves until Close.
func StartDiscard(addr string) (*Discard, error) {
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, fmt.Errorf("loadgen: discard server: %w", err)
	}
	srv := smtp.NewServer(smtp.BackendFunc(func(*smtp.Conn) (smtp.Session, error) { return discardSession{}, nil }))
	srv.Domain = "discard.load.test"
	srv.MaxMessageBytes = 1 << 20
	srv.ReadTimeout = time.Minute
	srv.WriteTimeout = time.Minute
	d := &Discard{srv: srv, ln: ln, done: make(chan error, 1)}
	go func() { d.done <- srv.Serve(ln) }()
	return d, nil
}

// Addr is where the server listens.
func (d *Discard) Addr() string { return d.ln.Addr().String() }

// Close stops the server, waiting a little for sessions to end; it may be
// called more than once.
func (d *Discard) Close() error {
	d.closeOnce.Do(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		if err := d.srv.Shutdown(ctx); err != nil {
			d.closeErr = d.srv.Close()
		}
		if err := <-d.done; err != nil && !errors.Is(err, smtp.ErrServerClosed) {
			d.closeErr = err
		}
	})
	return d.closeErr
}

type discardSession struct{}

func (discardSession) Reset()                               {}
func (discardSession) Logout() error                        { return nil }
func (discardSession) Mail(string, *smtp.MailOptions) error { return nil }
func (discardSession) Rcpt(string, *smtp.RcptOptions) error { return nil }

func (discardSession) Data(r io.Reader) error {
	_, err := io.Copy(io.Discard, r)
	return err
}
