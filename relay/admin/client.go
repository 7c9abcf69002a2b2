package admin

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/petitiond/petitiond/store"
)

// Client speaks to a running daemon's admin API; the admin commands are
// built on it.
type Client struct {
	base  string // "http://host:port", no trailing slash
	token string
	// calls bounds ordinary requests; streams uses no overall timeout, since
	// a follow stream lasts as long as the admin watches.
	calls, streams *http.Client
	// StreamIdle is how long a follow stream may stay silent (heartbeats
	// included) before it is taken for dead and reconnected; the server
	// sends a heartbeat every 15s by default.
	StreamIdle time.Duration
	// MaxBackoff caps the wait between reconnection attempts of Follow.
	MaxBackoff time.Duration
}

// NewClient makes a client for the admin API at baseURL ("http://host:port";
// a bare "host:port" means http). token is sent as a bearer token when set.
func NewClient(baseURL, token string) (*Client, error) {
	if !strings.Contains(baseURL, "://") {
		baseURL = "http://" + baseURL
	}
	u, err := url.Parse(baseURL)
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		return nil, fmt.Errorf("admin URL %q is not http://host:port", baseURL)
	}
	tr := &http.Transport{Proxy: nil, DialContext: (&net.Dialer{Timeout: 5 * time.Second}).DialContext,
		TLSHandshakeTimeout: 10 * time.Second}
	return &Client{
		base:       strings.TrimRight(u.String(), "/"),
		token:      token,
		calls:      &http.Client{Transport: tr, Timeout: time.Minute},
		streams:    &http.Client{Transport: tr},
		StreamIdle: time.Minute,
		MaxBackoff: 5 * time.Second,
	}, nil
}

// BaseURL turns an admin.listen address into the URL to reach it from this
// machine: a wildcard host ("", 0.0.0.0, ::) is reached on loopback.
func BaseURL(listen string) (string, error) {
	host, port, err := net.SplitHostPort(listen)
	if err != nil {
		return "", fmt.Errorf("admin.listen %q is not host:port: %w", listen, err)
	}
	switch host {
	case "", "0.0.0.0":
		host = "127.0.0.1"
	case "::":
		host = "::1"
	}
	return "http://" + net.JoinHostPort(host, port), nil
}

// URL is the API's base URL.
func (c *Client) URL() string { return c.base }

// ErrUnauthorized is a request the daemon refused for its token.
var ErrUnauthorized = errors.New("admin token rejected (401): set PETITIOND_ADMIN_TOKEN or admin.token")

// NotRunningError is a connection refused: nothing listens at the URL.
type NotRunningError struct{ URL string }

func (e *NotRunningError) Error() string {
	return fmt.Sprintf("petitiond is not running at %s (connection refused)", e.URL)
}

// APIError is any other answer that is not a success.
type APIError struct {
	Status int
	Msg    string
}

func (e *APIError) Error() string { return fmt.Sprintf("%s (%d)", e.Msg, e.Status) }

// connError explains a failed connection.
func (c *Client) connError(err error) error {
	if errors.Is(err, syscall.ECONNREFUSED) {
		return &NotRunningError{URL: c.base}
	}
	return fmt.Errorf("admin API at %s: %w", c.base, err)
}

// do makes a request, with body as JSON when it is not nil, and returns a
// successful answer; anything else is an error that says what went wrong.
func (c *Client) do(ctx context.Context, hc *http.Client, method, path string, body any) (*http.Response, error) {
	resp, err := c.send(ctx, hc, method, path, body)
	if err != nil {
		return nil, err
	}
	if resp.StatusCode/100 == 2 {
		return resp, nil
	}
	defer resp.Body.Close()
	return nil, answerError(resp)
}

// send makes a request and returns whatever the daemon answered.
func (c *Client) send(ctx context.Context, hc *http.Client, method, path string, body any) (*http.Response, error) {
	var rd io.Reader
	if body != nil {
		data, err := json.Marshal(body)
		if err != nil {
			return nil, fmt.Errorf("admin API request %s %s: %w", method, path, err)
		}
		rd = bytes.NewReader(data)
	}
	req, err := http.NewRequestWithContext(ctx, method, c.base+path, rd)
	if err != nil {
		return nil, fmt.Errorf("admin API request %s %s: %w", method, path, err)
	}
	if body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	if c.token != "" {
		req.Header.Set("Authorization", "Bearer "+c.token)
	}
	resp, err := hc.Do(req)
	if err != nil {
		return nil, c.connError(err)
	}
	return resp, nil
}

// answerError is the error an answer that is not a success stands for.
func answerError(resp *http.Response) error {
	if resp.StatusCode == http.StatusUnauthorized {
		return ErrUnauthorized
	}
	body, _ := io.ReadAll(io.LimitReader(resp.Body, 64<<10))
	var e Error
	if json.Unmarshal(body, &e) != nil || e.Error == "" {
		e.Error = strings.TrimSpace(string(body))
		if e.Error == "" {
			e.Error = http.StatusText(resp.StatusCode)
		}
	}
	return &APIError{Status: resp.StatusCode, Msg: e.Error}
}

// call makes a request (with body as JSON unless nil) and decodes its JSON
// answer into out.
func (c *Client) call(ctx context.Context, method, path string, body, out any) error {
	resp, err := c.do(ctx, c.calls, method, path, body)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	if err := json.NewDecoder(resp.Body).Decode(out); err != nil {
		return fmt.Errorf("admin API %s %s: decode answer: %w", method, path, err)
	}
	return nil
}

// Stats returns the tally.
func (c *Client) Stats(ctx context.Context) (Stats, error) {
	var s Stats
	return s, c.call(ctx, http.MethodGet, "/api/stats", nil, &s)
}

// Held lists the held letters, oldest first.
func (c *Client) Held(ctx context.Context) ([]HeldLetter, error) {
	out := []HeldLetter{}
	return out, c.call(ctx, http.MethodGet, "/api/held", nil, &out)
}

// Decide releases (action store.EventReleased) or drops (store.EventDropped)
// the held letters req names.
func (c *Client) Decide(ctx context.Context, action store.EventKind, req HeldRequest) (Decisions, error) {
	path := "/api/held/release"
	if action == store.EventDropped {
		path = "/api/held/drop"
	}
	var d Decisions
	return d, c.call(ctx, http.MethodPost, path, req, &d)
}

// HeldMessage copies a held letter's message, exactly as received, to w.
func (c *Client) HeldMessage(ctx context.Context, id string, w io.Writer) error {
	return c.download(ctx, "/api/held/"+url.PathEscape(id)+"/message", "letter "+id+"'s message", w)
}

// Flush makes every deferred copy due now.
func (c *Client) Flush(ctx context.Context) (FlushResult, error) {
	var r FlushResult
	return r, c.call(ctx, http.MethodPost, "/api/batches/flush", struct{}{}, &r)
}

// Pause pauses the daemon (paused true, with a reason that may be empty)
// or resumes it.
func (c *Client) Pause(ctx context.Context, paused bool, reason string) (PauseState, error) {
	path := "/api/resume"
	if paused {
		path = "/api/pause"
	}
	var p PauseState
	return p, c.call(ctx, http.MethodPost, path, PauseRequest{Reason: reason}, &p)
}

// Health asks /healthz; a daemon that answers 503 is not an error here:
// Health.Status says "failing" and the other fields why.
func (c *Client) Health(ctx context.Context) (Health, error) {
	resp, err := c.send(ctx, c.calls, http.MethodGet, "/healthz", nil)
	if err != nil {
		return Health{}, err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK && resp.StatusCode != http.StatusServiceUnavailable {
		return Health{}, answerError(resp)
	}
	var h Health
	if err := json.NewDecoder(io.LimitReader(resp.Body, 64<<10)).Decode(&h); err != nil || h.Status == "" {
		return Health{}, fmt.Errorf("admin API at %s: /healthz answered %d without its JSON (%v)", c.base, resp.StatusCode, err)
	}
	return h, nil
}

// Batches lists the batches, oldest first.
func (c *Client) Batches(ctx context.Context) ([]Batch, error) {
	out := []Batch{}
	return out, c.call(ctx, http.MethodGet, "/api/batches", nil, &out)
}

// Batch returns one batch with its letter IDs.
func (c *Client) Batch(ctx context.Context, id string) (Batch, error) {
	var b Batch
	return b, c.call(ctx, http.MethodGet, "/api/batches/"+url.PathEscape(id), nil, &b)
}

// BatchMessage copies a batch's message, exactly as delivered, to w.
func (c *Client) BatchMessage(ctx context.Context, id string, w io.Writer) error {
	return c.download(ctx, "/api/batches/"+url.PathEscape(id)+"/message", "batch "+id+"'s message", w)
}

// download copies the answer to a GET of path to w, only once it arrived
// whole: a message cut short by a broken connection must not look like a
// complete .eml. what names it in errors.
func (c *Client) download(ctx context.Context, path, what string, w io.Writer) error {
	resp, err := c.do(ctx, c.calls, http.MethodGet, path, nil)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	var buf bytes.Buffer
	if _, err := io.Copy(&buf, resp.Body); err != nil {
		return fmt.Errorf("reading %s: %w", what, err)
	}
	if resp.ContentLength >= 0 && int64(buf.Len()) != resp.ContentLength {
		return fmt.Errorf("%s: got %d of %d bytes", what, buf.Len(), resp.ContentLength)
	}
	_, err = w.Write(buf.Bytes())
	return err
}

// Retry requeues a batch's failed copies.
func (c *Client) Retry(ctx context.Context, id string) (RetryResult, error) {
	var r RetryResult
	return r, c.call(ctx, http.MethodPost, "/api/batches/"+url.PathEscape(id)+"/retry", nil, &r)
}

// Events returns the last n events, oldest first.
func (c *Client) Events(ctx context.Context, n int) ([]Event, error) {
	out := []Event{}
	return out, c.call(ctx, http.MethodGet, "/api/events?n="+strconv.Itoa(n), nil, &out)
}

// FollowNotify hears how a Follow's connection fares; either may be nil.
type FollowNotify struct {
	// Lost is called when the stream broke or a reconnection failed; Follow
	// tries again after a pause.
	Lost func(err error)
	// Back is called when a reconnection succeeded.
	Back func()
}

// Follow calls fn with the last n events and then with each new one until
// ctx ends (then it returns nil). When the stream breaks after it was
// established (the daemon restarted, the network dropped) it reconnects with
// a growing pause, resuming after the last event seen, so nothing is missed
// or repeated while the daemon's journal holds it. It returns an error if
// the first connection fails, if the token is refused, or if fn fails.
func (c *Client) Follow(ctx context.Context, n int, fn func(Event) error, notify FollowNotify) error {
	query := "?n=" + strconv.Itoa(n)
	var after uint64
	resume := false
	pause := 200 * time.Millisecond
	for {
		if resume {
			query = "?after=" + strconv.FormatUint(after, 10)
		}
		onConnect := func() {}
		if resume && notify.Back != nil {
			onConnect = notify.Back
		}
		connected, err := c.followOnce(ctx, query, &after, fn, onConnect)
		if ctx.Err() != nil {
			return nil
		}
		var fnErr *followFnError
		switch {
		case errors.As(err, &fnErr):
			return fnErr.err
		case errors.Is(err, ErrUnauthorized):
			return err
		case !resume && !connected:
			return err
		}
		var apiErr *APIError
		if errors.As(err, &apiErr) && apiErr.Status/100 == 4 {
			return err
		}
		if connected {
			resume = true
			pause = 200 * time.Millisecond
		}
		if notify.Lost != nil {
			notify.Lost(err)
		}
		select {
		case <-ctx.Done():
			return nil
		case <-time.After(pause):
		}
		pause = min(2*pause, c.MaxBackoff)
	}
}

// followFnError carries fn's error out of followOnce, so Follow stops on it
// rather than reconnect.
type followFnError struct{ err error }

func (e *followFnError) Error() string { return e.err.Error() }

// followOnce reads one follow stream until it ends; after tracks the last
// event seen. connected reports whether the stream was established.
func (c *Client) followOnce(ctx context.Context, query string, after *uint64, fn func(Event) error, onConnect func()) (connected bool, err error) {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	resp, err := c.do(ctx, c.streams, http.MethodGet, "/api/events/follow"+query, nil)
	if err != nil {
		return false, err
	}
	defer resp.Body.Close()
	onConnect()
	// The server says where the stream starts: after the backlog asked
	// for, or, when resuming, where we asked, unless its journal is now
	// shorter than that (a new store), in which case we follow its lead.
	if v, err := strconv.ParseUint(resp.Header.Get(FollowAfterHeader), 10, 64); err == nil {
		*after = v
	}
	// A stream that goes silent past StreamIdle is dead (a heartbeat would
	// have come): cancel it and reconnect.
	idle := time.AfterFunc(c.StreamIdle, cancel)
	defer idle.Stop()
	sc := bufio.NewScanner(resp.Body)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for sc.Scan() {
		idle.Reset(c.StreamIdle)
		line := bytes.TrimSpace(sc.Bytes())
		if len(line) == 0 {
			continue // heartbeat
		}
		var e Event
		if err := json.Unmarshal(line, &e); err != nil {
			return true, fmt.Errorf("event stream: bad line %q: %w", line, err)
		}
		if e.Seq <= *after {
			continue
		}
		*after = e.Seq
		if err := fn(e); err != nil {
			return true, &followFnError{err}
		}
	}
	if err := sc.Err(); err != nil {
		return true, fmt.Errorf("event stream from %s broke: %w", c.base, err)
	}
	return true, fmt.Errorf("event stream from %s ended", c.base)
}
