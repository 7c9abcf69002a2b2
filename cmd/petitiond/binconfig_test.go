package main

import (
	"os"
	"testing"

	"github.com/petitiond/petitiond/config"
	"github.com/petitiond/petitiond/internal/testenv"
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
