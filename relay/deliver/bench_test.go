package deliver

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/petitiond/petitiond/internal/sinkserver"
	"github.com/petitiond/petitiond/relay/batch"
)

// BenchmarkRelay1000 sends a 1,000-letter batch (about 7 MB) to a loopback
// mail host: issue 5 asks for under a second.
func BenchmarkRelay1000(b *testing.B) {
	spec := batch.Spec{Number: 1, CampaignName: "Bench", From: "relay@campaign.test",
		Recipients: []string{"familias@ofapp.test"}, MessageID: "<batch-1@campaign.test>", Date: time.Now(), RunningTotal: 1000}
	body := strings.Repeat("Free the political prisoners of the October 2019 revolt in Chile.\r\n", 45)
	for i := 0; i < 1000; i++ {
		from := fmt.Sprintf("s%d@ed.test", i)
		spec.Letters = append(spec.Letters, batch.Letter{ID: fmt.Sprintf("L%08X", i+1), Received: time.Now(), Address: from, DKIMDomain: "ed.test",
			Raw: []byte("From: <" + from + ">\r\nSubject: Libertad\r\n\r\n" + body)})
	}
	msg, err := batch.Build(spec)
	if err != nil {
		b.Fatal(err)
	}
	sink, err := sinkserver.Start(sinkserver.Options{})
	if err != nil {
		b.Fatal(err)
	}
	defer sink.Close()
	tr := NewSMTP(SMTPOptions{Hostname: "mx.campaign.test", Smarthost: sink.Addr, StartTLS: StartTLSOff, Timeout: 30 * time.Second})
	b.SetBytes(int64(len(msg)))
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		if _, err := tr.Deliver(context.Background(), "relay@campaign.test", "familias@ofapp.test", msg); err != nil {
			b.Fatal(err)
		}
	}
}
