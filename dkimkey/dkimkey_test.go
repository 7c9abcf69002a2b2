package dkimkey

import (
	"bytes"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"encoding/pem"
	"regexp"
	"slices"
	"strings"
	"testing"

	"github.com/emersion/go-msgauth/dkim"
)

// quoted finds the character-strings of a zone-file TXT line.
var quoted = regexp.MustCompile(`"([^"]*)"`)

func TestGenerateMarshalPublish(t *testing.T) {
	for _, algo := range []string{Ed25519, RSA} {
		t.Run(algo, func(t *testing.T) {
			key, err := Generate(algo)
			if err != nil {
				t.Fatal(err)
			}
			pemBytes, err := MarshalPEM(key)
			if err != nil {
				t.Fatal(err)
			}
			block, rest := pem.Decode(pemBytes)
			if block == nil || block.Type != "PRIVATE KEY" || len(bytes.TrimSpace(rest)) != 0 {
				t.Fatalf("PEM = %q, want one PRIVATE KEY block", pemBytes)
			}
			if _, err := x509.ParsePKCS8PrivateKey(block.Bytes); err != nil {
				t.Fatalf("PKCS#8: %v", err)
			}
			// What the signer does with [dkim].key_file.
			signer, err := ParsePEM(pemBytes)
			if err != nil {
				t.Fatalf("ParsePEM: %v", err)
			}

			rec, err := TXTRecord("example.org", "sel", key.Public())
			if err != nil {
				t.Fatal(err)
			}
			if !strings.HasPrefix(rec, "sel._domainkey.example.org. IN TXT \"v=DKIM1; k="+algo+"; p=") {
				t.Errorf("record = %q", rec)
			}
			var parts []string
			for _, m := range quoted.FindAllStringSubmatch(rec, -1) {
				if len(m[1]) > 255 {
					t.Errorf("string of %d bytes", len(m[1]))
				}
				parts = append(parts, m[1])
			}
			if algo == RSA && len(parts) < 2 {
				t.Errorf("2048-bit RSA record in %d string(s), want it split", len(parts))
			}
			value, _ := TXTValue(key.Public())
			if strings.Join(parts, "") != value {
				t.Errorf("joined strings differ from TXTValue")
			}

			// What a verifier does with the published record: sign with the
			// key read back from PEM, verify against the joined strings.
			msg := "From: ana@example.org\r\nTo: b@example.net\r\nSubject: hola\r\n\r\nLibertad.\r\n"
			var signed bytes.Buffer
			err = dkim.Sign(&signed, strings.NewReader(msg), &dkim.SignOptions{Domain: "example.org", Selector: "sel", Signer: signer})
			if err != nil {
				t.Fatal(err)
			}
			vs, err := dkim.VerifyWithOptions(&signed, &dkim.VerifyOptions{
				LookupTXT: func(name string) ([]string, error) {
					if name != "sel._domainkey.example.org" {
						t.Errorf("lookup %q", name)
					}
					return []string{strings.Join(parts, "")}, nil
				},
			})
			if err != nil || len(vs) != 1 || vs[0].Err != nil {
				t.Fatalf("verify: %v %+v", err, vs)
			}
		})
	}
}

func TestGenerateUnknownAlgo(t *testing.T) {
	if _, err := Generate("dsa"); err == nil {
		t.Fatal("Generate(dsa) succeeded")
	}
}

func TestUnsupportedKey(t *testing.T) {
	k, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := TXTValue(k.Public()); err == nil {
		t.Error("TXTValue accepted an ECDSA key (DKIM has no such k=)")
	}
	if err := checkKey(k.Public()); err == nil {
		t.Error("checkKey accepted an ECDSA key")
	}
	der, err := x509.MarshalPKCS8PrivateKey(k)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := ParsePEM(pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: der})); err == nil || !strings.Contains(err.Error(), "unsupported key type") {
		t.Errorf("ParsePEM of an ECDSA key = %v", err)
	}
}

func TestSplitTXT(t *testing.T) {
	for _, tc := range []struct {
		n    int
		want []int
	}{{0, []int{0}}, {255, []int{255}}, {256, []int{255, 1}}, {600, []int{255, 255, 90}}} {
		parts := splitTXT(strings.Repeat("a", tc.n))
		var got []int
		for _, p := range parts {
			got = append(got, len(p))
		}
		if !slices.Equal(got, tc.want) {
			t.Errorf("splitTXT(%d bytes) = %v, want %v", tc.n, got, tc.want)
		}
	}
}

func TestName(t *testing.T) {
	for _, d := range []string{"example.org", "example.org."} {
		if got := Name(d, "s1"); got != "s1._domainkey.example.org." {
			t.Errorf("Name(%q) = %q", d, got)
		}
	}
}
