package admin_test

import (
	"html"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/petitiond/petitiond/config"
	"github.com/petitiond/petitiond/internal/sinkserver"
	"github.com/petitiond/petitiond/internal/testenv"
	"github.com/petitiond/petitiond/relay/catalog"
	"github.com/petitiond/petitiond/store"
)

// TestPagesShowDeliveryStates: the organisers read a real copy's state in
// plain words: a copy the recipient's server deferred is "retrying", with
// the next try in local time and what the server said; one it refused is
// "failed", with the server's words.
func TestPagesShowDeliveryStates(t *testing.T) {
	e := testenv.Prepare(t, func(c *config.Config) {
		c.Admin.Listen = "127.0.0.1:0"
		c.Admin.ReaderToken = readerToken
		c.Batch.MaxLetters = 1
		c.Delivery.RetryMin = config.Duration{Duration: time.Hour}
		c.Delivery.RetryMax = config.Duration{Duration: 2 * time.Hour}
	})
	sink := e.Smarthost()
	sink.FailRcpt(&sinkserver.Fault{Code: 451, Enhanced: [3]int{4, 3, 0}, Msg: "buzón lleno, vuelva más tarde"})
	e.Start()
	p := &pagesEnv{Test: e, base: e.AdminURL(), admin: e.AdminToken()}
	e.Queued(e.Signed("ed.test", "ana@ed.test"))

	var b *store.Batch
	testenv.WaitFor(t, "both copies deferred", 10*time.Second, func() bool {
		var err error
		b, err = e.Store().Batch(1)
		return err == nil && b.Recipients[0].State == store.DeliveryDeferred && b.Recipients[1].State == store.DeliveryDeferred
	})
	cat, err := catalog.New("es", e.Config.Campaign.Location())
	if err != nil {
		t.Fatal(err)
	}
	for _, path := range []string{"/", "/batches/1"} {
		code, page, _ := p.get(t, path, reader()...)
		if code != http.StatusOK {
			t.Fatalf("%s: %d", path, code)
		}
		mustContain(t, path+" with deferred copies", html.UnescapeString(page),
			`class="state-deferred">reintentando, próximo intento el `+cat.Time(b.Recipients[0].NextAttempt),
			"buzón lleno, vuelva más tarde")
	}

	// The server now refuses for good; an admin's flush tries again at once.
	sink.FailRcpt(&sinkserver.Fault{Code: 550, Enhanced: [3]int{5, 1, 1}, Msg: "no existe ese buzón"})
	req := p.req(t, "POST", "/api/batches/flush", strings.NewReader("{}"), "Authorization", "Bearer "+p.admin, "Content-Type", "application/json")
	if code, body, _ := do(t, req); code != http.StatusOK {
		t.Fatalf("flush: %d %s", code, body)
	}
	testenv.WaitFor(t, "both copies failed", 10*time.Second, func() bool {
		b, err := e.Store().Batch(1)
		return err == nil && b.Recipients[0].State == store.DeliveryFailed && b.Recipients[1].State == store.DeliveryFailed
	})
	code, page, _ := p.get(t, "/batches/1", reader()...)
	if code != http.StatusOK {
		t.Fatalf("batch page: %d", code)
	}
	mustContain(t, "batch page with failed copies", html.UnescapeString(page),
		`class="state-failed">falló: el servidor receptor dijo «`, "no existe ese buzón",
		"Un administrador puede volver a intentarlo.")
}
