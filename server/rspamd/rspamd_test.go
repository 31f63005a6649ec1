package rspamd

import (
	"context"
	"errors"
	"net"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"
)

func fixture(t *testing.T, name string) *Reply {
	t.Helper()
	b, err := os.ReadFile(filepath.Join("testdata", name+".json"))
	if err != nil {
		t.Fatal(err)
	}
	r, err := Decode(b)
	if err != nil {
		t.Fatalf("%s: %v", name, err)
	}
	return r
}

// TestDecodeRealReplies decodes replies captured from rspamd 3.4 (Debian
// 12) with the test configuration of rspamdtest (testdata/*.json): action,
// scores, the SMTP message, the rewritten subject, add_headers in the
// {value, order} shape of rspamd 3.3+, folded with LF-TAB, or with CR-TAB
// when the message had no LF, and remove_headers.
func TestDecodeRealReplies(t *testing.T) {
	for _, tc := range []struct {
		name, action string
		score        float64
		smtp         string
		subject      string
		add          []string // names, in order
		remove       map[string]int
	}{
		{name: "gtube", action: ActionReject, score: 15, smtp: "Gtube pattern"},
		{name: "reject-message", action: ActionReject, smtp: "go away",
			add: []string{"X-Rspamd-Pre-Result", "X-Rspamd-Queue-Id", "X-Spamd-Result"}},
		{name: "soft-reject", action: ActionSoftReject, smtp: "come back",
			add: []string{"X-Rspamd-Pre-Result", "X-Rspamd-Queue-Id", "X-Spamd-Result"}},
		{name: "greylist", action: ActionGreylist, score: 4.4,
			add: []string{"X-Rspamd-Queue-Id", "X-Spam-Level", "X-Spamd-Result"}},
		{name: "no-action", action: ActionNoAction, score: -0.1,
			add:    []string{"X-Rspamd-Queue-Id", "X-Spamd-Result"},
			remove: map[string]int{"X-Spam": 0, "X-Spamd-Result": 0, "X-Rspamd-Queue-Id": 0}},
		{name: "add-header", action: ActionAddHeader, score: 6.9,
			add: []string{"X-Rspamd-Queue-Id", "X-Spam-Level", "X-Spamd-Result"}},
		{name: "rewrite-subject-forged-x-spam", action: ActionRewriteSubject, score: 12.9, subject: "***SPAM*** hello",
			add: []string{"X-Rspamd-Queue-Id", "X-Spam-Level", "X-Spamd-Result"}},
		{name: "rewrite-subject-utf8", action: ActionRewriteSubject, score: 11.65,
			subject: "=?UTF-8?Q?=2A=2A=2ASPAM=2A=2A=2A_=C3=A9clair_gra?= =?UTF-8?Q?tuit?=",
			add:     []string{"X-Rspamd-Queue-Id", "X-Spam-Level", "X-Spamd-Result"}},
		{name: "garbage-cr-folding", action: ActionAddHeader, score: 7.9,
			add: []string{"X-Spam-Level", "X-Spamd-Result"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r := fixture(t, tc.name)
			if r.Action != tc.action || r.Score != tc.score || r.RequiredScore != 15 {
				t.Errorf("action %q score %v/%v, want %q %v/15", r.Action, r.Score, r.RequiredScore, tc.action, tc.score)
			}
			if r.Messages.SMTP != tc.smtp || r.Subject != tc.subject {
				t.Errorf("smtp_message %q subject %q, want %q %q", r.Messages.SMTP, r.Subject, tc.smtp, tc.subject)
			}
			var names []string
			for _, h := range r.Milter.AddHeaders {
				names = append(names, h.Name)
				if h.Value == "" || h.Order != -1 {
					t.Errorf("%s: value %q order %d", h.Name, h.Value, h.Order)
				}
			}
			if !slices.Equal(names, tc.add) {
				t.Errorf("add_headers %v, want %v", names, tc.add)
			}
			for k, v := range tc.remove {
				if got, ok := r.Milter.RemoveHeaders[k]; !ok || got != v {
					t.Errorf("remove_headers[%s] = %d, %v", k, got, ok)
				}
			}
		})
	}
	// The X-Spamd-Result of a message without LF is folded with CR-TAB.
	r := fixture(t, "garbage-cr-folding")
	if v := r.Milter.AddHeaders[1].Value; !strings.Contains(v, "\r\t") {
		t.Errorf("X-Spamd-Result %q has no CR-TAB folding", v)
	}
}

// TestDecodeShapes: add_headers as rspamd before 3.3 sent them (a string
// per field) and as an array for a field added twice; remove_headers
// with a value that is no number removes every occurrence; a reply with
// no action, an unknown action or no JSON is an error.
func TestDecodeShapes(t *testing.T) {
	r, err := Decode([]byte(`{"action":"add header","score":7,"required_score":15,
		"milter":{"add_headers":{"X-B":"b","X-A":[{"value":"a1","order":0},"a2"]},
		"remove_headers":{"X-C":2,"X-D":"all"}},"messages":{"smtp_message":"m","other":1}}`))
	if err != nil {
		t.Fatal(err)
	}
	want := []Header{{"X-A", "a1", 0}, {"X-A", "a2", 0}, {"X-B", "b", 0}}
	if !slices.Equal(r.Milter.AddHeaders, want) {
		t.Errorf("add_headers %v, want %v", r.Milter.AddHeaders, want)
	}
	if r.Milter.RemoveHeaders["X-C"] != 2 || r.Milter.RemoveHeaders["X-D"] != 0 || len(r.Milter.RemoveHeaders) != 2 {
		t.Errorf("remove_headers %v", r.Milter.RemoveHeaders)
	}
	if r.Messages.SMTP != "m" {
		t.Errorf("smtp_message %q", r.Messages.SMTP)
	}
	// messages in another shape is ignored, not an error.
	if _, err := Decode([]byte(`{"action":"no action","messages":["x"]}`)); err != nil {
		t.Errorf("messages as an array: %v", err)
	}
	for _, bad := range []string{`{"score":1}`, `{"action":"drop it"}`, `not json`, `{"action":"no action","milter":{"add_headers":{"X":5}}}`} {
		if _, err := Decode([]byte(bad)); err == nil {
			t.Errorf("Decode(%s): no error", bad)
		}
	}
}

// TestEdit applies replies to a message: remove_headers by occurrence (0
// every one, 2 the second, -1 the last, past the count none), the
// client's X-Spam-* fields always cut, the subject rewrite replacing every
// Subject field (folded lines too), rspamd's folded values kept as
// continuation lines whatever their line ending, and fields with a bad
// name or no value dropped.
func TestEdit(t *testing.T) {
	msg := "X-Spam: yes\n" +
		"Subject: buy\n\tnow\n" +
		"X-Tag: 1\n" +
		"x-tag: 2\n" +
		"To: bob\n" +
		"X-Tag: 3\n" +
		"X-Spam-Score: -100\n" +
		"X-Last: a\nX-Last: b\n" +
		"\n" +
		"X-Tag: in the body\n"
	r := &Reply{Action: ActionRewriteSubject, Score: 12.5, RequiredScore: 15, Subject: "***SPAM*** buy now",
		Milter: Milter{
			AddHeaders: []Header{
				{Name: "X-Spamd-Result", Value: "default: True [12.50 / 15.00];\n\tA(1.00)[];\r\n\tB(2.00)[]\n\n"},
				{Name: "X-Cr", Value: "one\r\ttwo\rthree"},
				{Name: "Bad Name", Value: "x"},
				{Name: "X-Empty", Value: " \n\t\n"},
				{Name: "X-Spam", Value: "forged by a rule"},
			},
			RemoveHeaders: map[string]int{"X-Tag": 2, "X-Last": -1, "X-None": 0, "X-Far": 5},
		}}
	e := r.Edit([]byte(msg))
	var kept strings.Builder
	at := 0
	for _, c := range e.Cut {
		kept.WriteString(msg[at:c[0]])
		at = int(c[1])
	}
	kept.WriteString(msg[at:])
	wantKept := "X-Tag: 1\nTo: bob\nX-Tag: 3\nX-Last: a\n\nX-Tag: in the body\n"
	if kept.String() != wantKept {
		t.Errorf("kept\n%q\nwant\n%q (cuts %v)", kept.String(), wantKept, e.Cut)
	}
	wantHeaders := "X-Spam-Action: rewrite subject\n" +
		"X-Spam-Score: 12.50 / 15.00\n" +
		"X-Spam: Yes\n" +
		"X-Spamd-Result: default: True [12.50 / 15.00];\n\tA(1.00)[];\n\tB(2.00)[]\n" +
		"X-Cr: one\n\ttwo\n\tthree\n" +
		"Subject: ***SPAM*** buy now\n"
	if string(e.Headers) != wantHeaders {
		t.Errorf("headers\n%s\nwant\n%s", e.Headers, wantHeaders)
	}
	for i := 1; i < len(e.Cut); i++ {
		if e.Cut[i][0] <= e.Cut[i-1][1] {
			t.Errorf("cuts not sorted and apart: %v", e.Cut)
		}
	}

	// remove_headers index 0 and a non-ASCII subject, which nanomx
	// encodes (rspamd encodes its own; an older one might not).
	r = &Reply{Action: ActionRewriteSubject, Subject: "[SPAM] éclair", Milter: Milter{RemoveHeaders: map[string]int{"x-tag": 0}}}
	e = r.Edit([]byte(msg))
	if !strings.Contains(string(e.Headers), "Subject: =?utf-8?q?[SPAM]_=C3=A9clair?=\n") {
		t.Errorf("headers %q: subject not encoded", e.Headers)
	}
	// X-Spam, Subject, X-Tag 1, x-tag 2 | To | X-Tag 3, X-Spam-Score:
	// adjacent fields merge into one range.
	if len(e.Cut) != 2 || e.Cut[0] != [2]int64{0, int64(strings.Index(msg, "To:"))} ||
		msg[e.Cut[1][0]:e.Cut[1][1]] != "X-Tag: 3\nX-Spam-Score: -100\n" {
		t.Errorf("cuts %v", e.Cut)
	}

	// No action: the score, no X-Spam, nothing of the client's cut but
	// nanomx's own fields; the subject stays.
	r = &Reply{Action: ActionNoAction, Score: -0.1, RequiredScore: 15, Subject: "ignored"}
	e = r.Edit([]byte(msg))
	if string(e.Headers) != "X-Spam-Action: no action\nX-Spam-Score: -0.10 / 15.00\n" {
		t.Errorf("headers %q", e.Headers)
	}
	if len(e.Cut) != 2 || msg[e.Cut[0][0]:e.Cut[0][1]] != "X-Spam: yes\n" || msg[e.Cut[1][0]:e.Cut[1][1]] != "X-Spam-Score: -100\n" {
		t.Errorf("cuts %v", e.Cut)
	}
}

// TestSMTPText: rspamd's smtp_message becomes one printable ASCII line of
// at most 200 bytes; none (or only white space) gives the default.
func TestSMTPText(t *testing.T) {
	long := strings.Repeat("x", 300)
	for _, tc := range []struct{ in, want string }{
		{"Gtube pattern", "Gtube pattern"},
		{"two\r\nlines\tand  spaces ", "two lines and spaces"},
		{"caf\u00e9 \x00bad", "caf? bad"},
		{"", "default"},
		{" \r\n ", "default"},
		{long, long[:200]},
	} {
		r := &Reply{Messages: Messages{SMTP: tc.in}}
		if got := r.SMTPText("default"); got != tc.want {
			t.Errorf("SMTPText(%q) = %q, want %q", tc.in, got, tc.want)
		}
	}
}

// TestRequest: the request carries the envelope as rspamd's protocol
// says: POST /checkv2, IP, Helo, Hostname, From ("<>" for the null
// sender), one Rcpt per recipient, Queue-Id, User-Agent nanomx, control
// characters dropped; the body as given.
func TestRequest(t *testing.T) {
	var mu sync.Mutex
	var got *http.Request
	var body []byte
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		b := make([]byte, r.ContentLength)
		_, _ = r.Body.Read(b)
		mu.Lock()
		got, body = r, b
		mu.Unlock()
		w.Write([]byte(`{"action":"no action","score":1,"required_score":15}`))
	}))
	defer srv.Close()
	c, err := New(Config{URL: srv.URL + "/"})
	if err != nil {
		t.Fatal(err)
	}
	req := &Request{IP: netip.MustParseAddr("::ffff:192.0.2.7"), Helo: "mail.example.org\x01", Hostname: "mail.example.org",
		Rcpts: []string{"bob@example.test", "carol@example.test"}, QueueID: "Q42"}
	r, err := c.Check(context.Background(), req, []byte("Subject: x\n\nhi\n"))
	if err != nil || r.Action != ActionNoAction {
		t.Fatalf("Check: %v, %v", r, err)
	}
	mu.Lock()
	defer mu.Unlock()
	h := got.Header
	if got.Method != "POST" || got.URL.Path != "/checkv2" {
		t.Errorf("%s %s", got.Method, got.URL.Path)
	}
	for k, want := range map[string]string{"Ip": "192.0.2.7", "Helo": "mail.example.org", "Hostname": "mail.example.org",
		"From": "<>", "Queue-Id": "Q42", "User-Agent": "nanomx"} {
		if h.Get(k) != want {
			t.Errorf("%s: %q, want %q", k, h.Get(k), want)
		}
	}
	if !slices.Equal(h.Values("Rcpt"), req.Rcpts) {
		t.Errorf("Rcpt %v", h.Values("Rcpt"))
	}
	if string(body) != "Subject: x\n\nhi\n" {
		t.Errorf("body %q", body)
	}
}

// TestTimeout: a server that accepts and never answers costs a scan its
// timeout, not more; Stats counts a timeout.
func TestTimeout(t *testing.T) {
	release := make(chan struct{})
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		<-release
	}))
	defer srv.Close()
	defer close(release)
	c, _ := New(Config{URL: srv.URL, Timeout: 300 * time.Millisecond})
	start := time.Now()
	done := make(chan error, 1)
	if err := c.Go(&Request{}, []byte("x\n"), func(r *Reply, msg []byte, err error) { done <- err }); err != nil {
		t.Fatal(err)
	}
	select {
	case err := <-done:
		if err == nil {
			t.Fatal("no error")
		}
		if d := time.Since(start); d < 300*time.Millisecond || d > 3*time.Second {
			t.Errorf("failed after %v, want the 300ms timeout", d)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("the scan did not end")
	}
	if s := c.Stats(); s.Timeouts != 1 || s.Scans != 1 || s.OK != 0 {
		t.Errorf("stats %+v", s)
	}
}

// TestBusy: with MaxConcurrent scans in flight the next waits for a slot
// (MaxWaiting of them), and is sent when one ends; past the waiting ones
// Go refuses at once with ErrBusy. A scan that waits longer than Timeout
// fails as a timeout, without being sent.
func TestBusy(t *testing.T) {
	release := make(chan struct{})
	var mu sync.Mutex
	served := 0
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		<-release
		mu.Lock()
		served++
		mu.Unlock()
		w.Write([]byte(`{"action":"no action"}`))
	}))
	defer srv.Close()
	c, _ := New(Config{URL: srv.URL, MaxConcurrent: 2, MaxWaiting: 1})
	done := make(chan error, 4)
	cb := func(r *Reply, msg []byte, err error) { done <- err }
	for range 3 {
		if err := c.Go(&Request{}, nil, cb); err != nil {
			t.Fatal(err)
		}
	}
	if err := c.Go(&Request{}, nil, cb); !errors.Is(err, ErrBusy) {
		t.Fatalf("fourth scan: %v, want ErrBusy", err)
	}
	close(release)
	for range 3 {
		if err := <-done; err != nil {
			t.Fatal(err)
		}
	}
	if s := c.Stats(); s.Busy != 1 || s.OK != 3 || s.Queued != 1 || served != 3 {
		t.Errorf("stats %+v, served %d", s, served)
	}

	hang := make(chan struct{})
	slow := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { <-hang }))
	defer slow.Close()
	defer close(hang) // first: lets the handler end before Close waits for it
	c, _ = New(Config{URL: slow.URL, MaxConcurrent: 1, Timeout: 300 * time.Millisecond})
	start := time.Now()
	for range 2 {
		if err := c.Go(&Request{}, nil, cb); err != nil {
			t.Fatal(err)
		}
	}
	for range 2 {
		if err := <-done; err == nil {
			t.Error("no error")
		}
	}
	if d := time.Since(start); d > 3*time.Second {
		t.Errorf("the waiting scan ended after %v, want the 300ms timeout", d)
	}
	if s := c.Stats(); s.Timeouts != 2 || s.Queued != 1 || s.Scans != 2 {
		t.Errorf("stats %+v", s)
	}
}

// TestErrors: connection refused, an HTTP error status, a reply longer
// than MaxReplyBytes and bad JSON are errors.
func TestErrors(t *testing.T) {
	l, _ := net.Listen("tcp", "127.0.0.1:0")
	closed := "http://" + l.Addr().String()
	l.Close()
	c, _ := New(Config{URL: closed})
	if _, err := c.Check(context.Background(), &Request{}, nil); err == nil {
		t.Error("closed port: no error")
	}
	for _, tc := range []struct {
		name   string
		status int
		body   string
	}{
		{"status", 500, `{"error":"invalid command","error_domain":"protocol-error"}`},
		{"too long", 200, `{"action":"no action","x":"` + strings.Repeat("a", 2000) + `"}`},
		{"bad json", 200, `{"action":`},
	} {
		srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			w.WriteHeader(tc.status)
			w.Write([]byte(tc.body))
		}))
		c, _ := New(Config{URL: srv.URL, MaxReplyBytes: 1000})
		_, err := c.Check(context.Background(), &Request{}, nil)
		var se *StatusError
		switch {
		case err == nil:
			t.Errorf("%s: no error", tc.name)
		case tc.status != 200 && (!errors.As(err, &se) || se.Code != 500 || !strings.Contains(se.Body, "invalid command")):
			t.Errorf("%s: %v", tc.name, err)
		}
		srv.Close()
		if s := c.Stats(); s.Failed != 1 {
			t.Errorf("%s: stats %+v", tc.name, s)
		}
	}
	if _, err := New(Config{URL: "unix:///run/rspamd.sock"}); err == nil {
		t.Error("New accepted a unix URL")
	}
}

// TestPercentiles: the histogram's percentiles are within its 9% bucket
// width of the true ones, never above the largest sample.
func TestPercentiles(t *testing.T) {
	var s Stats
	for i := 1; i <= 1000; i++ {
		s.record(time.Duration(i)*time.Millisecond, nil)
	}
	snap := s.Snapshot()
	for _, tc := range []struct {
		got, want time.Duration
	}{{snap.P50, 500 * time.Millisecond}, {snap.P90, 900 * time.Millisecond}, {snap.P99, 990 * time.Millisecond}} {
		if tc.got < tc.want || float64(tc.got) > 1.095*float64(tc.want) {
			t.Errorf("percentile %v, want %v (+9%%)", tc.got, tc.want)
		}
	}
	if snap.Max != time.Second || snap.OK != 1000 || snap.Mean < 500*time.Millisecond || snap.Mean > 501*time.Millisecond {
		t.Errorf("snapshot %+v", snap)
	}
	if snap.P99 > snap.Max {
		t.Errorf("p99 %v past max %v", snap.P99, snap.Max)
	}
	// Every bucket's bound is above the values it holds.
	for _, ns := range []uint64{1, 1 << 14, 1<<14 + 1, 123456789, 1 << 40} {
		if i := bucketOf(ns); float64(ns) >= bucketTop(i) && i != numBuckets-1 {
			t.Errorf("%d ns in bucket %d, bound %v", ns, i, bucketTop(i))
		}
	}
}
