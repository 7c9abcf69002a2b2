package verify

import (
	"bytes"
	"crypto/ed25519"
	"crypto/rsa"
	"crypto/x509"
	"encoding/base64"
	"encoding/pem"
	"os"
	"os/exec"
	"path/filepath"
	"testing"
	"time"

	"github.com/petitiond/petitiond/internal/keyserver"
)

// Letters signed by dkimpy (Debian's python3-dkim, another signer than the
// go-msgauth one the other tests sign with) pass Verify in every
// canonicalisation, and fail it once tampered with, as they fail
// go-msgauth's dkim.Verify.
func TestVerifyLettersSignedByDkimpy(t *testing.T) {
	dkimsign := needDkimsign(t)
	e := newEnv(t, 2*time.Second)
	d := newDifferential(t)
	keys := []*keyserver.Key{rsaKey(t, "example.org", "rsa"), edKey(t, "example.org", "ed")}
	dir := t.TempDir()
	cans := []string{"simple", "relaxed"}
	// Not "white space everywhere" nor "non-ASCII": dkimsign refuses their
	// "TO :" and "X-Ñame:" fields. Not "lone CR": in relaxed body
	// canonicalisation dkimpy and go-msgauth hash a lone CR differently,
	// and Verify, as go-msgauth, fails such a letter (which fails safe).
	// and leaves the letter unsigned.
	letters := differentialLetters()
	for _, k := range keys {
		e.ks.SetKey(k)
		d.records[keyName(k.Selector+"._domainkey."+k.Domain)] = []string{k.TXT()}
		keyFile := filepath.Join(dir, k.Selector+".key")
		if err := os.WriteFile(keyFile, dkimpyKey(t, k), 0o600); err != nil {
			t.Fatal(err)
		}
		for _, hc := range cans {
			for _, bc := range cans {
				for _, name := range []string{"plain", "folded and repeated fields", "only empty body lines", "empty body", "body without CRLF"} {
					what := k.Algo + " " + hc + "/" + bc + " " + name
					alg := "rsa-sha256"
					if k.Algo == "ed25519" {
						alg = "ed25519-sha256"
					}
					cmd := exec.Command(dkimsign, "--hcanon", hc, "--bcanon", bc, "--signalg", alg, k.Selector, k.Domain, keyFile)
					cmd.Stdin = bytes.NewReader(letters[name])
					var stderr bytes.Buffer
					cmd.Stderr = &stderr
					signed, err := cmd.Output()
					if err != nil {
						t.Fatalf("%s: dkimsign: %v\n%s", what, err, stderr.Bytes())
					}
					if !bytes.HasPrefix(signed, []byte("DKIM-Signature:")) {
						t.Fatalf("%s: dkimsign left the letter unsigned:\n%s", what, stderr.Bytes())
					}
					// dkimsign writes the message as it read it, its
					// own field with LF line ends: make them CRLF as
					// a letter arrives over SMTP.
					signed = withoutBareLF(signed)
					want := Verdict{Pass: true, Domain: k.Domain, Selector: k.Selector, Reason: "pass"}
					e.check(t, signed, want)
					d.compare(t, what, signed)
					tampered := bytes.Replace(signed, []byte("\r\n\r\n"), []byte("\r\n\r\nP.S. Firmado por otra mano.\r\n"), 1)
					from, _ := ParseFrom(tampered)
					if got := e.v.Verify(t.Context(), tampered, from); got.Pass {
						t.Errorf("%s: a body changed after signing passes: %+v", what, got)
					}
					d.compare(t, what+", body changed", tampered)
				}
			}
		}
	}
}

// dkimpyKey is k's private key in the file format dkimsign reads: PEM
// PKCS#1 for RSA, the base64 seed for ed25519.
func dkimpyKey(t *testing.T, k *keyserver.Key) []byte {
	t.Helper()
	switch priv := k.Signer.(type) {
	case *rsa.PrivateKey:
		return pem.EncodeToMemory(&pem.Block{Type: "RSA PRIVATE KEY", Bytes: x509.MarshalPKCS1PrivateKey(priv)})
	case ed25519.PrivateKey:
		return []byte(base64.StdEncoding.EncodeToString(priv.Seed()) + "\n")
	}
	t.Fatalf("key %s: signer %T", k.Selector, k.Signer)
	return nil
}

// needDkimsign finds dkimsign; without it the test skips, unless
// PETITIOND_CI=1, where CI installed python3-dkim.
func needDkimsign(t *testing.T) string {
	t.Helper()
	path, err := exec.LookPath("dkimsign")
	if err != nil {
		msg := "dkimsign (Debian package python3-dkim) is not installed; this test verifies letters it signs"
		if os.Getenv("PETITIOND_CI") == "1" {
			t.Fatal(msg)
		}
		t.Skip(msg)
	}
	return path
}
