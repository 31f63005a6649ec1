package main

import (
	"bytes"
	"context"
	"encoding"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/pprof"
	"os"
	"os/signal"
	"path/filepath"
	"reflect"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/rs/zerolog"
	"golang.org/x/term"

	"github.com/nanomx/nanomx/server"
	"github.com/nanomx/nanomx/server/logsink"
)

// serveFlags are the flags of "nanomx serve" and "nanomx check-config":
// -config, and one flag for each key of fileConfig with a flag tag.
type serveFlags struct {
	fs     *flag.FlagSet
	config string
	// keys maps a TOML key to its flag.
	keys map[string]*keyFlag
}

// keyFlag is a flag that overrides a key. It keeps the text it was given;
// load decodes it into the key's type, so that a bad value is reported like
// one in the file ("flag -NAME: key: ..."). A list flag may be repeated.
type keyFlag struct {
	name   string
	vals   []string
	isBool bool
}

func (f *keyFlag) String() string {
	if f == nil {
		return ""
	}
	return strings.Join(f.vals, ",")
}

func (f *keyFlag) Set(s string) error {
	f.vals = append(f.vals, s)
	return nil
}

func (f *keyFlag) IsBoolFlag() bool { return f.isBool }

// splitList splits "a, b,,c" into [a b c].
func splitList(s string) []string {
	var out []string
	for _, p := range strings.Split(s, ",") {
		if p = strings.TrimSpace(p); p != "" {
			out = append(out, p)
		}
	}
	return out
}

// newServeFlags makes the flags of the command name ("serve" or
// "check-config"), with its usage text.
func newServeFlags(name string, out io.Writer) *serveFlags {
	f := &serveFlags{fs: flag.NewFlagSet(name, flag.ContinueOnError), keys: make(map[string]*keyFlag)}
	fs := f.fs
	fs.SetOutput(out)
	fs.StringVar(&f.config, "config", "", "TOML config `file`; without it, the development default")
	// No defaults are shown by -h: they come from the file or
	// server.Defaults, and a flag only matters when it is set.
	for _, sf := range fileFields() {
		flagName, key := sf.Tag.Get("flag"), sf.Tag.Get("toml")
		if flagName == "" {
			continue
		}
		kf := &keyFlag{name: flagName, isBool: sf.Type.Kind() == reflect.Bool}
		f.keys[key] = kf
		usage := strings.NewReplacer("{", "`", "}", "`").Replace(sf.Tag.Get("usage"))
		fs.Var(kf, flagName, usage+" ("+key+")")
	}
	fs.Usage = func() {
		if name == "check-config" {
			fmt.Fprint(fs.Output(), `Usage: nanomx check-config [-config FILE] [flags]

`+wrap(72, "Reads the configuration as \"nanomx serve\" would, flags included, checks all of it (address book and TLS files too) and prints the effective configuration in TOML: every key, defaults included. Exits 0 when it is valid; 2 with the errors, each naming the file and line or the flag, when it is not. Without -config it checks the development default.")+`

Flags override the file; the TOML key each one sets is in parentheses.

Flags:
`)
		} else {
			fmt.Fprint(fs.Output(), `Usage: nanomx serve [-config FILE] [flags]

`+wrap(72, "Runs the MX until SIGTERM or SIGINT, then stops accepting, finishes the messages in flight and exits 0. SIGHUP reloads the config file without dropping connections; "+
				joinKeys(restartOnlyKeys(), "")+" need a restart, and a file that changes them is refused whole.")+`

Without -config it runs the development default: 127.0.0.1:2525, domain
localhost, every address delivered to ./mail/localhost/catchall/.
Flags override the file; the TOML key each one sets is in parentheses.
"nanomx check-config" takes the same flags and prints what they make.

Flags:
`)
		}
		fs.PrintDefaults()
	}
	return f
}

// load builds the configuration from the parsed flags: the defaults, the
// file (or the development default) over them, then the flags that were
// set. It does not call server.Check. Errors are located (*locatedError
// values).
func load(f *serveFlags) (*loaded, error) {
	if f.fs.NArg() > 0 {
		return nil, fmt.Errorf("%s: unexpected argument %q", f.fs.Name(), f.fs.Arg(0))
	}
	l := &loaded{Path: f.config, byFlag: make(map[string]string)}
	fc := defaultFile()
	if l.Dev() {
		var domains []string
		if kf := f.keys["domains"]; kf != nil {
			for _, v := range kf.vals {
				domains = append(domains, splitList(v)...)
			}
		}
		devDefault(&fc, domains)
	} else {
		src, err := os.ReadFile(f.config)
		if err != nil {
			return nil, fmt.Errorf("config: %w", err)
		}
		if l.lines, err = decodeFile(f.config, src, &fc); err != nil {
			return nil, err
		}
	}
	if err := f.apply(&fc, l); err != nil {
		return nil, err
	}
	cfg, err := toServer(&fc)
	if err != nil {
		return nil, l.explain(err)
	}
	l.file, l.Config = fc, cfg
	l.LogLevel, l.LogFormat = zerolog.Level(fc.LogLevel), fc.LogFormat.String()
	if err := checkLocal(&l.Config); err != nil {
		return nil, l.explain(err)
	}
	return l, nil
}

// apply sets the keys whose flags were set on the command line in fc, and
// records them in l.byFlag.
func (f *serveFlags) apply(fc *fileConfig, l *loaded) error {
	var errs []error
	v := reflect.ValueOf(fc).Elem()
	for _, sf := range fileFields() {
		key := sf.Tag.Get("toml")
		kf := f.keys[key]
		if kf == nil || len(kf.vals) == 0 {
			continue
		}
		l.byFlag[key] = kf.name
		if err := setFlag(v.FieldByIndex(sf.Index), kf.vals); err != nil {
			errs = append(errs, &server.ConfigError{Key: key, Err: err})
		}
	}
	return l.explain(errors.Join(errs...))
}

// setFlag sets a field of fileConfig from the values a flag was given: the
// last one, or all of them, comma-separated, for a list.
func setFlag(field reflect.Value, vals []string) error {
	last := vals[len(vals)-1]
	if u, ok := field.Addr().Interface().(encoding.TextUnmarshaler); ok {
		return u.UnmarshalText([]byte(last))
	}
	switch field.Kind() {
	case reflect.String:
		field.SetString(last)
	case reflect.Slice:
		var list []string
		for _, v := range vals {
			list = append(list, splitList(v)...)
		}
		field.Set(reflect.ValueOf(list))
	case reflect.Bool:
		b, err := strconv.ParseBool(last)
		if err != nil {
			return fmt.Errorf("%q is not true or false", last)
		}
		field.SetBool(b)
	case reflect.Int, reflect.Int64:
		n, err := strconv.ParseInt(last, 10, 64)
		if err != nil || field.OverflowInt(n) {
			return fmt.Errorf("%q is not an integer", last)
		}
		field.SetInt(n)
	default:
		return fmt.Errorf("cannot be set by a flag")
	}
	return nil
}

// parseServe parses the command line of "nanomx serve" and loads the
// configuration it names.
func parseServe(args []string, stderr io.Writer) (*loaded, error) {
	f := newServeFlags("serve", stderr)
	if err := f.fs.Parse(args); err != nil {
		return nil, err
	}
	return load(f)
}

// loadChecked parses the command line of the named command, loads the
// configuration and checks it as server.Check does. On failure it returns
// nil and the exit code, the error printed (the flag package prints its
// own).
func loadChecked(name string, args []string, stderr io.Writer) (*loaded, int) {
	f := newServeFlags(name, stderr)
	if err := f.fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return nil, exitOK
		}
		return nil, exitUsage
	}
	l, err := load(f)
	if err == nil {
		err = l.explain(server.Check(l.Config))
	}
	if err != nil {
		printErr(stderr, err)
		return nil, exitUsage
	}
	return l, exitOK
}

// serve runs "nanomx serve" and returns the exit code.
func serve(args []string, stdout, stderr io.Writer) int {
	l, code := loadChecked("serve", args, stderr)
	if l == nil {
		return code
	}

	// Log lines go through a bounded buffer that one goroutine writes to
	// stdout: a stuck stdout (journald, a paused terminal) must not stop
	// the event loops that log. Closing it writes the last lines out.
	color := isTerminal(stdout)
	sink := logsink.New(stdout, logsink.DefaultMax, dropNotice(l.LogFormat, color))
	l.logDropped = sink.Dropped // for the metrics
	code = runServer(l, args, newLogger(sink, l.LogFormat, l.LogLevel, color), stderr)
	if err := sink.Close(logCloseTimeout); err != nil {
		fmt.Fprintf(stderr, "nanomx: %v (%d lines dropped in all)\n", err, sink.Dropped())
	}
	return code
}

// logCloseTimeout bounds the wait for stdout to take the last log lines
// on exit.
const logCloseTimeout = 5 * time.Second

// runServer starts the server l describes and serves until a signal; serve has
// checked l. It returns the exit code.
func runServer(l *loaded, args []string, log zerolog.Logger, stderr io.Writer) int {
	cfg := l.Config
	cfg.Log = log
	// cmd serves pprof itself (below); the server is not to bind it too.
	cfg.PprofAddr = ""

	// The server's context ends only after the drain is logged, so the log
	// reads in order. After the first signal, default handling is restored:
	// a second Ctrl-C ends a slow drain at once.
	sigCtx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, os.Interrupt)
	defer stop()
	ctx, cancel := context.WithCancelCause(context.Background())
	defer cancel(nil)
	go func() {
		<-sigCtx.Done()
		stop()
		// A signal leaves a cause such as "terminated signal received"; a
		// plain context.Canceled means serve is returning anyway.
		if cause := context.Cause(sigCtx); cause != context.Canceled {
			log.Info().Str("reason", cause.Error()).Msg("draining; a second signal exits at once")
		}
		cancel(context.Cause(sigCtx))
	}()
	// Registered before anything slow: until then SIGHUP would kill us.
	hup := make(chan os.Signal, 1)
	signal.Notify(hup, syscall.SIGHUP)
	defer signal.Stop(hup)

	if l.Config.PprofAddr != "" {
		closePprof, err := startPprof(l.Config.PprofAddr, log)
		if err != nil {
			log.Error().Err(err).Msg("pprof")
			return exitError
		}
		defer closePprof()
	}
	if !cfg.Fsync {
		log.Warn().Msg("fsync is off: a 250 reply does not mean the message is on disk; use this only for benchmarks")
	}
	source := l.Path
	if l.Dev() {
		source = "(development default)"
	}
	log.Info().Str("version", versionString()).Str("config", source).Msg("nanomx starting")
	if _, ok := startGCFloor(); ok { // gcfloor.go
		log.Debug().Int("floor_mib", heapFloor>>20).Msg("GC: the heap grows by at least the floor between collections (GOGC unset)")
	}
	srv, err := server.New(cfg)
	if err == nil {
		if reg := srv.Metrics(); reg != nil && l.logDropped != nil {
			reg.CounterFunc("nanomx_log_lines_dropped_total", "Log lines dropped because the log output did not keep up.", l.logDropped)
		}
		if l.Dev() {
			// Only now: it says "Listening on", and New has bound the
			// addresses once.
			printDevHint(stderr, &cfg)
		}
		go reloadOnHUP(ctx, hup, args, l, srv, log)
		err = srv.Serve(ctx)
	}
	if err != nil {
		log.Error().Err(l.explain(err)).Msg("nanomx stopped on error")
		return exitError
	}
	// Serve has logged the drain and its counters.
	return exitOK
}

// printErr writes err to w, one "nanomx: " line per joined error.
func printErr(w io.Writer, err error) {
	for _, line := range strings.Split(err.Error(), "\n") {
		fmt.Fprintln(w, "nanomx:", line)
	}
}

// newLogger builds the process logger and sets zerolog's global level.
func newLogger(w io.Writer, format string, level zerolog.Level, color bool) zerolog.Logger {
	zerolog.SetGlobalLevel(level)
	zerolog.TimeFieldFormat = "2006-01-02T15:04:05.000Z07:00"
	return formatLogger(w, format, color)
}

// formatLogger is a logger writing lines in format to w, with timestamps.
// The console format is coloured only when color is set: escape codes in
// a file or the journal are noise.
func formatLogger(w io.Writer, format string, color bool) zerolog.Logger {
	if format == logConsole {
		w = zerolog.ConsoleWriter{Out: w, TimeFormat: "15:04:05.000", NoColor: !color}
	}
	return zerolog.New(w).With().Timestamp().Logger()
}

// isTerminal reports whether w is a terminal.
func isTerminal(w io.Writer) bool {
	f, ok := w.(*os.File)
	return ok && term.IsTerminal(int(f.Fd()))
}

// dropNotice formats the line logsink writes where lines were dropped, in
// the log's own format: a warning that is written whatever log_level is.
func dropNotice(format string, color bool) func(n uint64) []byte {
	return func(n uint64) []byte {
		var b bytes.Buffer
		lg := formatLogger(&b, format, color)
		lg.Log().Str(zerolog.LevelFieldName, zerolog.LevelWarnValue).Uint64("dropped", n).
			Msgf("%d log lines dropped: standard output did not keep up", n)
		return b.Bytes()
	}
}

// restartOnlyKeys returns the keys a SIGHUP cannot change, those of
// fileConfig with a restart tag. A reload that changes one is refused whole:
// cmd checks them all before handing the file to server.Reload, which
// refuses the server's own again. "nanomx help serve" and README.md list
// these keys (TestRestartOnlyDocumented keeps them in step, and
// TestRestartOnlyCoversServer with server.Reload).
func restartOnlyKeys() []string {
	var keys []string
	for _, f := range fileFields() {
		if f.Tag.Get("restart") != "" {
			keys = append(keys, f.Tag.Get("toml"))
		}
	}
	return keys
}

// joinKeys writes keys as "a, b and c", each between quote and quote.
func joinKeys(keys []string, quote string) string {
	q := make([]string, len(keys))
	for i, k := range keys {
		q[i] = quote + k + quote
	}
	if len(q) < 2 {
		return strings.Join(q, "")
	}
	return strings.Join(q[:len(q)-1], ", ") + " and " + q[len(q)-1]
}

// wrap breaks text into lines of at most width columns at spaces.
func wrap(width int, text string) string {
	var b strings.Builder
	n := 0
	for _, w := range strings.Fields(text) {
		switch {
		case n == 0:
		case n+1+len(w) > width:
			b.WriteByte('\n')
			n = 0
		default:
			b.WriteByte(' ')
			n++
		}
		b.WriteString(w)
		n += len(w)
	}
	return b.String()
}

// reloader is what a reload needs of the running server.
type reloader interface {
	Reload(cfg server.Config) error
}

// reload applies next, read again on SIGHUP, to the server running with
// running, or refuses it whole: a restart-only key that changed, or
// anything server.Reload refuses. On success log_level applies at once.
// Errors are located.
func reload(running, next *loaded, srv reloader) error {
	was, is := reflect.ValueOf(running.file), reflect.ValueOf(next.file)
	for _, f := range fileFields() {
		if f.Tag.Get("restart") == "" {
			continue
		}
		if !reflect.DeepEqual(was.FieldByIndex(f.Index).Interface(), is.FieldByIndex(f.Index).Interface()) {
			return next.explain(&server.ConfigError{Key: f.Tag.Get("toml"), Err: errors.New("cannot change without a restart")})
		}
	}
	if err := srv.Reload(next.Config); err != nil {
		return next.explain(err)
	}
	zerolog.SetGlobalLevel(next.LogLevel)
	return nil
}

// reloadOnHUP answers SIGHUP (systemctl reload): it reads the config file
// again (with the same flags on top) and hands it to the running server,
// which applies it without dropping connections or refuses it whole, in
// which case the old settings stay and the log says why.
func reloadOnHUP(ctx context.Context, hup <-chan os.Signal, args []string, running *loaded, srv *server.Server, log zerolog.Logger) {
	for {
		select {
		case <-ctx.Done():
			return
		case <-hup:
		}
		l, err := parseServe(args, io.Discard)
		if err == nil {
			err = reload(running, l, srv)
		}
		switch {
		case err != nil:
			log.Error().Err(err).Msg("SIGHUP: configuration refused; the running settings stay")
		case l.Dev():
			log.Info().Msg("SIGHUP: development default reloaded")
		default:
			log.Info().Str("config", l.Path).Str("log_level", l.LogLevel.String()).Msg("SIGHUP: configuration reloaded")
		}
	}
}

// startPprof serves net/http/pprof on addr, on a mux of its own (importing
// net/http/pprof also registers on http.DefaultServeMux, which nothing here
// serves). It binds before returning so that a taken port fails startup.
func startPprof(addr string, log zerolog.Logger) (closeFn func(), err error) {
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, fmt.Errorf("pprof: %w", err)
	}
	mux := http.NewServeMux()
	mux.HandleFunc("/debug/pprof/", pprof.Index)
	mux.HandleFunc("/debug/pprof/cmdline", pprof.Cmdline)
	mux.HandleFunc("/debug/pprof/profile", pprof.Profile)
	mux.HandleFunc("/debug/pprof/symbol", pprof.Symbol)
	mux.HandleFunc("/debug/pprof/trace", pprof.Trace)
	// No WriteTimeout: /profile?seconds=N and /trace write after N seconds.
	srv := &http.Server{Handler: mux, ReadHeaderTimeout: 10 * time.Second}
	go func() {
		if err := srv.Serve(ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
			log.Error().Err(err).Msg("pprof server")
		}
	}()
	log.Info().Str("addr", ln.Addr().String()).Msg("pprof listening")
	return func() { srv.Close() }, nil
}

// printDevHint tells a developer how to send the development default a
// message and where it will land.
func printDevHint(w io.Writer, cfg *server.Config) {
	host, port := dialTarget(cfg.Listen[0])
	domain := cfg.Domains[0]
	user, boxDomain, _ := strings.Cut(cfg.Mailboxes[0], "@")
	dir := filepath.Join(cfg.MaildirRoot, boxDomain, user, "new")
	if abs, err := filepath.Abs(dir); err == nil {
		dir = abs
	}
	swaksServer := "--server " + net.JoinHostPort(host, port)
	if strings.Contains(host, ":") {
		swaksServer = "--server " + host + " --port " + port
	}
	to := "someone@" + domain
	fmt.Fprintf(w, `
nanomx: no -config given, so this is the development default.
  Listening on %s; every address @%s is accepted.
  Each message is stored as one file in %s%c

Send a test message from another terminal:
  swaks %s --to %s
or, without swaks:
  python3 -c 'import smtplib; smtplib.SMTP("%s", %s).sendmail("me@example.test", ["%s"], b"Subject: test\r\n\r\nhello\r\n")'

Ctrl-C stops the server after the messages in flight are stored.

`, strings.Join(cfg.Listen, ", "), strings.Join(cfg.Domains, ", @"), dir, filepath.Separator,
		swaksServer, to, host, port, to)
}

// dialTarget turns a listen address into one a client on this host can
// dial: an unspecified address (0.0.0.0, [::], "") becomes loopback.
func dialTarget(listen string) (host, port string) {
	host, port, err := net.SplitHostPort(listen)
	if err != nil {
		return "127.0.0.1", "25"
	}
	switch host {
	case "", "0.0.0.0":
		host = "127.0.0.1"
	case "::":
		host = "::1"
	}
	return host, port
}
