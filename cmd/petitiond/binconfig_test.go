package main

import (
	"os"
	"testing"
	"time"

	"github.com/petitiond/petitiond/config"
	"github.com/petitiond/petitiond/internal/testenv"
	"github.com/petitiond/petitiond/store"
)

// writeBinaryConfig writes at path the config a test runs the real binary on:
// the embedded default with the test campaign, then adjust's changes. It
// must validate, so a test never starts a binary on a config it refuses.
func writeBinaryConfig(t *testing.T, path string, adjust func(c *config.Config)) {
	t.Helper()
	cfg := config.Default()
	testenv.UseCampaign(cfg)
	adjust(cfg)
	if ps := cfg.Validate(); len(ps) > 0 {
		t.Fatalf("the test's config does not validate: %v", ps)
	}
	if err := os.WriteFile(path, cfg.TOML(), 0o600); err != nil {
		t.Fatal(err)
	}
}

// crashCampaign is the config the crash tests run the real binary on:
// letters on smtpAddr, keys from dnsAddr, batches of maxLetters (or 200 ms)
// relayed to smarthost with quick retries. The caller sets the store and
// admin addresses.
func crashCampaign(c *config.Config, smtpAddr, dnsAddr, smarthost string, maxLetters int) {
	c.Campaign.Name = "Crash test"
	c.SMTP.Listen = []string{smtpAddr}
	c.Verify.Unverified = config.UnverifiedReject
	c.Verify.DNSResolver = dnsAddr
	c.Verify.DNSTimeout = config.Duration{Duration: 2 * time.Second}
	c.Batch.MaxLetters = maxLetters
	c.Batch.MaxWait = config.Duration{Duration: 200 * time.Millisecond}
	c.Delivery.Mode = config.DeliverySMTP
	c.Delivery.Smarthost = smarthost
	c.Delivery.StartTLS = config.StartTLSOff
	c.Delivery.RetryMin = config.Duration{Duration: 100 * time.Millisecond}
	c.Delivery.RetryMax = config.Duration{Duration: 400 * time.Millisecond}
}

// batchOf maps every batched letter in st to its batch, and fails the test
// for a letter found in two.
func batchOf(t *testing.T, st *store.Store) map[string]uint64 {
	t.Helper()
	batches, err := st.Batches()
	if err != nil {
		t.Fatal(err)
	}
	in := map[string]uint64{}
	for _, b := range batches {
		for _, id := range b.LetterIDs {
			if prev, ok := in[id]; ok {
				t.Errorf("letter %s in batches %d and %d", id, prev, b.ID)
			}
			in[id] = b.ID
		}
	}
	return in
}
