package config

import (
	"errors"
	"fmt"
	"net"
	"net/mail"
	"net/netip"
	"strconv"
	"strings"
	"time"
	"unicode"

	"github.com/petitiond/petitiond/dnsname"
	"github.com/petitiond/petitiond/loopback"
)

// Validate checks c and returns every problem found (nil when c is valid).
// The problems name their key but carry no file or line: Parse adds those.
func (c *Config) Validate() Problems {
	var v validator

	// [campaign]
	switch name := c.Campaign.Name; {
	case strings.TrimSpace(name) == "":
		v.add("campaign.name", "required: the campaign's name, used in batch subjects")
	case strings.IndexFunc(name, unicode.IsControl) >= 0:
		// It goes into the Subject: header; a newline there would let the
		// config inject headers.
		v.add("campaign.name", "must be one line without control characters")
	}
	addresses := v.addressList("campaign.addresses", c.Campaign.Addresses, "the addresses supporters write to")
	v.addressList("campaign.recipients", c.Campaign.Recipients, "the organisations that receive batches")
	for _, r := range c.Campaign.Recipients {
		if addresses[strings.ToLower(r)] {
			v.add("campaign.recipients", fmt.Sprintf("%q is also in campaign.addresses: its batches would come back as letters", r))
		}
	}
	oneOf(&v, "campaign.language", c.Campaign.Language, []string{LanguageSpanish, LanguageEnglish})
	if c.Campaign.Timezone == "" {
		v.add("campaign.timezone", `required: an IANA time zone such as "America/Santiago"`)
	} else if _, err := time.LoadLocation(c.Campaign.Timezone); err != nil {
		v.add("campaign.timezone", fmt.Sprintf("%q is not an IANA time zone (like \"America/Santiago\" or \"Europe/Madrid\")", c.Campaign.Timezone))
	}
	if c.Campaign.From == "" {
		v.add("campaign.from", "required: the From: address of batch messages")
	} else if err := checkAddress(c.Campaign.From); err != nil {
		v.add("campaign.from", err.Error())
	}

	// [smtp]
	if len(c.SMTP.Listen) == 0 {
		v.add("smtp.listen", "required: at least one host:port to accept mail on")
	}
	seen := make(map[string]bool)
	for _, l := range c.SMTP.Listen {
		if err := checkHostPort(l, false, true); err != nil {
			v.add("smtp.listen", err.Error())
		} else if seen[l] {
			v.add("smtp.listen", fmt.Sprintf("%q is listed twice", l))
		}
		seen[l] = true
	}
	if err := dnsname.CheckDomain(c.SMTP.Hostname); err != nil {
		v.add("smtp.hostname", err.Error())
	}
	v.positive("smtp.max_message_bytes", c.SMTP.MaxMessageBytes)
	v.positive("smtp.max_connections", int64(c.SMTP.MaxConnections))
	if v.positive("smtp.max_per_ip", int64(c.SMTP.MaxPerIP)) && c.SMTP.MaxConnections > 0 && c.SMTP.MaxPerIP > c.SMTP.MaxConnections {
		v.add("smtp.max_per_ip", fmt.Sprintf("%d is more than smtp.max_connections (%d)", c.SMTP.MaxPerIP, c.SMTP.MaxConnections))
	}
	v.duration("smtp.timeout", c.SMTP.Timeout)
	switch {
	case c.SMTP.TLSCert != "" && c.SMTP.TLSKey == "":
		v.add("smtp.tls_key", "required when smtp.tls_cert is set (both set: STARTTLS offered)")
	case c.SMTP.TLSCert == "" && c.SMTP.TLSKey != "":
		v.add("smtp.tls_cert", "required when smtp.tls_key is set (both set: STARTTLS offered)")
	}

	// [verify]
	oneOf(&v, "verify.unverified", c.Verify.Unverified, UnverifiedPolicies)
	if c.Verify.DNSResolver != "" {
		if err := checkHostPort(c.Verify.DNSResolver, true, false); err != nil {
			v.add("verify.dns_resolver", err.Error())
		}
	}
	v.duration("verify.dns_timeout", c.Verify.DNSTimeout)
	v.duration("verify.confirm_ttl", c.Verify.ConfirmTTL)
	v.positive("verify.confirm_per_hour", int64(c.Verify.ConfirmPerHour))

	// [batch]
	v.positive("batch.max_letters", int64(c.Batch.MaxLetters))
	v.duration("batch.max_wait", c.Batch.MaxWait)
	// A batch must hold at least one letter of the largest size accepted,
	// with room for the summary and CSV around it.
	if v.positive("batch.max_bytes", c.Batch.MaxBytes) && c.SMTP.MaxMessageBytes > 0 && c.Batch.MaxBytes < 2*c.SMTP.MaxMessageBytes {
		v.add("batch.max_bytes", fmt.Sprintf("%d is less than 2 x smtp.max_message_bytes (%d): a batch must fit the largest letter accepted",
			c.Batch.MaxBytes, 2*c.SMTP.MaxMessageBytes))
	}

	// [delivery]
	d := c.Delivery
	oneOf(&v, "delivery.mode", d.Mode, DeliveryModes)
	oneOf(&v, "delivery.starttls", d.StartTLS, StartTLSPolicies)
	if d.Smarthost != "" {
		if err := checkHostPort(d.Smarthost, true, false); err != nil {
			v.add("delivery.smarthost", err.Error())
		}
	}
	if d.Username != "" {
		if d.PasswordFile == "" {
			v.add("delivery.password_file", "required when delivery.username is set")
		}
		if d.Smarthost == "" {
			// AUTH is only ever sent to a smarthost, never to recipients' MX.
			v.add("delivery.username", "set, but delivery.smarthost is empty: AUTH is only used with a smarthost")
		} else if d.StartTLS == StartTLSOff && !loopback.HostPort(d.Smarthost) {
			// The daemon refuses to send a password in clear to a remote
			// host; say so now rather than at every delivery attempt.
			v.add("delivery.starttls", `"off" with delivery.username: the password would go in clear to a host that is not loopback`)
		}
	}
	if d.Mode == DeliveryMaildir && d.Maildir == "" {
		v.add("delivery.maildir", `required when delivery.mode is "maildir"`)
	}
	v.duration("delivery.retry_min", d.RetryMin)
	v.duration("delivery.retry_max", d.RetryMax)
	v.duration("delivery.give_up_after", d.GiveUpAfter)
	if d.RetryMin.Duration > d.RetryMax.Duration {
		v.add("delivery.retry_min", fmt.Sprintf("%s is more than delivery.retry_max (%s)", fmtDuration(d.RetryMin), fmtDuration(d.RetryMax)))
	}

	// [dkim]: all or nothing, so a half-done setup is not silently unsigned.
	k := c.DKIM
	if k.Domain != "" || k.Selector != "" || k.KeyFile != "" {
		for _, f := range []struct{ key, val string }{
			{"dkim.domain", k.Domain}, {"dkim.selector", k.Selector}, {"dkim.key_file", k.KeyFile},
		} {
			if f.val == "" {
				v.add(f.key, "required when any of dkim.domain, dkim.selector, dkim.key_file is set")
			}
		}
	}
	if k.Domain != "" {
		if err := dnsname.CheckDomain(k.Domain); err != nil {
			v.add("dkim.domain", err.Error())
		}
	}
	if k.Selector != "" {
		if err := dnsname.CheckSelector(k.Selector); err != nil {
			v.add("dkim.selector", err.Error())
		}
	}

	// [store]
	if c.Store.Dir == "" {
		v.add("store.dir", "required: where the database and maildirs live")
	}
	v.duration("store.retention", c.Store.Retention)
	v.duration("store.held_retention", c.Store.HeldRetention)
	if c.Store.MinFreeBytes < 0 {
		v.add("store.min_free_bytes", fmt.Sprintf("must not be negative, not %d", c.Store.MinFreeBytes))
	}

	// [admin]
	if c.Admin.Listen != "" {
		if err := checkHostPort(c.Admin.Listen, false, true); err != nil {
			v.add("admin.listen", err.Error())
		}
	}

	for _, t := range []struct{ key, val string }{{"admin.token", c.Admin.Token}, {"admin.reader_token", c.Admin.ReaderToken}} {
		if t.val != "" && strings.TrimSpace(t.val) != t.val {
			// A token of spaces, or with a stray newline, is a mistake that
			// would either open the API or never match.
			v.add(t.key, "must not be blank or start or end with white space")
		}
	}
	if c.Admin.ReaderToken != "" && c.Admin.ReaderToken == c.Admin.Token {
		v.add("admin.reader_token", "must differ from admin.token: the reader token opens the pages read-only")
	}

	// [secondary]
	if c.Secondary.Primary != "" {
		if err := checkHostPort(c.Secondary.Primary, true, false); err != nil {
			v.add("secondary.primary", err.Error())
		}
	}
	for _, t := range c.Secondary.Trusted {
		if _, err := netip.ParsePrefix(t); err == nil {
			continue
		}
		if _, err := netip.ParseAddr(t); err != nil {
			v.add("secondary.trusted", fmt.Sprintf("%q is not an IP address or CIDR prefix", t))
		}
	}
	for _, n := range c.Secondary.Names {
		if err := dnsname.CheckDomain(n); err != nil {
			v.add("secondary.names", err.Error())
		}
	}

	// [log]
	oneOf(&v, "log.format", c.Log.Format, []string{"text", "json"})

	return v.ps
}

// validator collects problems; it never stops at the first.
type validator struct{ ps Problems }

func (v *validator) add(key, msg string) {
	v.ps = append(v.ps, Problem{Key: key, Msg: msg})
}

// positive reports n <= 0 and says whether n was positive.
func (v *validator) positive(key string, n int64) bool {
	if n <= 0 {
		v.add(key, fmt.Sprintf("must be positive, not %d", n))
		return false
	}
	return true
}

// duration reports a non-positive duration. Parse already refuses them; this
// catches configs built in code.
func (v *validator) duration(key string, d Duration) {
	if d.Duration <= 0 {
		v.add(key, fmt.Sprintf("must be a positive duration, not %s", fmtDuration(d)))
	}
}

// oneOf reports a value that is not one of the allowed ones.
func oneOf[T ~string](v *validator, key string, val T, allowed []T) {
	names := make([]string, len(allowed))
	for i, a := range allowed {
		if val == a {
			return
		}
		names[i] = string(a)
	}
	v.add(key, fmt.Sprintf("%q is not one of %s", val, quoteList(names)))
}

// addressList checks a required list of addresses and returns the set of
// valid ones, lower-cased, since addresses compare case-insensitively.
func (v *validator) addressList(key string, list []string, what string) map[string]bool {
	set := make(map[string]bool, len(list))
	if len(list) == 0 {
		v.add(key, "required: at least one address, "+what)
		return set
	}
	for _, a := range list {
		if err := checkAddress(a); err != nil {
			v.add(key, err.Error())
			continue
		}
		lower := strings.ToLower(a)
		if set[lower] {
			v.add(key, fmt.Sprintf("%q is listed twice (addresses compare case-insensitively)", a))
		}
		set[lower] = true
	}
	return set
}

// checkAddress accepts a bare addr-spec ("ana@example.org") and nothing
// else: no display name, no angle brackets, no comments, a domain with no
// spaces. The value is compared with envelope addresses, which are bare.
func checkAddress(s string) error {
	if s == "" {
		return errors.New("empty address")
	}
	a, err := mail.ParseAddress(s)
	if err != nil {
		return fmt.Errorf("%q is not an email address: %v", s, err)
	}
	if a.Name != "" || a.Address != s {
		return fmt.Errorf("%q: write the bare address (like %q), without a name or <>", s, a.Address)
	}
	at := strings.LastIndexByte(s, '@')
	if at < 0 || at == len(s)-1 {
		return fmt.Errorf("%q has no domain", s)
	}
	if strings.IndexFunc(s[at+1:], unicode.IsSpace) >= 0 {
		return fmt.Errorf("%q: the domain contains a space", s)
	}
	return nil
}

// checkHostPort accepts "host:port" with a numeric port. needHost refuses an
// empty host (":25" means every interface, fine to listen on, not to dial);
// allowZero accepts port 0 (a free port, useful in tests for listeners).
func checkHostPort(s string, needHost, allowZero bool) error {
	host, port, err := net.SplitHostPort(s)
	if err != nil {
		var ae *net.AddrError
		if errors.As(err, &ae) {
			err = errors.New(ae.Err)
		}
		return fmt.Errorf("%q is not host:port: %v", s, err)
	}
	if needHost && host == "" {
		return fmt.Errorf("%q has no host", s)
	}
	if host != "" {
		if _, err := netip.ParseAddr(host); err != nil {
			if err := dnsname.CheckDomain(host); err != nil {
				return fmt.Errorf("%q: host: %v", s, err)
			}
		}
	}
	n, err := strconv.Atoi(port)
	if err != nil || n < 0 || n > 65535 || (n == 0 && !allowZero) {
		lo := 1
		if allowZero {
			lo = 0
		}
		return fmt.Errorf("%q: port must be a number from %d to 65535", s, lo)
	}
	return nil
}

func fmtDuration(d Duration) string {
	b, _ := d.MarshalText()
	return string(b)
}

func quoteList(vals []string) string {
	q := make([]string, len(vals))
	for i, s := range vals {
		q[i] = strconv.Quote(s)
	}
	return strings.Join(q, ", ")
}
