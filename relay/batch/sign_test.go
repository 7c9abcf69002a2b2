package batch

import (
	"bytes"
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"encoding/pem"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func writeKeyFile(t *testing.T, data []byte) string {
	t.Helper()
	path := filepath.Join(t.TempDir(), "dkim.key")
	if err := os.WriteFile(path, data, 0o600); err != nil {
		t.Fatal(err)
	}
	return path
}

func writePEM(t *testing.T, blockType string, der []byte) string {
	t.Helper()
	return writeKeyFile(t, pem.EncodeToMemory(&pem.Block{Type: blockType, Bytes: der}))
}

func pkcs8(t *testing.T, key any) []byte {
	t.Helper()
	der, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		t.Fatal(err)
	}
	return der
}

func TestSignVerifies(t *testing.T) {
	edKey, rsaKey := newEd25519(t), newRSA(t)
	supporterKey := newEd25519(t)
	letter := dkimSign(t, plainLetter("Ana <ana@supporter.example>", "Libertad", "¡Libertad!"), "supporter.example", "s", supporterKey)
	msg, err := Build(baseSpec(
		Letter{ID: "L1", Received: t0, Name: "Ana", Address: "ana@supporter.example", DKIMDomain: "supporter.example", Raw: letter},
		Letter{ID: "L2", Received: t0, Name: "Bo\r\nBcc: x", Address: "bo@x.example", Raw: plainLetter("bo@x.example", "x", strings.Repeat("y ", 1000))},
	))
	if err != nil {
		t.Fatal(err)
	}

	tests := []struct {
		name string
		file string
		key  crypto.Signer
	}{
		{"PKCS#8 ed25519", writePEM(t, "PRIVATE KEY", pkcs8(t, edKey)), edKey},
		{"PKCS#8 RSA", writePEM(t, "PRIVATE KEY", pkcs8(t, rsaKey)), rsaKey},
		{"PKCS#1 RSA", writePEM(t, "RSA PRIVATE KEY", x509.MarshalPKCS1PrivateKey(rsaKey)), rsaKey},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			signer, err := LoadSigner("campaign.example", "batch2024", tt.file)
			if err != nil {
				t.Fatal(err)
			}
			keys := testKeys{}
			keys.addKey(t, "campaign.example", "batch2024", tt.key)
			keys.addKey(t, "supporter.example", "s", supporterKey)

			signed, err := signer.Sign(msg)
			if err != nil {
				t.Fatal(err)
			}
			assertWellFormed(t, signed)
			if !bytes.HasSuffix(signed, msg) || !bytes.HasPrefix(signed, []byte("DKIM-Signature: ")) {
				t.Fatalf("Sign must return a DKIM-Signature field followed by the message")
			}
			vs := keys.verify(t, signed)
			if len(vs) != 1 || vs[0].Err != nil {
				t.Fatalf("verification: %+v", vs[0])
			}
			if vs[0].Domain != "campaign.example" {
				t.Errorf("d=%q", vs[0].Domain)
			}
			got := strings.ToLower(strings.Join(vs[0].HeaderKeys, ":"))
			if got != "from:from:to:cc:subject:date:message-id:mime-version:content-type" {
				t.Errorf("h=%s", got)
			}
			sigField := string(signed[:len(signed)-len(msg)])
			if !strings.Contains(sigField, "c=relaxed/relaxed") {
				t.Errorf("not relaxed/relaxed: %s", sigField)
			}
			if strings.Contains(sigField, " x=") || strings.Contains(sigField, " l=") {
				t.Errorf("signature has x= or l=: %s", sigField)
			}

			// The signed batch still parses, and the letter inside still
			// verifies with its own signature.
			p := parseBatch(t, signed)
			if lv := keys.verify(t, p.digest[0]); lv[0].Err != nil || lv[0].Domain != "supporter.example" {
				t.Errorf("letter DKIM: %+v", lv[0])
			}

			// Oversigning: a From added on the way breaks the signature, as
			// do a changed subject and a changed body. (Only From is
			// oversigned, so a second Cc is not caught here; a Cc where
			// there was none is: see TestSignNoCc.)
			for name, tamper := range map[string]func([]byte) []byte{
				"extra From": func(m []byte) []byte {
					i := bytes.Index(m, []byte("\r\nFrom: ")) + 2
					return append(m[:i:i], append([]byte("From: boss@campaign.example\r\n"), m[i:]...)...)
				},
				"subject": func(m []byte) []byte {
					return bytes.Replace(m, []byte("batch_7"), []byte("batch_8"), 1)
				},
				"body": func(m []byte) []byte {
					return bytes.Replace(m, []byte("Running total"), []byte("Running totaL"), 1)
				},
			} {
				tampered := tamper(bytes.Clone(signed))
				if bytes.Equal(tampered, signed) {
					t.Fatalf("%s: tampering did nothing", name)
				}
				if vs := keys.verify(t, tampered); vs[0].Err == nil {
					t.Errorf("%s: still verifies", name)
				}
			}
		})
	}
}

// A one-recipient batch has no Cc; listing Cc in h= must not stop it
// verifying, and must stop a Cc being added.
func TestSignNoCc(t *testing.T) {
	key := newEd25519(t)
	s := baseSpec(Letter{ID: "L1", Received: t0, Address: "a@b.example", Raw: plainLetter("a@b.example", "x", "y")})
	s.Recipients = s.Recipients[:1]
	msg, err := Build(s)
	if err != nil {
		t.Fatal(err)
	}
	signer, err := LoadSigner("campaign.example", "s1", writePEM(t, "PRIVATE KEY", pkcs8(t, key)))
	if err != nil {
		t.Fatal(err)
	}
	signed, err := signer.Sign(msg)
	if err != nil {
		t.Fatal(err)
	}
	keys := testKeys{}
	keys.addKey(t, "campaign.example", "s1", key)
	if vs := keys.verify(t, signed); vs[0].Err != nil {
		t.Fatalf("verification: %v", vs[0].Err)
	}
	i := bytes.Index(signed, []byte("\r\nTo: ")) + 2
	tampered := append(bytes.Clone(signed[:i]), append([]byte("Cc: spy@elsewhere.example\r\n"), signed[i:]...)...)
	if vs := keys.verify(t, tampered); vs[0].Err == nil {
		t.Errorf("a Cc added later still verifies")
	}
}

func TestLoadSignerErrors(t *testing.T) {
	ecKey, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	ecDER, err := x509.MarshalECPrivateKey(ecKey)
	if err != nil {
		t.Fatal(err)
	}
	missing := filepath.Join(t.TempDir(), "missing.key")
	tests := map[string]struct {
		file string
		want string
	}{
		"missing":          {missing, "missing.key"},
		"garbage":          {writeKeyFile(t, []byte("not a key at all\n")), "no PEM"},
		"empty":            {writeKeyFile(t, nil), "no PEM"},
		"broken PKCS#8":    {writePEM(t, "PRIVATE KEY", []byte("nonsense")), "PKCS#8"},
		"broken PKCS#1":    {writePEM(t, "RSA PRIVATE KEY", []byte("nonsense")), "PKCS#1"},
		"ECDSA PKCS#8":     {writePEM(t, "PRIVATE KEY", pkcs8(t, ecKey)), "unsupported key type"},
		"EC PRIVATE KEY":   {writePEM(t, "EC PRIVATE KEY", ecDER), "not supported"},
		"encrypted PKCS#8": {writePEM(t, "ENCRYPTED PRIVATE KEY", []byte("x")), "encrypted"},
		"certificate only": {writePEM(t, "CERTIFICATE", []byte("x")), "no PEM"},
	}
	for name, tt := range tests {
		t.Run(name, func(t *testing.T) {
			_, err := LoadSigner("campaign.example", "s1", tt.file)
			if err == nil {
				t.Fatal("LoadSigner succeeded")
			}
			msg := err.Error()
			if !strings.Contains(msg, tt.file) || !strings.Contains(msg, tt.want) {
				t.Errorf("error %q should name %s and say %q", msg, tt.file, tt.want)
			}
		})
	}
}

// The names are checked by the same rule as the configuration's
// (package dnsname); a fully qualified domain signs without its dot.
func TestLoadSignerNames(t *testing.T) {
	key := newEd25519(t)
	file := writePEM(t, "PRIVATE KEY", pkcs8(t, key))
	for _, tt := range []struct{ domain, selector, want string }{
		{"", "s1", "domain"},
		{"campaign.example", "", "selector"},
		{"campaign.example; l=1", "s1", "domain"},
		{"campaign.example", "s1; x=1", "selector"},
		{"campaña.example", "s1", "xn--"},
		{"campaign..example", "s1", "domain"},
		{"campaign.example", "s_1", "selector"},
		{"campaign.example", "-sel-", "selector"},
		{"campaign.example", "s1.", "selector"},
	} {
		_, err := LoadSigner(tt.domain, tt.selector, file)
		if err == nil || !strings.Contains(err.Error(), tt.want) || !strings.Contains(err.Error(), "is not a DNS name") {
			t.Errorf("LoadSigner(%q, %q) = %v, want a DNS name error about the %s", tt.domain, tt.selector, err, tt.want)
		}
	}

	signer, err := LoadSigner("campaign.example.", "pd1.batches", file)
	if err != nil {
		t.Fatal(err)
	}
	signed, err := signer.Sign([]byte("From: relay@campaign.example\r\nSubject: x\r\n\r\nbody\r\n"))
	if err != nil {
		t.Fatal(err)
	}
	keys := testKeys{}
	keys.addKey(t, "campaign.example", "pd1.batches", key)
	if vs := keys.verify(t, signed); vs[0].Err != nil || vs[0].Domain != "campaign.example" {
		t.Errorf("verification: d=%q, %v", vs[0].Domain, vs[0].Err)
	}
}
