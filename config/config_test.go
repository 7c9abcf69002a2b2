package config

import (
	"errors"
	"os"
	"path/filepath"
	"reflect"
	"regexp"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/BurntSushi/toml"
)

// campaignOK is the smallest valid file: only the keys without a default.
const campaignOK = `[campaign]
name = "Libertad"
addresses = ["libertad@campaign.example"]
recipients = ["familias@ofapp.example", "copias@sr.example"]
from = "relay@campaign.example"
`

func mustParse(t *testing.T, text string) *Config {
	t.Helper()
	cfg, err := Parse("test.toml", []byte(text))
	if err != nil {
		t.Fatalf("Parse:\n%v\n--- file:\n%s", err, text)
	}
	return cfg
}

func parseProblems(t *testing.T, text string) Problems {
	t.Helper()
	cfg, err := Parse("test.toml", []byte(text))
	if err == nil {
		t.Fatalf("Parse accepted:\n%s", text)
	}
	if cfg != nil {
		t.Errorf("Parse returned a config along with an error")
	}
	var ps Problems
	if !errors.As(err, &ps) {
		t.Fatalf("error is %T, not Problems: %v", err, err)
	}
	return ps
}

// lineOfText is the 1-based line of the first line of text containing sub.
func lineOfText(t *testing.T, text, sub string) int {
	t.Helper()
	for i, l := range strings.Split(text, "\n") {
		if strings.Contains(l, sub) {
			return i + 1
		}
	}
	t.Fatalf("%q not in the test file", sub)
	return 0
}

func d(v time.Duration) Duration { return Duration{v} }

func TestDefault(t *testing.T) {
	cfg := Default()
	if ps := cfg.Validate(); ps != nil {
		t.Fatalf("default does not validate:\n%v", ps)
	}
	want := base()
	want.Campaign = Campaign{
		Name:       "Libertad a los presos políticos",
		Language:   "es",
		Timezone:   "America/Santiago",
		Addresses:  []string{"libertad@localhost"},
		Recipients: []string{"familias@localhost", "copias@localhost"},
		From:       "relay@localhost",
	}
	want.Delivery.Mode = "maildir"
	if !reflect.DeepEqual(cfg, want) {
		t.Errorf("Default() =\n%s\nwant\n%s", cfg.TOML(), want.TOML())
	}
	// Spot-check the base values against SPEC section 3 literally, so a
	// wrong base() cannot hide behind the comparison above.
	if cfg.SMTP.Listen[0] != "127.0.0.1:2525" || cfg.SMTP.Hostname != "localhost" ||
		cfg.SMTP.MaxMessageBytes != 1048576 || cfg.SMTP.MaxConnections != 500 || cfg.SMTP.MaxPerIP != 20 ||
		cfg.SMTP.Timeout != d(60*time.Second) || cfg.Verify.Unverified != "quarantine" ||
		cfg.Verify.DNSTimeout != d(5*time.Second) || !cfg.Dedup.FoldSubaddress || !cfg.Dedup.FoldGmailDots ||
		cfg.Batch.MaxLetters != 100 || cfg.Batch.MaxWait != d(time.Hour) ||
		cfg.Delivery.StartTLS != "opportunistic" || cfg.Delivery.Maildir != "outbox" ||
		cfg.Delivery.RetryMin != d(5*time.Minute) || cfg.Delivery.RetryMax != d(time.Hour) ||
		cfg.Delivery.GiveUpAfter != d(120*time.Hour) || cfg.Store.Dir != "petitiond-data" ||
		cfg.Store.Retention != d(720*time.Hour) || cfg.Admin.Listen != "127.0.0.1:8025" ||
		cfg.Admin.Token != "" || cfg.Log.Format != "text" ||
		cfg.Campaign.Language != "es" || cfg.Campaign.Timezone != "America/Santiago" || !cfg.Verify.SPF ||
		cfg.Verify.ConfirmTTL != d(168*time.Hour) || cfg.Verify.ConfirmPerHour != 200 ||
		cfg.Batch.MaxBytes != 10485760 || cfg.Admin.ReaderToken != "" || cfg.Receipts.Enabled ||
		cfg.Secondary.Primary != "" || len(cfg.Secondary.Trusted) != 0 || cfg.Secondary.Names == nil || len(cfg.Secondary.Names) != 0 ||
		cfg.Store.HeldRetention != d(720*time.Hour) || cfg.Store.MinFreeBytes != 256<<20 {
		t.Errorf("default differs from SPEC section 3:\n%s", cfg.TOML())
	}
	// Each call is a fresh copy: no shared mutable state.
	cfg.SMTP.Listen[0] = "changed"
	if Default().SMTP.Listen[0] != "127.0.0.1:2525" {
		t.Error("Default() shares its slices between calls")
	}
}

// configKeys lists every key of Config, as "table.key".
func configKeys() []string {
	var keys []string
	ct := reflect.TypeFor[Config]()
	for i := range ct.NumField() {
		tf := ct.Field(i)
		for j := range tf.Type.NumField() {
			keys = append(keys, tf.Tag.Get("toml")+"."+tf.Type.Field(j).Tag.Get("toml"))
		}
	}
	return keys
}

// Every key of SPEC section 3 is written out in the shipped files, so
// operators see all of them.
func TestShippedFilesListEveryKey(t *testing.T) {
	for _, path := range []string{"default.toml", "../deploy/petitiond.toml", "../deploy/petitiond-secondary.toml"} {
		data, err := os.ReadFile(path)
		if err != nil {
			t.Fatal(err)
		}
		lines := keyLines(data)
		for _, key := range configKeys() {
			if lines[key] == 0 {
				t.Errorf("%s: key %s is missing", path, key)
			}
		}
	}
}

// readmeKeys reads the keys that the README's configuration reference (the
// table under "## Configuration") names in its rows' first cells, where
// "`dkim.domain`, `selector`" names dkim.domain and dkim.selector.
func readmeKeys(t *testing.T) []string {
	t.Helper()
	data, err := os.ReadFile("../README.md")
	if err != nil {
		t.Fatal(err)
	}
	_, section, ok := strings.Cut(string(data), "\n## Configuration\n")
	if !ok {
		t.Fatal("README has no Configuration section")
	}
	if end := strings.Index(section, "\n#"); end >= 0 {
		section = section[:end]
	}
	name := regexp.MustCompile("`([^`]+)`")
	var keys []string
	for line := range strings.SplitSeq(section, "\n") {
		cells := strings.Split(line, "|")
		if len(cells) < 3 || !strings.HasPrefix(strings.TrimSpace(cells[1]), "`") {
			continue
		}
		table := ""
		for _, m := range name.FindAllStringSubmatch(cells[1], -1) {
			key := m[1]
			if tbl, _, ok := strings.Cut(key, "."); ok {
				table = tbl
			} else {
				key = table + "." + key
			}
			keys = append(keys, key)
		}
	}
	return keys
}

// TestReadmeListsEveryKey: the README's configuration reference has a row
// for every key there is, and none for a key there is not.
func TestReadmeListsEveryKey(t *testing.T) {
	listed := readmeKeys(t)
	keys := configKeys()
	if len(listed) == 0 {
		t.Fatal("no keys read from the README's table: the test would prove nothing")
	}
	for _, k := range keys {
		if !slices.Contains(listed, k) {
			t.Errorf("README, Configuration: no row for %s", k)
		}
	}
	for _, k := range listed {
		if !slices.Contains(keys, k) {
			t.Errorf("README, Configuration: a row for %s, which is not a key", k)
		}
	}
}

func TestDeployExample(t *testing.T) {
	cfg, source, err := Load("../deploy/petitiond.toml")
	if err != nil {
		t.Fatalf("deploy/petitiond.toml: %v", err)
	}
	if source != "../deploy/petitiond.toml" {
		t.Errorf("source = %q", source)
	}
	if cfg.Delivery.Mode != "smtp" || cfg.SMTP.Listen[0] != "0.0.0.0:25" ||
		cfg.Campaign.Addresses[0] != "libertad@campaign.example" ||
		!reflect.DeepEqual(cfg.Campaign.Recipients, []string{"familias@ofapp.example", "copias@sr.example"}) ||
		cfg.Campaign.From != "relay@campaign.example" {
		t.Errorf("deploy example is not the SPEC's real deployment:\n%s", cfg.TOML())
	}
}

// The secondary's example is the primary's but for the keys that make it
// a secondary of that primary (SPEC 12).
func TestDeploySecondaryExample(t *testing.T) {
	primary, _, err := Load("../deploy/petitiond.toml")
	if err != nil {
		t.Fatal(err)
	}
	secondary, _, err := Load("../deploy/petitiond-secondary.toml")
	if err != nil {
		t.Fatalf("deploy/petitiond-secondary.toml: %v", err)
	}
	if secondary.Secondary.Primary != primary.SMTP.Hostname+":25" || secondary.SMTP.Hostname == primary.SMTP.Hostname {
		t.Errorf("secondary forwards to %q as %q; want %s:25 under a name of its own", secondary.Secondary.Primary,
			secondary.SMTP.Hostname, primary.SMTP.Hostname)
	}
	if !reflect.DeepEqual(secondary.Campaign, primary.Campaign) || secondary.Verify != primary.Verify ||
		secondary.Dedup != primary.Dedup || secondary.SMTP.MaxMessageBytes != primary.SMTP.MaxMessageBytes {
		t.Errorf("the secondary must check letters as the primary does: [campaign], [verify], [dedup], smtp.max_message_bytes differ")
	}
}

func TestBaseDefaults(t *testing.T) {
	cfg := mustParse(t, campaignOK)
	want := base()
	want.Campaign = Campaign{
		Name:       "Libertad",
		Language:   "es",
		Timezone:   "America/Santiago",
		Addresses:  []string{"libertad@campaign.example"},
		Recipients: []string{"familias@ofapp.example", "copias@sr.example"},
		From:       "relay@campaign.example",
	}
	if !reflect.DeepEqual(cfg, want) {
		t.Errorf("got\n%s\nwant\n%s", cfg.TOML(), want.TOML())
	}
	if want.Delivery.Mode != "smtp" {
		t.Errorf("base delivery.mode = %q, want smtp", want.Delivery.Mode)
	}

	// A key that is set replaces the default instead of adding to it.
	cfg = mustParse(t, campaignOK+"[smtp]\nlisten = [\"[::1]:25\", \":2526\"]\n")
	if !reflect.DeepEqual(cfg.SMTP.Listen, []string{"[::1]:25", ":2526"}) {
		t.Errorf("smtp.listen = %q", cfg.SMTP.Listen)
	}
}

func TestParseValues(t *testing.T) {
	cfg := mustParse(t, `smtp.timeout = "1s"  # dotted keys work like tables
verify = { unverified = "reject", dns_resolver = "127.0.0.1:5353" }
`+campaignOK+`
[batch]
max_letters = 1
max_wait = "1s"
[delivery]
smarthost = "smtp.provider.example:587"
username = "relay"
password_file = "/etc/petitiond/pw"
starttls = "required"
[dkim]
domain = "campaign.example"
selector = "petitiond"
key_file = "dkim.key"
[secondary]
trusted = ["192.0.2.25"]
names = ["mx2.campaign.example", "MX3.Campaign.Example."]
`)
	if cfg.SMTP.Timeout != d(time.Second) || cfg.Verify.Unverified != "reject" ||
		cfg.Verify.DNSResolver != "127.0.0.1:5353" || cfg.Batch.MaxWait != d(time.Second) ||
		cfg.Delivery.Username != "relay" || cfg.DKIM.Selector != "petitiond" ||
		!reflect.DeepEqual(cfg.Secondary.Names, []string{"mx2.campaign.example", "MX3.Campaign.Example."}) {
		t.Errorf("values not decoded:\n%s", cfg.TOML())
	}
}

func TestParseProblems(t *testing.T) {
	tests := []struct {
		name   string
		text   string // appended to campaignOK unless noCampaign
		key    string // the problem's key
		at     string // if set: the problem's line is the first line containing this
		msg    string // part of the message
		noCamp bool
	}{
		// Syntax, types, unknown keys: the parser or the scanner knows the line.
		{name: "syntax", text: "[smtp]\nlisten = [\"a:1\"\n", at: "listen", msg: ""},
		{name: "duplicate key", text: "[log]\nformat = \"text\"\nformat = \"json\"\n", at: "format = \"json\"", msg: "already been defined"},
		{name: "unknown table", text: "[smpt]\nlisten = []\n", key: "smpt", at: "[smpt]", msg: "unknown key"},
		{name: "unknown key", text: "[smtp]\nhostname = \"mx.x\"\nlisten_on = \"x\"\n", key: "smtp.listen_on", at: "listen_on", msg: "unknown key"},
		{name: "unknown top-level key", text: "debug = true\n", key: "debug", at: "debug", msg: "unknown key", noCamp: true},
		{name: "keys are case-sensitive", text: "[SMTP]\n", key: "SMTP", at: "[SMTP]", msg: "unknown key"},
		{name: "key case inside table", text: "[log]\nFormat = \"json\"\n", key: "log.Format", at: "Format", msg: "unknown key"},
		{name: "unknown nested table", text: "[smtp.tls]\ncert = \"x\"\n", key: "smtp.tls", at: "[smtp.tls]", msg: "unknown key"},
		{name: "unknown inline key", text: "admin = { listen = \"\", tokn = \"x\" }\n" + campaignOK, key: "admin.tokn", at: "tokn", msg: "unknown key", noCamp: true},
		{name: "table not a table", text: "log = \"json\"\n" + campaignOK, key: "log", at: "log =", msg: "must be a table", noCamp: true},
		{name: "array of tables", text: "[[log]]\nformat = \"json\"\n", key: "log", at: "[[log]]", msg: "must be a table, not an array of tables"},
		{name: "wrong type", text: "[smtp]\nmax_connections = \"500\"\n", key: "smtp.max_connections", at: "max_connections", msg: "must be an integer, not a string"},
		{name: "list expected", text: "[smtp]\nlisten = \"127.0.0.1:25\"\n", key: "smtp.listen", at: "listen", msg: "must be a list of strings"},
		{name: "bool expected", text: "[dedup]\nfold_subaddress = \"yes\"\n", key: "dedup.fold_subaddress", at: "fold_subaddress", msg: "true or false"},

		// Durations.
		{name: "bad duration", text: "[smtp]\ntimeout = \"60 seconds\"\n", key: "smtp.timeout", at: "timeout", msg: "not a duration"},
		{name: "duration without unit", text: "[batch]\nmax_wait = 60\n", key: "batch.max_wait", at: "max_wait", msg: "not a duration"},
		{name: "zero duration", text: "[store]\nretention = \"0s\"\n", key: "store.retention", at: "retention", msg: "positive"},
		{name: "negative duration", text: "[verify]\ndns_timeout = \"-5s\"\n", key: "verify.dns_timeout", at: "dns_timeout", msg: "positive"},
		{name: "duration as table", text: "[delivery.retry_min]\nx = 1\n", key: "delivery.retry_min", at: "retry_min", msg: "duration"},

		// [campaign]
		{name: "campaign missing", text: "[log]\n", key: "campaign.addresses", msg: "required", noCamp: true},
		{name: "name empty", noCamp: true, text: strings.Replace(campaignOK, `"Libertad"`, `"  "`, 1), key: "campaign.name", at: "name", msg: "required"},
		{name: "name with newline", noCamp: true, text: strings.Replace(campaignOK, `"Libertad"`, `"a\nBcc: x@y"`, 1), key: "campaign.name", at: "name", msg: "control"},
		{name: "addresses empty", noCamp: true, text: strings.Replace(campaignOK, `["libertad@campaign.example"]`, `[]`, 1), key: "campaign.addresses", at: "addresses", msg: "required"},
		{name: "recipients absent", noCamp: true, text: strings.Replace(campaignOK, "recipients", "# recipients", 1), key: "campaign.recipients", at: "[campaign]", msg: "required"},
		{name: "display name", noCamp: true, text: strings.Replace(campaignOK, `"relay@campaign.example"`, `"Relay <relay@campaign.example>"`, 1), key: "campaign.from", at: "from", msg: "bare address"},
		{name: "angle brackets", noCamp: true, text: strings.Replace(campaignOK, `"libertad@campaign.example"`, `"<libertad@campaign.example>"`, 1), key: "campaign.addresses", at: "addresses", msg: "bare address"},
		{name: "no domain", noCamp: true, text: strings.Replace(campaignOK, `"copias@sr.example"`, `"copias"`, 1), key: "campaign.recipients", at: "recipients", msg: "not an email address"},
		{name: "space in domain", noCamp: true, text: strings.Replace(campaignOK, `"copias@sr.example"`, `"copias@sr .example"`, 1), key: "campaign.recipients", at: "recipients", msg: "copias@sr .example"},
		{name: "duplicate address", noCamp: true, text: strings.Replace(campaignOK, `["libertad@campaign.example"]`, `["libertad@campaign.example", "Libertad@Campaign.Example"]`, 1), key: "campaign.addresses", at: "addresses", msg: "twice"},
		{name: "recipient is campaign address", noCamp: true, text: strings.Replace(campaignOK, `"copias@sr.example"`, `"LIBERTAD@campaign.example"`, 1), key: "campaign.recipients", at: "recipients", msg: "come back"},
		{name: "from missing", noCamp: true, text: strings.Replace(campaignOK, `from =`, `# from =`, 1), key: "campaign.from", msg: "required"},
		{name: "language unknown", noCamp: true, text: strings.Replace(campaignOK, "name =", "language = \"fr\"\nname =", 1), key: "campaign.language", at: "language", msg: `"fr" is not one of "es", "en"`},
		{name: "timezone unknown", noCamp: true, text: strings.Replace(campaignOK, "name =", "timezone = \"Mars/Olympus\"\nname =", 1), key: "campaign.timezone", at: "timezone", msg: "not an IANA time zone"},
		{name: "timezone empty", noCamp: true, text: strings.Replace(campaignOK, "name =", "timezone = \"\"\nname =", 1), key: "campaign.timezone", at: "timezone", msg: "required"},

		// [smtp]
		{name: "batch too small for a letter", text: "[batch]\nmax_bytes = 1048576\n", key: "batch.max_bytes", at: "max_bytes", msg: "2 x smtp.max_message_bytes"},
		{name: "confirm_per_hour zero", text: "[verify]\nconfirm_per_hour = 0\n", key: "verify.confirm_per_hour", at: "confirm_per_hour", msg: "positive"},
		{name: "blank admin token", text: "[admin]\ntoken = \"   \"\n", key: "admin.token", at: "token", msg: "white space"},
		{name: "token with newline", text: "[admin]\ntoken = \"abc\\n\"\n", key: "admin.token", at: "token", msg: "white space"},
		{name: "reader token is admin token", text: "[admin]\ntoken = \"t0ken-one\"\nreader_token = \"t0ken-one\"\n", key: "admin.reader_token", at: "reader_token", msg: "must differ"},
		{name: "negative min free", text: "[store]\nmin_free_bytes = -1\n", key: "store.min_free_bytes", at: "min_free_bytes", msg: "negative"},
		{name: "primary not host:port", text: "[secondary]\nprimary = \"mx1.campaign.example\"\n", key: "secondary.primary", at: "primary", msg: "not host:port"},
		{name: "names not a DNS name", text: "[secondary]\nnames = [\"mx2.campaign.example\", \"mx2 campaign\"]\n", key: "secondary.names", at: "names", msg: `"mx2 campaign" is not a DNS name`},
		{name: "names empty string", text: "[secondary]\ntrusted = []\n\nnames = [\"\"]\n", key: "secondary.names", at: "names", msg: "empty"},
		{name: "trusted not an IP", text: "[secondary]\ntrusted = [\"10.0.0.0/8\", \"mx2.campaign.example\"]\n", key: "secondary.trusted", at: "trusted", msg: "not an IP address or CIDR"},
		{name: "listen empty", text: "[smtp]\nlisten = []\n", key: "smtp.listen", at: "listen", msg: "required"},
		{name: "listen no port", text: "[smtp]\nlisten = [\"127.0.0.1\"]\n", key: "smtp.listen", at: "listen", msg: "not host:port"},
		{name: "listen bad port", text: "[smtp]\nlisten = [\"127.0.0.1:99999\"]\n", key: "smtp.listen", at: "listen", msg: "port"},
		{name: "listen twice", text: "[smtp]\nlisten = [\":25\", \":25\"]\n", key: "smtp.listen", at: "listen", msg: "twice"},
		{name: "hostname", text: "[smtp]\nhostname = \"mx campaign\"\n", key: "smtp.hostname", at: "hostname", msg: "DNS name"},
		{name: "max_message_bytes", text: "[smtp]\nmax_message_bytes = 0\n", key: "smtp.max_message_bytes", at: "max_message_bytes", msg: "positive"},
		{name: "max_connections", text: "[smtp]\nmax_connections = -1\n", key: "smtp.max_connections", at: "max_connections", msg: "positive"},
		{name: "max_per_ip zero", text: "[smtp]\nmax_per_ip = 0\n", key: "smtp.max_per_ip", at: "max_per_ip", msg: "positive"},
		{name: "max_per_ip over total", text: "[smtp]\nmax_connections = 10\nmax_per_ip = 11\n", key: "smtp.max_per_ip", at: "max_per_ip", msg: "more than smtp.max_connections"},
		{name: "tls_cert alone", text: "[smtp]\ntls_cert = \"c.pem\"\n", key: "smtp.tls_key", at: "[smtp]", msg: "required"},
		{name: "tls_key alone", text: "[smtp]\ntls_key = \"k.pem\"\ntls_cert = \"\"\n", key: "smtp.tls_cert", at: "tls_cert", msg: "required"},

		// [verify]
		{name: "unverified", text: "[verify]\nunverified = \"drop\"\n", key: "verify.unverified", at: "unverified", msg: `"reject", "quarantine", "relay", "confirm"`},
		{name: "dns_resolver", text: "[verify]\ndns_resolver = \"8.8.8.8\"\n", key: "verify.dns_resolver", at: "dns_resolver", msg: "host:port"},
		{name: "dns_resolver no host", text: "[verify]\ndns_resolver = \":53\"\n", key: "verify.dns_resolver", at: "dns_resolver", msg: "no host"},

		// [batch]
		{name: "max_letters", text: "[batch]\nmax_letters = 0\n", key: "batch.max_letters", at: "max_letters", msg: "positive"},

		// [delivery]
		{name: "mode", text: "[delivery]\nmode = \"lmtp\"\n", key: "delivery.mode", at: "mode", msg: "not one of"},
		{name: "starttls", text: "[delivery]\nstarttls = \"yes\"\n", key: "delivery.starttls", at: "starttls", msg: "not one of"},
		{name: "smarthost", text: "[delivery]\nsmarthost = \"smtp.example\"\n", key: "delivery.smarthost", at: "smarthost", msg: "host:port"},
		{name: "smarthost port 0", text: "[delivery]\nsmarthost = \"smtp.example:0\"\n", key: "delivery.smarthost", at: "smarthost", msg: "port"},
		{name: "username without password_file", text: "[delivery]\nsmarthost = \"smtp.example:587\"\nusername = \"u\"\n", key: "delivery.password_file", at: "[delivery]", msg: "required"},
		{name: "username without smarthost", text: "[delivery]\nusername = \"u\"\npassword_file = \"pw\"\n", key: "delivery.username", at: "username", msg: "smarthost"},
		{name: "password in clear", text: "[delivery]\nsmarthost = \"smtp.example:25\"\nusername = \"u\"\npassword_file = \"pw\"\nstarttls = \"off\"\n", key: "delivery.starttls", at: "starttls", msg: "in clear"},
		{name: "maildir empty", text: "[delivery]\nmode = \"maildir\"\nmaildir = \"\"\n", key: "delivery.maildir", at: "maildir =", msg: "required"},
		{name: "retry_min over retry_max", text: "[delivery]\nretry_min = \"2h\"\n", key: "delivery.retry_min", at: "retry_min", msg: "more than delivery.retry_max (1h)"},

		// [dkim]
		{name: "dkim partial", text: "[dkim]\ndomain = \"campaign.example\"\n", key: "dkim.key_file", at: "[dkim]", msg: "required"},
		{name: "dkim domain", text: "[dkim]\ndomain = \"campaign..example\"\nselector = \"s\"\nkey_file = \"k\"\n", key: "dkim.domain", at: "domain", msg: "DNS name"},
		{name: "dkim unicode domain", text: "[dkim]\ndomain = \"campaña.example\"\nselector = \"s\"\nkey_file = \"k\"\n", key: "dkim.domain", at: "domain", msg: "xn--"},
		{name: "dkim selector", text: "[dkim]\ndomain = \"campaign.example\"\nselector = \"a b\"\nkey_file = \"k\"\n", key: "dkim.selector", at: "selector", msg: "DNS name"},
		{name: "dkim selector hyphen", text: "[dkim]\ndomain = \"campaign.example\"\nselector = \"-sel-\"\nkey_file = \"k\"\n", key: "dkim.selector", at: "selector", msg: "begins or ends with '-'"},
		{name: "dkim selector underscore", text: "[dkim]\ndomain = \"campaign.example\"\nselector = \"s_1\"\nkey_file = \"k\"\n", key: "dkim.selector", at: "selector", msg: "'_'"},

		// [store], [admin], [log]
		{name: "store.dir", text: "[store]\ndir = \"\"\n", key: "store.dir", at: "dir", msg: "required"},
		{name: "admin.listen", text: "[admin]\nlisten = \"localhost\"\n", key: "admin.listen", at: "listen", msg: "host:port"},
		{name: "log.format", text: "[log]\nformat = \"xml\"\n", key: "log.format", at: "format", msg: `"text", "json"`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			text := tt.text
			if !tt.noCamp {
				text = campaignOK + text
			}
			ps := parseProblems(t, text)
			var found *Problem
			for i, p := range ps {
				if p.Key == tt.key && strings.Contains(p.Msg, tt.msg) {
					found = &ps[i]
					break
				}
			}
			if found == nil {
				t.Fatalf("no problem with key %q and message containing %q in:\n%v", tt.key, tt.msg, ps)
			}
			if found.File != "test.toml" {
				t.Errorf("File = %q", found.File)
			}
			if tt.at != "" {
				if want := lineOfText(t, text, tt.at); found.Line != want {
					t.Errorf("Line = %d, want %d: %v", found.Line, want, found)
				}
			}
		})
	}
}

func TestParseListsEveryProblem(t *testing.T) {
	text := `# three problems in campaign, three in other tables, one unknown key
[campaign]
name = ""
addresses = ["not an address"]
recipients = ["a@b.example", "a@b.example"]
from = "relay@campaign.example"

[smtp]
timeout = "soon"
max_per_ip = 0
colour = "red"

[delivery]
retry_max = "1x"
`
	ps := parseProblems(t, text)
	want := []struct {
		key string
		at  string
	}{
		{"campaign.name", `name = ""`},
		{"campaign.addresses", "addresses ="},
		{"campaign.recipients", "recipients ="},
		{"smtp.timeout", "timeout"},
		{"smtp.max_per_ip", "max_per_ip"},
		{"smtp.colour", "colour"},
		{"delivery.retry_max", "retry_max"},
	}
	if len(ps) != len(want) {
		t.Fatalf("got %d problems, want %d:\n%v", len(ps), len(want), ps)
	}
	for i, w := range want {
		if ps[i].Key != w.key || ps[i].Line != lineOfText(t, text, w.at) {
			t.Errorf("problem %d = %v, want key %s on line %d", i, ps[i], w.key, lineOfText(t, text, w.at))
		}
	}
	// The message an operator sees: one problem a line, each with file:line.
	lines := strings.Split(ps.Error(), "\n")
	if len(lines) != len(want) || lines[0] != `test.toml:3: campaign.name: required: the campaign's name, used in batch subjects` {
		t.Errorf("Error() =\n%s", ps.Error())
	}
}

// A bad value must not hide the default-less checks of the same key, nor
// report the key twice.
func TestParseNoDoubleReport(t *testing.T) {
	text := strings.Replace(campaignOK, `from = "relay@campaign.example"`, `from = ["relay@campaign.example"]`, 1)
	ps := parseProblems(t, text)
	if len(ps) != 1 || ps[0].Key != "campaign.from" || !strings.Contains(ps[0].Msg, "must be a string") {
		t.Errorf("got %v", ps)
	}
}

func TestValidateBuiltInCode(t *testing.T) {
	ps := (&Config{}).Validate()
	keys := make(map[string]bool)
	for _, p := range ps {
		if p.File != "" || p.Line != 0 {
			t.Errorf("Validate set file or line: %v", p)
		}
		keys[p.Key] = true
	}
	for _, k := range []string{
		"campaign.name", "campaign.addresses", "campaign.recipients", "campaign.from",
		"smtp.listen", "smtp.hostname", "smtp.max_message_bytes", "smtp.timeout",
		"verify.unverified", "verify.dns_timeout", "batch.max_letters", "batch.max_wait",
		"delivery.mode", "delivery.starttls", "delivery.retry_min", "delivery.retry_max",
		"delivery.give_up_after", "store.dir", "store.retention", "log.format",
	} {
		if !keys[k] {
			t.Errorf("zero Config: no problem for %s", k)
		}
	}
	if keys["dkim.domain"] || keys["admin.listen"] {
		t.Errorf("empty dkim/admin.listen are valid, got %v", ps)
	}
}

func TestLoad(t *testing.T) {
	t.Chdir(t.TempDir())

	cfg, source, err := Load("")
	if err != nil || source != "embedded default" || cfg.Campaign.Addresses[0] != "libertad@localhost" {
		t.Fatalf("Load(\"\") without a file = %v, %q, %v", cfg, source, err)
	}

	local := strings.Replace(campaignOK, "Libertad", "Local", 1)
	if err := os.WriteFile("petitiond.toml", []byte(local), 0o600); err != nil {
		t.Fatal(err)
	}
	cfg, source, err = Load("")
	if err != nil || source != "./petitiond.toml" || cfg.Campaign.Name != "Local" {
		t.Fatalf("Load(\"\") with ./petitiond.toml = %v, %q, %v", cfg, source, err)
	}

	other := filepath.Join(t.TempDir(), "other.toml")
	if err := os.WriteFile(other, []byte(campaignOK+"[log]\nformat = \"json\"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	cfg, source, err = Load(other)
	if err != nil || source != other || cfg.Log.Format != "json" {
		t.Fatalf("Load(%q) = %v, %q, %v", other, cfg, source, err)
	}

	// An explicit path that does not exist is an error, not the default.
	if _, _, err := Load(filepath.Join(t.TempDir(), "missing.toml")); err == nil || errors.As(err, new(Problems)) {
		t.Errorf("Load(missing) err = %v", err)
	}

	// An invalid file: Problems naming the file.
	if err := os.WriteFile("petitiond.toml", []byte(campaignOK+"[log]\nformat = \"xml\"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	_, _, err = Load("")
	var ps Problems
	if !errors.As(err, &ps) || len(ps) != 1 || ps[0].File != "./petitiond.toml" || ps[0].Line != 7 {
		t.Errorf("Load(invalid) err = %#v", err)
	}

	// ./petitiond.toml that exists but cannot be read: an error, never a
	// silent fallback to the default.
	if err := os.Remove("petitiond.toml"); err != nil {
		t.Fatal(err)
	}
	if err := os.Mkdir("petitiond.toml", 0o700); err != nil {
		t.Fatal(err)
	}
	if _, _, err := Load(""); err == nil {
		t.Error("Load(\"\") with an unreadable ./petitiond.toml succeeded")
	}
}

func TestTOMLRoundTrip(t *testing.T) {
	full := mustParse(t, campaignOK+`
[smtp]
listen = ["0.0.0.0:25", "[::1]:2525"]
hostname = "mx.campaign.example"
max_message_bytes = 65536
max_connections = 50
max_per_ip = 5
timeout = "1m30s"
tls_cert = "/etc/tls/cert.pem"
tls_key = "/etc/tls/key.pem"
[verify]
unverified = "relay"
dns_resolver = "[::1]:53"
dns_timeout = "1500ms"
[dedup]
fold_subaddress = false
fold_gmail_dots = false
[batch]
max_letters = 7
max_wait = "1s"
[delivery]
mode = "smtp"
smarthost = "127.0.0.1:2526"
username = "relay"
password_file = "/etc/pw"
starttls = "off"
maildir = "/var/mail/outbox"
retry_min = "1s"
retry_max = "2h30m"
give_up_after = "36h"
[dkim]
domain = "campaign.example"
selector = "s2026"
key_file = "/etc/dkim.pem"
[store]
dir = "/var/lib/petitiond"
retention = "1h1m1s"
[admin]
listen = ""
[log]
format = "json"
`)
	deploy, _, err := Load("../deploy/petitiond.toml")
	if err != nil {
		t.Fatal(err)
	}
	for name, cfg := range map[string]*Config{"default": Default(), "deploy": deploy, "full": full} {
		out := cfg.TOML()
		again, err := Parse("TOML()", out)
		if err != nil {
			t.Errorf("%s: TOML() does not re-parse: %v\n%s", name, err, out)
			continue
		}
		if !reflect.DeepEqual(again, cfg) {
			t.Errorf("%s: round trip changed the config:\n%s\nbecame\n%s", name, out, again.TOML())
		}
	}
	if out := string(full.TOML()); !strings.Contains(out, `retry_max = "2h30m"`) || !strings.Contains(out, `retention = "1h1m1s"`) {
		t.Errorf("durations not written the short way:\n%s", out)
	}
}

func TestTOMLHidesToken(t *testing.T) {
	cfg := mustParse(t, campaignOK+"[admin]\ntoken = \"s3cret-token\"\n")
	out := string(cfg.TOML())
	if strings.Contains(out, "s3cret") || !strings.Contains(out, `token = "(set)"`) {
		t.Errorf("token shown in clear or not marked set:\n%s", out)
	}
	if cfg.Admin.Token != "s3cret-token" {
		t.Error("TOML() changed the config")
	}
	if out := string(Default().TOML()); !strings.Contains(out, `token = ""`) {
		t.Errorf("an unset token must show as empty:\n%s", out)
	}
}

func TestDuration(t *testing.T) {
	for in, want := range map[time.Duration]string{
		time.Hour: "1h", 120 * time.Hour: "120h", 5 * time.Minute: "5m", 90 * time.Second: "1m30s",
		70 * time.Minute: "1h10m", 10 * time.Minute: "10m", time.Second: "1s", 1500 * time.Millisecond: "1.5s",
		time.Hour + time.Second: "1h0m1s",
	} {
		b, err := Duration{in}.MarshalText()
		if err != nil || string(b) != want {
			t.Errorf("MarshalText(%v) = %q, %v; want %q", in, b, err, want)
		}
		var back Duration
		if err := back.UnmarshalText(b); err != nil || back.Duration != in {
			t.Errorf("UnmarshalText(%q) = %v, %v", b, back, err)
		}
	}
	for _, bad := range []string{"", "0", "0s", "-1s", "1 h", "1d"} {
		var v Duration
		if err := v.UnmarshalText([]byte(bad)); err == nil {
			t.Errorf("UnmarshalText(%q) accepted", bad)
		}
	}
}

func TestDataPath(t *testing.T) {
	cfg := &Config{Store: Store{Dir: "petitiond-data"}}
	if got, want := cfg.DataPath("outbox"), filepath.Join("petitiond-data", "outbox"); got != want {
		t.Errorf("DataPath(outbox) = %q, want %q", got, want)
	}
	abs := filepath.Join(t.TempDir(), "outbox")
	if got := cfg.DataPath(abs); got != abs {
		t.Errorf("DataPath(%q) = %q", abs, got)
	}
}

func TestProblemString(t *testing.T) {
	for _, tt := range []struct {
		p    Problem
		want string
	}{
		{Problem{"f.toml", 3, "smtp.listen", "bad"}, "f.toml:3: smtp.listen: bad"},
		{Problem{"f.toml", 0, "smtp.listen", "bad"}, "f.toml: smtp.listen: bad"},
		{Problem{"f.toml", 3, "", "syntax"}, "f.toml:3: syntax"},
		{Problem{"", 0, "log.format", "bad"}, "log.format: bad"},
		{Problem{"", 4, "", "bad"}, "line 4: bad"},
	} {
		if got := tt.p.String(); got != tt.want {
			t.Errorf("%#v.String() = %q, want %q", tt.p, got, tt.want)
		}
	}
}

func TestKeyLines(t *testing.T) {
	text := "\uFEFF" + `top = 1
[a]   # comment [b]
s = """
not = "a key"
[nor.a.table]
"""
lit = '''
x = 1'''
arr = [
  "x = 1",   # y = 2
  [1, 2], { q = 1 },
]
"quoted key" = 'v'
dotted . key = 1
inline = { one = 1, two = { three = "}" } }
when = 1979-05-27 07:32:00Z
esc = "a\"b = c"
[[arrays]]
n = 1
[[arrays]]
m = 2
`
	got := keyLines([]byte(text))
	want := map[string]int{
		"top": 1, "a": 2, "a.s": 3, "a.lit": 7, "a.arr": 9, `a."quoted key"`: 13,
		"a.dotted": 14, "a.dotted.key": 14, "a.inline": 15, "a.inline.one": 15,
		"a.inline.two": 15, "a.inline.two.three": 15, "a.when": 16, "a.esc": 17,
		"arrays": 18, "arrays.n": 19, "arrays.m": 21,
	}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("keyLines =\n%v\nwant\n%v", got, want)
	}
	// The scanner agrees with the parser about which keys exist.
	var v any
	md, err := toml.Decode(strings.TrimPrefix(text, "\uFEFF"), &v)
	if err != nil {
		t.Fatal(err)
	}
	for _, k := range md.Keys() {
		if _, ok := got[k.String()]; !ok && !strings.HasPrefix(k.String(), "a.arr") {
			t.Errorf("parser key %s not found by the scanner", k)
		}
	}
}

func FuzzParse(f *testing.F) {
	for _, path := range []string{"default.toml", "../deploy/petitiond.toml"} {
		data, err := os.ReadFile(path)
		if err != nil {
			f.Fatal(err)
		}
		f.Add(data)
	}
	f.Add([]byte(campaignOK))
	f.Add([]byte(campaignOK + "[smtp]\ntimeout = \"x\"\nlisten = [1]\n[x.y]\nz = { a = '''\n'''}\n"))
	f.Add([]byte("a = \"\"\"\n\"\"\"\"\n[b]\nc = [\n{ d = 1 },\n]\n"))
	f.Fuzz(func(t *testing.T, data []byte) {
		keyLines(data) // Parse runs it only on valid TOML; it must not hang or panic on anything
		cfg, err := Parse("fuzz.toml", data)
		if err != nil {
			var ps Problems
			if !errors.As(err, &ps) || len(ps) == 0 || cfg != nil {
				t.Fatalf("Parse error is not a non-empty Problems, or came with a config: %#v", err)
			}
			return
		}
		if ps := cfg.Validate(); ps != nil {
			t.Fatalf("Parse accepted a config that does not validate: %v", ps)
		}
		if cfg.Admin.Token != "" {
			return // TOML() masks it, so it does not round-trip
		}
		again, err := Parse("TOML()", cfg.TOML())
		if err != nil || !reflect.DeepEqual(again, cfg) {
			t.Fatalf("TOML() does not round-trip: %v\n%s", err, cfg.TOML())
		}
	})
}
