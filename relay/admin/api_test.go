package admin_test

import (
	"encoding/json"
	"testing"
	"time"

	"github.com/petitiond/petitiond/relay/admin"
	"github.com/petitiond/petitiond/store"
)

// TestAPIShapes pins the JSON of the tally (SPEC 9's stats -json, built
// on the store's Stats) and of a recipient's copy with its parts: every
// field set, so a renamed, added or dropped field in the store or here
// changes the text and fails.
func TestAPIShapes(t *testing.T) {
	at := time.Date(2019, 10, 18, 12, 0, 0, 0, time.UTC)
	for name, tc := range map[string]struct {
		v    any
		want string
	}{
		"stats": {
			v: admin.Stats{
				Stats: store.Stats{Counted: 1, Duplicates: 2, Held: 3, Rejected: 4, Batches: 5, Pending: 6,
					Deliveries: store.DeliveryCounts{Queued: 7, Deferred: 8, Delivered: 9, Failed: 10},
					Supporters: store.SupporterMailCounts{ConfirmWaiting: 11, ConfirmLive: 12, ConfirmSent: 13,
						ConfirmConfirmed: 14, ConfirmExpired: 15, ConfirmUndeliverable: 16, ReceiptsSent: 17, Queued: 18}},
				Paused: true, PausedSince: &at, PauseReason: "r",
			},
			want: `{"counted":1,"duplicates":2,"held":3,"rejected":4,"batches":5,"pending":6,` +
				`"deliveries":{"queued":7,"deferred":8,"delivered":9,"failed":10},` +
				`"supporters":{"confirm_waiting":11,"confirm_live":12,"confirm_sent":13,"confirmed":14,` +
				`"confirm_expired":15,"confirm_undeliverable":16,"receipts_sent":17,"queued":18},` +
				`"paused":true,"paused_since":"2019-10-18T12:00:00Z","pause_reason":"r"}`,
		},
		"recipient": {
			v: admin.Recipient{
				Address: "familias@ofapp.example",
				CopyStatus: admin.CopyStatus{State: store.DeliveryDeferred, Attempts: 2, NextAttempt: &at,
					LastError: "452 too big", ErrorKind: store.FailureTooBig},
				Parts: []admin.Part{{N: 1, Of: 2, MessageID: "p1@c", Letters: 3, LetterIDs: []string{"L1"},
					CopyStatus: admin.CopyStatus{State: store.DeliveryFailed, Attempts: 1, LastError: "550 no"}}},
			},
			want: `{"address":"familias@ofapp.example","state":"deferred","attempts":2,` +
				`"next_attempt":"2019-10-18T12:00:00Z","last_error":"452 too big","error_kind":"too-big",` +
				`"parts":[{"n":1,"of":2,"message_id":"p1@c","letters":3,"state":"failed","attempts":1,` +
				`"next_attempt":null,"last_error":"550 no","letter_ids":["L1"]}]}`,
		},
	} {
		got, err := json.Marshal(tc.v)
		if err != nil {
			t.Fatal(err)
		}
		if string(got) != tc.want {
			t.Errorf("%s JSON:\n got %s\nwant %s", name, got, tc.want)
		}
	}
}
