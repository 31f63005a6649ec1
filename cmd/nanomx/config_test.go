package main

import (
	"errors"
	"flag"
	"io"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
	"time"

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
pprof = "127.0.0.1:6060"
tls_cert = "/etc/ssl/mx.pem"
tls_key = "/etc/ssl/mx.key"
tls_min_version = "1.3"
tls_required = true
max_tls_sessions = 200
tls_handshake_timeout = "10s"
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
	want.PprofAddr = "127.0.0.1:6060"
	want.TLSCert, want.TLSKey = "/etc/ssl/mx.pem", "/etc/ssl/mx.key"
	want.TLSMinVersion = "1.3"
	want.TLSRequired = true
	want.MaxTLSSessions = 200
	want.TLSHandshakeTimeout = 10 * time.Second
	sameConfig(t, l.Config, want)
	if l.LogLevel != zerolog.DebugLevel || l.LogFormat != logConsole {
		t.Errorf("log = %v %q, want debug console", l.LogLevel, l.LogFormat)
	}
	if err := l.Config.Validate(); err != nil {
		t.Errorf("Validate: %v", err)
	}

	// A key added to fileConfig must be added to everyKey (and README.md).
	for _, key := range fileKeys() {
		if keyLine([]byte(everyKey), key) == 0 {
			t.Errorf("everyKey does not set %q", key)
		}
	}
}

// fileKeys lists the TOML keys of fileConfig.
func fileKeys() []string {
	var keys []string
	typ := reflect.TypeFor[fileConfig]()
	for i := range typ.NumField() {
		keys = append(keys, typ.Field(i).Tag.Get("toml"))
	}
	return keys
}

func TestUnsetKeysKeepDefaults(t *testing.T) {
	l, _, err := loadDoc(t, "# nothing but a comment\n")
	if err != nil {
		t.Fatal(err)
	}
	sameConfig(t, l.Config, server.Defaults())
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
		{"\n\nmax_message_size = 1.5", 0, `config F:3: max_message_size: wants a number of bytes or a size such as "25MiB"`},
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
		// A bare number has no unit: a type error, from go-toml.
		{"\n\ndata_timeout = 300", "config F:3: data_timeout: wants a string, not an integer"},
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

// lineDoc exercises keyLine: comments, multi-line arrays and strings that
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

func TestKeyLine(t *testing.T) {
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
		if got := keyLine([]byte(lineDoc), tc.key); got != tc.want {
			t.Errorf("keyLine(%q) = %d, want %d", tc.key, got, tc.want)
		}
	}
}

func TestKeyLineCRLF(t *testing.T) {
	doc := "hostname = \"mx\"\r\n[aliases]\r\n\"a@x\" = \"b@x\"\r\n"
	if got := keyLine([]byte(doc), "aliases.a@x"); got != 3 {
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

func TestEveryFlagHasAKey(t *testing.T) {
	keys := make(map[string]bool)
	for _, k := range fileKeys() {
		keys[k] = true
	}
	newServeFlags(io.Discard).fs.VisitAll(func(f *flag.Flag) {
		if f.Name == "config" {
			return
		}
		if k := flagKeys[f.Name]; !keys[k] {
			t.Errorf("flag -%s overrides %q, which is not a config key", f.Name, k)
		}
	})
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
	for _, key := range fileKeys() {
		if !strings.Contains(string(readme), "| `"+key+"` |") {
			t.Errorf("README.md has no table row for %q", key)
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
