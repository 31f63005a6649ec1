package main

import (
	"bytes"
	"errors"
	"fmt"
	"math"
	"net"
	"net/netip"
	"os"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"time"

	toml "github.com/pelletier/go-toml/v2"
	"github.com/rs/zerolog"

	"github.com/nanomx/nanomx/server"
)

// fileConfig is the shape of the TOML file. Every field is a pointer, a map
// or an interface so that a key left out of the file is told apart from a
// key set to its zero value: unset keys keep server.Defaults.
type fileConfig struct {
	Hostname            *string           `toml:"hostname"`
	Listen              *[]string         `toml:"listen"`
	MaildirRoot         *string           `toml:"maildir_root"`
	Domains             *[]string         `toml:"domains"`
	Postmaster          *string           `toml:"postmaster"`
	Mailboxes           *[]string         `toml:"mailboxes"`
	Aliases             map[string]any    `toml:"aliases"` // string or array of strings
	CatchAll            map[string]string `toml:"catch_all"`
	SubaddressSeparator *string           `toml:"subaddress_separator"`
	MaxMessageSize      any               `toml:"max_message_size"` // size
	MaxRecipients       *int              `toml:"max_recipients"`
	MaxLineLength       *int              `toml:"max_line_length"`
	MaxAddressAllowance *int              `toml:"max_address_allowance"`
	MaxBadCommands      *int              `toml:"max_bad_commands"`
	MaxJunkCommands     *int              `toml:"max_junk_commands"`
	MaxConnections      *int              `toml:"max_connections"`
	MaxConnectionsPerIP *int              `toml:"max_connections_per_ip"`
	MaxPendingInput     any               `toml:"max_pending_input"`  // size
	BodyBudget          any               `toml:"body_budget"`        // size
	BodyBudgetPerIP     any               `toml:"body_budget_per_ip"` // size
	SpillThreshold      any               `toml:"spill_threshold"`    // size
	BareNewline         *string           `toml:"bare_newline"`
	Workers             *int              `toml:"workers"`
	QueueLength         *int              `toml:"queue_length"`
	Fsync               *bool             `toml:"fsync"`
	GroupCommit         *bool             `toml:"group_commit"`
	CommandTimeout      *string           `toml:"command_timeout"` // duration
	DataTimeout         *string           `toml:"data_timeout"`
	MinDataRate         *int64            `toml:"min_data_rate"` // bytes per second
	SessionTimeout      *string           `toml:"session_timeout"`
	ShutdownTimeout     *string           `toml:"shutdown_timeout"`
	GreetingDelay       *string           `toml:"greeting_delay"`
	EventLoops          *int              `toml:"event_loops"`
	TLSCert             *string           `toml:"tls_cert"`
	TLSKey              *string           `toml:"tls_key"`
	TLSMinVersion       *string           `toml:"tls_min_version"`
	TLSRequired         *bool             `toml:"tls_required"`
	MaxTLSSessions      *int              `toml:"max_tls_sessions"`
	TLSHandshakeTimeout *string           `toml:"tls_handshake_timeout"`
	Pprof               *string           `toml:"pprof"`
	LogLevel            *string           `toml:"log_level"`
	LogFormat           *string           `toml:"log_format"`
}

// Log formats.
const (
	logJSON    = "json"
	logConsole = "console"
)

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
	// src is the file's content, kept to find the line of a key.
	src []byte
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

// decodeFile reads a TOML document into fc. Syntax errors, type errors and
// unknown keys come back as *locatedError values carrying the line that
// go-toml reports, joined when there are several.
func decodeFile(path string, src []byte, fc *fileConfig) error {
	err := toml.NewDecoder(bytes.NewReader(src)).DisallowUnknownFields().Decode(fc)
	if err == nil {
		return nil
	}
	var strict *toml.StrictMissingError
	if errors.As(err, &strict) {
		errs := make([]error, 0, len(strict.Errors))
		for i := range strict.Errors {
			errs = append(errs, fromDecodeError(path, &strict.Errors[i]))
		}
		return errors.Join(errs...)
	}
	var de *toml.DecodeError
	if errors.As(err, &de) {
		return fromDecodeError(path, de)
	}
	return &locatedError{Where: "config " + path, Err: err}
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

// apply copies the keys set in fc over cfg and l. It checks what only the
// file format knows (sizes, durations, alias shapes, log settings); the
// rest is server.Check's job. Errors are *server.ConfigError, joined.
func apply(fc *fileConfig, cfg *server.Config, l *loaded) error {
	var errs []error
	bad := func(key string, err error) {
		errs = append(errs, &server.ConfigError{Key: key, Err: err})
	}
	setStr := func(dst *string, v *string) {
		if v != nil {
			*dst = *v
		}
	}
	setList := func(dst *[]string, v *[]string) {
		if v != nil {
			*dst = slices.Clone(*v)
		}
	}
	setInt := func(dst *int, v *int) {
		if v != nil {
			*dst = *v
		}
	}
	setSize := func(key string, dst *int64, v any) {
		if v == nil {
			return
		}
		n, err := sizeValue(v)
		if err != nil {
			bad(key, err)
			return
		}
		*dst = n
	}
	setDuration := func(key string, dst *time.Duration, v *string) {
		if v == nil {
			return
		}
		d, err := parseDuration(*v)
		if err != nil {
			bad(key, err)
			return
		}
		*dst = d
	}

	setStr(&cfg.Hostname, fc.Hostname)
	setList(&cfg.Listen, fc.Listen)
	setStr(&cfg.MaildirRoot, fc.MaildirRoot)
	setList(&cfg.Domains, fc.Domains)
	setStr(&cfg.Postmaster, fc.Postmaster)
	setList(&cfg.Mailboxes, fc.Mailboxes)
	if fc.Aliases != nil {
		cfg.Aliases = make(map[string][]string, len(fc.Aliases))
		for from, v := range fc.Aliases {
			to, err := aliasTargets(v)
			if err != nil {
				bad("aliases."+from, err)
				continue
			}
			cfg.Aliases[from] = to
		}
	}
	if fc.CatchAll != nil {
		cfg.CatchAll = make(map[string]string, len(fc.CatchAll))
		for domain, box := range fc.CatchAll {
			cfg.CatchAll[domain] = box
		}
	}
	setStr(&cfg.SubaddressSeparator, fc.SubaddressSeparator)

	setSize("max_message_size", &cfg.MaxMessageBytes, fc.MaxMessageSize)
	setInt(&cfg.MaxRecipients, fc.MaxRecipients)
	setInt(&cfg.MaxLineBytes, fc.MaxLineLength)
	setInt(&cfg.MaxAddressAllowance, fc.MaxAddressAllowance)
	setInt(&cfg.MaxBadCommands, fc.MaxBadCommands)
	setInt(&cfg.MaxJunkCommands, fc.MaxJunkCommands)
	setInt(&cfg.MaxConnections, fc.MaxConnections)
	setInt(&cfg.MaxConnectionsPerIP, fc.MaxConnectionsPerIP)
	if fc.MaxPendingInput != nil {
		switch n, err := sizeValue(fc.MaxPendingInput); {
		case err != nil:
			bad("max_pending_input", err)
		case n > math.MaxInt:
			bad("max_pending_input", errors.New("is too large"))
		default:
			cfg.MaxPendingInput = int(n)
		}
	}
	setSize("body_budget", &cfg.BodyBudgetBytes, fc.BodyBudget)
	setSize("body_budget_per_ip", &cfg.BodyBudgetPerIP, fc.BodyBudgetPerIP)
	setSize("spill_threshold", &cfg.SpillThreshold, fc.SpillThreshold)
	setStr(&cfg.BareNewline, fc.BareNewline)

	setInt(&cfg.Workers, fc.Workers)
	setInt(&cfg.QueueLength, fc.QueueLength)
	if fc.GroupCommit != nil {
		cfg.GroupCommit = *fc.GroupCommit
	}
	if fc.Fsync != nil {
		cfg.Fsync = *fc.Fsync
	}

	setDuration("command_timeout", &cfg.CommandTimeout, fc.CommandTimeout)
	setDuration("data_timeout", &cfg.DataTimeout, fc.DataTimeout)
	if fc.MinDataRate != nil {
		cfg.MinDataRate = *fc.MinDataRate
	}
	setDuration("session_timeout", &cfg.SessionTimeout, fc.SessionTimeout)
	setDuration("shutdown_timeout", &cfg.ShutdownTimeout, fc.ShutdownTimeout)
	setDuration("greeting_delay", &cfg.GreetingDelay, fc.GreetingDelay)

	setInt(&cfg.EventLoops, fc.EventLoops)
	setStr(&cfg.PprofAddr, fc.Pprof)

	setStr(&cfg.TLSCert, fc.TLSCert)
	setStr(&cfg.TLSKey, fc.TLSKey)
	setStr(&cfg.TLSMinVersion, fc.TLSMinVersion)
	if fc.TLSRequired != nil {
		cfg.TLSRequired = *fc.TLSRequired
	}
	setInt(&cfg.MaxTLSSessions, fc.MaxTLSSessions)
	setDuration("tls_handshake_timeout", &cfg.TLSHandshakeTimeout, fc.TLSHandshakeTimeout)

	if fc.LogLevel != nil {
		lvl, err := parseLogLevel(*fc.LogLevel)
		if err != nil {
			bad("log_level", err)
		}
		l.LogLevel = lvl
	}
	if fc.LogFormat != nil {
		f, err := parseLogFormat(*fc.LogFormat)
		if err != nil {
			bad("log_format", err)
		}
		l.LogFormat = f
	}
	return errors.Join(errs...)
}

// aliasTargets accepts "a@x" or ["a@x", "b@y"].
func aliasTargets(v any) ([]string, error) {
	switch v := v.(type) {
	case string:
		return []string{v}, nil
	case []any:
		to := make([]string, 0, len(v))
		for _, e := range v {
			s, ok := e.(string)
			if !ok {
				return nil, errors.New("wants an address or an array of addresses")
			}
			to = append(to, s)
		}
		return to, nil
	}
	return nil, errors.New("wants an address or an array of addresses")
}

// sizeValue accepts a TOML integer (bytes) or a size string.
func sizeValue(v any) (int64, error) {
	switch v := v.(type) {
	case int64:
		if v < 0 {
			return 0, errors.New("must not be negative")
		}
		return v, nil
	case string:
		return parseSize(v)
	}
	return 0, errors.New(`wants a number of bytes or a size such as "25MiB"`)
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
	if err != nil || n > math.MaxInt64/unit {
		return 0, fmt.Errorf("%q is too large", s)
	}
	return n * unit, nil
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

func parseLogLevel(s string) (zerolog.Level, error) {
	switch s {
	case "debug":
		return zerolog.DebugLevel, nil
	case "info":
		return zerolog.InfoLevel, nil
	case "warn":
		return zerolog.WarnLevel, nil
	case "error":
		return zerolog.ErrorLevel, nil
	}
	return zerolog.InfoLevel, fmt.Errorf("%q is not one of debug, info, warn, error", s)
}

func parseLogFormat(s string) (string, error) {
	switch s {
	case logJSON, logConsole:
		return s, nil
	}
	return logJSON, fmt.Errorf("%q is not one of json, console", s)
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
// The log settings were checked while parsing.
func checkLocal(cfg *server.Config) error {
	if cfg.PprofAddr != "" {
		if err := checkPprofAddr(cfg.PprofAddr); err != nil {
			return &server.ConfigError{Key: "pprof", Err: err}
		}
	}
	return nil
}

// devDefault makes cfg the development default: listen on 127.0.0.1:2525
// and deliver every address of every domain to one mailbox,
// catchall@<first domain>, under ./mail. domains is the -domain flag, or
// nil for localhost.
func devDefault(cfg *server.Config, domains []string) {
	if len(domains) == 0 {
		domains = []string{devDomain}
	}
	box := "catchall@" + domains[0]
	cfg.Hostname = localHostname()
	cfg.Listen = []string{"127.0.0.1:2525"}
	cfg.MaildirRoot = "./mail"
	cfg.Domains = slices.Clone(domains)
	cfg.Mailboxes = []string{box}
	cfg.Postmaster = box
	cfg.CatchAll = make(map[string]string, len(domains))
	for _, d := range domains {
		cfg.CatchAll[d] = box
	}
}

// localHostname is os.Hostname, or "localhost" when that fails.
func localHostname() string {
	if h, err := os.Hostname(); err == nil && h != "" {
		return h
	}
	return "localhost"
}

// explain turns the *server.ConfigError values in err (from apply,
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
		if n := keyLine(l.src, ce.Key); n > 0 {
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

// keyLine returns the 1-based line on which key is set in the TOML document
// src, or 0 when it is not there. key is a top-level key ("workers"),
// optionally followed by a dot and a key of that table
// ("aliases.bob@example.test"; the rest after the first dot is one key, dots
// included). A table is found at its header ([aliases]), at an inline
// assignment (aliases = {...}) or at its first dotted key
// (aliases."bob@x" = ...); a table entry falls back to its table's line.
//
// It is a line scanner, not a parser: it runs only on documents go-toml has
// already accepted, and it tracks just enough (multi-line strings and arrays)
// not to mistake a value's continuation lines for keys.
func keyLine(src []byte, key string) int {
	top, sub, _ := strings.Cut(key, ".")
	var (
		table    []string // parts of the current [table] header
		closing  string   // delimiter of an open multi-line string, or ""
		depth    int      // brackets and braces open across lines
		fallback int
	)
	for i, line := range strings.Split(string(src), "\n") {
		line = strings.TrimSuffix(line, "\r")
		switch {
		case closing != "":
			j := strings.Index(line, closing)
			if j < 0 {
				continue
			}
			closing = ""
			depth, closing = scanValue(line[j+3:], depth)
			continue
		case depth > 0:
			depth, closing = scanValue(line, depth)
			continue
		}
		line = strings.TrimLeft(line, " \t")
		if line == "" || line[0] == '#' {
			continue
		}
		var path []string
		if line[0] == '[' {
			table, _ = parseKey(strings.TrimLeft(line, "["))
			path = table
		} else {
			parts, rest := parseKey(line)
			path = append(slices.Clone(table), parts...)
			depth, closing = scanValue(rest, 0)
		}
		if len(path) == 0 || path[0] != top {
			continue
		}
		if sub == "" {
			return i + 1
		}
		if len(path) >= 2 && strings.EqualFold(path[1], sub) {
			return i + 1
		}
		if fallback == 0 {
			fallback = i + 1
		}
	}
	return fallback
}

// parseKey reads a dotted key (bare, "basic" or 'literal' parts) from the
// start of s and returns its parts and what follows the '=' or ']' after it.
func parseKey(s string) (parts []string, rest string) {
	for {
		s = strings.TrimLeft(s, " \t")
		if s == "" {
			return parts, ""
		}
		switch s[0] {
		case '"':
			j := 1
			for j < len(s) && s[j] != '"' {
				if s[j] == '\\' {
					j++
				}
				j++
			}
			j = min(j, len(s)-1)
			p, err := strconv.Unquote(s[:j+1])
			if err != nil {
				p = s[1:j]
			}
			parts = append(parts, p)
			s = s[j+1:]
		case '\'':
			j := strings.IndexByte(s[1:], '\'')
			if j < 0 {
				return append(parts, s[1:]), ""
			}
			parts = append(parts, s[1:j+1])
			s = s[j+2:]
		default:
			j := 0
			for j < len(s) && isBareKeyByte(s[j]) {
				j++
			}
			if j == 0 {
				return parts, s
			}
			parts = append(parts, s[:j])
			s = s[j:]
		}
		s = strings.TrimLeft(s, " \t")
		if s == "" || s[0] != '.' {
			if s != "" && (s[0] == '=' || s[0] == ']') {
				s = s[1:]
			}
			return parts, s
		}
		s = s[1:]
	}
}

// scanValue walks the value part of a line and returns the bracket depth
// left open and the delimiter of a multi-line string left open, if any.
func scanValue(s string, depth int) (int, string) {
	for i := 0; i < len(s); i++ {
		switch c := s[i]; c {
		case '#':
			return max(depth, 0), ""
		case '[', '{':
			depth++
		case ']', '}':
			depth--
		case '"', '\'':
			if delim := strings.Repeat(string(c), 3); strings.HasPrefix(s[i:], delim) {
				j := strings.Index(s[i+3:], delim)
				if j < 0 {
					return max(depth, 0), delim
				}
				i += 3 + j + 2
				continue
			}
			j := i + 1
			for j < len(s) && s[j] != c {
				if c == '"' && s[j] == '\\' {
					j++
				}
				j++
			}
			i = j
		}
	}
	return max(depth, 0), ""
}
