// Package rspamd is a client of rspamd's HTTP protocol
// (rspamd.com/doc/developers/protocol.html): a message goes to POST
// /checkv2 on rspamd's normal worker with its envelope in request headers,
// and the JSON reply says what to do with it (an action, a score, header
// fields to add and remove, an SMTP message, a new subject).
//
// The client is bounded everywhere: a timeout on every scan, a number of
// scans in flight and of scans waiting for one of them (beyond both Go
// refuses at once), and a bounded read of the reply. It records every scan's duration in an
// atomic histogram (Stats).
//
// Edit (edit.go) turns a reply into what nanomx does to the stored
// message: header fields to prepend and byte ranges of the client's header
// to cut.
package rspamd

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/netip"
	"net/url"
	"sort"
	"strconv"
	"strings"
	"sync/atomic"
	"time"
)

// Actions rspamd recommends (rspamd.com/doc/faq.html#what-are-rspamd-actions).
const (
	ActionReject         = "reject"
	ActionSoftReject     = "soft reject"
	ActionGreylist       = "greylist"
	ActionRewriteSubject = "rewrite subject"
	ActionAddHeader      = "add header"
	ActionNoAction       = "no action"
	// Custom actions of rspamd's force_actions module that nanomx takes as
	// "add header" (the message is kept, marked as spam): nanomx never
	// drops a message it has not refused.
	ActionDiscard    = "discard"
	ActionQuarantine = "quarantine"
)

// Defaults.
const (
	DefaultTimeout       = 10 * time.Second
	DefaultMaxConcurrent = 16
	DefaultMaxReplyBytes = 1 << 20
)

// ErrBusy is what Go answers when MaxConcurrent scans are in flight.
var ErrBusy = errors.New("rspamd: too many scans in flight")

// Config configures a Client.
type Config struct {
	// URL is rspamd's normal worker, e.g. "http://127.0.0.1:11333"; the
	// client posts to its /checkv2.
	URL string
	// Timeout bounds a scan: connect, send, rspamd's work, reply
	// (default DefaultTimeout).
	Timeout time.Duration
	// MaxConcurrent bounds the scans in flight (default
	// DefaultMaxConcurrent); it also bounds the copies of messages the
	// client holds.
	MaxConcurrent int
	// MaxWaiting bounds the scans that wait for one of the MaxConcurrent
	// slots (0: 4 × MaxConcurrent; negative: none wait). The wait counts
	// against Timeout. Past it Go refuses with ErrBusy.
	MaxWaiting int
	// MaxReplyBytes bounds the reply body read (default
	// DefaultMaxReplyBytes); a longer reply is an error.
	MaxReplyBytes int64
	// UserAgent is sent as User-Agent (default "nanomx").
	UserAgent string
}

// Client scans messages with one rspamd. It is safe for concurrent use.
type Client struct {
	cfg     Config
	check   string // URL of /checkv2
	hc      *http.Client
	slots   chan struct{}
	waiting atomic.Int64 // scans waiting for a slot
	stats   Stats
}

// New returns a client of cfg.URL. It does no I/O.
func New(cfg Config) (*Client, error) {
	u, err := url.Parse(cfg.URL)
	if err != nil {
		return nil, err
	}
	if (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		return nil, fmt.Errorf("%q: want http://host:port or https://host:port", cfg.URL)
	}
	if cfg.Timeout <= 0 {
		cfg.Timeout = DefaultTimeout
	}
	if cfg.MaxConcurrent <= 0 {
		cfg.MaxConcurrent = DefaultMaxConcurrent
	}
	switch {
	case cfg.MaxWaiting == 0:
		cfg.MaxWaiting = 4 * cfg.MaxConcurrent
	case cfg.MaxWaiting < 0:
		cfg.MaxWaiting = 0
	}
	if cfg.MaxReplyBytes <= 0 {
		cfg.MaxReplyBytes = DefaultMaxReplyBytes
	}
	if cfg.UserAgent == "" {
		cfg.UserAgent = "nanomx"
	}
	u.Path = strings.TrimSuffix(u.Path, "/") + "/checkv2"
	u.RawQuery, u.Fragment = "", ""
	tr := &http.Transport{
		Proxy:       nil, // rspamd is ours: never through an HTTP proxy from the environment
		DialContext: (&net.Dialer{Timeout: cfg.Timeout, KeepAlive: 30 * time.Second}).DialContext,
		// One kept-alive connection per scan slot, no more.
		MaxIdleConns:        cfg.MaxConcurrent,
		MaxIdleConnsPerHost: cfg.MaxConcurrent,
		MaxConnsPerHost:     cfg.MaxConcurrent,
		IdleConnTimeout:     90 * time.Second,
		DisableCompression:  true,
		ForceAttemptHTTP2:   false,
	}
	return &Client{
		cfg:   cfg,
		check: u.String(),
		hc:    &http.Client{Transport: tr, Timeout: cfg.Timeout},
		slots: make(chan struct{}, cfg.MaxConcurrent),
	}, nil
}

// Request is a message's envelope, as rspamd's request headers carry it.
type Request struct {
	IP netip.Addr // IP: the client's address
	// Helo is the HELO/EHLO name (Helo).
	Helo string
	// Hostname is the client's verified reverse name (Hostname); "" sends
	// none, and rspamd then scores RDNS_NONE. The sender authentication
	// checks (iprev) are to fill it.
	Hostname string
	// From is the reverse-path, "" for the null one (sent as "<>").
	From string
	// Rcpts are the forward-paths, one Rcpt header each.
	Rcpts []string
	// QueueID is the queue id of the message (Queue-Id), so that rspamd's
	// log and nanomx's name the same message.
	QueueID string
	// Header holds more request headers (e.g. Settings-Id), for checks
	// that have something to pass on; nil sends none.
	Header http.Header
}

// Reply is rspamd's answer (the fields nanomx uses of /checkv2's JSON).
type Reply struct {
	Action        string            `json:"action"`
	Score         float64           `json:"score"`
	RequiredScore float64           `json:"required_score"`
	Skipped       bool              `json:"is_skipped"`
	Subject       string            `json:"subject"` // with "rewrite subject"
	Symbols       map[string]Symbol `json:"symbols"`
	Messages      Messages          `json:"messages"`
	Milter        Milter            `json:"milter"`
	MessageID     string            `json:"message-id"`
}

// Symbol is one rule that matched.
type Symbol struct {
	Name        string   `json:"name"`
	Score       float64  `json:"score"`
	Description string   `json:"description"`
	Options     []string `json:"options"`
}

// Messages are rspamd's messages for the MTA.
type Messages struct {
	// SMTP is messages.smtp_message, the reply text rspamd asks for.
	SMTP string
}

// UnmarshalJSON takes messages.smtp_message from an object and ignores
// anything else (other keys, or another shape).
func (m *Messages) UnmarshalJSON(b []byte) error {
	var o map[string]json.RawMessage
	if json.Unmarshal(b, &o) != nil {
		return nil
	}
	if raw, ok := o["smtp_message"]; ok {
		_ = json.Unmarshal(raw, &m.SMTP)
	}
	return nil
}

// Milter is the reply's "milter" object: header fields to add to the
// message and to remove from it.
type Milter struct {
	// AddHeaders in a stable order: by name, then as listed.
	AddHeaders []Header `json:"add_headers"`
	// RemoveHeaders maps a field name to the occurrence to remove: 0 every
	// one, n > 0 the n-th, n < 0 the n-th from the end.
	RemoveHeaders map[string]int `json:"remove_headers"`
}

// Header is one header field to add.
type Header struct {
	Name  string
	Value string // may be folded: "\n\t" inside
	Order int    // rspamd's position hint; nanomx prepends every field
}

// UnmarshalJSON reads milter, whose add_headers values come in three
// shapes: rspamd 3.3 and later send {"value": v, "order": n}; older
// versions a string; a field added more than once an array of either.
func (m *Milter) UnmarshalJSON(b []byte) error {
	var raw struct {
		Add    map[string]json.RawMessage `json:"add_headers"`
		Remove map[string]json.RawMessage `json:"remove_headers"`
	}
	if err := json.Unmarshal(b, &raw); err != nil {
		return err
	}
	names := make([]string, 0, len(raw.Add))
	for name := range raw.Add {
		names = append(names, name)
	}
	sort.Strings(names)
	for _, name := range names {
		hs, err := headerValues(name, raw.Add[name])
		if err != nil {
			return fmt.Errorf("milter.add_headers[%q]: %w", name, err)
		}
		m.AddHeaders = append(m.AddHeaders, hs...)
	}
	for name, v := range raw.Remove {
		var idx int
		if json.Unmarshal(v, &idx) != nil {
			// Anything but a number: remove every occurrence, the safe
			// reading for a field rspamd wants gone.
			idx = 0
		}
		if m.RemoveHeaders == nil {
			m.RemoveHeaders = make(map[string]int, len(raw.Remove))
		}
		m.RemoveHeaders[name] = idx
	}
	return nil
}

func headerValues(name string, raw json.RawMessage) ([]Header, error) {
	raw = bytes.TrimSpace(raw)
	if len(raw) > 0 && raw[0] == '[' {
		var items []json.RawMessage
		if err := json.Unmarshal(raw, &items); err != nil {
			return nil, err
		}
		var hs []Header
		for _, it := range items {
			h, err := headerValue(name, it)
			if err != nil {
				return nil, err
			}
			hs = append(hs, h)
		}
		return hs, nil
	}
	h, err := headerValue(name, raw)
	if err != nil {
		return nil, err
	}
	return []Header{h}, nil
}

func headerValue(name string, raw json.RawMessage) (Header, error) {
	h := Header{Name: name}
	if err := json.Unmarshal(raw, &h.Value); err == nil {
		return h, nil
	}
	var o struct {
		Value *string `json:"value"`
		Order int     `json:"order"`
	}
	if err := json.Unmarshal(raw, &o); err != nil || o.Value == nil {
		return h, errors.New("want a string or {value, order}")
	}
	h.Value, h.Order = *o.Value, o.Order
	return h, nil
}

// Go scans msg on a goroutine of its own and calls done there with the
// reply, or with an error (connection, timeout, HTTP status, bad JSON),
// and the copy of msg that was sent (done's to keep: Reply.Edit needs it).
// msg is copied before Go returns: the caller keeps it. When MaxConcurrent
// scans are in flight the scan waits for a slot, within Timeout; when
// MaxWaiting wait already, Go copies and calls nothing and returns
// ErrBusy. So at most MaxConcurrent+MaxWaiting goroutines and copies
// exist.
func (c *Client) Go(req *Request, msg []byte, done func(r *Reply, msg []byte, err error)) error {
	queued := false
	select {
	case c.slots <- struct{}{}:
	default:
		if c.waiting.Add(1) > int64(c.cfg.MaxWaiting) {
			c.waiting.Add(-1)
			c.stats.busy.Add(1)
			return ErrBusy
		}
		queued = true
		c.stats.queued.Add(1)
	}
	owned := append([]byte(nil), msg...)
	ctx, cancel := context.WithTimeout(context.Background(), c.cfg.Timeout)
	go func() {
		defer cancel()
		if queued {
			select {
			case c.slots <- struct{}{}:
				c.waiting.Add(-1)
			case <-ctx.Done():
				c.waiting.Add(-1)
				c.stats.timeouts.Add(1)
				done(nil, owned, fmt.Errorf("rspamd: no scan slot free within %v: %w", c.cfg.Timeout, ctx.Err()))
				return
			}
		}
		defer func() { <-c.slots }()
		r, err := c.scan(ctx, req, owned)
		done(r, owned, err)
	}()
	return nil
}

// Check scans msg and waits for the reply. It takes a slot if one is
// free, or fails with ErrBusy: it never waits for one.
func (c *Client) Check(ctx context.Context, req *Request, msg []byte) (*Reply, error) {
	select {
	case c.slots <- struct{}{}:
	default:
		c.stats.busy.Add(1)
		return nil, ErrBusy
	}
	defer func() { <-c.slots }()
	ctx, cancel := context.WithTimeout(ctx, c.cfg.Timeout)
	defer cancel()
	return c.scan(ctx, req, msg)
}

// scan runs one request and records its duration and outcome.
func (c *Client) scan(ctx context.Context, req *Request, msg []byte) (*Reply, error) {
	start := time.Now()
	r, err := c.post(ctx, req, msg)
	c.stats.record(time.Since(start), err)
	return r, err
}

func (c *Client) post(ctx context.Context, req *Request, msg []byte) (*Reply, error) {
	hr, err := http.NewRequestWithContext(ctx, http.MethodPost, c.check, bytes.NewReader(msg))
	if err != nil {
		return nil, err
	}
	h := hr.Header
	for k, vs := range req.Header {
		for _, v := range vs {
			h.Add(k, headerSafe(v))
		}
	}
	h.Set("User-Agent", c.cfg.UserAgent)
	if req.IP.IsValid() {
		h.Set("IP", req.IP.Unmap().String())
	}
	if req.Helo != "" {
		h.Set("Helo", headerSafe(req.Helo))
	}
	if req.Hostname != "" {
		h.Set("Hostname", headerSafe(req.Hostname))
	}
	if req.From == "" {
		h.Set("From", "<>")
	} else {
		h.Set("From", headerSafe(req.From))
	}
	for _, r := range req.Rcpts {
		h.Add("Rcpt", headerSafe(r))
	}
	if req.QueueID != "" {
		h.Set("Queue-Id", headerSafe(req.QueueID))
	}
	resp, err := c.hc.Do(hr)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(io.LimitReader(resp.Body, c.cfg.MaxReplyBytes+1))
	if err != nil {
		return nil, fmt.Errorf("rspamd: reading the reply: %w", err)
	}
	if int64(len(body)) > c.cfg.MaxReplyBytes {
		return nil, fmt.Errorf("rspamd: reply longer than %d bytes", c.cfg.MaxReplyBytes)
	}
	if resp.StatusCode != http.StatusOK {
		return nil, &StatusError{Code: resp.StatusCode, Body: firstLine(body)}
	}
	return Decode(body)
}

// Decode parses a /checkv2 JSON reply. A reply without an action, or with
// one nanomx does not know, is an error: acting on a guess could drop mail
// or let it through unmarked.
func Decode(body []byte) (*Reply, error) {
	r := new(Reply)
	if err := json.Unmarshal(body, r); err != nil {
		return nil, fmt.Errorf("rspamd: bad reply: %w", err)
	}
	switch r.Action {
	case ActionReject, ActionSoftReject, ActionGreylist, ActionRewriteSubject,
		ActionAddHeader, ActionNoAction, ActionDiscard, ActionQuarantine:
	case "":
		return nil, errors.New("rspamd: bad reply: no action")
	default:
		return nil, fmt.Errorf("rspamd: bad reply: unknown action %q", printable(r.Action, 40))
	}
	return r, nil
}

// StatusError is an HTTP status other than 200 (rspamd answers errors
// with a JSON {"error": ...} body, of which it keeps the first line).
type StatusError struct {
	Code int
	Body string
}

func (e *StatusError) Error() string {
	return "rspamd: HTTP " + strconv.Itoa(e.Code) + ": " + e.Body
}

func firstLine(b []byte) string {
	if i := bytes.IndexByte(b, '\n'); i >= 0 {
		b = b[:i]
	}
	return printable(string(b), 200)
}

// headerSafe drops the bytes an HTTP header value cannot carry (controls);
// SMTP has refused CR and LF already, this is for the rest.
func headerSafe(s string) string {
	for i := 0; i < len(s); i++ {
		if c := s[i]; c < 0x20 || c == 0x7f {
			return strings.Map(func(r rune) rune {
				if r < 0x20 || r == 0x7f {
					return -1
				}
				return r
			}, s)
		}
	}
	return s
}
