package catalog

import (
	"strings"
	"testing"
	"time"
)

// Each delivery state reads in its own plain words in each language, with
// its time local to the campaign and the receiving server's words kept.
func TestDeliveryWords(t *testing.T) {
	at := time.Date(2024, 7, 1, 16, 5, 0, 0, time.UTC) // 12:05 in Santiago
	tests := []struct {
		lang string
		d    Delivery
		want string
	}{
		{"es", Delivery{State: "delivered", Done: at}, "entregado el 01-07-2024 12:05 (UTC-04:00)"},
		{"es", Delivery{State: "deferred", Next: at, Error: "451 4.3.0 try later"},
			"reintentando, próximo intento el 01-07-2024 12:05 (UTC-04:00) (el último intento falló: 451 4.3.0 try later)"},
		{"es", Delivery{State: "failed", Done: at, Error: "550 5.1.1 no such user"},
			"falló: el servidor receptor dijo «550 5.1.1 no such user». Un administrador puede volver a intentarlo."},
		{"es", Delivery{State: "queued"}, "en cola, se envía en cuanto se pueda"},
		{"es", Delivery{State: "queued", Next: at}, "en cola, se envía el 01-07-2024 12:05 (UTC-04:00)"},
		{"en", Delivery{State: "delivered", Done: at}, "delivered on 1 Jul 2024 12:05 (UTC-04:00)"},
		{"en", Delivery{State: "deferred", Next: at}, "retrying, next try on 1 Jul 2024 12:05 (UTC-04:00)"},
		{"en", Delivery{State: "failed", Error: "552 5.3.4 too big"}, "failed: the receiving server said “552 5.3.4 too big”. An admin can try again."},
		{"en", Delivery{State: "queued"}, "queued, to be sent as soon as possible"},
	}
	for _, tt := range tests {
		c, err := New(tt.lang, santiago)
		if err != nil {
			t.Fatal(err)
		}
		if got, err := c.Text("page.delivery", tt.d); err != nil || got != tt.want {
			t.Errorf("%s %+v:\n got %q, %v\nwant %q", tt.lang, tt.d, got, err, tt.want)
		}
	}
}

// Counts read in the singular for one and in the plural otherwise.
func TestPagePlurals(t *testing.T) {
	tests := []struct {
		lang, key string
		data      any
		want      string
	}{
		{"es", "page.tally.counted", Tally{Counted: 1}, "1 carta contada"},
		{"es", "page.tally.counted", Tally{Counted: 0}, "0 cartas contadas"},
		{"es", "page.tally.pending", Tally{Pending: 1}, "1 carta espera el próximo lote."},
		{"es", "page.tally.batches", Tally{Batches: 2}, "Se han cerrado 2 lotes."},
		{"en", "page.tally.counted", Tally{Counted: 1}, "1 letter counted"},
		{"en", "page.tally.pending", Tally{Pending: 3}, "3 letters are waiting for the next batch."},
		{"es", "page.search.results", Search{Query: "maría", Found: 1, Shown: 1}, "1 carta tiene «maría»."},
		{"es", "page.search.results", Search{Query: "x", Found: 0}, "Ninguna carta tiene «x»."},
		{"en", "page.search.results", Search{Query: "x", Found: 150, Shown: 100},
			"150 letters have “x”. The first 100 are shown; add words to narrow the search."},
		{"es", "page.batch.line", BatchLine{Number: 4, Count: 1, Created: time.Date(2024, 7, 1, 16, 5, 0, 0, time.UTC)},
			"Lote 4: 1 carta, cerrado el 01-07-2024 12:05 (UTC-04:00)"},
	}
	for _, tt := range tests {
		c, _ := New(tt.lang, santiago)
		got, err := c.Text(tt.key, tt.data)
		if err != nil || strings.TrimSpace(got) != tt.want {
			t.Errorf("%s %s %+v: %q, %v; want %q", tt.lang, tt.key, tt.data, got, err, tt.want)
		}
	}
}
