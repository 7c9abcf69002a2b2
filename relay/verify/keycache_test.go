package verify

import (
	"context"
	"testing"
	"time"

	"github.com/petitiond/petitiond/internal/keyserver"
)

func TestKeyCache(t *testing.T) {
	now := time.Unix(1000, 0)
	c := newKeyCache(time.Minute, 2, func() time.Time { return now })
	if _, ok := c.get("s._domainkey.a.test"); ok {
		t.Fatal("hit on an empty cache")
	}
	c.put("S._domainkey.A.test", []string{"v=DKIM1; p=x"})
	if got, ok := c.get("s._domainkey.a.test"); !ok || got[0] != "v=DKIM1; p=x" {
		t.Fatalf("get after put: %v %v", got, ok)
	}
	now = now.Add(time.Minute)
	if _, ok := c.get("s._domainkey.a.test"); ok {
		t.Error("entry outlived its lifetime")
	}
	c.put("a", []string{"1"})
	c.put("b", []string{"2"})
	c.put("c", []string{"3"}) // over the bound: starts afresh
	if _, ok := c.get("a"); ok {
		t.Error("cache grew past its bound")
	}
	if _, ok := c.get("c"); !ok {
		t.Error("newest entry missing")
	}
	var off *keyCache
	off.put("a", []string{"1"})
	if _, ok := off.get("a"); ok {
		t.Error("nil cache returned a hit")
	}
}

// TestVerifierKeyCache: with KeyCache set, a second letter signed with the
// same key verifies without asking DNS again; without it, every letter asks.
func TestVerifierKeyCache(t *testing.T) {
	ks, err := keyserver.Start("127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ks.Close()
	k, err := keyserver.NewKey("cache.test", "s", "ed25519")
	if err != nil {
		t.Fatal(err)
	}
	ks.SetKey(k)
	msg, err := k.Sign([]byte("From: a@cache.test\r\nSubject: x\r\n\r\nhola\r\n"), keyserver.SignOptions{})
	if err != nil {
		t.Fatal(err)
	}
	from := Sender{Address: "a@cache.test", Domain: "cache.test"}
	cached := New(Options{Resolver: ks.Addr, Timeout: time.Second, KeyCache: time.Minute})
	plain := New(Options{Resolver: ks.Addr, Timeout: time.Second})
	for _, v := range []*Verifier{cached, plain} {
		if vd := v.Verify(context.Background(), msg, from); !vd.Pass {
			t.Fatalf("first letter: %+v", vd)
		}
	}
	ks.Remove("s._domainkey.cache.test")
	if vd := cached.Verify(context.Background(), msg, from); !vd.Pass {
		t.Errorf("cached key not used: %+v", vd)
	}
	if vd := plain.Verify(context.Background(), msg, from); vd.Pass {
		t.Errorf("without a cache the removed key still verified")
	}
}

// TestVerifierKeyCacheRotation: a key replaced under the same selector is
// fetched afresh when the cached one fails, so rotation never costs a letter.
func TestVerifierKeyCacheRotation(t *testing.T) {
	ks, err := keyserver.Start("127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ks.Close()
	from := Sender{Address: "a@rot.test", Domain: "rot.test"}
	v := New(Options{Resolver: ks.Addr, Timeout: time.Second, KeyCache: time.Hour})
	for i := 0; i < 2; i++ {
		k, err := keyserver.NewKey("rot.test", "s", "ed25519")
		if err != nil {
			t.Fatal(err)
		}
		ks.SetKey(k) // the second round replaces the first key
		msg, err := k.Sign([]byte("From: a@rot.test\r\nSubject: x\r\n\r\nhola\r\n"), keyserver.SignOptions{})
		if err != nil {
			t.Fatal(err)
		}
		if vd := v.Verify(context.Background(), msg, from); !vd.Pass {
			t.Fatalf("key %d: %+v", i, vd)
		}
	}
}
