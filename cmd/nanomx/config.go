package main

import (
	"cmp"
	"encoding"
	"errors"
	"fmt"
	"io"
	"net"
	"net/netip"
	"os"
	"reflect"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"time"

	toml "github.com/pelletier/go-toml/v2"
	"github.com/pelletier/go-toml/v2/unstable"
	"github.com/rs/zerolog"

	"github.com/nanomx/nanomx/server"
)

// fileConfig is the configuration file: one field per key, which README.md's
// table documents. go-toml decodes the file straight into it, starting from
// the defaults, so a key left out keeps its default; "nanomx check-config"
// prints it.
//
// A field named like a field of server.Config is copied to and from that
// field by name (copyByName): its default is server.Defaults'. The others are
// cmd's own, with their defaults in defaultFile.
//
// Adding a key is this field and its README row; strict decoding, flags,
// reload, check-config and the tests read the struct. Tags: toml is the key;
// flag names the flag of "nanomx serve" that overrides it and usage is that
// flag's help (the {word} in braces is what -h shows after the flag name);
// restart marks a key a SIGHUP cannot change.
type fileConfig struct {
	Hostname    string   `toml:"hostname" flag:"hostname" usage:"this MX's {name} in the greeting and Received header" restart:"true"`
	Listen      []string `toml:"listen" flag:"listen" usage:"comma-separated {addresses} to listen on" restart:"true"`
	MaildirRoot string   `toml:"maildir_root" flag:"maildir-root" usage:"{folder} holding <domain>/<user>/ Maildirs" restart:"true"`

	// The address book.
	Domains             []string           `toml:"domains" flag:"domain" usage:"accepted {domain}; repeat or comma-separate"`
	Postmaster          string             `toml:"postmaster" flag:"postmaster" usage:"mailbox {address} that receives postmaster@ mail"`
	Mailboxes           []string           `toml:"mailboxes"`
	Aliases             map[string]targets `toml:"aliases"`
	CatchAll            map[string]string  `toml:"catch_all"`
	SubaddressSeparator string             `toml:"subaddress_separator"`

	// Limits.
	MaxMessageBytes     size   `toml:"max_message_size" flag:"max-message-size" usage:"largest message, bytes or a {size} like 25MiB"`
	MaxRecipients       int    `toml:"max_recipients"`
	MaxLineBytes        int    `toml:"max_line_length"`
	MaxAddressAllowance int    `toml:"max_address_allowance"`
	MaxBadCommands      int    `toml:"max_bad_commands"`
	MaxJunkCommands     int    `toml:"max_junk_commands"`
	MaxConnections      int    `toml:"max_connections" flag:"max-connections" usage:"{n} concurrent connections in total"`
	MaxConnectionsPerIP int    `toml:"max_connections_per_ip" flag:"max-connections-per-ip" usage:"{n} concurrent connections per client IP or IPv6 /64"`
	MaxPendingInput     size   `toml:"max_pending_input"`
	BodyBudgetBytes     size   `toml:"body_budget"`
	BodyBudgetPerIP     size   `toml:"body_budget_per_ip"`
	SpillThreshold      size   `toml:"spill_threshold"`
	BareNewline         string `toml:"bare_newline"`

	// Delivery.
	Workers     int  `toml:"workers" flag:"workers" usage:"{n} delivery workers" restart:"true"`
	QueueLength int  `toml:"queue_length" restart:"true"`
	Fsync       bool `toml:"fsync" flag:"fsync" usage:"fsync each delivery before 250; -fsync=false is for benchmarks only" restart:"true"`
	GroupCommit bool `toml:"group_commit" restart:"true"`

	// Timeouts. MinDataRate is in bytes per second.
	CommandTimeout  duration `toml:"command_timeout"`
	DataTimeout     duration `toml:"data_timeout"`
	MinDataRate     int64    `toml:"min_data_rate"`
	SessionTimeout  duration `toml:"session_timeout"`
	ShutdownTimeout duration `toml:"shutdown_timeout"`
	GreetingDelay   duration `toml:"greeting_delay"`

	EventLoops int  `toml:"event_loops" restart:"true"`
	SchedBatch bool `toml:"sched_batch" restart:"true"`

	// STARTTLS.
	TLSCert             string   `toml:"tls_cert"`
	TLSKey              string   `toml:"tls_key"`
	TLSMinVersion       string   `toml:"tls_min_version"`
	TLSRequired         bool     `toml:"tls_required"`
	MaxTLSSessions      int      `toml:"max_tls_sessions"`
	TLSHandshakeTimeout duration `toml:"tls_handshake_timeout"`

	// DNS, for the checks.
	DNSServers []string `toml:"dns_servers" restart:"true"`
	DNSTimeout duration `toml:"dns_timeout" restart:"true"`
	// Screening: DNS lists and rates (server/screen.go).
	DNSBLSites              []string `toml:"dnsbl_sites" restart:"true"`
	DNSBLThreshold          int      `toml:"dnsbl_threshold" restart:"true"`
	DNSBLAction             string   `toml:"dnsbl_action" restart:"true"`
	ScreenAllow             []string `toml:"screen_allow" restart:"true"`
	MaxConnectionsPerMinute int      `toml:"max_connections_per_minute" restart:"true"`
	MaxMessagesPerMinute    int      `toml:"max_messages_per_minute" restart:"true"`
	MaxRecipientsPerMinute  int      `toml:"max_recipients_per_minute" restart:"true"`
	// Delivery: the Maildirs, or an LMTP server (server/deliver.go).
	Delivery        string   `toml:"delivery" restart:"true"`
	LMTP            string   `toml:"lmtp" restart:"true"`
	LMTPCheckRcpt   bool     `toml:"lmtp_check_rcpt" restart:"true"`
	LMTPConnections int      `toml:"lmtp_connections" restart:"true"`
	LMTPTimeout     duration `toml:"lmtp_timeout" restart:"true"`
	// PROXY protocol listeners (behind HAProxy or a load balancer).
	ProxyListen  []string `toml:"proxy_listen" restart:"true"`
	ProxyTrusted []string `toml:"proxy_trusted"`
	ProxyTimeout duration `toml:"proxy_timeout"`

	// Sender authentication (on with a file, off in the development
	// default: defaultFile, devDefault).
	SPF                   bool   `toml:"spf" restart:"true"`
	DKIM                  bool   `toml:"dkim" restart:"true"`
	DMARC                 bool   `toml:"dmarc" restart:"true"`
	IPRev                 bool   `toml:"iprev" restart:"true"`
	AuthservID            string `toml:"authserv_id" restart:"true"`
	DMARCRejectAction     string `toml:"dmarc_reject_action" restart:"true"`
	DMARCQuarantineAction string `toml:"dmarc_quarantine_action" restart:"true"`
	SPFFailAction         string `toml:"spf_fail_action" restart:"true"`
	JunkFolder            string `toml:"junk_folder" restart:"true"`
	// rspamd at the end of data; junk_folder is where spam goes.
	RspamdURL           string   `toml:"rspamd_url" restart:"true"`
	RspamdTimeout       duration `toml:"rspamd_timeout" restart:"true"`
	RspamdMaxSize       size     `toml:"rspamd_max_size" restart:"true"`
	RspamdMaxConcurrent int      `toml:"rspamd_max_concurrent" restart:"true"`
	RspamdOnError       string   `toml:"rspamd_on_error" restart:"true"`
	RspamdJunk          bool     `toml:"rspamd_junk" restart:"true"`

	// Operations. pprof is served by cmd, which checks it (checkLocal); the
	// log settings are cmd's own.
	PprofAddr string    `toml:"pprof" flag:"pprof" usage:"serve net/http/pprof on this loopback {address}, e.g. 127.0.0.1:6060" restart:"true"`
	LogLevel  logLevel  `toml:"log_level" flag:"log-level" usage:"log {level}: debug, info, warn or error"`
	LogFormat logFormat `toml:"log_format" flag:"log-format" usage:"log {format}: json or console" restart:"true"`

	// Metrics: the server serves and checks them (loopback only unless
	// metrics_allow_public).
	MetricsAddr        string `toml:"metrics" restart:"true"`
	MetricsAllowPublic bool   `toml:"metrics_allow_public" restart:"true"`
}

// defaultFile returns the defaults: server.Defaults, the log at info in JSON.
func defaultFile() fileConfig {
	fc := fileConfig{LogLevel: logLevel(zerolog.InfoLevel), LogFormat: formatJSON}
	if err := copyByName(reflect.ValueOf(&fc).Elem(), reflect.ValueOf(server.Defaults())); err != nil {
		panic(err) // every server value fits the file's types
	}
	// A configured MX verifies its senders; server.Defaults (tests) and
	// the development default do not.
	fc.SPF, fc.DKIM, fc.DMARC, fc.IPRev = true, true, true, true
	return fc
}

// toServer makes the server.Config fc describes. Errors are
// *server.ConfigError values.
func toServer(fc *fileConfig) (server.Config, error) {
	cfg := server.Defaults()
	err := copyByName(reflect.ValueOf(&cfg).Elem(), reflect.ValueOf(fc).Elem())
	return cfg, err
}

// fileFields lists the fields of fileConfig, one per key, in order.
func fileFields() []reflect.StructField {
	return reflect.VisibleFields(reflect.TypeFor[fileConfig]())
}

// configKeys lists the keys of the file, in order.
func configKeys() []string {
	var keys []string
	for _, f := range fileFields() {
		keys = append(keys, f.Tag.Get("toml"))
	}
	return keys
}

// fileField finds the field of a top-level key, matched as go-toml matches
// it: exactly, or else ignoring case.
func fileField(key string) (reflect.StructField, bool) {
	fields := fileFields()
	i := slices.IndexFunc(fields, func(f reflect.StructField) bool { return f.Tag.Get("toml") == key })
	if i < 0 {
		i = slices.IndexFunc(fields, func(f reflect.StructField) bool { return strings.EqualFold(f.Tag.Get("toml"), key) })
	}
	if i < 0 {
		return reflect.StructField{}, false
	}
	return fields[i], true
}

// copyByName sets each field of the struct dst from the field of the struct
// src that has the same name, converting between the file's types and
// server.Config's (size to int64 or int, duration to time.Duration, targets
// to []string, in maps and slices too). Fields without a namesake stay as
// they are. A value too large for its field is a *server.ConfigError.
func copyByName(dst, src reflect.Value) error {
	var errs []error
	for i := range dst.NumField() {
		f := dst.Type().Field(i)
		sf, ok := src.Type().FieldByName(f.Name)
		if !f.IsExported() || !ok {
			continue
		}
		if err := convert(dst.Field(i), src.FieldByIndex(sf.Index)); err != nil {
			key := f.Tag.Get("toml") + sf.Tag.Get("toml") // one of them is fileConfig
			errs = append(errs, &server.ConfigError{Key: key, Err: err})
		}
	}
	return errors.Join(errs...)
}

// convert sets dst to src, whose type has the same kind (or an integer
// kind for an integer), making new slices and maps.
func convert(dst, src reflect.Value) error {
	switch {
	case dst.CanInt() && src.CanInt():
		if dst.OverflowInt(src.Int()) {
			return errors.New("is too large")
		}
		dst.SetInt(src.Int())
	case dst.Kind() == reflect.Slice && src.Kind() == reflect.Slice:
		if src.IsNil() {
			dst.SetZero()
			return nil
		}
		out := reflect.MakeSlice(dst.Type(), src.Len(), src.Len())
		for i := range src.Len() {
			if err := convert(out.Index(i), src.Index(i)); err != nil {
				return err
			}
		}
		dst.Set(out)
	case dst.Kind() == reflect.Map && src.Kind() == reflect.Map:
		if src.IsNil() {
			dst.SetZero()
			return nil
		}
		out := reflect.MakeMapWithSize(dst.Type(), src.Len())
		for it := src.MapRange(); it.Next(); {
			v := reflect.New(dst.Type().Elem()).Elem()
			if err := convert(v, it.Value()); err != nil {
				return err
			}
			out.SetMapIndex(it.Key().Convert(dst.Type().Key()), v)
		}
		dst.Set(out)
	default:
		dst.Set(src.Convert(dst.Type()))
	}
	return nil
}

// The types of keys that go-toml decodes through UnmarshalText. go-toml hands
// UnmarshalText the text of a value of any kind (an integer's digits, "true")
// and returns its error without a line, and it stores an integer straight
// into a type whose kind is an integer; so checkShape looks at each value on
// the parsed document first. A type's checkValue says what it accepts; one
// without accepts strings only.
type valueChecker interface {
	checkValue(v *unstable.Node) error
}

var textUnmarshalerType = reflect.TypeFor[encoding.TextUnmarshaler]()

// size is a number of bytes: a TOML integer, or a string with a unit
// ("25MiB", "512 KB") or without.
type size int64

func (s *size) UnmarshalText(b []byte) error {
	n, err := parseSize(string(b))
	*s = size(n)
	return err
}

func (s size) MarshalText() ([]byte, error) { return []byte(formatSize(int64(s))), nil }

func (size) checkValue(v *unstable.Node) error {
	switch v.Kind {
	case unstable.String:
		return nil
	case unstable.Integer:
		// An integer go-toml cannot read is go-toml's to report.
		if n, err := strconv.ParseInt(string(v.Data), 0, 64); err == nil && n < 0 {
			return errors.New("must not be negative")
		}
		return nil
	}
	return wants(`a number of bytes or a size such as "25MiB"`, v)
}

// duration is a Go duration in a string: "90s", "5m", "1h".
type duration time.Duration

func (d *duration) UnmarshalText(b []byte) error {
	x, err := parseDuration(string(b))
	*d = duration(x)
	return err
}

func (d duration) MarshalText() ([]byte, error) { return []byte(formatDuration(time.Duration(d))), nil }

func (duration) checkValue(v *unstable.Node) error {
	if v.Kind == unstable.String {
		return nil
	}
	return wants(`a duration such as "90s"`, v)
}

// targets are the mailboxes of an alias: "a@x" or ["a@x", "b@y"].
type targets []string

func (t *targets) UnmarshalText(b []byte) error {
	*t = targets{string(b)}
	return nil
}

func (targets) checkValue(v *unstable.Node) error {
	ok := v.Kind == unstable.String || v.Kind == unstable.Array
	if v.Kind == unstable.Array {
		for it := v.Children(); it.Next(); {
			ok = ok && it.Node().Kind == unstable.String
		}
	}
	if !ok {
		return errors.New("wants an address or an array of addresses")
	}
	return nil
}

// logLevel is debug, info, warn or error.
type logLevel zerolog.Level

func (l *logLevel) UnmarshalText(b []byte) error {
	lvl, err := zerolog.ParseLevel(string(b))
	if err != nil || lvl < zerolog.DebugLevel || lvl > zerolog.ErrorLevel || lvl.String() != string(b) {
		return fmt.Errorf("%q is not one of debug, info, warn, error", b)
	}
	*l = logLevel(lvl)
	return nil
}

func (l logLevel) MarshalText() ([]byte, error) { return []byte(zerolog.Level(l).String()), nil }

// logFormat is json or console.
type logFormat uint8

const (
	formatJSON logFormat = iota
	formatConsole
)

// Log formats, as loaded.LogFormat holds them.
const (
	logJSON    = "json"
	logConsole = "console"
)

var logFormats = []string{formatJSON: logJSON, formatConsole: logConsole}

func (f logFormat) String() string { return logFormats[f] }

func (f *logFormat) UnmarshalText(b []byte) error {
	i := slices.Index(logFormats, string(b))
	if i < 0 {
		return fmt.Errorf("%q is not one of json, console", b)
	}
	*f = logFormat(i)
	return nil
}

func (f logFormat) MarshalText() ([]byte, error) { return []byte(f.String()), nil }

// wants is the error for a value of the wrong kind: "wants <want>, not
// an integer".
func wants(want string, v *unstable.Node) error {
	return fmt.Errorf("wants %s, not %s", want, kindName(v.Kind))
}

// kindName names a TOML value's kind with its article.
func kindName(k unstable.Kind) string {
	if name, ok := map[unstable.Kind]string{
		unstable.String: "a string", unstable.Integer: "an integer", unstable.Float: "a float",
		unstable.Bool: "a boolean", unstable.Array: "an array", unstable.InlineTable: "a table",
	}[k]; ok {
		return name
	}
	return "a date or time"
}

// devDomain is the only domain of the development default.
const devDomain = "localhost"

// loaded is a server.Config plus what cmd needs beyond it, and what it needs
// to point an error at the place that set the wrong value.
type loaded struct {
	Config    server.Config
	LogLevel  zerolog.Level
	LogFormat string // logJSON or logConsole

	// Path is the config file; "" means the development default.
	Path string
	// logDropped reports the log lines the log sink dropped (a metric).
	logDropped func() uint64
	// file holds the effective values (flags included) as the file writes
	// them: check-config prints it, a reload compares its restart-only keys.
	file fileConfig
	// lines tells where the file sets each key.
	lines keyLines
	// byFlag maps a TOML key to the flag (without "-") that overrode it.
	byFlag map[string]string
}

// Dev reports whether l is the development default (no config file).
func (l *loaded) Dev() bool { return l.Path == "" }

// locatedError is a configuration error together with where the bad value
// came from: "config FILE:LINE", "config FILE", "flag -NAME" or
// "config (development default)".
type locatedError struct {
	Where string
	Key   string // TOML key as written in the file, e.g. `aliases."a@x"`
	Err   error
}

func (e *locatedError) Error() string {
	if e.Key == "" {
		return e.Where + ": " + e.Err.Error()
	}
	return e.Where + ": " + e.Key + ": " + e.Err.Error()
}

func (e *locatedError) Unwrap() error { return e.Err }

// decodeFile reads the TOML document src over fc and returns where it sets
// each key. Errors are *locatedError values, joined when there are several.
// checkShape runs first, on go-toml's parse of the document; then go-toml
// decodes, and reports syntax errors, unknown keys and the other type and
// value errors at their line.
func decodeFile(path string, src []byte, fc *fileConfig) (keyLines, error) {
	var (
		lines keyLines
		errs  []error
	)
	// A syntax error stops the walk; decoding reports it below.
	_ = scanDoc(src, func(key, under []string, line int, v *unstable.Node) {
		lines = append(lines, keyLine{key, line})
		if err := checkShape(key, under, v); err != nil {
			errs = append(errs, &locatedError{Where: fmt.Sprintf("config %s:%d", path, line), Key: displayKey(key...), Err: err})
		}
	})
	if len(errs) > 0 {
		return nil, errors.Join(errs...)
	}
	err := toml.NewDecoder(strings.NewReader(string(src))).DisallowUnknownFields().Decode(fc)
	if err == nil {
		return lines, nil
	}
	var strict *toml.StrictMissingError
	if errors.As(err, &strict) {
		errs := make([]error, 0, len(strict.Errors))
		for i := range strict.Errors {
			errs = append(errs, fromDecodeError(path, &strict.Errors[i]))
		}
		return nil, errors.Join(errs...)
	}
	var de *toml.DecodeError
	if errors.As(err, &de) {
		return nil, fromDecodeError(path, de)
	}
	return nil, &locatedError{Where: "config " + path, Err: err}
}

// checkShape checks a value before go-toml decodes it (see valueChecker):
// that of a top-level key or of a table's entry. It also refuses a table
// entry named like a top-level key, written after the table's header: the
// TOML rule that puts every key after a [table] header into that table
// surprises people.
func checkShape(key, under []string, v *unstable.Node) error {
	if v == nil || len(key) > 2 {
		return nil
	}
	f, ok := fileField(key[0])
	if !ok {
		return nil // go-toml reports the unknown key
	}
	t := f.Type
	if len(key) == 2 {
		if t.Kind() != reflect.Map {
			return nil
		}
		if _, top := fileField(key[1]); top && len(under) == 1 {
			return fmt.Errorf("is a top-level key, not an entry of %[1]s (a top-level key written after the [%[1]s] table belongs to that table: move it above the first [table])", under[0])
		}
		t = t.Elem()
	}
	if c, ok := reflect.Zero(t).Interface().(valueChecker); ok {
		return c.checkValue(v)
	}
	if reflect.PointerTo(t).Implements(textUnmarshalerType) && v.Kind != unstable.String {
		return wants("a string", v)
	}
	return nil
}

// typeMismatch matches go-toml's type errors, which name Go types; users
// wrote TOML, so the message is rewritten in TOML terms.
var typeMismatch = regexp.MustCompile(`^cannot decode TOML (\w+) into (?:.* of type )?(.+)$`)

func fromDecodeError(path string, de *toml.DecodeError) error {
	line, _ := de.Position()
	msg := strings.TrimPrefix(de.Error(), "toml: ")
	switch msg {
	case "unknown field":
		msg = "unknown key"
	case "missing table":
		msg = "unknown table"
	}
	if m := typeMismatch.FindStringSubmatch(msg); m != nil {
		if want := tomlKind(m[2]); want != "" {
			msg = "wants " + want + ", not " + withArticle(m[1])
		}
	}
	return &locatedError{
		Where: fmt.Sprintf("config %s:%d", path, line),
		Key:   displayKey(de.Key()...),
		Err:   errors.New(msg),
	}
}

func withArticle(noun string) string {
	if noun != "" && strings.ContainsRune("aeiou", rune(noun[0])) {
		return "an " + noun
	}
	return "a " + noun
}

// tomlKind names in TOML terms the Go type a fileConfig field decodes into.
func tomlKind(goType string) string {
	switch {
	case strings.HasPrefix(goType, "int"), strings.HasPrefix(goType, "uint"):
		return "an integer"
	case goType == "bool":
		return "true or false"
	case goType == "string":
		return "a string"
	case goType == "[]string":
		return "an array of strings"
	case strings.HasPrefix(goType, "map["):
		return "a table"
	}
	return ""
}

// scanDoc walks the TOML document src with go-toml's parser and calls fn for
// every key it sets, in order: each [table] header (v nil), each key-value
// and each entry of an inline table (v its value). key is the key's full
// path, under the [table] header it was written under (nil at the top
// level). It returns the parser's error, if any.
func scanDoc(src []byte, fn keyFunc) error {
	var p unstable.Parser
	p.Reset(src)
	var table []string
	for p.NextExpression() {
		e := p.Expression()
		key, line := keyOf(&p, e)
		switch e.Kind {
		case unstable.Table, unstable.ArrayTable:
			table = key
			fn(key, nil, line, nil)
		case unstable.KeyValue:
			scanKeyValue(&p, table, slices.Concat(table, key), line, e.Value(), fn)
		}
	}
	return p.Error()
}

// keyFunc receives a key of a document from scanDoc.
type keyFunc func(key, under []string, line int, v *unstable.Node)

func scanKeyValue(p *unstable.Parser, under, key []string, line int, v *unstable.Node, fn keyFunc) {
	fn(key, under, line, v)
	if v.Kind != unstable.InlineTable {
		return
	}
	for it := v.Children(); it.Next(); {
		kv := it.Node()
		sub, line := keyOf(p, kv)
		scanKeyValue(p, under, slices.Concat(key, sub), line, kv.Value(), fn)
	}
}

// keyOf returns the parts of the key of a table header or key-value node,
// and the line it starts on.
func keyOf(p *unstable.Parser, n *unstable.Node) (parts []string, line int) {
	for it := n.Key(); it.Next(); {
		k := it.Node()
		if line == 0 {
			line = p.Shape(k.Raw).Start.Line
		}
		parts = append(parts, string(k.Data))
	}
	return parts, line
}

// keyLines tells where a document sets each key (see scanDoc).
type keyLines []keyLine

type keyLine struct {
	key  []string
	line int
}

// line returns the line on which key is set, or 0 when the file does not
// set it. key is a top-level key ("workers"), optionally followed by a dot
// and the name of one entry of that table ("aliases.bob@example.test": all
// after the first dot is the name). An entry's name is matched ignoring
// case. A table is found at its header, its inline assignment or its first
// dotted key, and an entry the file does not have at its table.
func (ks keyLines) line(key string) int {
	top, sub, _ := strings.Cut(key, ".")
	table := 0
	for _, k := range ks {
		switch {
		case !strings.EqualFold(k.key[0], top):
		case sub == "" || len(k.key) == 1:
			if sub == "" {
				return k.line
			}
			table = cmp.Or(table, k.line)
		case strings.EqualFold(k.key[1], sub):
			return k.line
		default:
			table = cmp.Or(table, k.line)
		}
	}
	return table
}

// entryIn returns the line of the entry of table top that msg names first,
// or 0. The address book reports an entry's error under the table's key
// ("aliases": "\"a@x\" is also a mailbox"; "a@x -> b@x: ..."), so the name
// in the message tells which line is meant.
func (ks keyLines) entryIn(top, msg string) int {
	msg = strings.ToLower(msg)
	line, at := 0, len(msg)
	for _, k := range ks {
		if len(k.key) != 2 || !strings.EqualFold(k.key[0], top) {
			continue
		}
		if i := indexWord(msg, strings.ToLower(k.key[1])); i >= 0 && i < at {
			line, at = k.line, i
		}
	}
	return line
}

// indexWord is strings.Index for a name that is not part of a longer
// address or domain, or -1.
func indexWord(s, name string) int {
	inName := func(c byte) bool { return isBareKeyByte(c) || c == '.' || c == '@' || c == '+' }
	for off := 0; name != ""; {
		i := strings.Index(s[off:], name)
		if i < 0 {
			return -1
		}
		i += off
		end := i + len(name)
		if (i == 0 || !inName(s[i-1])) && (end == len(s) || !inName(s[end])) {
			return i
		}
		off = i + 1
	}
	return -1
}

// sizeUnits are matched case-insensitively. KB, MB and GB are decimal
// (1000), KiB, MiB and GiB binary (1024), as in IEC 80000-13.
var sizeUnits = map[string]int64{
	"":    1,
	"b":   1,
	"kb":  1e3,
	"mb":  1e6,
	"gb":  1e9,
	"kib": 1 << 10,
	"mib": 1 << 20,
	"gib": 1 << 30,
}

// parseSize parses "1048576", "25MB", "512 KiB". Only whole numbers: a size
// in bytes is exact.
func parseSize(s string) (int64, error) {
	t := strings.TrimSpace(s)
	i := 0
	for i < len(t) && '0' <= t[i] && t[i] <= '9' {
		i++
	}
	unit, ok := sizeUnits[strings.ToLower(strings.TrimSpace(t[i:]))]
	if i == 0 || !ok {
		return 0, fmt.Errorf("%q is not a size: want bytes, or a whole number with B, KB, MB, GB, KiB, MiB or GiB", s)
	}
	n, err := strconv.ParseInt(t[:i], 10, 64)
	if err != nil || n > (1<<63-1)/unit {
		return 0, fmt.Errorf("%q is too large", s)
	}
	return n * unit, nil
}

// formatSize writes n in the largest unit that holds it exactly: "25MiB",
// "10MB", or bytes ("1000001").
func formatSize(n int64) string {
	for _, u := range []struct {
		name string
		n    int64
	}{{"GiB", 1 << 30}, {"GB", 1e9}, {"MiB", 1 << 20}, {"MB", 1e6}, {"KiB", 1 << 10}, {"KB", 1e3}} {
		if n > 0 && n%u.n == 0 {
			return strconv.FormatInt(n/u.n, 10) + u.name
		}
	}
	return strconv.FormatInt(n, 10)
}

// parseDuration is time.ParseDuration without negative values.
func parseDuration(s string) (time.Duration, error) {
	d, err := time.ParseDuration(s)
	if err != nil {
		return 0, fmt.Errorf("%q is not a duration such as \"30s\", \"5m\" or \"1h\"", s)
	}
	if d < 0 {
		return 0, fmt.Errorf("%q is negative", s)
	}
	return d, nil
}

// formatDuration is d.String() without zero minutes and seconds: "5m",
// "1h", "2m30s".
func formatDuration(d time.Duration) string {
	s := d.String()
	if strings.HasSuffix(s, "m0s") {
		s = strings.TrimSuffix(s, "0s")
	}
	if strings.HasSuffix(s, "h0m") {
		s = strings.TrimSuffix(s, "0m")
	}
	return s
}

// checkPprofAddr refuses anything but a loopback address: pprof serves
// memory contents (message bodies included) and must not face the network.
func checkPprofAddr(addr string) error {
	host, port, err := net.SplitHostPort(addr)
	if err != nil {
		return fmt.Errorf("%q is not host:port", addr)
	}
	if port == "" {
		return fmt.Errorf("%q has no port", addr)
	}
	if host == "localhost" {
		return nil
	}
	if ip, err := netip.ParseAddr(host); err == nil && ip.Unmap().IsLoopback() {
		return nil
	}
	return fmt.Errorf("%q is not a loopback address: pprof exposes process memory, so it listens only on 127.0.0.0/8, [::1] or localhost", addr)
}

// checkLocal validates what cmd owns and server does not: the pprof address.
// The log settings were checked while decoding.
func checkLocal(cfg *server.Config) error {
	if cfg.PprofAddr != "" {
		if err := checkPprofAddr(cfg.PprofAddr); err != nil {
			return &server.ConfigError{Key: "pprof", Err: err}
		}
	}
	return nil
}

// devDefault makes fc the development default: listen on 127.0.0.1:2525
// and deliver every address of every domain to one mailbox,
// catchall@<first domain>, under ./mail. domains is the -domain flag, or
// nil for localhost.
func devDefault(fc *fileConfig, domains []string) {
	if len(domains) == 0 {
		domains = []string{devDomain}
	}
	box := "catchall@" + domains[0]
	fc.Hostname = localHostname()
	fc.Listen = []string{"127.0.0.1:2525"}
	fc.MaildirRoot = "./mail"
	fc.Domains = slices.Clone(domains)
	fc.Mailboxes = []string{box}
	fc.Postmaster = box
	// No DNS on a development machine may be reachable: nothing waits.
	fc.SPF, fc.DKIM, fc.DMARC, fc.IPRev = false, false, false, false
	fc.CatchAll = make(map[string]string, len(domains))
	for _, d := range domains {
		fc.CatchAll[d] = box
	}
}

// localHostname is os.Hostname, or "localhost" when that fails.
func localHostname() string {
	if h, err := os.Hostname(); err == nil && h != "" {
		return h
	}
	return "localhost"
}

// explain turns the *server.ConfigError values in err (from toServer,
// checkLocal, server.Check or server.Run) into *locatedError values that
// name the file and line, or the flag, that set the key. Other errors pass
// through unchanged.
func (l *loaded) explain(err error) error {
	if err == nil {
		return nil
	}
	if j, ok := err.(interface{ Unwrap() []error }); ok {
		var errs []error
		for _, e := range j.Unwrap() {
			errs = append(errs, l.explain(e))
		}
		return errors.Join(errs...)
	}
	var ce *server.ConfigError
	if !errors.As(err, &ce) {
		return err
	}
	top, sub, _ := strings.Cut(ce.Key, ".")
	key := displayKey(top)
	if sub != "" {
		key = displayKey(top, sub)
	}
	le := &locatedError{Key: key, Err: ce.Err}
	switch {
	case l.byFlag[top] != "":
		le.Where = "flag -" + l.byFlag[top]
	case l.Dev():
		le.Where = "config (development default)"
	default:
		le.Where = "config " + l.Path
		n := l.lines.line(ce.Key)
		if sub == "" {
			n = cmp.Or(l.lines.entryIn(top, ce.Err.Error()), n)
		}
		if n > 0 {
			le.Where += ":" + strconv.Itoa(n)
		}
	}
	return le
}

// displayKey writes a key path as TOML would: aliases."bob@example.test".
func displayKey(parts ...string) string {
	var b strings.Builder
	for i, p := range parts {
		if i > 0 {
			b.WriteByte('.')
		}
		if isBareKey(p) {
			b.WriteString(p)
		} else {
			b.WriteString(strconv.Quote(p))
		}
	}
	return b.String()
}

func isBareKey(s string) bool {
	if s == "" {
		return false
	}
	for i := 0; i < len(s); i++ {
		if !isBareKeyByte(s[i]) {
			return false
		}
	}
	return true
}

func isBareKeyByte(c byte) bool {
	return 'a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' || '0' <= c && c <= '9' || c == '_' || c == '-'
}

// printConfig writes the effective configuration l holds as a TOML
// document: every key, defaults included.
func printConfig(w io.Writer, l *loaded) error {
	source := l.Path
	if l.Dev() {
		source = "the development default"
	}
	fmt.Fprintf(w, "# nanomx check-config: the effective configuration of %s,\n# every key with defaults included.\n\n", source)
	fc := l.file
	v := reflect.ValueOf(&fc).Elem()
	for i := range v.NumField() {
		if f := v.Field(i); f.Kind() == reflect.Map && f.IsNil() {
			f.Set(reflect.MakeMap(f.Type())) // go-toml leaves out a nil table
		}
	}
	return toml.NewEncoder(w).Encode(fc)
}
