package store_test

import (
	"testing"

	"github.com/petitiond/petitiond/relay/verify"
	"github.com/petitiond/petitiond/store"
)

// BenchmarkDedupKey is what each letter costs before the store is touched:
// normalising the From address (SPEC 6) and its HMAC under the store's
// secret.
func BenchmarkDedupKey(b *testing.B) {
	s, err := store.Open(b.TempDir(), store.Options{})
	if err != nil {
		b.Fatal(err)
	}
	defer s.Close()
	opt := verify.FoldOptions{Subaddress: true, GmailDots: true}
	for _, addr := range []string{"Ana.Perez+campaign@GoogleMail.com", "supporter1234@sup0.load.test", "ana@bücher.example"} {
		b.Run(addr, func(b *testing.B) {
			b.ReportAllocs()
			for b.Loop() {
				norm, err := verify.NormalizeAddress(addr, opt)
				if err != nil {
					b.Fatal(err)
				}
				if len(s.DedupKey(norm)) != 32 {
					b.Fatal("dedup key is not 32 bytes")
				}
			}
		})
	}
}
