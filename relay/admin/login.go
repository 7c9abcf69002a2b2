package admin

// The login form: the reader or the admin token, typed once, becomes a
// session cookie (HttpOnly, SameSite=Strict, Secure over TLS) that opens
// the organisers' pages, and only them: the API takes the admin token as
// a Bearer header alone.

import (
	"net/http"
	"net/url"
	"strings"
)

// maxLoginForm bounds the login form's body.
const maxLoginForm = 4 << 10

// loginData is the login page's data.
type loginData struct {
	pageHead
	Next  string
	Wrong bool
}

func (s *Server) loginForm(w http.ResponseWriter, r *http.Request) {
	s.render(w, r, http.StatusOK, "login", loginData{pageHead: s.loginHead(), Next: safeNext(r.URL.Query().Get("next"))})
}

func (s *Server) loginHead() pageHead {
	h := s.head(0)
	h.Nav = false
	return h
}

func (s *Server) login(w http.ResponseWriter, r *http.Request) {
	r.Body = http.MaxBytesReader(w, r.Body, maxLoginForm)
	if err := r.ParseForm(); err != nil {
		writeError(w, http.StatusBadRequest, "the login form could not be read")
		return
	}
	next := safeNext(r.PostForm.Get("next"))
	who := s.tokens.roleOf(strings.TrimSpace(r.PostForm.Get("token")))
	if who == roleNone {
		s.denied(r, "wrong token in the login form")
		s.render(w, r, http.StatusUnauthorized, "login", loginData{pageHead: s.loginHead(), Next: next, Wrong: true})
		return
	}
	expires := s.now().Add(sessionLifetime)
	http.SetCookie(w, &http.Cookie{
		Name: sessionCookie, Value: s.tokens.session(who, expires), Path: "/",
		Expires: expires, MaxAge: int(sessionLifetime.Seconds()),
		HttpOnly: true, SameSite: http.SameSiteStrictMode, Secure: overTLS(r),
	})
	http.Redirect(w, r, next, http.StatusSeeOther)
}

func (s *Server) logout(w http.ResponseWriter, r *http.Request) {
	http.SetCookie(w, &http.Cookie{Name: sessionCookie, Value: "", Path: "/", MaxAge: -1,
		HttpOnly: true, SameSite: http.SameSiteStrictMode, Secure: overTLS(r)})
	http.Redirect(w, r, "/login", http.StatusSeeOther)
}

// safeNext is where to go after logging in: a path on this listener, never
// another site ("//evil.example", "https://…"), and "/" when unsure.
func safeNext(next string) string {
	u, err := url.Parse(next)
	if err != nil || next == "" || u.Scheme != "" || u.Host != "" || u.User != nil ||
		!strings.HasPrefix(next, "/") || strings.HasPrefix(next, "//") || strings.ContainsAny(next, "\\\r\n\t") ||
		u.Path == "/login" {
		return "/"
	}
	return u.EscapedPath() + func() string {
		if u.RawQuery == "" {
			return ""
		}
		return "?" + u.RawQuery
	}()
}

// overTLS says whether the browser reached the pages over HTTPS: directly,
// or through the TLS-terminating proxy the README describes, which says so
// in X-Forwarded-Proto. Believing a forged header costs nothing: it only
// keeps the cookie off plain HTTP.
func overTLS(r *http.Request) bool {
	return r.TLS != nil || strings.EqualFold(strings.TrimSpace(r.Header.Get("X-Forwarded-Proto")), "https")
}
