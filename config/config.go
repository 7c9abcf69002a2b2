// Package config reads, checks and prints petitiond's TOML configuration
// (SPEC section 3).
//
// A file is decoded on top of the base defaults, so absent keys keep them;
// campaign keys other than language and timezone have no default and must be set. Every problem in a file is
// reported at once, as a [Problems] error, with the file line where known:
// syntax errors and bad values carry the position BurntSushi/toml reports;
// for other keys (unknown keys, failed checks) the line is found by scanning
// the text for the key inside its [table], because toml v1.6.0 records key
// positions but does not export them (see keyLines).
package config

import (
	_ "embed"
	// The zone database in the binary, so campaign.timezone works in a bare
	// container with no /usr/share/zoneinfo.
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"time"
	_ "time/tzdata"

	"github.com/BurntSushi/toml"
)

// Config is the whole configuration; the field tags are the TOML keys.
type Config struct {
	Campaign  Campaign  `toml:"campaign"`
	SMTP      SMTP      `toml:"smtp"`
	Verify    Verify    `toml:"verify"`
	Dedup     Dedup     `toml:"dedup"`
	Batch     Batch     `toml:"batch"`
	Delivery  Delivery  `toml:"delivery"`
	DKIM      DKIM      `toml:"dkim"`
	Store     Store     `toml:"store"`
	Admin     Admin     `toml:"admin"`
	Receipts  Receipts  `toml:"receipts"`
	Secondary Secondary `toml:"secondary"`
	Log       Log       `toml:"log"`
}

// Campaign says which letters are accepted and who receives the batches.
type Campaign struct {
	Name string `toml:"name"`
	// Language is what organisers and supporters read: "es" or "en".
	Language string `toml:"language"`
	// Timezone is the IANA zone of every time a person reads.
	Timezone   string   `toml:"timezone"`
	Addresses  []string `toml:"addresses"`
	Recipients []string `toml:"recipients"`
	From       string   `toml:"from"`
}

// SMTP configures the inbound listener.
type SMTP struct {
	Listen          []string `toml:"listen"`
	Hostname        string   `toml:"hostname"`
	MaxMessageBytes int64    `toml:"max_message_bytes"`
	MaxConnections  int      `toml:"max_connections"`
	MaxPerIP        int      `toml:"max_per_ip"`
	Timeout         Duration `toml:"timeout"`
	TLSCert         string   `toml:"tls_cert"`
	TLSKey          string   `toml:"tls_key"`
}

// Verify configures DKIM verification of incoming letters.
type Verify struct {
	Unverified UnverifiedPolicy `toml:"unverified"`
	// SPF lets an aligned SPF pass verify a letter without an aligned DKIM
	// signature (DMARC's other path).
	SPF bool `toml:"spf"`
	// ConfirmTTL is how long a confirmation request can be answered.
	ConfirmTTL Duration `toml:"confirm_ttl"`
	// ConfirmPerHour caps confirmation requests sent, in all.
	ConfirmPerHour int      `toml:"confirm_per_hour"`
	DNSResolver    string   `toml:"dns_resolver"`
	DNSTimeout     Duration `toml:"dns_timeout"`
}

// Dedup configures how sender addresses are folded before counting.
type Dedup struct {
	FoldSubaddress bool `toml:"fold_subaddress"`
	FoldGmailDots  bool `toml:"fold_gmail_dots"`
}

// Batch says when a batch closes.
type Batch struct {
	MaxLetters int      `toml:"max_letters"`
	MaxWait    Duration `toml:"max_wait"`
	// MaxBytes bounds a batch message, since recipients refuse large mail.
	MaxBytes int64 `toml:"max_bytes"`
}

// Delivery configures how batches reach the recipients.
type Delivery struct {
	Mode         DeliveryMode   `toml:"mode"`
	Smarthost    string         `toml:"smarthost"`
	Username     string         `toml:"username"`
	PasswordFile string         `toml:"password_file"`
	StartTLS     StartTLSPolicy `toml:"starttls"`
	Maildir      string         `toml:"maildir"`
	RetryMin     Duration       `toml:"retry_min"`
	RetryMax     Duration       `toml:"retry_max"`
	GiveUpAfter  Duration       `toml:"give_up_after"`
}

// UnverifiedPolicy is verify.unverified: what happens to a letter without
// an aligned passing DKIM signature (SPEC 4).
type UnverifiedPolicy string

// Policies for unverified letters.
const (
	// UnverifiedReject refuses it with 550 5.7.20 at the end of DATA.
	UnverifiedReject UnverifiedPolicy = "reject"
	// UnverifiedQuarantine answers 250 and holds it, not counted.
	UnverifiedQuarantine UnverifiedPolicy = "quarantine"
	// UnverifiedRelay counts it, marked unverified.
	UnverifiedRelay UnverifiedPolicy = "relay"
	// UnverifiedConfirm answers 250, holds it, and asks its From address
	// to confirm it by reply (SPEC 11).
	UnverifiedConfirm UnverifiedPolicy = "confirm"
)

// UnverifiedPolicies are the values verify.unverified accepts.
var UnverifiedPolicies = []UnverifiedPolicy{UnverifiedReject, UnverifiedQuarantine, UnverifiedRelay, UnverifiedConfirm}

// DeliveryMode is delivery.mode: how batches leave.
type DeliveryMode string

// Delivery modes.
const (
	// DeliverySMTP sends each copy over SMTP (MX lookup or smarthost).
	DeliverySMTP DeliveryMode = "smtp"
	// DeliveryMaildir writes each copy into a Maildir per recipient.
	DeliveryMaildir DeliveryMode = "maildir"
)

// DeliveryModes are the values delivery.mode accepts.
var DeliveryModes = []DeliveryMode{DeliverySMTP, DeliveryMaildir}

// StartTLSPolicy is delivery.starttls: when outbound SMTP encrypts.
type StartTLSPolicy string

// STARTTLS policies.
const (
	// StartTLSOpportunistic encrypts whenever the server offers STARTTLS,
	// without insisting on a verifiable certificate.
	StartTLSOpportunistic StartTLSPolicy = "opportunistic"
	// StartTLSRequired delivers only over TLS with a verified certificate.
	StartTLSRequired StartTLSPolicy = "required"
	// StartTLSOff never sends STARTTLS.
	StartTLSOff StartTLSPolicy = "off"
)

// StartTLSPolicies are the values delivery.starttls accepts.
var StartTLSPolicies = []StartTLSPolicy{StartTLSOpportunistic, StartTLSRequired, StartTLSOff}

// DKIM configures signing of outbound batches; all empty means unsigned.
type DKIM struct {
	Domain   string `toml:"domain"`
	Selector string `toml:"selector"`
	KeyFile  string `toml:"key_file"`
}

// Store configures where the daemon keeps its data.
type Store struct {
	Dir       string   `toml:"dir"`
	Retention Duration `toml:"retention"`
	// HeldRetention is how long a held letter waits for an admin before it
	// is purged.
	HeldRetention Duration `toml:"held_retention"`
	// MinFreeBytes is the free disk space below which the store refuses new
	// letters with a temporary error, before the disk is actually full.
	MinFreeBytes int64 `toml:"min_free_bytes"`
}

// Admin configures the admin HTTP listener.
type Admin struct {
	Listen string `toml:"listen"`
	Token  string `toml:"token"`
	// ReaderToken opens the organisers' pages read-only, never the API's
	// actions.
	ReaderToken string `toml:"reader_token"`
}

// Receipts configures the receipt a newly counted, verified supporter gets.
type Receipts struct {
	Enabled bool `toml:"enabled"`
}

// Secondary configures the backup-MX role (SPEC 12).
type Secondary struct {
	// Primary, when set, makes this instance a secondary MX that forwards
	// every letter to this "host:port".
	Primary string `toml:"primary"`
	// Trusted lists, on the primary, the IPs or CIDRs of its secondaries.
	Trusted []string `toml:"trusted"`
	// Names lists, on the primary, its secondaries' smtp.hostname: the
	// authserv-id each writes, so that a field claiming one of them is
	// removed from any letter but where it is believed.
	Names []string `toml:"names"`
}

// The languages organisers and supporters can be written to in
// (campaign.language).
const (
	LanguageSpanish = "es"
	LanguageEnglish = "en"
)

// Location is campaign.timezone loaded; Validate has checked it loads.
func (c *Campaign) Location() *time.Location {
	loc, err := time.LoadLocation(c.Timezone)
	if err != nil {
		return time.UTC
	}
	return loc
}

// Log configures the log format.
type Log struct {
	Format string `toml:"format"`
}

// Duration is a Go duration string in TOML ("90s", "1h"); it must be positive.
type Duration struct{ time.Duration }

// UnmarshalText parses a Go duration. Non-positive values are refused here,
// not only in Validate, so that the error carries the key's line.
func (d *Duration) UnmarshalText(text []byte) error {
	v, err := time.ParseDuration(string(text))
	if err != nil {
		return fmt.Errorf("%q is not a duration (write it like \"90s\", \"5m\" or \"1h\")", text)
	}
	if v <= 0 {
		return fmt.Errorf("%q: must be positive", text)
	}
	d.Duration = v
	return nil
}

// MarshalText writes the duration without the noise time.Duration.String
// adds ("1h" rather than "1h0m0s"), so check-config output reads like the file.
func (d Duration) MarshalText() ([]byte, error) {
	s := d.Duration.String()
	if strings.HasSuffix(s, "m0s") {
		s = strings.TrimSuffix(s, "0s")
	}
	if strings.HasSuffix(s, "h0m") {
		s = strings.TrimSuffix(s, "0m")
	}
	return []byte(s), nil
}

//go:embed default.toml
var defaultTOML []byte

// DefaultSource is the source Load reports when it uses the embedded default.
const DefaultSource = "embedded default"

// defaultFile is what Load reads when given no path.
const defaultFile = "./petitiond.toml"

// base returns the values of keys a file leaves out (SPEC section 3). The
// campaign keys other than language and timezone have none: a file must say
// which campaign it runs.
func base() *Config {
	return &Config{
		Campaign: Campaign{Language: LanguageSpanish, Timezone: "America/Santiago"},
		SMTP: SMTP{
			Listen:          []string{"127.0.0.1:2525"},
			Hostname:        "localhost",
			MaxMessageBytes: 1 << 20,
			MaxConnections:  500,
			MaxPerIP:        20,
			Timeout:         Duration{60 * time.Second},
		},
		Verify: Verify{
			Unverified:     UnverifiedQuarantine,
			SPF:            true,
			ConfirmTTL:     Duration{168 * time.Hour},
			ConfirmPerHour: 200,
			DNSTimeout:     Duration{5 * time.Second},
		},
		Dedup: Dedup{FoldSubaddress: true, FoldGmailDots: true},
		Batch: Batch{MaxLetters: 100, MaxWait: Duration{time.Hour}, MaxBytes: 10 << 20},
		Delivery: Delivery{
			Mode:        DeliverySMTP,
			StartTLS:    StartTLSOpportunistic,
			Maildir:     "outbox",
			RetryMin:    Duration{5 * time.Minute},
			RetryMax:    Duration{time.Hour},
			GiveUpAfter: Duration{120 * time.Hour},
		},
		Store: Store{Dir: "petitiond-data", Retention: Duration{720 * time.Hour},
			HeldRetention: Duration{720 * time.Hour}, MinFreeBytes: 256 << 20},
		Admin:     Admin{Listen: "127.0.0.1:8025"},
		Secondary: Secondary{Trusted: []string{}, Names: []string{}},
		Log:       Log{Format: "text"},
	}
}

// Default returns the embedded default configuration (a fresh copy each
// call, so callers may change it).
func Default() *Config {
	cfg, err := Parse(DefaultSource, defaultTOML)
	if err != nil {
		// default.toml is part of the binary and tested; reaching this is a
		// build mistake, not a runtime condition.
		panic("config: embedded default.toml is invalid:\n" + err.Error())
	}
	return cfg
}

// Load reads and validates the config at path. With path "", it reads
// ./petitiond.toml if that exists, else returns the embedded default.
// source names what was loaded, for logs and check-config.
func Load(path string) (cfg *Config, source string, err error) {
	source = path
	if path == "" {
		source = defaultFile
	}
	data, err := os.ReadFile(source)
	if path == "" && errors.Is(err, fs.ErrNotExist) {
		return Default(), DefaultSource, nil
	}
	if err != nil {
		// An existing but unreadable file is an error, never a silent
		// fallback to the default: the operator meant that file.
		return nil, source, fmt.Errorf("config: read %s: %w", source, err)
	}
	cfg, err = Parse(source, data)
	return cfg, source, err
}

// Parse decodes data on top of the base defaults and validates it. name is
// used as Problem.File. On any problem it returns a nil Config and Problems
// listing all of them, sorted by line.
func Parse(name string, data []byte) (*Config, error) {
	var tables map[string]toml.Primitive
	md, err := toml.Decode(string(data), &tables)
	if err != nil {
		p := Problem{File: name, Msg: err.Error()}
		var pe toml.ParseError
		if errors.As(err, &pe) {
			p.Line, p.Msg = pe.Position.Line, pe.Message
		}
		return nil, Problems{p}
	}

	cfg := base()
	lines := keyLines(data)
	var ps Problems
	bad := make(map[string]bool) // keys that failed to decode: skip their Validate problems
	report := func(key toml.Key, line int, msg string) {
		k := key.String()
		bad[k] = true
		if line == 0 {
			line = lines[k]
		}
		ps = append(ps, Problem{File: name, Line: line, Key: k, Msg: msg})
	}

	// Decode table by table and key by key, rather than all at once, so one
	// bad value does not hide the others, and so key names match exactly
	// (toml's struct decoding also accepts keys that differ in case).
	root := reflect.ValueOf(cfg).Elem()
	for tname, tprim := range tables {
		tkey := toml.Key{tname}
		table, ok := fieldByTag(root, tname)
		if !ok {
			report(tkey, 0, "unknown key")
			continue
		}
		// toml v1.6.0 decodes a non-table into a map as an empty map, without
		// an error, so look at the raw value first.
		var raw any
		if err := md.PrimitiveDecode(tprim, &raw); err != nil {
			report(tkey, 0, err.Error())
			continue
		}
		if _, ok := raw.(map[string]any); !ok {
			report(tkey, 0, "must be a table, not "+tomlType(&md, tkey))
			continue
		}
		var keys map[string]toml.Primitive
		if err := md.PrimitiveDecode(tprim, &keys); err != nil {
			report(tkey, 0, err.Error())
			continue
		}
		for kname, kprim := range keys {
			key := toml.Key{tname, kname}
			field, ok := fieldByTag(table, kname)
			if !ok {
				report(key, 0, "unknown key")
				continue
			}
			// Decode into a fresh value so a failure leaves the default.
			v := reflect.New(field.Type())
			if err := md.PrimitiveDecode(kprim, v.Interface()); err != nil {
				var pe toml.ParseError
				if errors.As(err, &pe) { // from Duration.UnmarshalText
					report(key, pe.Position.Line, pe.Message)
				} else {
					report(key, 0, "must be "+describe(field.Type())+", not "+tomlType(&md, key))
				}
				continue
			}
			field.Set(v.Elem())
		}
	}

	for _, p := range cfg.Validate() {
		if bad[p.Key] {
			continue
		}
		p.File = name
		p.Line = lineOf(lines, p.Key)
		ps = append(ps, p)
	}
	if len(ps) > 0 {
		ps.sort()
		return nil, ps
	}
	return cfg, nil
}

// lineOf is the line of key, or, for a key the file leaves out (a missing
// required value), the line of its table, which is where it belongs.
func lineOf(lines map[string]int, key string) int {
	if l, ok := lines[key]; ok {
		return l
	}
	if i := strings.IndexByte(key, '.'); i > 0 {
		return lines[key[:i]]
	}
	return 0
}

// fieldByTag finds the field of struct v whose toml tag is name, exactly.
func fieldByTag(v reflect.Value, name string) (reflect.Value, bool) {
	t := v.Type()
	for i := range t.NumField() {
		if t.Field(i).Tag.Get("toml") == name {
			return v.Field(i), true
		}
	}
	return reflect.Value{}, false
}

var durationType = reflect.TypeFor[Duration]()

// describe names the TOML value a Go field type wants, for error messages.
func describe(t reflect.Type) string {
	if t == durationType {
		return "a duration string like \"90s\""
	}
	switch t.Kind() {
	case reflect.String:
		return "a string"
	case reflect.Bool:
		return "true or false"
	case reflect.Int, reflect.Int64:
		return "an integer"
	case reflect.Slice:
		return "a list of strings"
	case reflect.Struct:
		return "a table"
	}
	return t.String()
}

// tomlType names the TOML type of key as found in the file.
func tomlType(md *toml.MetaData, key toml.Key) string {
	switch t := md.Type(key...); t {
	case "Hash":
		return "a table"
	case "ArrayHash":
		return "an array of tables"
	case "Array":
		return "a list of other values"
	case "Bool":
		return "a boolean"
	case "Integer":
		return "an integer"
	case "":
		return "a value of another type"
	default:
		return "a " + strings.ToLower(t)
	}
}

// TOML renders the effective configuration as TOML, for check-config. The
// admin token is a secret and shows as "(set)" when set, so the output is
// safe to paste; everything else round-trips through Parse.
func (c *Config) TOML() []byte {
	out := *c
	if out.Admin.Token != "" {
		out.Admin.Token = "(set)"
	}
	if out.Admin.ReaderToken != "" {
		out.Admin.ReaderToken = "(set)"
	}
	var b strings.Builder
	enc := toml.NewEncoder(&b)
	enc.Indent = ""
	if err := enc.Encode(out); err != nil {
		// Config holds only strings, integers, booleans, string lists and
		// Durations, all of which encode; an error is a programming mistake.
		panic("config: encode: " + err.Error())
	}
	return []byte(b.String())
}

// DataPath resolves a path from the config that is relative to the store
// directory (delivery.maildir): absolute paths are kept as they are.
func (c *Config) DataPath(rel string) string {
	if filepath.IsAbs(rel) {
		return filepath.Clean(rel)
	}
	return filepath.Join(c.Store.Dir, rel)
}
