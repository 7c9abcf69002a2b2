package admin

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"mime"
	"net/http"
	"strconv"
	"strings"
	"time"

	"github.com/petitiond/petitiond/store"
)

// maxEvents caps one answer of /api/events, and the backlog a follower asks
// for with n.
const maxEvents = 10000

// writeDeadline bounds each write to a follower, so one that stopped reading
// does not hold its stream open forever.
const writeDeadline = 30 * time.Second

func writeJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	enc := json.NewEncoder(w)
	enc.SetEscapeHTML(false) // Message-IDs keep their <> for curl readers
	_ = enc.Encode(v)
}

// writeJSON answers v as JSON with its times read in campaign.timezone.
func (s *Server) writeJSON(w http.ResponseWriter, status int, v any) {
	writeJSON(w, status, inZone(v, s.opt.Location))
}

func writeError(w http.ResponseWriter, status int, msg string) {
	writeJSON(w, status, Error{Error: msg})
}

// storeError answers a failed store call: the admin's mistakes (no such
// letter, wrong state) with the store's words, anything else generically,
// with the cause in the log.
func (s *Server) storeError(w http.ResponseWriter, r *http.Request, err error) {
	msg := strings.TrimPrefix(err.Error(), "store: ")
	switch {
	case errors.Is(err, store.ErrNotFound):
		writeError(w, http.StatusNotFound, msg)
	case errors.Is(err, store.ErrState):
		writeError(w, http.StatusConflict, msg)
	case errors.Is(err, store.ErrClosed):
		writeError(w, http.StatusServiceUnavailable, "petitiond is shutting down")
	default:
		s.log.Error("admin request failed", "method", r.Method, "path", r.URL.Path, "err", err)
		writeError(w, http.StatusInternalServerError, "internal error; the daemon's log has the cause")
	}
}

// healthz answers JSON for probes (no token needed): 503 when the store
// cannot be written, an SMTP listener or another part stopped; 200
// otherwise, with status "paused" while an admin holds batches and sending.
func (s *Server) healthz(w http.ResponseWriter, r *http.Request) {
	h := Health{Status: HealthOK, Store: HealthOK, SMTP: HealthOK, Parts: HealthOK}
	failing := func(field *string, err error) {
		*field, h.Status = err.Error(), HealthFailing
	}
	if s.opt.SMTP != nil {
		if err := s.opt.SMTP(); err != nil {
			failing(&h.SMTP, err)
		}
	}
	if s.opt.Parts != nil {
		if err := s.opt.Parts(); err != nil {
			s.log.Warn("health check failed: a part of the daemon stopped", "err", err)
			failing(&h.Parts, fmt.Errorf("stopped: %w", err))
		}
	}
	if err := s.health.result(r.Context()); err != nil {
		s.log.Warn("health check failed: the store cannot be written", "err", err)
		failing(&h.Store, fmt.Errorf("not writable: %w", err))
	}
	if oldest, err := s.st.OldestUndelivered(); err != nil {
		failing(&h.Store, err)
	} else {
		h.OldestUndeliveredBatchAge = age(s.now(), oldest)
	}
	if p, err := s.st.Paused(); err != nil {
		failing(&h.Store, err)
	} else if p.Paused {
		h.Paused, h.PausedSince = true, timePtr(p.Since)
		if h.Status == HealthOK {
			h.Status = HealthPaused
		}
	}
	code := http.StatusOK
	if h.Status == HealthFailing {
		code = http.StatusServiceUnavailable
	}
	w.Header().Set("Cache-Control", "no-store")
	s.writeJSON(w, code, h)
}

func (s *Server) stats(w http.ResponseWriter, r *http.Request) {
	st, err := s.st.Stats()
	if err != nil {
		s.storeError(w, r, err)
		return
	}
	p, err := s.st.Paused()
	if err != nil {
		s.storeError(w, r, err)
		return
	}
	out := Stats{Stats: st}
	out.Paused, out.PausedSince, out.PauseReason = p.Paused, timePtr(p.Since), p.Reason
	if s.opt.Secondary {
		out.Forwarding = &ForwardCounts{Waiting: st.Forward.Waiting, Forwarded: st.Forward.Forwarded}
	}
	s.writeJSON(w, http.StatusOK, out)
}

func (s *Server) heldList(w http.ResponseWriter, r *http.Request) {
	held, err := s.st.HeldHeads(heldHeadBytes)
	if err != nil {
		s.storeError(w, r, err)
		return
	}
	out := make([]HeldLetter, 0, len(held))
	for _, h := range held {
		out = append(out, apiHeld(h))
	}
	s.writeJSON(w, http.StatusOK, out)
}

// letterID reads a letter ID from the path; IDs are upper-case hex, so a
// lower-case spelling is accepted.
func letterID(r *http.Request) string { return strings.ToUpper(r.PathValue("id")) }

func (s *Server) heldRelease(w http.ResponseWriter, r *http.Request) {
	id := letterID(r)
	dup, err := s.st.Release(r.Context(), id)
	if err != nil {
		s.storeError(w, r, err)
		return
	}
	res := HeldResult{ID: id, Outcome: store.EventReleased}
	if dup {
		res.Outcome = store.EventDuplicate
	}
	// The batch closer hears the release on the store's event feed.
	s.writeJSON(w, http.StatusOK, res)
}

func (s *Server) heldDrop(w http.ResponseWriter, r *http.Request) {
	id := letterID(r)
	if err := s.st.Drop(r.Context(), id); err != nil {
		s.storeError(w, r, err)
		return
	}
	s.writeJSON(w, http.StatusOK, HeldResult{ID: id, Outcome: store.EventDropped})
}

// batchID reads a batch number from the path; a bad one is answered here.
func batchID(w http.ResponseWriter, r *http.Request) (uint64, bool) {
	raw := r.PathValue("id")
	id, err := strconv.ParseUint(strings.TrimPrefix(raw, "#"), 10, 64)
	if err != nil || id == 0 {
		writeError(w, http.StatusBadRequest, fmt.Sprintf("batch ID %q is not a batch number (1, 2, ...)", raw))
		return 0, false
	}
	return id, true
}

func (s *Server) batchList(w http.ResponseWriter, r *http.Request) {
	batches, err := s.st.Batches()
	if err != nil {
		s.storeError(w, r, err)
		return
	}
	out := make([]Batch, 0, len(batches))
	for _, b := range batches {
		out = append(out, apiBatch(b, false))
	}
	s.writeJSON(w, http.StatusOK, out)
}

func (s *Server) batchShow(w http.ResponseWriter, r *http.Request) {
	id, ok := batchID(w, r)
	if !ok {
		return
	}
	b, err := s.st.Batch(id)
	if err != nil {
		s.storeError(w, r, err)
		return
	}
	s.writeJSON(w, http.StatusOK, apiBatch(*b, true))
}

// batchMessage sends the batch's message exactly as delivered.
func (s *Server) batchMessage(w http.ResponseWriter, r *http.Request) {
	id, ok := batchID(w, r)
	if !ok {
		return
	}
	msg, err := s.st.BatchMessage(id)
	s.sendMessage(w, r, fmt.Sprintf("batch-%d.eml", id), msg, err)
}

// sendMessage answers with a message's bytes as a download named name, or
// with the store's error.
func (s *Server) sendMessage(w http.ResponseWriter, r *http.Request, name string, msg []byte, err error) {
	if err != nil {
		s.storeError(w, r, err)
		return
	}
	w.Header().Set("Content-Type", "message/rfc822")
	w.Header().Set("Content-Disposition", fmt.Sprintf(`attachment; filename="%s"`, name))
	w.Header().Set("Content-Length", strconv.Itoa(len(msg)))
	_, _ = w.Write(msg)
}

func (s *Server) batchRetry(w http.ResponseWriter, r *http.Request) {
	id, ok := batchID(w, r)
	if !ok {
		return
	}
	// The delivery scheduler sees the "requeued" events on the store's
	// feed and tries the copies at once.
	n, err := s.st.Retry(r.Context(), id)
	if err != nil {
		s.storeError(w, r, err)
		return
	}
	s.writeJSON(w, http.StatusOK, RetryResult{ID: id, Requeued: n})
}

// events answers the last n events (?n=N, default 10), or with ?after=SEQ
// the events after that one (up to n, default maxEvents), oldest first.
func (s *Server) events(w http.ResponseWriter, r *http.Request) {
	q := r.URL.Query()
	n, err := queryUint(q.Get("n"), 10)
	if err != nil {
		writeError(w, http.StatusBadRequest, "n: "+err.Error())
		return
	}
	n = min(n, maxEvents)
	var evs []store.Event
	if a := q.Get("after"); a != "" {
		after, err := queryUint(a, 0)
		if err != nil {
			writeError(w, http.StatusBadRequest, "after: "+err.Error())
			return
		}
		if q.Get("n") == "" {
			n = maxEvents
		}
		evs, err = s.st.Events(after, int(n))
		if err != nil {
			s.storeError(w, r, err)
			return
		}
	} else if n > 0 {
		if evs, err = s.st.LastEvents(int(n)); err != nil {
			s.storeError(w, r, err)
			return
		}
	}
	if evs == nil {
		evs = []Event{} // [] rather than null for scripts
	}
	s.writeJSON(w, http.StatusOK, evs)
}

func queryUint(s string, def uint64) (uint64, error) {
	if s == "" {
		return def, nil
	}
	v, err := strconv.ParseUint(s, 10, 64)
	if err != nil {
		return 0, fmt.Errorf("%q is not a non-negative number", s)
	}
	return v, nil
}

// follow streams events as newline-delimited JSON, one Event per line, as
// they are committed: from after ?after=SEQ when given (a client resuming
// after a reconnect misses nothing while the journal still holds it), else
// starting with the last ?n=N events (default 0). The header
// FollowAfterHeader says where the stream starts; an idle stream sends an
// empty line every Heartbeat.
func (s *Server) follow(w http.ResponseWriter, r *http.Request) {
	q := r.URL.Query()
	var after uint64
	if a := q.Get("after"); a != "" {
		v, err := queryUint(a, 0)
		if err != nil {
			writeError(w, http.StatusBadRequest, "after: "+err.Error())
			return
		}
		// Past the journal's end (a new store under the same address):
		// resume from its end, or new events would be hidden until their
		// numbers caught up.
		end, err := s.startAfter(0)
		if err != nil {
			s.storeError(w, r, err)
			return
		}
		after = min(v, end)
	} else {
		n, err := queryUint(q.Get("n"), 0)
		if err != nil {
			writeError(w, http.StatusBadRequest, "n: "+err.Error())
			return
		}
		if after, err = s.startAfter(int(min(n, maxEvents))); err != nil {
			s.storeError(w, r, err)
			return
		}
	}

	ctx, cancel := context.WithCancel(r.Context())
	defer cancel()
	stop := context.AfterFunc(s.ctx, cancel) // daemon shutting down
	defer stop()
	f := s.st.Follow(after)
	defer f.Close()

	rc := http.NewResponseController(w)
	w.Header().Set("Content-Type", "application/x-ndjson")
	w.Header().Set("Cache-Control", "no-store")
	w.Header().Set(FollowAfterHeader, strconv.FormatUint(after, 10))
	w.WriteHeader(http.StatusOK)
	if err := flushWithin(rc); err != nil {
		return
	}
	heartbeat := time.NewTicker(s.opt.Heartbeat)
	defer heartbeat.Stop()
	enc := json.NewEncoder(w)
	enc.SetEscapeHTML(false)
	for {
		e, ok, err := f.NextOr(ctx, heartbeat.C)
		if err != nil {
			if ctx.Err() == nil {
				s.log.Warn("event stream ended: reading the journal failed", "err", err)
			}
			return
		}
		_ = rc.SetWriteDeadline(time.Now().Add(writeDeadline))
		if ok {
			if s.opt.Location != nil {
				e.Time = e.Time.In(s.opt.Location)
			}
			err = enc.Encode(e)
		} else {
			_, err = w.Write([]byte("\n"))
		}
		if err != nil {
			return
		}
		if !f.Ready() {
			if err := flushWithin(rc); err != nil {
				return
			}
		}
	}
}

// startAfter is the sequence number after which the last n events begin:
// the journal's end for n = 0.
func (s *Server) startAfter(n int) (uint64, error) {
	if n == 0 {
		return s.st.LastSeq()
	}
	last, err := s.st.LastEvents(n)
	if err != nil || len(last) == 0 {
		return 0, err
	}
	return last[0].Seq - 1, nil
}

func flushWithin(rc *http.ResponseController) error {
	_ = rc.SetWriteDeadline(time.Now().Add(writeDeadline))
	return rc.Flush()
}

// maxRequestBody bounds the JSON body of an action: thousands of IDs fit.
const maxRequestBody = 1 << 20

// readJSON decodes an action's body into v, answering a bad one itself. The
// body must be JSON (a form or text/plain post from a web page is refused,
// as browsers send those across origins without asking).
func readJSON(w http.ResponseWriter, r *http.Request, v any) bool {
	if mt, _, _ := mime.ParseMediaType(r.Header.Get("Content-Type")); mt != "application/json" {
		writeError(w, http.StatusUnsupportedMediaType, "the request body must be JSON (Content-Type: application/json)")
		return false
	}
	dec := json.NewDecoder(http.MaxBytesReader(w, r.Body, maxRequestBody))
	dec.DisallowUnknownFields()
	if err := dec.Decode(v); err != nil {
		writeError(w, http.StatusBadRequest, "request body: "+err.Error())
		return false
	}
	return true
}

// heldMessage sends a held letter's message exactly as received.
func (s *Server) heldMessage(w http.ResponseWriter, r *http.Request) {
	id := letterID(r)
	msg, err := s.st.HeldMessage(id)
	s.sendMessage(w, r, id+".eml", msg, err)
}

// heldDecide releases or drops several held letters: the IDs named, or all
// (of one reason). Each letter gets its result; one that cannot be decided
// does not stop the others.
func (s *Server) heldDecide(action store.EventKind) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		var req HeldRequest
		if !readJSON(w, r, &req) {
			return
		}
		switch {
		case req.All == (len(req.IDs) > 0):
			writeError(w, http.StatusBadRequest, "name the letters (ids) or ask for all, not both")
			return
		case req.Reason != "" && !req.All:
			writeError(w, http.StatusBadRequest, "reason narrows all; it does not go with ids")
			return
		}
		var out Decisions
		ids := make([]string, 0, len(req.IDs))
		for _, id := range req.IDs {
			ids = append(ids, strings.ToUpper(id))
		}
		if req.All {
			held, err := s.st.Held()
			if err != nil {
				s.storeError(w, r, err)
				return
			}
			for _, l := range held {
				switch {
				case req.Reason != "" && string(l.HeldReason) != req.Reason:
				case action == store.EventReleased && l.HeldReason == store.HeldPostmaster:
					out.Skipped++ // never counted: it can only be dropped
				default:
					ids = append(ids, l.ID)
				}
			}
		}
		var decided []store.Decision
		if action == store.EventReleased {
			decided = s.st.ReleaseMany(r.Context(), ids)
		} else {
			decided = s.st.DropMany(r.Context(), ids)
		}
		out.Results = make([]HeldResult, 0, len(decided))
		for _, d := range decided {
			res := HeldResult{ID: d.ID, Outcome: d.Event}
			if d.Err != nil {
				res.Error = s.decisionError(r, d.Err)
			}
			out.Results = append(out.Results, res)
		}
		// The batch closer hears the releases on the store's event feed.
		s.writeJSON(w, http.StatusOK, out)
	}
}

// decisionError is what the admin is told about one letter that could not
// be decided: the store's words for their mistakes (no such letter, not
// held), a generic line for anything else, whose cause goes to the log.
func (s *Server) decisionError(r *http.Request, err error) string {
	if errors.Is(err, store.ErrNotFound) || errors.Is(err, store.ErrState) {
		return strings.TrimPrefix(err.Error(), "store: ")
	}
	if errors.Is(err, store.ErrClosed) {
		return "petitiond is shutting down"
	}
	s.log.Error("admin request failed", "method", r.Method, "path", r.URL.Path, "err", err)
	return "internal error; the daemon's log has the cause"
}

// batchFlush makes every deferred copy due now; the delivery scheduler
// hears the requeued events on the store's feed.
func (s *Server) batchFlush(w http.ResponseWriter, r *http.Request) {
	var req struct{}
	if !readJSON(w, r, &req) {
		return
	}
	n, err := s.st.Flush(r.Context())
	if err != nil {
		s.storeError(w, r, err)
		return
	}
	p, err := s.st.Paused()
	if err != nil {
		s.storeError(w, r, err)
		return
	}
	s.writeJSON(w, http.StatusOK, FlushResult{Flushed: n, Paused: p.Paused})
}

func (s *Server) pauseState(w http.ResponseWriter, r *http.Request) {
	p, err := s.st.Paused()
	if err != nil {
		s.storeError(w, r, err)
		return
	}
	s.writeJSON(w, http.StatusOK, apiPause(p, false))
}

// setPause pauses or resumes the daemon; the batch closer and the delivery
// scheduler read the pause from the store, and a resume wakes them.
func (s *Server) setPause(paused bool) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		var req PauseRequest
		if !readJSON(w, r, &req) {
			return
		}
		if !paused && req.Reason != "" {
			writeError(w, http.StatusBadRequest, "a resume takes no reason")
			return
		}
		p, changed, err := s.st.SetPause(r.Context(), paused, req.Reason)
		if err != nil {
			s.storeError(w, r, err)
			return
		}
		s.writeJSON(w, http.StatusOK, apiPause(p, changed))
	}
}
