package admin

import (
	"context"
	"net/http"
	"net/url"
	"strings"
	"time"

	"github.com/petitiond/petitiond/relay/verify"
	"github.com/petitiond/petitiond/store"
)

// A supporter's rights (SPEC 13): GET /api/lookup?address=A says what the
// store holds about the supporter, POST /api/erase?address=A erases them.
// The address may be spelled any way that normalises (SPEC 6) to theirs.
// The erasure's answer names only letter IDs and batch numbers.

// Lookup is what the store holds about one supporter.
type Lookup struct {
	// Address is the address as normalised for dedup (SPEC 6).
	Address string         `json:"address"`
	Letters []LookupLetter `json:"letters"`
	Batches []LookupBatch  `json:"batches"`
	// Events counts the journal events that still name the supporter.
	Events int `json:"events"`
}

// LookupLetter is one of the supporter's letters.
type LookupLetter struct {
	ID       string    `json:"id"`
	Received time.Time `json:"received"`
	// State is held, pending, batched, delivered, erased or duplicate (an
	// unverified repeat, recorded but not counted).
	State   string            `json:"state"`
	Verdict store.VerdictKind `json:"verdict"`
	Batch   uint64            `json:"batch,omitempty"`
	// What the record holds about the supporter: empty once erased.
	From   string `json:"from,omitempty"`
	Name   string `json:"name,omitempty"`
	IP     string `json:"ip,omitempty"`
	Reason string `json:"reason,omitempty"` // why it is held
	// Body says whether the letter's text is stored.
	Body bool `json:"body"`
}

// LookupBatch is a batch that carried one of the supporter's letters.
type LookupBatch struct {
	ID        uint64 `json:"id"`
	Delivered bool   `json:"delivered"`
	// Message is "kept", "purged" (after retention) or "erased".
	Message string `json:"message"`
}

// Erasure is what an erasure removed, by ID: never an address.
type Erasure struct {
	Letters   []string `json:"letters"`
	Withdrawn []string `json:"withdrawn"`
	Batches   []uint64 `json:"batches"`
	Events    int      `json:"events"`
}

// supporter reads ?address= and names its supporter for the store.
func (s *Server) supporter(w http.ResponseWriter, r *http.Request) (store.Supporter, bool) {
	raw := strings.TrimSpace(r.URL.Query().Get("address"))
	raw = strings.TrimSuffix(strings.TrimPrefix(raw, "<"), ">")
	if raw == "" {
		writeError(w, http.StatusBadRequest, "address: the supporter's address is required (?address=)")
		return store.Supporter{}, false
	}
	fold := s.opt.Fold
	norm, err := verify.NormalizeAddress(raw, fold)
	if err != nil {
		writeError(w, http.StatusBadRequest, "address: "+strings.TrimPrefix(err.Error(), "verify: "))
		return store.Supporter{}, false
	}
	return store.Supporter{Address: norm, Same: func(addr string) bool {
		n, err := verify.NormalizeAddress(addr, fold)
		return err == nil && n == norm
	}}, true
}

func (s *Server) lookup(w http.ResponseWriter, r *http.Request) {
	sp, ok := s.supporter(w, r)
	if !ok {
		return
	}
	rec, err := s.st.Lookup(sp)
	if err != nil {
		s.storeError(w, r, err)
		return
	}
	s.writeJSON(w, http.StatusOK, apiLookup(sp.Address, rec))
}

func (s *Server) erase(w http.ResponseWriter, r *http.Request) {
	sp, ok := s.supporter(w, r)
	if !ok {
		return
	}
	// The store journals an "erased" event with the letter IDs, which the
	// event log writes as the log line.
	er, err := s.st.Erase(r.Context(), sp)
	if err != nil {
		if er != nil {
			// Committed, but the files are not yet clean: say what was
			// erased, and that the wipe is still due.
			s.log.Error("a supporter was erased but the store's free pages are not yet wiped; the purger or the next start will",
				"letters", strings.Join(er.Letters, " "), "err", err)
		}
		s.storeError(w, r, err)
		return
	}
	s.writeJSON(w, http.StatusOK, apiErasure(er))
}

func apiLookup(address string, rec *store.SupporterRecord) Lookup {
	out := Lookup{Address: address, Letters: []LookupLetter{}, Batches: []LookupBatch{}, Events: rec.Events}
	for _, l := range rec.Letters {
		out.Letters = append(out.Letters, LookupLetter{
			ID: l.ID, Received: l.Received, State: lookupState(l), Verdict: l.Verdict.Kind, Batch: l.Batch,
			From: l.From, Name: l.Name, IP: l.RemoteIP, Reason: string(l.HeldReason), Body: l.Body,
		})
	}
	for _, b := range rec.Batches {
		out.Batches = append(out.Batches, LookupBatch{ID: b.ID, Delivered: b.Delivered, Message: b.Message})
	}
	return out
}

// lookupState is the word of SPEC 13 for where a letter is.
func lookupState(l store.SupporterLetter) string {
	switch {
	case l.Erased:
		return "erased"
	case l.State == store.StateBatched && l.Delivered:
		return "delivered"
	}
	return string(l.State)
}

func apiErasure(er *store.Erasure) Erasure {
	out := Erasure{Letters: []string{}, Withdrawn: []string{}, Batches: []uint64{}, Events: er.Events}
	out.Letters = append(out.Letters, er.Letters...)
	out.Withdrawn = append(out.Withdrawn, er.Withdrawn...)
	out.Batches = append(out.Batches, er.Batches...)
	return out
}

// Lookup asks what the store holds about the supporter with address.
func (c *Client) Lookup(ctx context.Context, address string) (Lookup, error) {
	var l Lookup
	return l, c.call(ctx, http.MethodGet, "/api/lookup?address="+url.QueryEscape(address), nil, &l)
}

// Erase erases the supporter with address.
func (c *Client) Erase(ctx context.Context, address string) (Erasure, error) {
	var e Erasure
	return e, c.call(ctx, http.MethodPost, "/api/erase?address="+url.QueryEscape(address), nil, &e)
}
