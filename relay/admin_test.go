package relay_test

import (
	"bytes"
	"context"
	"io"
	"net/http"
	"os"
	"strings"
	"testing"
	"time"

	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"

	"github.com/petitiond/petitiond/config"
	"github.com/petitiond/petitiond/internal/smtpclient"
	"github.com/petitiond/petitiond/internal/testenv"
	"github.com/petitiond/petitiond/internal/wait"
	"github.com/petitiond/petitiond/relay"
)

// TestAdminRefusesOpenListener: an admin listener others can reach needs a
// token; without one the daemon refuses to start, before it opens the store
// or any port, with an error naming both keys.
func TestAdminRefusesOpenListener(t *testing.T) {
	cfg := testenv.Prepare(t, nil).Config
	cfg.Admin.Listen = "0.0.0.0:0"
	cfg.Admin.Token = ""
	d, err := relay.New(cfg, relay.Options{})
	if err == nil {
		d.Shutdown(context.Background())
		t.Fatal("daemon with a non-loopback admin listener and no token was made")
	}
	if !strings.Contains(err.Error(), "admin.listen") || !strings.Contains(err.Error(), "admin.token") {
		t.Errorf("refusal %q does not name admin.listen and admin.token", err)
	}
	if _, serr := os.Stat(cfg.Store.Dir); !os.IsNotExist(serr) {
		t.Errorf("the store directory was created before the refusal (%v)", serr)
	}
	// A token from the environment (Options.AdminToken) is enough. New
	// listens on nothing, so this does not serve on every interface.
	d, err = relay.New(cfg, relay.Options{AdminToken: "from-env"})
	if err != nil {
		t.Fatalf("with a token: %v", err)
	}
	if d.AdminAddr() != nil {
		t.Errorf("admin listening before Start: %v", d.AdminAddr())
	}
	if err := d.Shutdown(context.Background()); err != nil {
		t.Errorf("shutdown: %v", err)
	}
}

// TestAdminMetrics sends known traffic and checks /metrics (parsed as
// Prometheus text) counts it, and /healthz says the store is fine.
func TestAdminMetrics(t *testing.T) {
	e := testenv.Start(t, func(c *config.Config) {
		c.Admin.Listen = "127.0.0.1:0"
		// One batch of the two counted letters, closed when the second
		// comes: a short max_wait could close each alone on a slow machine.
		c.Batch.MaxLetters = 2
		c.Batch.MaxWait = config.Duration{Duration: time.Hour}
		c.SMTP.MaxPerIP = 2
	})
	base := e.AdminURL()

	expectReply(t, "ana", e.Send(e.Signed("rsa.test", "ana@rsa.test")), "250 2.0.0")
	// One letter waits for its batch: the pending gauge says so.
	if err := wait.Until(context.Background(), 10*time.Second, func() (bool, error) {
		return scrape(t, base+"/metrics")["petitiond_letters_pending"] == 1, nil
	}); err != nil {
		t.Fatalf("petitiond_letters_pending never 1 with one letter waiting: %v", err)
	}
	expectReply(t, "bo", e.Send(e.Signed("ed.test", "bo@ed.test")), "250 2.0.0")
	// A signature that no longer matches its body: "fail", not "none".
	tampered := bytes.Replace(e.Signed("ed.test", "cid@ed.test"), []byte(testenv.Body), []byte("Free nobody."), 1)
	expectReply(t, "tampered", e.Send(tampered), "250 2.0.0")
	expectReply(t, "ana again", e.Send(e.Signed("rsa.test", "ana@rsa.test")), "250 2.0.0")
	expectReply(t, "unsigned", e.Send(e.Letter("dan@rsa.test", "hi", "unsigned")), "250 2.0.0")
	expectReply(t, "bare LF", e.Send([]byte("From: eva@ed.test\r\nSubject: x\n\r\nbody\r\n")), "554 5.6.0")
	expectReply(t, "two From", e.Send(e.Letter("a@ed.test, b@ed.test", "x", "y")), "550 5.6.0")
	refused := overPerIPLimit(t, e.SMTPAddr())

	want := map[string]float64{
		`petitiond_letters_total{outcome="accepted"}`:                2,
		`petitiond_letters_total{outcome="duplicate"}`:               1,
		`petitiond_letters_total{outcome="held"}`:                    2,
		`petitiond_letters_total{outcome="rejected"}`:                2,
		`petitiond_letters_total{outcome="released"}`:                0,
		`petitiond_letters_total{outcome="dropped"}`:                 0,
		`petitiond_rejections_total{reason="bare_line_ending"}`:      1,
		`petitiond_rejections_total{reason="from"}`:                  1,
		`petitiond_rejections_total{reason="unverified"}`:            0,
		`petitiond_rejections_total{reason="line_too_long"}`:         0,
		`petitiond_smtp_sessions_total`:                              7,
		`petitiond_smtp_sessions_refused_total{reason="max_per_ip"}`: float64(refused),
		`petitiond_smtp_sessions_refused_total{reason="too_slow"}`:   0,
		`petitiond_dkim_results_total{result="pass"}`:                3,
		`petitiond_dkim_results_total{result="fail"}`:                1,
		`petitiond_dkim_results_total{result="none"}`:                1,
		`petitiond_dkim_results_total{result="temperror"}`:           0,
		`petitiond_letters_held{reason="unverified"}`:                2,
		`petitiond_letters_held{reason="postmaster"}`:                0,
		`petitiond_letters_pending`:                                  0,
		`petitiond_paused`:                                           0,
		`petitiond_batches_total`:                                    1,
		`petitiond_deliveries{state="delivered"}`:                    2,
		`petitiond_deliveries{state="queued"}`:                       0,
		`petitiond_delivery_attempts_total{outcome="delivered"}`:     2,
		`petitiond_delivery_attempts_total{outcome="failed"}`:        0,
		`petitiond_oldest_pending_letter_age_seconds`:                0,
		`petitiond_oldest_undelivered_batch_age_seconds`:             0,
	}
	var got map[string]float64
	err := wait.Until(context.Background(), 10*time.Second, func() (bool, error) {
		got = scrape(t, base+"/metrics")
		return equalOn(got, want), nil
	})
	if err != nil {
		for k, v := range want {
			if got[k] != v {
				t.Errorf("%s = %v, want %v", k, got[k], v)
			}
		}
		t.Fatalf("metrics: %v", err)
	}
	commits, writes := got["petitiond_store_commits_total"], got["petitiond_store_commit_writes_total"]
	if commits < 1 || writes < commits {
		t.Errorf("store commits %v, writes %v", commits, writes)
	}
	builds := 0
	for k, v := range got {
		if strings.HasPrefix(k, "petitiond_build_info{") && v == 1 && strings.Contains(k, `goversion="go`) {
			builds++
		}
	}
	if builds != 1 {
		t.Errorf("%d petitiond_build_info series with a Go version, want 1", builds)
	}

	resp, err := http.Get(base + "/healthz")
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK || !strings.Contains(string(body), `"status":"ok"`) || !strings.Contains(string(body), `"smtp":"ok"`) {
		t.Errorf("healthz: %d %q", resp.StatusCode, body)
	}
	// pprof on a loopback listener: with the admin token (the one made at
	// first start), and only with it.
	for token, want := range map[string]int{"": http.StatusUnauthorized, e.AdminToken(): http.StatusOK} {
		req, _ := http.NewRequest("GET", base+"/debug/pprof/", nil)
		if token != "" {
			req.Header.Set("Authorization", "Bearer "+token)
		}
		resp, err = http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != want {
			t.Errorf("pprof on a loopback listener with token %q: %d, want %d", token, resp.StatusCode, want)
		}
	}
}

// overPerIPLimit opens connections (without EHLO, so no session starts)
// from 127.0.0.2, apart from the letters' 127.0.0.1, until one is refused
// for the per-IP limit of 2, and returns how many were.
func overPerIPLimit(t *testing.T, addr string) int {
	t.Helper()
	var open []*smtpclient.Conn
	defer func() {
		for _, c := range open {
			c.Close()
		}
	}()
	for i := 0; i < 3; i++ {
		c, err := smtpclient.DialFrom("127.0.0.2", addr, 5*time.Second)
		if err != nil {
			t.Fatal(err)
		}
		open = append(open, c)
		if want := map[bool]int{true: 421, false: 220}[i == 2]; c.Banner.Code != want {
			t.Fatalf("connection %d from 127.0.0.2: %s, want %d", i+1, c.Banner.String(), want)
		}
	}
	return 1
}

func equalOn(got, want map[string]float64) bool {
	for k, v := range want {
		if g, ok := got[k]; !ok || g != v {
			return false
		}
	}
	return true
}

// scrape reads /metrics with the Prometheus text parser and flattens it to
// `name{label="value",...}` → value.
func scrape(t *testing.T, url string) map[string]float64 {
	t.Helper()
	resp, err := http.Get(url)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("metrics: %s", resp.Status)
	}
	p := expfmt.NewTextParser(model.UTF8Validation)
	families, err := p.TextToMetricFamilies(resp.Body)
	if err != nil {
		t.Fatalf("metrics do not parse: %v", err)
	}
	out := map[string]float64{}
	for name, f := range families {
		for _, m := range f.GetMetric() {
			key := name
			if len(m.GetLabel()) > 0 {
				var ls []string
				for _, l := range m.GetLabel() {
					ls = append(ls, l.GetName()+`="`+l.GetValue()+`"`)
				}
				key += "{" + strings.Join(ls, ",") + "}"
			}
			out[key] = metricValue(f.GetType(), m)
		}
	}
	return out
}

func metricValue(typ dto.MetricType, m *dto.Metric) float64 {
	switch typ {
	case dto.MetricType_COUNTER:
		return m.GetCounter().GetValue()
	case dto.MetricType_GAUGE:
		return m.GetGauge().GetValue()
	case dto.MetricType_UNTYPED:
		return m.GetUntyped().GetValue()
	}
	return 0
}
