// Package fakesmtp is a small SMTP server for testing the load generator:
// it can answer each message 250, 4xx or 5xx, drop the connection instead
// of answering, answer twice, store a message twice, truncated or not at
// all, delay, time out idle sessions, offer or refuse STARTTLS, read BDAT
// chunks, cut a session after so many commands or stop reading it. It
// listens on 127.0.0.1 only. The tests of bench and of the nanomx command
// use it.
package fakesmtp

import (
	"bufio"
	"bytes"
	"crypto/tls"
	"fmt"
	"io"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"
)

// MarkerHeader is the header whose "<runid>-<seq>" value identifies a
// message (bench.MarkerHeader; repeated to keep this package a leaf).
const MarkerHeader = "X-Nanomx-Bench"

// Action is what the server does at a message's end of data.
type Action struct {
	Reply      int           // reply code: 250 when 0; 421, 451, 554...
	Delay      time.Duration // wait before replying
	Drop       bool          // close the connection instead of replying
	NoStore    bool          // do not store the message even on 250 (a lost message)
	StoreTwice bool          // store it twice (a duplicate)
	ReplyTwice bool          // send the reply twice, in one write
	Truncate   int           // store the message this many bytes short
}

// Server is a running fake server. Its knobs are set before Start.
type Server struct {
	// Pipelining advertises PIPELINING in the EHLO reply.
	Pipelining bool
	// Decide picks the Action for the message with sequence number seq
	// (from its marker; 0 without one). Nil means 250 for all.
	Decide func(seq int64) Action
	// Maildir, when set, receives stored messages in Maildir/new/.
	Maildir string
	// IdleTimeout closes a session that sends nothing for this long with
	// 421 4.4.2; 0 for never.
	IdleTimeout time.Duration
	// TLS, when set, makes EHLO offer STARTTLS until the session is in
	// TLS, and serves it with this configuration.
	TLS *tls.Config
	// StartTLSReply, when not 0, answers STARTTLS with this code instead
	// of 220, and the session stays in plaintext.
	StartTLSReply int
	// MaxCommands, when not 0, answers the command after that many with
	// 421 4.7.0 and closes, as a server bounding a client does.
	MaxCommands int
	// StallAfter, when not 0, stops reading after that many commands
	// (until Close), as a server that stops taking input does.
	StallAfter int
	// RefuseRcpt, when set, answers 550 5.1.1 to the recipients it
	// reports true for (an unknown user).
	RefuseRcpt func(addr string) bool

	ln        net.Listener
	wg        sync.WaitGroup
	done      chan struct{} // closed by Close: ends delays
	closeOnce sync.Once

	// Counters, safe to read at any time.
	Conns    atomic.Int64 // connections accepted
	Messages atomic.Int64 // ends of data received
	// Envelopes sent in one write (MAIL, RCPTs and DATA buffered together
	// when MAIL was read) and one command at a time.
	Pipelined, Serial atomic.Int64
	// TLSSessions counts completed TLS handshakes, TLSResumed those of
	// them that resumed an earlier session.
	TLSSessions, TLSResumed atomic.Int64

	mu      sync.Mutex
	sizes   []int    // message sizes as received, after dot-unstuffing, CRLF kept
	markers []string // markers of the messages received, in order
	rcpts   []string // RCPT TO addresses, in order
	remotes map[string]int
	bdats   []int64 // sizes of the BDAT commands read
	stored  atomic.Int64
	conns   map[net.Conn]struct{}
}

// Start listens on 127.0.0.1:0 and serves until Close.
func (s *Server) Start() error {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return err
	}
	s.ln = ln
	s.done = make(chan struct{})
	s.conns = make(map[net.Conn]struct{})
	s.remotes = make(map[string]int)
	if s.Maildir != "" {
		for _, d := range []string{"tmp", "new", "cur"} {
			if err := os.MkdirAll(filepath.Join(s.Maildir, d), 0o700); err != nil {
				return err
			}
		}
	}
	s.wg.Add(1)
	go func() {
		defer s.wg.Done()
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			s.Conns.Add(1)
			s.mu.Lock()
			s.conns[c] = struct{}{}
			if a, ok := c.RemoteAddr().(*net.TCPAddr); ok {
				s.remotes[a.IP.String()]++
			}
			s.mu.Unlock()
			s.wg.Add(1)
			go func() {
				defer s.wg.Done()
				s.serve(c)
				s.mu.Lock()
				delete(s.conns, c)
				s.mu.Unlock()
				_ = c.Close()
			}()
		}
	}()
	return nil
}

// Addr is the host:port the server listens on.
func (s *Server) Addr() string { return s.ln.Addr().String() }

// Close stops the server and closes every connection. It may be called
// more than once.
func (s *Server) Close() {
	s.closeOnce.Do(func() {
		close(s.done)
		_ = s.ln.Close()
		s.mu.Lock()
		for c := range s.conns {
			_ = c.Close()
		}
		s.mu.Unlock()
		s.wg.Wait()
	})
}

// Sizes returns the sizes of the messages received so far.
func (s *Server) Sizes() []int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]int(nil), s.sizes...)
}

// Rcpts returns the RCPT TO addresses received so far, in order.
func (s *Server) Rcpts() []string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]string(nil), s.rcpts...)
}

// Remotes returns how many connections came from each client IP.
func (s *Server) Remotes() map[string]int {
	s.mu.Lock()
	defer s.mu.Unlock()
	m := make(map[string]int, len(s.remotes))
	for k, v := range s.remotes {
		m[k] = v
	}
	return m
}

// Bdats returns the sizes of the BDAT commands read so far, in order.
func (s *Server) Bdats() []int64 {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]int64(nil), s.bdats...)
}

// Markers returns the markers of the messages received so far.
func (s *Server) Markers() []string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]string(nil), s.markers...)
}

func (s *Server) serve(c net.Conn) {
	br := bufio.NewReader(c)
	// c becomes the TLS connection after STARTTLS; write follows it.
	write := func(lines ...string) bool {
		_, err := c.Write([]byte(strings.Join(lines, "")))
		return err == nil
	}
	inTLS := false
	if !write("220 fake ESMTP\r\n") {
		return
	}
	var bdat []byte // the message of a BDAT transaction so far
	for commands := 0; ; commands++ {
		if s.IdleTimeout > 0 {
			_ = c.SetReadDeadline(time.Now().Add(s.IdleTimeout))
		}
		line, err := br.ReadString('\n')
		if err != nil {
			if ne, ok := err.(net.Error); ok && ne.Timeout() {
				write("421 4.4.2 fake: timeout\r\n")
			}
			return
		}
		if s.StallAfter > 0 && commands >= s.StallAfter {
			<-s.done
			return
		}
		if s.MaxCommands > 0 && commands >= s.MaxCommands {
			write("421 4.7.0 fake: too many commands\r\n")
			return
		}
		verb := strings.ToUpper(strings.TrimSpace(line))
		if i := strings.IndexAny(verb, " :"); i >= 0 {
			verb = verb[:i]
		}
		switch verb {
		case "EHLO":
			lines := []string{"250-fake\r\n"}
			if s.Pipelining {
				lines = append(lines, "250-PIPELINING\r\n")
			}
			if s.TLS != nil && !inTLS {
				lines = append(lines, "250-STARTTLS\r\n")
			}
			write(append(lines, "250 8BITMIME\r\n")...)
		case "STARTTLS":
			switch {
			case s.TLS == nil || inTLS:
				write("502 5.5.1 not offered\r\n")
			case s.StartTLSReply != 0:
				write(fmt.Sprintf("%d %s fake\r\n", s.StartTLSReply, enhanced(s.StartTLSReply)))
			default:
				if !write("220 2.0.0 go ahead\r\n") {
					return
				}
				tc := tls.Server(c, s.TLS)
				_ = tc.SetDeadline(time.Now().Add(10 * time.Second))
				if tc.Handshake() != nil {
					return
				}
				_ = tc.SetDeadline(time.Time{})
				s.TLSSessions.Add(1)
				if tc.ConnectionState().DidResume {
					s.TLSResumed.Add(1)
				}
				// Anything pipelined after STARTTLS is dropped (CVE-2011-0411).
				c, inTLS = tc, true
				br.Reset(c)
			}
		case "HELO", "RSET", "NOOP":
			write("250 2.0.0 ok\r\n")
		case "MAIL":
			// What the client wrote together with MAIL is already here.
			buf, _ := br.Peek(br.Buffered())
			if bytes.Contains(buf, []byte("DATA\r\n")) {
				s.Pipelined.Add(1)
			} else {
				s.Serial.Add(1)
			}
			write("250 2.1.0 ok\r\n")
		case "RCPT":
			addr := strings.TrimSpace(line)
			if i := strings.IndexByte(addr, '<'); i >= 0 {
				addr = strings.TrimSuffix(addr[i+1:], ">")
			}
			s.mu.Lock()
			s.rcpts = append(s.rcpts, addr)
			s.mu.Unlock()
			if s.RefuseRcpt != nil && s.RefuseRcpt(addr) {
				write("550 5.1.1 fake: no such user\r\n")
				break
			}
			write("250 2.1.5 ok\r\n")
		case "BDAT":
			// RFC 3030: "BDAT size [LAST]"; the octets follow.
			f := strings.Fields(line)
			n, err := strconv.ParseInt(f[min(1, len(f)-1)], 10, 64)
			if len(f) < 2 || err != nil || n < 0 {
				write("501 5.5.4 fake: bad BDAT\r\n")
				return
			}
			s.mu.Lock()
			s.bdats = append(s.bdats, n)
			s.mu.Unlock()
			chunk := make([]byte, min(n, 1<<20))
			for left := n; left > 0; {
				k, err := io.ReadFull(br, chunk[:min(int64(len(chunk)), left)])
				if err != nil {
					if ne, ok := err.(net.Error); ok && ne.Timeout() {
						write("421 4.4.2 fake: timeout\r\n")
					}
					return
				}
				bdat = append(bdat, chunk[:k]...)
				left -= int64(k)
			}
			if len(f) > 2 && strings.EqualFold(f[2], "LAST") {
				msg := bdat
				bdat = nil
				if !s.endOfData(c, msg) {
					return
				}
			} else {
				write(fmt.Sprintf("250 2.0.0 %d octets\r\n", n))
			}
		case "DATA":
			write("354 go ahead\r\n")
			msg, err := readData(br)
			if err != nil {
				return
			}
			if !s.endOfData(c, msg) {
				return
			}
		case "QUIT":
			write("221 2.0.0 bye\r\n")
			return
		default:
			write("500 5.5.2 what?\r\n")
		}
	}
}

// endOfData acts on one message; false when the connection is to close.
func (s *Server) endOfData(c net.Conn, msg []byte) bool {
	marker := markerOf(msg)
	seq := int64(0)
	if i := strings.LastIndexByte(marker, '-'); i >= 0 {
		seq, _ = strconv.ParseInt(marker[i+1:], 10, 64)
	}
	s.Messages.Add(1)
	s.mu.Lock()
	s.sizes = append(s.sizes, len(msg))
	s.markers = append(s.markers, marker)
	s.mu.Unlock()
	var a Action
	if s.Decide != nil {
		a = s.Decide(seq)
	}
	if a.Reply == 0 {
		a.Reply = 250
	}
	if a.Delay > 0 {
		select {
		case <-time.After(a.Delay):
		case <-s.done:
			return false
		}
	}
	if s.Maildir != "" && (a.Reply == 250 || a.Drop) && !a.NoStore {
		copies := 1
		if a.StoreTwice {
			copies = 2
		}
		stored := bytes.ReplaceAll(msg, []byte("\r\n"), []byte("\n"))
		stored = stored[:len(stored)-min(a.Truncate, len(stored))]
		for range copies {
			n := s.stored.Add(1)
			name := filepath.Join(s.Maildir, "new", fmt.Sprintf("%d.fake", n))
			if err := os.WriteFile(name, stored, 0o600); err != nil {
				return false
			}
		}
	}
	if a.Drop {
		return false
	}
	reply := fmt.Sprintf("%d %s fake\r\n", a.Reply, enhanced(a.Reply))
	if a.ReplyTwice {
		reply += reply
	}
	_, err := c.Write([]byte(reply))
	return err == nil && a.Reply != 421
}

// enhanced is a plausible RFC 3463 code for a reply code.
func enhanced(code int) string {
	switch code {
	case 250:
		return "2.0.0"
	case 421:
		return "4.3.0"
	case 451:
		return "4.3.2"
	case 452:
		return "4.3.1"
	case 454:
		return "4.7.0"
	}
	return fmt.Sprintf("%d.6.0", code/100)
}

// readData reads a message up to "<CRLF>.<CRLF>" and undoes dot-stuffing.
// The CRLF before the dot belongs to the message.
func readData(br *bufio.Reader) ([]byte, error) {
	var msg []byte
	mid := false // the last read ended inside a long line
	for {
		line, err := br.ReadSlice('\n')
		if err != nil && err != bufio.ErrBufferFull {
			return nil, err
		}
		if !mid {
			if string(line) == ".\r\n" {
				return msg, nil
			}
			if line[0] == '.' {
				line = line[1:]
			}
		}
		msg = append(msg, line...)
		mid = err == bufio.ErrBufferFull
	}
}

// markerOf returns the marker header's value, or "".
func markerOf(msg []byte) string {
	hdr, _, _ := bytes.Cut(msg, []byte("\r\n\r\n"))
	for line := range bytes.Lines(hdr) {
		if k, v, ok := bytes.Cut(line, []byte(":")); ok && strings.EqualFold(string(k), MarkerHeader) {
			return string(bytes.TrimSpace(v))
		}
	}
	return ""
}
