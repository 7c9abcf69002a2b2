package relay

import (
	"crypto/tls"
	"fmt"
	"os"
	"strings"

	"github.com/petitiond/petitiond/config"
	"github.com/petitiond/petitiond/loopback"
	"github.com/petitiond/petitiond/relay/admin"
	"github.com/petitiond/petitiond/relay/batch"
	"github.com/petitiond/petitiond/relay/verify"
)

// Check does with a valid config what New does short of opening the store
// and listening: the admin listener's token rule, the DKIM signing key read
// and its domain aligned with campaign.from's (else receivers' DMARC checks
// ignore the signature), the TLS certificate and key read, the outbound
// transport made (the delivery password read), the store directory not a
// file. New refuses a config Check refuses, so `petitiond check-config`
// (which runs only Check) and `petitiond serve` agree. The error, if any,
// is config.Problems with every problem found; warnings say what works but
// deserves a second look.
func Check(cfg *config.Config, opt Options) (warnings []string, err error) {
	var ps config.Problems
	add := func(key, msg string) { ps = append(ps, config.Problem{Key: key, Msg: msg}) }

	token := cfg.Admin.Token
	if opt.AdminToken != "" {
		token = opt.AdminToken
	}
	if err := admin.CheckListen(cfg.Admin.Listen, token); err != nil {
		add("", err.Error()) // it names admin.listen and admin.token
	}
	if cfg.DKIM.KeyFile != "" {
		if _, err := batch.LoadSigner(cfg.DKIM.Domain, cfg.DKIM.Selector, cfg.DKIM.KeyFile); err != nil {
			add("dkim.key_file", strings.TrimPrefix(err.Error(), "dkim: "))
		}
		from := cfg.Campaign.From[strings.LastIndexByte(cfg.Campaign.From, '@')+1:]
		if !verify.Aligned(cfg.DKIM.Domain, from) {
			add("dkim.domain", fmt.Sprintf("%q does not align with %q, the domain of campaign.from: receivers' DMARC checks "+
				"would not count the batches' signature (sign as %s or a domain that shares its organisational domain)",
				cfg.DKIM.Domain, from, from))
		}
	}
	if cfg.SMTP.TLSCert != "" {
		if _, err := tls.LoadX509KeyPair(cfg.SMTP.TLSCert, cfg.SMTP.TLSKey); err != nil {
			add("smtp.tls_cert", "with smtp.tls_key: "+err.Error())
		}
	}
	if _, err := newTransport(cfg, opt); err != nil {
		add("", err.Error()) // it names its key
	}
	if fi, err := os.Stat(cfg.Store.Dir); err == nil && !fi.IsDir() {
		add("store.dir", fmt.Sprintf("%s is a file, not a directory", cfg.Store.Dir))
	}

	for _, l := range cfg.SMTP.Listen {
		if cfg.SMTP.TLSCert == "" && !loopback.HostPort(l) {
			warnings = append(warnings, fmt.Sprintf("smtp.listen %q is reachable from other machines and smtp.tls_cert is empty: "+
				"STARTTLS is not offered, so letters (who signed, and their words) cross the network in clear text", l))
		}
	}
	if cfg.DKIM.KeyFile == "" && cfg.Secondary.Primary == "" { // a secondary sends no batches
		warnings = append(warnings, "[dkim] is empty: batches go out unsigned, and the recipients' providers may file them as spam "+
			"(petitiond dkim-keygen makes a key)")
	}
	if len(cfg.Secondary.Trusted) > 0 && len(cfg.Secondary.Names) == 0 {
		warnings = append(warnings, "secondary.trusted is set and secondary.names is empty: forged Authentication-Results fields "+
			"naming the secondaries cannot be removed; they are not believed, but travel with the letters to the organisations "+
			"(list each secondary's smtp.hostname)")
	}
	if cfg.Admin.Listen != "" && token == "" {
		warnings = append(warnings, fmt.Sprintf("admin.token is empty, nor given in the environment: the admin listener on %s "+
			"is guarded by the token made at first start in %s, which whoever may read that file can use",
			cfg.Admin.Listen, admin.TokenFile(cfg.Store.Dir)))
	}
	if len(ps) > 0 {
		return warnings, ps
	}
	return warnings, nil
}
