package store

import (
	"context"
	"os"
	"path/filepath"
	"testing"
	"time"

	bolt "go.etcd.io/bbolt"
)

// BenchmarkOpenCheck is what the consistency check adds to every start:
// Open (check, schema write, mark) and the check alone, on a store with a
// million counted senders (the scale target of BenchmarkAcceptPrefilled)
// and on one holding 200 MB of letter bodies.
func BenchmarkOpenCheck(b *testing.B) {
	b.Run("senders=1M", func(b *testing.B) {
		s := prefilledStore(b)
		s.Close()
		benchOpenCheck(b, s.dir)
	})
	b.Run("bodies=200MB", func(b *testing.B) {
		if testing.Short() {
			b.Skip("writes 200 MB")
		}
		dir := b.TempDir()
		s := openStore(b, dir, Options{})
		body := make([]byte, 100<<10)
		for i := range body {
			body[i] = 'a' + byte(i%26)
		}
		for i := range 2000 {
			nl := benchLetter(uint64(i))
			nl.Body = body
			if _, err := s.Accept(context.Background(), nl); err != nil {
				b.Fatal(err)
			}
		}
		s.Close()
		benchOpenCheck(b, dir)
	})
}

func benchOpenCheck(b *testing.B, dir string) {
	path := filepath.Join(dir, FileName)
	if fi, err := os.Stat(path); err == nil {
		b.Logf("%s: %.0f MB", path, float64(fi.Size())/1e6)
	}
	b.Run("open", func(b *testing.B) {
		for b.Loop() {
			s, err := Open(dir, Options{})
			if err != nil {
				b.Fatal(err)
			}
			s.Close()
		}
	})
	b.Run("check", func(b *testing.B) {
		db, err := bolt.Open(path, 0o600, &bolt.Options{Timeout: time.Second, FreelistType: bolt.FreelistMapType})
		if err != nil {
			b.Fatal(err)
		}
		defer db.Close()
		for b.Loop() {
			if err := checkFile(db, path); err != nil {
				b.Fatal(err)
			}
		}
	})
}

// BenchmarkWriteMark is what the mark adds to each commit that moves it:
// one write of its bytes in place, without an fsync.
func BenchmarkWriteMark(b *testing.B) {
	s := openStore(b, b.TempDir(), Options{})
	pos := s.marked
	for b.Loop() {
		pos.Events++
		s.writeMark(pos)
	}
}
