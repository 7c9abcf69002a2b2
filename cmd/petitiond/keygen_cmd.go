package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"path/filepath"
	"strings"
	"unicode/utf8"

	"golang.org/x/net/idna"

	"github.com/petitiond/petitiond/dkimkey"
	"github.com/petitiond/petitiond/dnsname"
	"github.com/petitiond/petitiond/safeio"
)

const keygenUsage = "dkim-keygen -domain D -selector S [-algo ed25519|rsa] [-out FILE]"

// keygenNote follows the flag list in -h.
const keygenNote = `
Writes a new DKIM private key (PEM, PKCS#8 "PRIVATE KEY", mode 0600) for
signing outbound batches, and prints the DNS TXT record to publish at
S._domainkey.D and the [dkim] lines for petitiond.toml. An existing file is
never overwritten.

ed25519 (RFC 8463) keys are small, but some large mail providers do not check
ed25519 signatures yet and treat such mail as unsigned; if the recipients'
mail is hosted by one of them, use -algo rsa (2048 bits).
`

func runDKIMKeygen(_ context.Context, args []string, stdout, stderr io.Writer) error {
	fl := newFlags("dkim-keygen", keygenUsage, stderr)
	domainFlag := fl.String("domain", "", "signing domain (d=), normally the domain of campaign.from (required)")
	selectorFlag := fl.String("selector", "", "selector (s=); the key is published at SELECTOR._domainkey.DOMAIN (required)")
	algo := fl.String("algo", dkimkey.Ed25519, "key type: ed25519 or rsa")
	out := fl.String("out", "", "key file to create (default DOMAIN.SELECTOR.key in the current directory)")
	printUsage := fl.Usage
	fl.Usage = func() {
		printUsage()
		fmt.Fprint(stderr, keygenNote)
	}
	if err := parseFlags(fl, args); err != nil {
		return err
	}
	bad := func(format string, a ...any) error {
		fmt.Fprintf(stderr, "petitiond dkim-keygen: "+format+"\n", a...)
		fmt.Fprintf(stderr, "usage: petitiond %s\n", keygenUsage)
		return errUsage
	}
	if fl.NArg() > 0 {
		return bad("unexpected argument %q (flags only)", fl.Arg(0))
	}
	domain, err := keygenDomain(*domainFlag)
	if err != nil {
		return bad("-domain: %v", err)
	}
	selector := *selectorFlag
	if selector == "" {
		return bad("-selector: required")
	}
	if err := dnsname.CheckSelector(selector); err != nil {
		return bad("-selector: %v", err)
	}
	if *algo != dkimkey.Ed25519 && *algo != dkimkey.RSA {
		return bad("-algo %q: want ed25519 or rsa", *algo)
	}
	path := *out
	if path == "" {
		path = domain + "." + selector + ".key"
	}

	key, err := dkimkey.Generate(*algo)
	if err != nil {
		return err
	}
	pemBytes, err := dkimkey.MarshalPEM(key)
	if err != nil {
		return err
	}
	record, err := dkimkey.TXTRecord(domain, selector, key.Public())
	if err != nil {
		return err
	}
	if err := writeNewFile(path, pemBytes); err != nil {
		return err
	}
	// The config line must work whatever directory the daemon starts in.
	abs, err := filepath.Abs(path)
	if err != nil {
		abs = path
	}

	fmt.Fprintf(stdout, "Wrote a new %s DKIM key to %s (mode 0600). Keep it secret; back it up.\n\n", *algo, abs)
	fmt.Fprintf(stdout, "1. Publish this TXT record in the DNS zone of %s:\n\n%s\n\n", domain, record)
	fmt.Fprintf(stdout, "   (A DNS provider's web form wants the name %q and the value without quotes;\n"+
		"   most join long values themselves.)\n\n", selector+"._domainkey")
	fmt.Fprintf(stdout, "2. Sign batches with it: in petitiond.toml,\n\n[dkim]\ndomain   = %q\nselector = %q\nkey_file = %q\n\n", domain, selector, abs)
	fmt.Fprintf(stdout, "3. Once published, check the record with\n   dig +short TXT %s\n", strings.TrimSuffix(dkimkey.Name(domain, selector), "."))
	return nil
}

// keygenDomain checks -domain and turns an internationalised name into the
// ASCII form DNS and the d= tag need. An ASCII name is checked as given, so
// it gets the same verdict and message as dkim.domain in check-config.
func keygenDomain(d string) (string, error) {
	d = strings.TrimSuffix(d, ".")
	if d == "" {
		return "", errors.New("required")
	}
	ascii := d
	if strings.ContainsFunc(d, func(r rune) bool { return r >= utf8.RuneSelf }) {
		var err error
		if ascii, err = idna.Lookup.ToASCII(d); err != nil {
			return "", fmt.Errorf("%q is not a domain name: %v", d, err)
		}
	}
	if err := dnsname.CheckDomain(ascii); err != nil {
		return "", err
	}
	return ascii, nil
}

// writeNewFile creates path with mode 0600 and data, durably. It refuses
// to replace an existing file: overwriting a key whose record is published
// would break every signature until the DNS is changed too.
func writeNewFile(path string, data []byte) error {
	err := safeio.WriteNew(path, data, 0o600)
	if errors.Is(err, fs.ErrExist) {
		return fmt.Errorf("%s already exists; not overwriting it (remove it first, or choose another -out)", path)
	}
	if err != nil {
		return err
	}
	return safeio.SyncDir(filepath.Dir(path))
}
