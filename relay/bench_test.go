package relay_test

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"testing"
	"time"

	"github.com/petitiond/petitiond/config"
	"github.com/petitiond/petitiond/internal/loadgen"
	"github.com/petitiond/petitiond/internal/testenv"
)

const benchRcpt = "libertad@campaign.test"

// BenchmarkRelayAccept is the whole inbound path in one process, as
// cmd/petitiond-load drives it: b.N distinct letters of about 3 KB from
// b.N supporters (RSA-2048 and ed25519 signatures, keys looked up over
// loopback DNS), sent over 1 or 50 SMTP sessions with RSET between letters,
// each verified, deduplicated and fsynced before its 250. Signing happens
// before the clock starts. The client runs in the same process, so a CPU
// profile of this benchmark (-cpuprofile) shows the daemon's costs plus the
// client's.
func BenchmarkRelayAccept(b *testing.B) {
	ctx := context.Background()
	keys, err := loadgen.NewKeys(ctx, 2)
	if err != nil {
		b.Fatal(err)
	}
	dns, err := testenv.StartDNS(loadgen.Selector)
	if err != nil {
		b.Fatal(err)
	}
	defer dns.Close()
	for _, k := range keys {
		dns.SetKey(k)
	}
	for _, sessions := range []int{1, 50} {
		b.Run(fmt.Sprintf("sessions=%d", sessions), func(b *testing.B) {
			letters, err := loadgen.MakeLetters(ctx, keys, b.N, 3000, benchRcpt)
			if err != nil {
				b.Fatal(err)
			}
			e := startBenchDaemon(b, dns, sessions)
			commits0, writes0 := e.Store().CommitStats()
			b.SetBytes(int64(letters[0].Size()))
			b.ResetTimer()
			res := loadgen.Send(ctx, letters, loadgen.Options{
				Addr: e.SMTPAddr(), Rcpt: benchRcpt, Sessions: sessions, Timeout: time.Minute})
			b.StopTimer()
			if res.Accepted != b.N {
				b.Fatalf("%d of %d letters accepted; replies %v %v, errors %v", res.Accepted, b.N, res.Codes, res.Examples, res.Errors)
			}
			commits, writes := e.Store().CommitStats()
			b.ReportMetric(res.Rate(), "letters/s")
			if c := commits - commits0; c > 0 {
				b.ReportMetric(float64(writes-writes0)/float64(c), "letters/commit")
			}
			b.ReportMetric(float64(res.Percentile(0.99).Microseconds())/1000, "p99-ms")
		})
	}
}

// startBenchDaemon runs a daemon configured as cmd/petitiond-load configures
// the one it spawns: loopback, the given DNS server, unverified letters
// refused, session limits above the client's, batching out of the way. Its
// log is formatted and thrown away, so logging costs what it costs in a
// real daemon.
func startBenchDaemon(b *testing.B, dns *testenv.DNS, sessions int) *testenv.Test {
	b.Helper()
	e := testenv.PrepareWith(b, testenv.Options{
		DNS:    dns,
		Logger: slog.New(slog.NewTextHandler(io.Discard, nil)),
		Configure: func(cfg *config.Config) {
			cfg.Campaign.Addresses = []string{benchRcpt}
			cfg.SMTP.MaxPerIP = sessions + 16
			cfg.SMTP.MaxConnections = max(cfg.SMTP.MaxConnections, cfg.SMTP.MaxPerIP)
			cfg.Verify.Unverified = "reject"
			cfg.Batch.MaxLetters = 1 << 30
			cfg.Batch.MaxWait = config.Duration{Duration: 365 * 24 * time.Hour}
			cfg.Batch.MaxBytes = 1 << 50
		},
	})
	e.Start()
	return e
}
