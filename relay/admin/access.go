// Who may do what on the admin listener (SPEC 10):
//
//   - every request must name this listener in its Host header (the
//     listener's own address, localhost, any loopback IP, or a name from
//     Options.Hosts), so a web page whose name was rebound to 127.0.0.1 (DNS
//     rebinding) gets nothing;
//   - a browser's cross-origin request that could change something (any
//     method but GET, HEAD and OPTIONS) is refused on its Origin and
//     Sec-Fetch-Site headers;
//   - the API and pprof need the admin token as a Bearer header: a cookie
//     never opens them, so a page in an admin's browser cannot act (CSRF);
//   - the organisers' pages need the admin or the reader token, as a Bearer
//     header or as the session cookie the login form sets;
//   - /healthz and the login form need nothing; /metrics needs the admin
//     token only when one was configured (Options.OpenMetrics).

package admin

import (
	"crypto/hmac"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/base64"
	"encoding/binary"
	"fmt"
	"net"
	"net/http"
	"net/netip"
	"net/url"
	"strings"
	"time"
)

// access is what a route needs.
type access int

const (
	// public: no token (health, the login form).
	public access = iota
	// metricsAccess: none, or the admin token when one was configured.
	metricsAccess
	// pageAccess: the reader or the admin token, by header or cookie.
	pageAccess
	// adminAccess: the admin token as a Bearer header.
	adminAccess
)

// role is what a credential opens.
type role byte

const (
	roleNone   role = 0
	roleReader role = 'r'
	roleAdmin  role = 'a'
)

// sessionCookie is the login form's cookie.
const sessionCookie = "petitiond_session"

// sessionLifetime is how long a login lasts. The cookie is signed, not
// stored, so a week bounds how long a copied cookie works; changing the
// token ends every session it opened at once.
const sessionLifetime = 7 * 24 * time.Hour

// tokens holds the hashes of the tokens, so comparisons take the same time
// whatever a guess's length and content.
type tokens struct {
	admin, reader [sha256.Size]byte
	hasReader     bool
}

func newTokens(admin, reader string) tokens {
	t := tokens{admin: sha256.Sum256([]byte(admin))}
	if reader != "" {
		t.reader, t.hasReader = sha256.Sum256([]byte(reader)), true
	}
	return t
}

// roleOf is what token opens: admin, reader or nothing.
func (t *tokens) roleOf(token string) role {
	got := sha256.Sum256([]byte(token))
	isAdmin := subtle.ConstantTimeCompare(got[:], t.admin[:]) == 1
	isReader := t.hasReader && subtle.ConstantTimeCompare(got[:], t.reader[:]) == 1
	switch {
	case isAdmin:
		return roleAdmin
	case isReader:
		return roleReader
	}
	return roleNone
}

// key is the session-signing key of a role: derived from its token, so a
// new token ends the role's sessions.
func (t *tokens) key(r role) ([]byte, bool) {
	switch {
	case r == roleAdmin:
		return t.admin[:], true
	case r == roleReader && t.hasReader:
		return t.reader[:], true
	}
	return nil, false
}

// session is a signed cookie value: role and expiry, then an HMAC of both
// under the role's key.
func (t *tokens) session(r role, expires time.Time) string {
	key, ok := t.key(r)
	if !ok {
		return ""
	}
	var msg [9]byte
	msg[0] = byte(r)
	binary.BigEndian.PutUint64(msg[1:], uint64(expires.Unix()))
	return base64.RawURLEncoding.EncodeToString(msg[:]) + "." + base64.RawURLEncoding.EncodeToString(sessionMAC(key, msg[:]))
}

// sessionRole is the role a cookie value opens at now, roleNone when it is
// forged, expired or for a token that changed.
func (t *tokens) sessionRole(value string, now time.Time) role {
	m, sig, ok := strings.Cut(value, ".")
	if !ok {
		return roleNone
	}
	msg, err1 := base64.RawURLEncoding.DecodeString(m)
	mac, err2 := base64.RawURLEncoding.DecodeString(sig)
	if err1 != nil || err2 != nil || len(msg) != 9 {
		return roleNone
	}
	r := role(msg[0])
	key, ok := t.key(r)
	if !ok || !hmac.Equal(mac, sessionMAC(key, msg)) {
		return roleNone
	}
	if now.Unix() >= int64(binary.BigEndian.Uint64(msg[1:])) {
		return roleNone
	}
	return r
}

func sessionMAC(key, msg []byte) []byte {
	m := hmac.New(sha256.New, key)
	m.Write([]byte("petitiond session 1\x00"))
	m.Write(msg)
	return m.Sum(nil)
}

// bearer is the token of an Authorization: Bearer header; ok is false
// when the request has no such header.
func bearer(r *http.Request) (token string, ok bool) {
	h := r.Header.Get("Authorization")
	if h == "" {
		return "", false
	}
	scheme, tok, _ := strings.Cut(h, " ")
	if !strings.EqualFold(scheme, "Bearer") {
		return "", true // a credential, of a kind that opens nothing
	}
	return strings.TrimSpace(tok), true
}

// guard wraps a route's handler with the check its access level needs.
func (s *Server) guard(level access, h http.HandlerFunc) http.HandlerFunc {
	switch level {
	case public:
		return h
	case metricsAccess:
		if s.opt.OpenMetrics {
			return h
		}
		return s.requireAdmin(h)
	case adminAccess:
		return s.requireAdmin(h)
	case pageAccess:
		return s.requirePageRole(h)
	}
	panic(fmt.Sprintf("admin: unknown access level %d", level))
}

// requireAdmin lets through only a Bearer header with the admin token.
func (s *Server) requireAdmin(h http.HandlerFunc) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		tok, present := bearer(r)
		who := roleNone
		if present {
			who = s.tokens.roleOf(tok)
		}
		switch who {
		case roleAdmin:
			h(w, r)
			return
		case roleReader:
			s.denied(r, "reader token on an admin path")
			writeError(w, http.StatusForbidden, "the reader token opens the organisers' pages only")
			return
		}
		s.denied(r, "missing or wrong admin token")
		w.Header().Set("WWW-Authenticate", `Bearer realm="petitiond"`)
		writeError(w, http.StatusUnauthorized, "missing or wrong admin token")
	}
}

// requirePageRole lets through the reader or the admin token, by header or
// by cookie; a browser with neither is sent to the login form.
func (s *Server) requirePageRole(h http.HandlerFunc) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		if tok, present := bearer(r); present {
			if s.tokens.roleOf(tok) == roleNone {
				s.denied(r, "missing or wrong token")
				w.Header().Set("WWW-Authenticate", `Bearer realm="petitiond"`)
				writeError(w, http.StatusUnauthorized, "missing or wrong token")
				return
			}
			h(w, r)
			return
		}
		if c, err := r.Cookie(sessionCookie); err == nil && s.tokens.sessionRole(c.Value, s.now()) != roleNone {
			h(w, r)
			return
		}
		http.Redirect(w, r, "/login?next="+url.QueryEscape(r.URL.RequestURI()), http.StatusSeeOther)
	}
}

// denied logs a refused credential, never the credential itself, a few
// lines a minute at most (ratelog.go).
func (s *Server) denied(r *http.Request, why string) { s.logRefused(r, why) }

// hostAllowed reports whether a request's Host header names this listener:
// localhost, a loopback IP, the IP it is bound to (any IP when it is bound
// to every interface: an IP literal cannot be rebound), or one of the
// configured names. A port is ignored: the rebinding attack is in the name.
func (s *Server) hostAllowed(hostport string) bool {
	host := hostport
	if h, _, err := net.SplitHostPort(hostport); err == nil {
		host = h
	}
	host = strings.TrimSuffix(strings.ToLower(strings.Trim(host, "[]")), ".")
	if host == "" {
		return false
	}
	if host == "localhost" {
		return true
	}
	if ip, err := netip.ParseAddr(host); err == nil {
		ip = ip.Unmap()
		return ip.IsLoopback() || ip == s.listenIP || s.listenIP.IsUnspecified()
	}
	for _, n := range s.hosts {
		if host == n {
			return true
		}
	}
	return false
}

// checkHost refuses requests for another name (DNS rebinding), and sets the
// headers every answer carries.
func (s *Server) checkHost(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		h := w.Header()
		h.Set("X-Content-Type-Options", "nosniff")
		h.Set("Referrer-Policy", "no-referrer")
		if !s.hostAllowed(r.Host) {
			s.log.Warn("admin request refused: Host is not this listener's (DNS rebinding?)",
				"remote", r.RemoteAddr, "host", r.Host, "path", r.URL.Path)
			writeError(w, http.StatusForbidden, "this listener does not answer for that Host; "+
				"use its address, localhost, or a name petitiond is configured with (smtp.hostname)")
			return
		}
		next.ServeHTTP(w, r)
	})
}

// crossOrigin refuses a browser's cross-origin request that could change
// something: its Sec-Fetch-Site or Origin shows another site. Requests
// from tools (no such headers) pass; they still need the token.
func (s *Server) crossOrigin(next http.Handler) http.Handler {
	cop := http.NewCrossOriginProtection()
	cop.SetDenyHandler(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		s.log.Warn("admin request refused: cross-origin", "remote", r.RemoteAddr, "path", r.URL.Path,
			"origin", r.Header.Get("Origin"))
		writeError(w, http.StatusForbidden, "cross-origin request refused")
	}))
	return cop.Handler(next)
}
