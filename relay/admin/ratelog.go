package admin

import (
	"log/slog"
	"net/http"
	"sync"
	"time"
)

// Lines about refused credentials are limited to wrongTokenBurst per wrongTokenWindow:
// someone guessing tokens must not be able to fill the disk with the log,
// or bury what else it says.
const (
	wrongTokenBurst  = 5
	wrongTokenWindow = time.Minute
)

// logLimit lets through at most burst lines per window and counts the rest;
// the zero value is ready to use.
type logLimit struct {
	mu         sync.Mutex
	start      time.Time // of the current window
	n          int       // lines let through in it
	suppressed int       // lines held back since the last one let through
}

// allow reports whether a line may be written at now and, when it may, how
// many were held back before it.
func (l *logLimit) allow(now time.Time, burst int, window time.Duration) (ok bool, suppressed int) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.start.IsZero() || now.Sub(l.start) >= window || now.Before(l.start) {
		l.start, l.n = now, 0
	}
	if l.n >= burst {
		l.suppressed++
		return false, 0
	}
	l.n++
	suppressed, l.suppressed = l.suppressed, 0
	return true, suppressed
}

// logRefused logs a request refused for its credential (why says how),
// within the limit; the next line let through says how many were not.
func (s *Server) logRefused(r *http.Request, why string) {
	ok, suppressed := s.wrongTokens.allow(s.now(), wrongTokenBurst, wrongTokenWindow)
	if !ok {
		return
	}
	attrs := []any{"remote", r.RemoteAddr, "path", r.URL.Path}
	if suppressed > 0 {
		attrs = append(attrs, "suppressed", suppressed)
	}
	s.log.Log(r.Context(), slog.LevelWarn, "admin request refused: "+why, attrs...)
}
