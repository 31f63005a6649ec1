package main

import (
	"errors"
	"flag"
	"io"
	"os"
	"path/filepath"
	"reflect"
	"regexp"
	"slices"
	"strings"
	"testing"
	"time"

	toml "github.com/pelletier/go-toml/v2"
	"github.com/pelletier/go-toml/v2/unstable"
	"github.com/rs/zerolog"

	"github.com/nanomx/nanomx/server"
)

// writeConfig writes doc to a file in a fresh temporary folder.
func writeConfig(t *testing.T, doc string) string {
	t.Helper()
	path := filepath.Join(t.TempDir(), "nanomx.toml")
	if err := os.WriteFile(path, []byte(doc), 0o600); err != nil {
		t.Fatal(err)
	}
	return path
}

// loadDoc loads doc as a config file, with extra flags after -config.
func loadDoc(t *testing.T, doc string, flags ...string) (*loaded, string, error) {
	t.Helper()
	path := writeConfig(t, doc)
	l, err := parseServe(append([]string{"-config", path}, flags...), io.Discard)
	return l, path, err
}

// sameConfig compares two Configs, ignoring the logger.
func sameConfig(t *testing.T, got, want server.Config) {
	t.Helper()
	got.Log, want.Log = zerolog.Logger{}, zerolog.Logger{}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("config mismatch\n got: %+v\nwant: %+v", got, want)
	}
}

// wantErr checks that err is non-nil and reads exactly want.
func wantErr(t *testing.T, err error, want string) {
	t.Helper()
	if err == nil {
		t.Fatalf("got no error, want %q", want)
	}
	if got := err.Error(); got != want {
		t.Errorf("error:\n got: %s\nwant: %s", got, want)
	}
}

// everyKey sets every key to something other than its default.
const everyKey = `hostname = "mx.example.test"
listen = ["0.0.0.0:25", "[::]:25"]
maildir_root = "/var/mail"
domains = ["example.test", "example.org"]
postmaster = "alice@example.test"
mailboxes = ["alice@example.test", "bob@example.test"]
subaddress_separator = "-"
max_message_size = "10MB"
max_recipients = 50
max_line_length = 1000
max_address_allowance = 256
max_bad_commands = 5
max_junk_commands = 30
max_connections = 100
max_connections_per_ip = 4
max_pending_input = "128KiB"
body_budget = 134217728
body_budget_per_ip = "16MiB"
spill_threshold = "1MiB"
bare_newline = "normalize"
workers = 2
queue_length = 16
fsync = false
group_commit = false
command_timeout = "1m"
data_timeout = "2m30s"
min_data_rate = 1000
session_timeout = "1h"
shutdown_timeout = "5s"
greeting_delay = "2s"
event_loops = 2
sched_batch = false
pprof = "127.0.0.1:6060"
tls_cert = "/etc/ssl/mx.pem"
tls_key = "/etc/ssl/mx.key"
tls_min_version = "1.3"
tls_required = true
max_tls_sessions = 200
tls_handshake_timeout = "10s"
dns_servers = ["127.0.0.53:53", "[::1]:5353"]
dns_timeout = "3s"
dnsbl_sites = ["zen.spamhaus.org=127.0.0.[2..11]*3", "list.dnswl.org=127.0.[0..255].[1..3]*-2"]
dnsbl_threshold = 3
dnsbl_action = "connect"
screen_allow = ["192.0.2.0/24"]
max_connections_per_minute = 60
max_messages_per_minute = 30
max_recipients_per_minute = 300
proxy_listen = ["0.0.0.0:2526"]
proxy_trusted = ["10.0.0.0/8", "192.0.2.10"]
proxy_timeout = "30s"
log_level = "debug"
log_format = "console"

[aliases]
"abuse@example.test" = "alice@example.test"
"team@example.test" = ["alice@example.test", "bob@example.test"]

[catch_all]
"example.org" = "bob@example.test"
`

func TestEveryKey(t *testing.T) {
	l, _, err := loadDoc(t, everyKey)
	if err != nil {
		t.Fatal(err)
	}
	want := server.Defaults()
	want.Hostname = "mx.example.test"
	want.DNSServers = []string{"127.0.0.53:53", "[::1]:5353"}
	want.DNSTimeout = 3 * time.Second
	want.Listen = []string{"0.0.0.0:25", "[::]:25"}
	want.MaildirRoot = "/var/mail"
	want.Domains = []string{"example.test", "example.org"}
	want.Postmaster = "alice@example.test"
	want.Mailboxes = []string{"alice@example.test", "bob@example.test"}
	want.Aliases = map[string][]string{
		"abuse@example.test": {"alice@example.test"},
		"team@example.test":  {"alice@example.test", "bob@example.test"},
	}
	want.CatchAll = map[string]string{"example.org": "bob@example.test"}
	want.SubaddressSeparator = "-"
	want.MaxMessageBytes = 10_000_000
	want.MaxRecipients = 50
	want.MaxLineBytes = 1000
	want.MaxAddressAllowance = 256
	want.MaxBadCommands = 5
	want.MaxJunkCommands = 30
	want.MaxConnections = 100
	want.MaxConnectionsPerIP = 4
	want.MaxPendingInput = 128 << 10
	want.BodyBudgetBytes = 128 << 20
	want.BodyBudgetPerIP = 16 << 20
	want.SpillThreshold = 1 << 20
	want.BareNewline = server.BareNewlineNormalize
	want.Workers = 2
	want.QueueLength = 16
	want.Fsync = false
	want.GroupCommit = false
	want.CommandTimeout = time.Minute
	want.DataTimeout = 150 * time.Second
	want.MinDataRate = 1000
	want.SessionTimeout = time.Hour
	want.ShutdownTimeout = 5 * time.Second
	want.GreetingDelay = 2 * time.Second
	want.EventLoops = 2
	want.SchedBatch = false
	want.PprofAddr = "127.0.0.1:6060"
	want.TLSCert, want.TLSKey = "/etc/ssl/mx.pem", "/etc/ssl/mx.key"
	want.TLSMinVersion = "1.3"
	want.TLSRequired = true
	want.MaxTLSSessions = 200
	want.TLSHandshakeTimeout = 10 * time.Second
	want.DNSBLSites = []string{"zen.spamhaus.org=127.0.0.[2..11]*3", "list.dnswl.org=127.0.[0..255].[1..3]*-2"}
	want.DNSBLThreshold = 3
	want.DNSBLAction = server.DNSBLAtConnect
	want.ScreenAllow = []string{"192.0.2.0/24"}
	want.MaxConnectionsPerMinute = 60
	want.MaxMessagesPerMinute = 30
	want.MaxRecipientsPerMinute = 300
	want.ProxyListen = []string{"0.0.0.0:2526"}
	want.ProxyTrusted = []string{"10.0.0.0/8", "192.0.2.10"}
	want.ProxyTimeout = 30 * time.Second
	want.SPF, want.DKIM, want.DMARC, want.IPRev = true, true, true, true // on with a file
	sameConfig(t, l.Config, want)
	if l.LogLevel != zerolog.DebugLevel || l.LogFormat != logConsole {
		t.Errorf("log = %v %q, want debug console", l.LogLevel, l.LogFormat)
	}
	if err := l.Config.Validate(); err != nil {
		t.Errorf("Validate: %v", err)
	}
}

func TestUnsetKeysKeepDefaults(t *testing.T) {
	l, _, err := loadDoc(t, "# nothing but a comment\n")
	if err != nil {
		t.Fatal(err)
	}
	want := server.Defaults()
	want.SPF, want.DKIM, want.DMARC, want.IPRev = true, true, true, true // on with a file
	sameConfig(t, l.Config, want)
	if l.LogLevel != zerolog.InfoLevel || l.LogFormat != logJSON {
		t.Errorf("log = %v %q, want info json", l.LogLevel, l.LogFormat)
	}
}

func TestParseSize(t *testing.T) {
	for _, tc := range []struct {
		in      string
		want    int64
		wantErr bool
	}{
		// Plain bytes.
		{"0", 0, false},
		{"1048576", 1048576, false},
		{"512B", 512, false},
		// Decimal units.
		{"25MB", 25_000_000, false},
		{"10kb", 10_000, false},
		{"2GB", 2_000_000_000, false},
		// Binary units, any case, optional space.
		{"512KiB", 512 << 10, false},
		{"25MiB", 25 << 20, false},
		{"1 GiB", 1 << 30, false},
		{" 4mib ", 4 << 20, false},
		// Refused: no number, fractions, signs, unknown or ambiguous units.
		{"", 0, true},
		{"MB", 0, true},
		{"1.5MB", 0, true},
		{"-1", 0, true},
		{"+1", 0, true},
		{"25M", 0, true},
		{"25 megabytes", 0, true},
		{"25MB extra", 0, true},
		// Overflow.
		{"9223372036854775807", 1<<63 - 1, false},
		{"9223372036854775808", 0, true},
		{"9000000000GiB", 0, true},
	} {
		got, err := parseSize(tc.in)
		if (err != nil) != tc.wantErr || got != tc.want {
			t.Errorf("parseSize(%q) = %d, %v; want %d, error %v", tc.in, got, err, tc.want, tc.wantErr)
		}
	}
}

func TestSizeKeys(t *testing.T) {
	for _, tc := range []struct {
		doc  string
		want int64
		err  string
	}{
		// An integer is bytes; a string is a size.
		{`max_message_size = 2048`, 2048, ""},
		{`max_message_size = 2_048`, 2048, ""},
		{`max_message_size = "2KiB"`, 2048, ""},
		// Anything else points at the line.
		{"\nmax_message_size = -1", 0, "config F:2: max_message_size: must not be negative"},
		{"\n\nmax_message_size = 1.5", 0, `config F:3: max_message_size: wants a number of bytes or a size such as "25MiB", not a float`},
		{"max_message_size = true", 0, `config F:1: max_message_size: wants a number of bytes or a size such as "25MiB", not a boolean`},
		{"max_message_size = \"1.5MB\"", 0, `config F:1: max_message_size: "1.5MB" is not a size: want bytes, or a whole number with B, KB, MB, GB, KiB, MiB or GiB`},
		// Every error of this kind at once.
		{"max_message_size = -1\nbody_budget = 2.5\n", 0, "config F:1: max_message_size: must not be negative\nconfig F:2: body_budget: wants a number of bytes or a size such as \"25MiB\", not a float"},
		{`max_message_size = "big"`, 0, `config F:1: max_message_size: "big" is not a size: want bytes, or a whole number with B, KB, MB, GB, KiB, MiB or GiB`},
	} {
		l, path, err := loadDoc(t, tc.doc)
		if tc.err != "" {
			wantErr(t, err, strings.ReplaceAll(tc.err, "F", path))
			continue
		}
		if err != nil {
			t.Errorf("%q: %v", tc.doc, err)
			continue
		}
		if l.Config.MaxMessageBytes != tc.want {
			t.Errorf("%q: MaxMessageBytes = %d, want %d", tc.doc, l.Config.MaxMessageBytes, tc.want)
		}
	}
}

func TestDurations(t *testing.T) {
	l, _, err := loadDoc(t, "command_timeout = \"90s\"\ndata_timeout = \"1h2m3s\"\nshutdown_timeout = \"0s\"\n")
	if err != nil {
		t.Fatal(err)
	}
	if got := l.Config.CommandTimeout; got != 90*time.Second {
		t.Errorf("command_timeout = %v", got)
	}
	if got := l.Config.DataTimeout; got != time.Hour+2*time.Minute+3*time.Second {
		t.Errorf("data_timeout = %v", got)
	}
	if got := l.Config.ShutdownTimeout; got != 0 {
		t.Errorf("shutdown_timeout = %v", got)
	}

	for _, tc := range []struct{ doc, err string }{
		{"\ncommand_timeout = \"5\"", `config F:2: command_timeout: "5" is not a duration such as "30s", "5m" or "1h"`},
		{"session_timeout = \"-1m\"", `config F:1: session_timeout: "-1m" is negative`},
		// A bare number has no unit.
		{"\n\ndata_timeout = 300", `config F:3: data_timeout: wants a duration such as "90s", not an integer`},
		{"data_timeout = 0", `config F:1: data_timeout: wants a duration such as "90s", not an integer`},
		{"data_timeout = [\"3m\"]", `config F:1: data_timeout: wants a duration such as "90s", not an array`},
	} {
		_, path, err := loadDoc(t, tc.doc)
		wantErr(t, err, strings.ReplaceAll(tc.err, "F", path))
	}
}

func TestAliasShapes(t *testing.T) {
	l, _, err := loadDoc(t, "aliases = { \"a@x\" = \"b@x\", \"c@x\" = [\"d@x\", \"e@x\"], \"f@x\" = [] }\n")
	if err != nil {
		t.Fatal(err)
	}
	want := map[string][]string{"a@x": {"b@x"}, "c@x": {"d@x", "e@x"}, "f@x": {}}
	if !reflect.DeepEqual(l.Config.Aliases, want) {
		t.Errorf("aliases = %v, want %v", l.Config.Aliases, want)
	}

	// A wrong entry is reported at its own line, key quoted as in TOML.
	_, path, err := loadDoc(t, "[aliases]\n\"a@x\" = \"b@x\"\n\"c@x\" = [\"d@x\", 1]\n")
	wantErr(t, err, "config "+path+`:3: aliases."c@x": wants an address or an array of addresses`)
	_, path, err = loadDoc(t, "aliases = { \"a@x\" = \"b@x\",\n  \"c@x\" = 7 }\n")
	wantErr(t, err, "config "+path+`:2: aliases."c@x": wants an address or an array of addresses`)
	_, path, err = loadDoc(t, "aliases.\"a@x\" = true\n")
	wantErr(t, err, "config "+path+`:1: aliases."a@x": wants an address or an array of addresses`)
}

func TestUnknownKeys(t *testing.T) {
	for _, tc := range []struct{ doc, err string }{
		{"workers = 2\nwrokers = 3\n", "config F:2: wrokers: unknown key"},
		{"max_message_bytes = 1\n", "config F:1: max_message_bytes: unknown key"},
		{"workers = 2\n\n[limits]\nx = 1\n", "config F:3: limits: unknown table"},
		// Each unknown key gets its own line.
		{"a = 1\nworkers = 2\nb = 2\n", "config F:1: a: unknown key\nconfig F:3: b: unknown key"},
	} {
		_, path, err := loadDoc(t, tc.doc)
		wantErr(t, err, strings.ReplaceAll(tc.err, "F", path))
	}
}

func TestTypeAndSyntaxErrors(t *testing.T) {
	for _, tc := range []struct{ doc, err string }{
		// Type errors, named in TOML terms.
		{"hostname = \"mx\"\nworkers = \"four\"\n", "config F:2: workers: wants an integer, not a string"},
		{"\nfsync = 1\n", "config F:2: fsync: wants true or false, not an integer"},
		{"listen = \"0.0.0.0:25\"\n", "config F:1: listen: wants an array of strings, not a string"},
		{"listen = [25]\n", "config F:1: listen: wants a string, not an integer"},
		{"[catch_all]\n\"x\" = 1\n", "config F:2: catch_all.x: wants a string, not an integer"},
		{"workers = 3.5\n", "config F:1: workers: wants an integer, not a float"},
		// Syntax errors.
		{"hostname = \"mx\"\nworkers =\n", "config F:2: unexpected character U+000A at start of value"},
		{"workers = 1\nworkers = 2\n", "config F:2: workers: key workers is already defined"},
	} {
		_, path, err := loadDoc(t, tc.doc)
		wantErr(t, err, strings.ReplaceAll(tc.err, "F", path))
	}
}

func TestLogSettings(t *testing.T) {
	for _, tc := range []struct{ doc, err string }{
		{"\nlog_level = \"trace\"", `config F:2: log_level: "trace" is not one of debug, info, warn, error`},
		{"log_format = \"text\"", `config F:1: log_format: "text" is not one of json, console`},
		// go-toml would store an integer in the level's int8 as it is.
		{"log_level = 0", "config F:1: log_level: wants a string, not an integer"},
		{"\nlog_format = 1", "config F:2: log_format: wants a string, not an integer"},
	} {
		_, path, err := loadDoc(t, tc.doc)
		wantErr(t, err, strings.ReplaceAll(tc.err, "F", path))
	}
	l, _, err := loadDoc(t, "log_level = \"warn\"\nlog_format = \"console\"\n")
	if err != nil {
		t.Fatal(err)
	}
	if l.LogLevel != zerolog.WarnLevel || l.LogFormat != logConsole {
		t.Errorf("log = %v %q, want warn console", l.LogLevel, l.LogFormat)
	}
}

// lineDoc exercises keyLines: comments, multi-line arrays and strings that
// contain key-like text, inline and dotted tables, quoted keys.
const lineDoc = `# workers = 1 in a comment
hostname = "mx.example.test" # max_connections = 3

listen = [
  "0.0.0.0:25",   # workers = 2
  "[::]:25",
]
maildir_root = """
postmaster = "not a key"
"""
postmaster = 'alice@example.test'
  max_connections   =   5
bare_newline = "a ] # [ string"
workers = 7
catch_all."example.org" = "alice@example.test"

[aliases]
'abuse@example.test' = "alice@example.test"
"team@example.test" = [
  "bob@example.test",
]
"dots.in@example.test" = "alice@example.test"

[ mailboxes_table ]
queue_length = 1
`

// docLines is where scanDoc finds the keys of doc.
func docLines(t *testing.T, doc string) keyLines {
	t.Helper()
	var lines keyLines
	if err := scanDoc([]byte(doc), func(key, _ []string, line int, _ *unstable.Node) {
		lines = append(lines, keyLine{key, line})
	}); err != nil {
		t.Fatal(err)
	}
	return lines
}

func TestKeyLine(t *testing.T) {
	lines := docLines(t, lineDoc)
	for _, tc := range []struct {
		key  string
		want int
	}{
		// Top-level keys, past comments and multi-line values.
		{"hostname", 2},
		{"listen", 4},
		{"maildir_root", 8},
		{"postmaster", 11},
		{"max_connections", 12},
		{"bare_newline", 13},
		{"workers", 14},
		// A table: dotted key at top level, or its header.
		{"catch_all", 15},
		{"catch_all.example.org", 15},
		{"aliases", 17},
		// Entries of a table, literal and basic quoted, any case.
		{"aliases.abuse@example.test", 18},
		{"aliases.TEAM@example.test", 19},
		{"aliases.dots.in@example.test", 22},
		// An unknown entry falls back to its table.
		{"aliases.nobody@example.test", 17},
		// A key inside another table is not a top-level key.
		{"queue_length", 0},
		{"mailboxes_table", 24},
		// Not in the file.
		{"domains", 0},
		{"", 0},
	} {
		if got := lines.line(tc.key); got != tc.want {
			t.Errorf("keyLine(%q) = %d, want %d", tc.key, got, tc.want)
		}
	}
}

func TestKeyLineCRLF(t *testing.T) {
	doc := "hostname = \"mx\"\r\n[aliases]\r\n\"a@x\" = \"b@x\"\r\n"
	if got := docLines(t, doc).line("aliases.a@x"); got != 3 {
		t.Errorf("keyLine = %d, want 3", got)
	}
}

// TestSemanticErrorLine covers errors that only server knows about: they
// carry a key, and explain finds the line.
func TestSemanticErrorLine(t *testing.T) {
	doc := "hostname = \"mx.example.test\"\npostmaster = \"a@example.test\"\n\nmax_connections = 0\n\n[aliases]\n\"x@example.test\" = \"nobody@example.test\"\n"
	l, path, err := loadDoc(t, doc)
	if err != nil {
		t.Fatal(err)
	}

	// Validate is the part of server.Check that needs no address book.
	wantErr(t, l.explain(l.Config.Validate()), "config "+path+":4: max_connections: must be at least 1")

	// The address book errors come from spool through server.Check; fake
	// them here, joined as Check may return several.
	fake := errors.Join(
		&server.ConfigError{Key: "aliases.x@example.test", Err: errors.New("nobody@example.test is not a mailbox")},
		&server.ConfigError{Key: "aliases", Err: errors.New("a loop")},
		errors.New("not a config error"),
	)
	wantErr(t, l.explain(fake), "config "+path+`:7: aliases."x@example.test": nobody@example.test is not a mailbox`+
		"\nconfig "+path+":6: aliases: a loop"+
		"\nnot a config error")

	// A key the file does not set: the file without a line.
	wantErr(t, l.explain(&server.ConfigError{Key: "domains", Err: errors.New("needs one domain")}),
		"config "+path+": domains: needs one domain")

	// Wrapped errors still count.
	var le *locatedError
	if !errors.As(l.explain(fmtWrap(&server.ConfigError{Key: "workers", Err: errors.New("x")})), &le) {
		t.Error("a wrapped ConfigError was not located")
	}
}

// TestAddressBookErrorLine: the address book reports an entry's error
// under its table's key ("aliases"), naming the entry in the message; the
// error points at that entry's line, not at the [aliases] header.
func TestAddressBookErrorLine(t *testing.T) {
	const book = `postmaster = "a@example.test"
domains = ["example.test", "example.org"]
mailboxes = ["a@example.test", "b@example.test"]
`
	for _, tc := range []struct{ doc, err string }{
		// The entry named in the message: "x" is also a mailbox.
		{"[aliases]\n\"c@example.test\" = \"a@example.test\"\n\"B@example.test\" = \"a@example.test\"\n",
			`config F:6: aliases: "B@example.test" is also a mailbox`},
		// A chain starts with the alias that fails; its target is not an entry.
		{"[aliases]\n\"team@example.test\" = \"a@example.test\"\n\n\"all@example.test\" = [\"team@example.test\", \"nobody@example.test\"]\n",
			`config F:7: aliases: all@example.test -> nobody@example.test: "nobody@example.test" is not a configured mailbox or alias`},
		// A name inside a longer address is not that entry.
		{"[aliases]\n\"a@example.org\" = \"b@example.test\"\n\"ba@example.org\" = \"x@example.test\"\n",
			`config F:6: aliases: ba@example.org -> x@example.test: "x@example.test" is not a configured mailbox or alias`},
		// Inline tables and catch_all entries too.
		{"aliases = {\n  \"c@example.test\" = [],\n}\n", `config F:5: aliases: "c@example.test" has no targets`},
		{"[catch_all]\n\"example.test\" = \"a@example.test\"\n\"example.net\" = \"a@example.test\"\n",
			`config F:6: catch_all: domain "example.net" is not in domains`},
		// A message that names no entry: the table's header.
		{"\n[catch_all]\n\"example.test\" = \"nobody@example.test\"\n",
			`config F:5: catch_all: nobody@example.test: "nobody@example.test" is not a configured mailbox or alias`},
	} {
		l, path, err := loadDoc(t, book+tc.doc)
		if err != nil {
			t.Fatal(err)
		}
		wantErr(t, l.explain(server.Check(l.Config)), strings.ReplaceAll(tc.err, "F", path))
	}
}

// TestMisplacedTopLevelKey: a top-level key written after a [table] header
// is, for TOML, an entry of that table; the error says so.
func TestMisplacedTopLevelKey(t *testing.T) {
	hint := func(table string) string {
		return " (a top-level key written after the [" + table + "] table belongs to that table: move it above the first [table])"
	}
	for _, tc := range []struct{ doc, err string }{
		{"postmaster = \"a@x\"\n\n[aliases]\n\"b@x\" = \"a@x\"\nmax_recipients = 5\n",
			"config F:5: aliases.max_recipients: is a top-level key, not an entry of aliases" + hint("aliases")},
		// Whatever the value: this one would pass as an alias's target.
		{"[aliases]\nhostname = \"mx.example.test\"\n",
			"config F:2: aliases.hostname: is a top-level key, not an entry of aliases" + hint("aliases")},
		// Every one at once.
		{"[catch_all]\n\"x\" = \"a@x\"\nworkers = 2\nlisten = [\"127.0.0.1:25\"]\n",
			"config F:3: catch_all.workers: is a top-level key, not an entry of catch_all" + hint("catch_all") +
				"\nconfig F:4: catch_all.listen: is a top-level key, not an entry of catch_all" + hint("catch_all")},
	} {
		_, path, err := loadDoc(t, tc.doc)
		wantErr(t, err, strings.ReplaceAll(tc.err, "F", path))
	}
	// Written as an entry on purpose, it is just a bad entry.
	_, path, err := loadDoc(t, "aliases.workers = 2\n")
	wantErr(t, err, "config "+path+":1: aliases.workers: wants an address or an array of addresses")
}

func fmtWrap(err error) error { return &wrapped{err} }

type wrapped struct{ err error }

func (w *wrapped) Error() string { return "wrapped: " + w.err.Error() }
func (w *wrapped) Unwrap() error { return w.err }

func TestFlagsOverride(t *testing.T) {
	doc := "workers = 8\nlisten = [\"0.0.0.0:25\"]\ndomains = [\"example.test\"]\nfsync = true\nlog_format = \"json\"\n"
	l, _, err := loadDoc(t, doc,
		"-workers", "2",
		"-listen", "127.0.0.1:25, [::1]:25",
		"-hostname", "mx.example.org",
		"-maildir-root", "/srv/mail",
		"-domain", "a.test", "-domain", "b.test,c.test",
		"-postmaster", "pm@a.test",
		"-max-message-size", "10MiB",
		"-max-connections", "9",
		"-max-connections-per-ip", "3",
		"-log-level", "error",
		"-log-format", "console",
		"-pprof", "[::1]:6060",
		"-fsync=false",
	)
	if err != nil {
		t.Fatal(err)
	}
	c := l.Config
	for _, tc := range []struct {
		name      string
		got, want any
	}{
		{"workers", c.Workers, 2},
		{"listen", c.Listen, []string{"127.0.0.1:25", "[::1]:25"}},
		{"hostname", c.Hostname, "mx.example.org"},
		{"maildir_root", c.MaildirRoot, "/srv/mail"},
		{"domains", c.Domains, []string{"a.test", "b.test", "c.test"}},
		{"postmaster", c.Postmaster, "pm@a.test"},
		{"max_message_size", c.MaxMessageBytes, int64(10 << 20)},
		{"max_connections", c.MaxConnections, 9},
		{"max_connections_per_ip", c.MaxConnectionsPerIP, 3},
		{"pprof", c.PprofAddr, "[::1]:6060"},
		{"fsync", c.Fsync, false},
		{"log_level", l.LogLevel, zerolog.ErrorLevel},
		{"log_format", l.LogFormat, logConsole},
	} {
		if !reflect.DeepEqual(tc.got, tc.want) {
			t.Errorf("%s = %v, want %v", tc.name, tc.got, tc.want)
		}
	}

	// An error in a value a flag set names the flag, not the file.
	l, _, err = loadDoc(t, "postmaster = \"pm@a.test\"\nmax_connections = 10\n", "-max-connections", "0")
	if err != nil {
		t.Fatal(err)
	}
	wantErr(t, l.explain(l.Config.Validate()), "flag -max-connections: max_connections: must be at least 1")
	_, _, err = loadDoc(t, "", "-max-message-size", "lots")
	wantErr(t, err, `flag -max-message-size: max_message_size: "lots" is not a size: want bytes, or a whole number with B, KB, MB, GB, KiB, MiB or GiB`)
	_, _, err = loadDoc(t, "", "-log-level", "loud")
	wantErr(t, err, `flag -log-level: log_level: "loud" is not one of debug, info, warn, error`)
	_, _, err = loadDoc(t, "", "stray")
	wantErr(t, err, `serve: unexpected argument "stray"`)
}

// TestFlagsFromStruct: the flags are those the flag tags name, each
// with its key in its usage and a type setFlag can set.
func TestFlagsFromStruct(t *testing.T) {
	fs := newServeFlags("serve", io.Discard).fs
	n := 0
	for _, sf := range fileFields() {
		name, key := sf.Tag.Get("flag"), sf.Tag.Get("toml")
		if name == "" {
			continue
		}
		n++
		f := fs.Lookup(name)
		if f == nil {
			t.Errorf("no flag -%s for %s", name, key)
			continue
		}
		if !strings.HasSuffix(f.Usage, " ("+key+")") {
			t.Errorf("-%s usage %q does not end with its key", name, f.Usage)
		}
		if placeholder, _ := flag.UnquoteUsage(f); placeholder == "value" || (placeholder == "") != (sf.Type.Kind() == reflect.Bool) {
			t.Errorf("-%s shows %q after its name: put the {word} in its usage tag", name, placeholder)
		}
		if k := sf.Type.Kind(); k == reflect.Map {
			t.Errorf("-%s: setFlag cannot set a %s", name, sf.Type)
		}
	}
	count := 0
	fs.VisitAll(func(*flag.Flag) { count++ })
	if count != n+1 { // and -config
		t.Errorf("%d flags, want %d", count, n+1)
	}

	// Each kind of value setFlag reads, and its errors.
	for _, tc := range []struct {
		flags []string
		err   string
	}{
		{[]string{"-workers", "many"}, `flag -workers: workers: "many" is not an integer`},
		{[]string{"-workers", "99999999999999999999"}, `flag -workers: workers: "99999999999999999999" is not an integer`},
		{[]string{"-fsync=maybe"}, `flag -fsync: fsync: "maybe" is not true or false`},
		{[]string{"-max-message-size", "-1"}, `flag -max-message-size: max_message_size: "-1" is not a size: want bytes, or a whole number with B, KB, MB, GB, KiB, MiB or GiB`},
		{[]string{"-log-format", "xml"}, `flag -log-format: log_format: "xml" is not one of json, console`},
	} {
		_, _, err := loadDoc(t, "", tc.flags...)
		wantErr(t, err, tc.err)
	}
	// A repeated flag: a list gathers, anything else takes the last.
	l, _, err := loadDoc(t, "", "-listen", "127.0.0.1:25", "-listen", "[::1]:25,127.0.0.2:25", "-workers", "2", "-workers", "3")
	if err != nil {
		t.Fatal(err)
	}
	if want := []string{"127.0.0.1:25", "[::1]:25", "127.0.0.2:25"}; !reflect.DeepEqual(l.Config.Listen, want) || l.Config.Workers != 3 {
		t.Errorf("listen %q, workers %d", l.Config.Listen, l.Config.Workers)
	}
}

func TestPprofAddr(t *testing.T) {
	for _, tc := range []struct {
		addr string
		ok   bool
	}{
		// Loopback only.
		{"127.0.0.1:6060", true},
		{"127.8.9.10:6060", true},
		{"[::1]:6060", true},
		{"localhost:6060", true},
		{"[::ffff:127.0.0.1]:6060", true},
		// Everything else is refused.
		{":6060", false},
		{"0.0.0.0:6060", false},
		{"[::]:6060", false},
		{"192.0.2.1:6060", false},
		{"[2001:db8::1]:6060", false},
		{"mx.example.test:6060", false},
		{"localhost.example.test:6060", false},
		{"127.0.0.1", false},
		{"127.0.0.1:", false},
	} {
		if err := checkPprofAddr(tc.addr); (err == nil) != tc.ok {
			t.Errorf("checkPprofAddr(%q) = %v, want ok %v", tc.addr, err, tc.ok)
		}
	}

	// Refused from the flag and from the file, where it names the line.
	_, err := parseServe([]string{"-pprof", "0.0.0.0:6060"}, io.Discard)
	wantErr(t, err, `flag -pprof: pprof: "0.0.0.0:6060" is not a loopback address: pprof exposes process memory, so it listens only on 127.0.0.0/8, [::1] or localhost`)
	_, path, err := loadDoc(t, "workers = 1\npprof = \":6060\"\n")
	wantErr(t, err, "config "+path+`:2: pprof: ":6060" is not a loopback address: pprof exposes process memory, so it listens only on 127.0.0.0/8, [::1] or localhost`)
}

func TestDevDefault(t *testing.T) {
	l, err := parseServe(nil, io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	if !l.Dev() {
		t.Error("no -config is not the development default")
	}
	want := server.Defaults()
	want.Hostname = localHostname()
	want.Listen = []string{"127.0.0.1:2525"}
	want.MaildirRoot = "./mail"
	want.Domains = []string{"localhost"}
	want.Mailboxes = []string{"catchall@localhost"}
	want.Postmaster = "catchall@localhost"
	want.CatchAll = map[string]string{"localhost": "catchall@localhost"}
	sameConfig(t, l.Config, want)
	if err := l.Config.Validate(); err != nil {
		t.Errorf("Validate: %v", err)
	}
	wantErr(t, l.explain(&server.ConfigError{Key: "workers", Err: errors.New("bad")}),
		"config (development default): workers: bad")

	// -domain changes the domains and keeps one catch-all mailbox.
	l, err = parseServe([]string{"-domain", "a.test,b.test", "-listen", "127.0.0.1:2626"}, io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	c := l.Config
	if !reflect.DeepEqual(c.Domains, []string{"a.test", "b.test"}) ||
		!reflect.DeepEqual(c.Mailboxes, []string{"catchall@a.test"}) ||
		!reflect.DeepEqual(c.CatchAll, map[string]string{"a.test": "catchall@a.test", "b.test": "catchall@a.test"}) ||
		!reflect.DeepEqual(c.Listen, []string{"127.0.0.1:2626"}) {
		t.Errorf("dev default with -domain: %+v", c)
	}
}

func TestDevHint(t *testing.T) {
	l, err := parseServe(nil, io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	var b strings.Builder
	printDevHint(&b, &l.Config)
	abs, _ := filepath.Abs(filepath.Join("mail", "localhost", "catchall", "new"))
	for _, want := range []string{
		"swaks --server 127.0.0.1:2525 --to someone@localhost\n",
		`smtplib.SMTP("127.0.0.1", 2525).sendmail("me@example.test", ["someone@localhost"]`,
		abs + string(filepath.Separator),
	} {
		if !strings.Contains(b.String(), want) {
			t.Errorf("hint lacks %q:\n%s", want, b.String())
		}
	}
}

func TestDialTarget(t *testing.T) {
	for _, tc := range []struct{ listen, host, port string }{
		{"127.0.0.1:2525", "127.0.0.1", "2525"},
		{"0.0.0.0:25", "127.0.0.1", "25"},
		{":25", "127.0.0.1", "25"},
		{"[::]:25", "::1", "25"},
		{"[::1]:2525", "::1", "2525"},
		{"mx.example.test:25", "mx.example.test", "25"},
	} {
		if h, p := dialTarget(tc.listen); h != tc.host || p != tc.port {
			t.Errorf("dialTarget(%q) = %s %s, want %s %s", tc.listen, h, p, tc.host, tc.port)
		}
	}
}

// TestExampleConfig keeps the shipped example loadable and valid.
func TestExampleConfig(t *testing.T) {
	l, err := parseServe([]string{"-config", "nanomx.example.toml"}, io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	c := l.Config
	if !reflect.DeepEqual(c.Listen, []string{"0.0.0.0:25", "[::]:25"}) ||
		!reflect.DeepEqual(c.Domains, []string{"example.test"}) ||
		c.Postmaster == "" || len(c.Mailboxes) < 2 || len(c.Aliases) == 0 || len(c.CatchAll) != 0 {
		t.Errorf("example config: %+v", c)
	}
	if err := c.Validate(); err != nil {
		t.Errorf("Validate: %v", err)
	}
}

// TestREADMEDocumentsEveryKey keeps the config reference complete.
func TestREADMEDocumentsEveryKey(t *testing.T) {
	readme, err := os.ReadFile(filepath.Join("..", "..", "README.md"))
	if err != nil {
		t.Skip("README.md not found:", err)
	}
	for _, key := range configKeys() {
		if !strings.Contains(string(readme), "| `"+key+"` |") {
			t.Errorf("README.md has no table row for %q", key)
		}
	}
	// And the flags table a row for each flag, with the key it sets.
	for _, sf := range fileFields() {
		if name := sf.Tag.Get("flag"); name != "" {
			row := regexp.MustCompile("(?m)^\\| `-" + regexp.QuoteMeta(name) + "[ =`].*\\| `" + sf.Tag.Get("toml") + "` \\|$")
			if !row.Match(readme) {
				t.Errorf("README.md has no flags table row for -%s", name)
			}
		}
	}
}

// TestHardeningKeys covers the limits added for Hardening II: how each is
// read, and the errors server.Validate gives, located at their line.
func TestHardeningKeys(t *testing.T) {
	l, _, err := loadDoc(t, "max_junk_commands = 7\nbody_budget_per_ip = 8388608\nspill_threshold = \"512KiB\"\nmin_data_rate = 0\ndata_timeout = \"90s\"\n")
	if err != nil {
		t.Fatal(err)
	}
	c := l.Config
	if c.MaxJunkCommands != 7 || c.BodyBudgetPerIP != 8<<20 || c.SpillThreshold != 512<<10 || c.MinDataRate != 0 || c.DataTimeout != 90*time.Second {
		t.Errorf("junk %d, per IP %d, spill %d, rate %d, data timeout %v", c.MaxJunkCommands, c.BodyBudgetPerIP, c.SpillThreshold, c.MinDataRate, c.DataTimeout)
	}

	for _, tc := range []struct{ doc, err string }{
		// body_budget must hold one whole message.
		{"max_message_size = \"10MiB\"\n\nbody_budget = \"5MiB\"\n", "config F:3: body_budget: must be at least max_message_size (10485760 bytes)"},
		{"body_budget = \"16MiB\"\n", "config F:1: body_budget: must be at least max_message_size (26214400 bytes)"},
		// body_budget_per_ip: from 1 MiB up to body_budget.
		{"workers = 2\nbody_budget_per_ip = \"512KiB\"\n", "config F:2: body_budget_per_ip: must be between 1 MiB and body_budget"},
		{"body_budget = \"64MiB\"\nbody_budget_per_ip = \"128MiB\"\n", "config F:2: body_budget_per_ip: must be between 1 MiB and body_budget"},
		// spill_threshold: from 64 KiB up to a quarter of the per-IP share.
		{"spill_threshold = \"16KiB\"\n", "config F:1: spill_threshold: must be between 64 KiB and a quarter of body_budget_per_ip"},
		{"body_budget_per_ip = \"4MiB\"\n\n\nspill_threshold = \"2MiB\"\n", "config F:4: spill_threshold: must be between 64 KiB and a quarter of body_budget_per_ip"},
		// The counters and the rate.
		{"\nmax_junk_commands = 0\n", "config F:2: max_junk_commands: must be at least 1"},
		{"min_data_rate = -1\n", "config F:1: min_data_rate: must not be negative"},
	} {
		// postmaster, which Validate checks first, goes last.
		l, path, err := loadDoc(t, tc.doc+"postmaster = \"a@example.test\"\n")
		if err != nil {
			t.Errorf("%q: %v", tc.doc, err)
			continue
		}
		wantErr(t, l.explain(l.Config.Validate()), strings.ReplaceAll(tc.err, "F", path))
	}

	// Shapes go-toml refuses, at their line.
	for _, tc := range []struct{ doc, err string }{
		{"\nmin_data_rate = \"500B\"\n", "config F:2: min_data_rate: wants an integer, not a string"},
		{"max_junk_commands = \"many\"\n", "config F:1: max_junk_commands: wants an integer, not a string"},
		{"spill_threshold = \"lots\"\n", `config F:1: spill_threshold: "lots" is not a size: want bytes, or a whole number with B, KB, MB, GB, KiB, MiB or GiB`},
		{"body_budget_per_ip = -5\n", "config F:1: body_budget_per_ip: must not be negative"},
	} {
		_, path, err := loadDoc(t, tc.doc)
		wantErr(t, err, strings.ReplaceAll(tc.err, "F", path))
	}
}

// TestListenKey: a malformed listen address is a configuration error at
// its line or flag, from server.Check, before anything is bound.
func TestListenKey(t *testing.T) {
	for _, tc := range []struct{ doc, flag, err string }{
		{"postmaster = \"a@localhost\"\nlisten = [\"127.0.0.1:99999\"]\n", "", `config F:2: listen: "127.0.0.1:99999": port 99999 is out of range (1-65535)`},
		{"postmaster = \"a@localhost\"\n\nlisten = [\"0.0.0.0:25\", \"[::]\"]\n", "", `config F:3: listen: "[::]": missing port in address (write host:port, an IPv6 address in brackets: "[::]:25")`},
		{"postmaster = \"a@localhost\"\nlisten = [\"0.0.0.0:25\"]\n", "127.0.0.1:", `flag -listen: listen: "127.0.0.1:": missing port`},
	} {
		var flags []string
		if tc.flag != "" {
			flags = []string{"-listen", tc.flag}
		}
		l, path, err := loadDoc(t, tc.doc, flags...)
		if err != nil {
			t.Fatal(err)
		}
		wantErr(t, l.explain(server.Check(l.Config)), strings.ReplaceAll(tc.err, "F", path))
	}
}

// TestFileConfigMatchesServer: every field of fileConfig but cmd's own
// has a namesake in server.Config that copyByName can fill, and every
// setting of server.Config has a key: a misspelt field name would
// otherwise leave its key without effect.
func TestFileConfigMatchesServer(t *testing.T) {
	cmdOwn := []string{"LogLevel", "LogFormat"}
	st := reflect.TypeFor[server.Config]()
	for _, f := range fileFields() {
		sf, ok := st.FieldByName(f.Name)
		switch {
		case slices.Contains(cmdOwn, f.Name):
			if ok {
				t.Errorf("%s is cmd's own, but server.Config has it too", f.Name)
			}
		case !ok:
			t.Errorf("fileConfig.%s (%s) has no namesake in server.Config", f.Name, f.Tag.Get("toml"))
		case f.Type.Kind() != sf.Type.Kind() && !(f.Type.Kind() == reflect.Int64 && sf.Type.Kind() == reflect.Int):
			t.Errorf("fileConfig.%s is a %s, server.Config's a %s", f.Name, f.Type, sf.Type)
		}
		if f.Tag.Get("toml") == "" {
			t.Errorf("fileConfig.%s has no toml tag", f.Name)
		}
	}
	for _, sf := range reflect.VisibleFields(st) {
		if _, ok := reflect.TypeFor[fileConfig]().FieldByName(sf.Name); sf.IsExported() && sf.Name != "Log" && !ok {
			t.Errorf("server.Config.%s has no key in fileConfig", sf.Name)
		}
	}
}

// change sets v, a field of fileConfig, to a value other than its default.
func change(t *testing.T, v reflect.Value) {
	t.Helper()
	switch x := v.Addr().Interface().(type) {
	case *size:
		*x++
	case *duration:
		*x += duration(time.Second)
	case *logLevel:
		*x = logLevel(zerolog.DebugLevel)
	case *logFormat:
		*x = formatConsole
	case *string:
		*x += "x"
	case *[]string:
		*x = append(*x, "x@example.test")
	case *bool:
		*x = !*x
	case *int:
		*x++
	case *int64:
		*x++
	case *map[string]targets:
		*x = map[string]targets{"x@example.test": {"y@example.test", "z@example.test"}}
	case *map[string]string:
		*x = map[string]string{"example.test": "y@example.test"}
	default:
		t.Fatalf("change cannot change a %s: add a case", v.Type())
	}
}

// TestEachKeyReachesItsField: for every key, a file that sets it (as
// check-config writes it) changes that key and only that, and the
// server.Config field of its name.
func TestEachKeyReachesItsField(t *testing.T) {
	base := defaultFile()
	baseCfg, err := toServer(&base)
	if err != nil {
		t.Fatal(err)
	}
	for _, f := range fileFields() {
		key := f.Tag.Get("toml")
		want := defaultFile()
		v := reflect.ValueOf(&want).Elem().FieldByIndex(f.Index)
		change(t, v)
		doc, err := toml.Marshal(map[string]any{key: v.Interface()})
		if err != nil {
			t.Fatal(err)
		}
		got := defaultFile()
		if _, err := decodeFile("F", doc, &got); err != nil {
			t.Errorf("%s: %v", doc, err)
			continue
		}
		if !reflect.DeepEqual(got, want) {
			t.Errorf("%s: decoded %+v\nwant %+v", doc, got, want)
		}
		cfg, err := toServer(&got)
		if err != nil {
			t.Fatal(err)
		}
		if sv := reflect.ValueOf(cfg).FieldByName(f.Name); sv.IsValid() &&
			reflect.DeepEqual(sv.Interface(), reflect.ValueOf(baseCfg).FieldByName(f.Name).Interface()) {
			t.Errorf("%s: server.Config.%s stayed %v", doc, f.Name, sv)
		}
	}
}

func TestFormatSizeAndDuration(t *testing.T) {
	for n, want := range map[int64]string{
		0: "0", 512: "512", 1000: "1KB", 1024: "1KiB", 65536: "64KiB", 1000001: "1000001",
		10_000_000: "10MB", 25 << 20: "25MiB", 2e9: "2GB", 3 << 30: "3GiB", 1<<63 - 1: "9223372036854775807",
	} {
		if got := formatSize(n); got != want {
			t.Errorf("formatSize(%d) = %q, want %q", n, got, want)
		}
		if back, err := parseSize(want); err != nil || back != n {
			t.Errorf("parseSize(%q) = %d, %v", want, back, err)
		}
	}
	for d, want := range map[time.Duration]string{
		0: "0s", 90 * time.Second: "1m30s", 5 * time.Minute: "5m", time.Hour: "1h",
		time.Hour + 2*time.Minute: "1h2m", time.Hour + 3*time.Second: "1h0m3s", 1500 * time.Millisecond: "1.5s",
	} {
		if got := formatDuration(d); got != want {
			t.Errorf("formatDuration(%v) = %q, want %q", d, got, want)
		}
		if back, err := parseDuration(want); err != nil || back != d {
			t.Errorf("parseDuration(%q) = %v, %v", want, back, err)
		}
	}
}

// checkConfigRun runs "nanomx check-config" with args.
func checkConfigRun(args ...string) (code int, stdout, stderr string) {
	var out, errOut strings.Builder
	code = run(append([]string{"check-config"}, args...), &out, &errOut)
	return code, out.String(), errOut.String()
}

// TestCheckConfig: check-config prints every key of the effective
// configuration, which reads back as the same configuration, and exits 0;
// an invalid one exits 2 with located errors and prints nothing.
func TestCheckConfig(t *testing.T) {
	// everyKey, but for the TLS files, which server.Check would read.
	path := writeConfig(t, strings.NewReplacer(`tls_cert = "/etc/ssl/mx.pem"`+"\n", "", `tls_key = "/etc/ssl/mx.key"`+"\n", "", "tls_required = true\n", "").Replace(everyKey))
	code, out, errOut := checkConfigRun("-config", path, "-workers", "3")
	if code != exitOK || errOut != "" {
		t.Fatalf("exit %d, stderr %s", code, errOut)
	}
	for _, key := range configKeys() {
		if !regexp.MustCompile(`(?m)^(` + key + ` = |\[` + key + `\]$)`).MatchString(out) {
			t.Errorf("check-config does not list %s:\n%s", key, out)
		}
	}
	if !strings.Contains(out, "\nworkers = 3\n") {
		t.Errorf("the -workers flag is not in the output:\n%s", out)
	}
	// The output reads back as the same configuration, and prints the same.
	l, err := parseServe([]string{"-config", path, "-workers", "3"}, io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	again, err := parseServe([]string{"-config", writeConfig(t, out)}, io.Discard)
	if err != nil {
		t.Fatalf("%v\n%s", err, out)
	}
	sameConfig(t, again.Config, l.Config)
	if again.LogLevel != l.LogLevel || again.LogFormat != l.LogFormat || !reflect.DeepEqual(again.file, l.file) {
		t.Errorf("read back: log %v %s, want %v %s", again.LogLevel, again.LogFormat, l.LogLevel, l.LogFormat)
	}
	if _, out2, _ := checkConfigRun("-config", again.Path); strings.SplitN(out2, "\n\n", 2)[1] != strings.SplitN(out, "\n\n", 2)[1] {
		t.Errorf("printed again:\n%s\nfirst:\n%s", out2, out)
	}

	// The development default, with its empty tables.
	code, out, errOut = checkConfigRun()
	if code != exitOK || errOut != "" || !strings.Contains(out, "of the development default") ||
		!strings.Contains(out, "\n[aliases]\n") || !strings.Contains(out, "\n[catch_all]\nlocalhost = 'catchall@localhost'\n") {
		t.Errorf("exit %d, stderr %s, stdout:\n%s", code, errOut, out)
	}
	l, err = parseServe([]string{"-config", writeConfig(t, out)}, io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	dev, _ := parseServe(nil, io.Discard)
	sameConfig(t, l.Config, dev.Config)

	// Invalid: located errors on stderr, nothing on stdout, exit 2.
	for _, tc := range []struct {
		doc  string
		args []string
		err  string
	}{
		{"postmaster = \"a@localhost\"\ndomains = [\"localhost\"]\nmailboxes = [\"a@localhost\"]\nmax_connections = 0\n", nil,
			"nanomx: config F:4: max_connections: must be at least 1\n"},
		{"postmaster = \"a@localhost\"\ndomains = [\"localhost\"]\nmailboxes = [\"b@localhost\"]\n", nil,
			"nanomx: config F:1: postmaster: a@localhost: \"a@localhost\" is not a configured mailbox or alias\n"},
		{"workers = \"2\"\nwrokers = 3\n", nil, "nanomx: config F:1: workers: wants an integer, not a string\n"},
		{"hostname = \"x\"\n", []string{"-max-connections", "0", "-postmaster", "a@localhost"},
			"nanomx: flag -max-connections: max_connections: must be at least 1\n"},
		{"", []string{"stray"}, "nanomx: check-config: unexpected argument \"stray\"\n"},
	} {
		path := writeConfig(t, tc.doc)
		code, out, errOut := checkConfigRun(append([]string{"-config", path}, tc.args...)...)
		if want := strings.ReplaceAll(tc.err, "F", path); code != exitUsage || out != "" || errOut != want {
			t.Errorf("%q: exit %d, stdout %q\nstderr %q\nwant 2 and %q", tc.doc, code, out, errOut, want)
		}
	}
	if code, _, errOut := checkConfigRun("-nope"); code != exitUsage || !strings.Contains(errOut, "Usage: nanomx check-config") {
		t.Errorf("-nope: exit %d, %s", code, errOut)
	}
	if code, out, _ := checkConfigRun("-h"); code != exitOK || out != "" {
		t.Errorf("-h: exit %d", code)
	}
	var help strings.Builder
	if code := run([]string{"help"}, &help, io.Discard); code != exitOK || !strings.Contains(help.String(), "\n  check-config ") {
		t.Errorf("help does not list check-config:\n%s", help.String())
	}
	help.Reset()
	if code := run([]string{"help", "check-config"}, &help, io.Discard); code != exitOK || !strings.Contains(help.String(), "-max-connections-per-ip") {
		t.Errorf("help check-config:\n%s", help.String())
	}
}

// TestDocumentedDefaults: the defaults README.md's table and the example
// config's commented-out keys show are the defaults.
func TestDocumentedDefaults(t *testing.T) {
	readme, err := os.ReadFile(filepath.Join("..", "..", "README.md"))
	if err != nil {
		t.Fatal(err)
	}
	example, err := os.ReadFile("nanomx.example.toml")
	if err != nil {
		t.Fatal(err)
	}
	def := reflect.ValueOf(defaultFile())
	check := func(where, key, value string) {
		t.Helper()
		f, ok := fileField(key)
		if !ok {
			t.Errorf("%s: %s is not a key", where, key)
			return
		}
		got := defaultFile()
		if _, err := decodeFile(where, []byte(key+" = "+value), &got); err != nil {
			t.Errorf("%s: %v", where, err)
			return
		}
		g, d := reflect.ValueOf(got).FieldByIndex(f.Index), def.FieldByIndex(f.Index)
		empty := (g.Kind() == reflect.Slice || g.Kind() == reflect.Map) && g.Len() == 0 && d.Len() == 0
		if !empty && !reflect.DeepEqual(g.Interface(), d.Interface()) {
			t.Errorf("%s shows %s = %s, but the default is %v", where, key, value, d)
		}
	}
	n := 0
	for _, m := range regexp.MustCompile("(?m)^\\| `([a-z_]+)` \\| `([^`]+)`").FindAllSubmatch(readme, -1) {
		check("README.md", string(m[1]), string(m[2]))
		n++
	}
	for _, m := range regexp.MustCompile(`(?m)^# ([a-z_]+) = (.*)$`).FindAllSubmatch(example, -1) {
		check("nanomx.example.toml", string(m[1]), string(m[2]))
		n++
	}
	if n < len(configKeys()) {
		t.Errorf("checked %d documented defaults; fewer than the keys", n)
	}
}
