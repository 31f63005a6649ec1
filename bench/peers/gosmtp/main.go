// Command gosmtp is the reference server of bench/peers.sh: emersion/go-smtp
// v0.25.1 with a small Maildir backend, the way a Go program would most
// simply build a durable MX on that library. Each message is written to
// <root>/<local part>/tmp/, fsync'd, renamed into new/, and new/ is
// fsync'd before the 250 (with -fsync=false nothing is synced). The local
// part of the first recipient picks the Maildir, created on first use, so
// that every bench cell can write into a fresh one.
//
// It is a separate module (bench/peers/gosmtp/go.mod) so that nanomx
// itself does not depend on go-smtp. Loopback and bench use only.
package main

import (
	"crypto/rand"
	"crypto/tls"
	"encoding/hex"
	"errors"
	"flag"
	"fmt"
	"io"
	"log"
	"net"
	"os"
	"os/signal"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/emersion/go-smtp"
)

func main() {
	addr := flag.String("addr", "127.0.0.1:2640", "listen `host:port`")
	root := flag.String("root", "", "Maildir root `dir`: <root>/<local part>/{tmp,new,cur}")
	domain := flag.String("domain", "bench.test", "accepted recipient `domain`")
	doSync := flag.Bool("fsync", true, "fsync the file and new/ before answering 250")
	cert := flag.String("cert", "", "TLS certificate PEM `file` (offers STARTTLS)")
	key := flag.String("key", "", "TLS key PEM `file`")
	flag.Parse()
	if *root == "" {
		log.Fatal("gosmtp: -root is required")
	}
	be := &backend{root: *root, domain: strings.ToLower(*domain), fsync: *doSync, boxes: map[string]bool{}}
	s := smtp.NewServer(be)
	s.Addr = *addr
	s.Domain = "gosmtp.bench.test"
	s.MaxMessageBytes = 64 << 20
	s.MaxRecipients = 100
	s.ReadTimeout = 60 * time.Second
	s.WriteTimeout = 60 * time.Second
	if *cert != "" {
		c, err := tls.LoadX509KeyPair(*cert, *key)
		if err != nil {
			log.Fatalf("gosmtp: %v", err)
		}
		s.TLSConfig = &tls.Config{Certificates: []tls.Certificate{c}}
	}
	ln, err := net.Listen("tcp", *addr)
	if err != nil {
		log.Fatalf("gosmtp: %v", err)
	}
	sig := make(chan os.Signal, 1)
	signal.Notify(sig, syscall.SIGTERM, os.Interrupt)
	go func() {
		<-sig
		_ = s.Close()
	}()
	if err := s.Serve(ln); err != nil && !errors.Is(err, smtp.ErrServerClosed) {
		log.Fatalf("gosmtp: %v", err)
	}
}

// backend delivers to Maildirs under root.
type backend struct {
	root, domain string
	fsync        bool
	seq          atomic.Uint64
	mu           sync.Mutex
	boxes        map[string]bool // Maildirs created
}

func (b *backend) NewSession(*smtp.Conn) (smtp.Session, error) { return &session{b: b}, nil }

// maildir returns the Maildir of local part lp, creating it once.
func (b *backend) maildir(lp string) (string, error) {
	dir := filepath.Join(b.root, lp)
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.boxes[lp] {
		return dir, nil
	}
	for _, sub := range []string{"tmp", "new", "cur"} {
		if err := os.MkdirAll(filepath.Join(dir, sub), 0o700); err != nil {
			return "", err
		}
	}
	b.boxes[lp] = true
	return dir, nil
}

type session struct {
	b     *backend
	rcpts []string
}

func (s *session) Reset()        { s.rcpts = s.rcpts[:0] }
func (s *session) Logout() error { return nil }

func (s *session) Mail(string, *smtp.MailOptions) error { return nil }

func (s *session) Rcpt(to string, _ *smtp.RcptOptions) error {
	lp, dom, ok := strings.Cut(to, "@")
	if !ok || strings.ToLower(dom) != s.b.domain || lp == "" || strings.ContainsAny(lp, "/.") {
		return &smtp.SMTPError{Code: 550, EnhancedCode: smtp.EnhancedCode{5, 1, 1}, Message: "no such user"}
	}
	s.rcpts = append(s.rcpts, strings.ToLower(lp))
	return nil
}

var errTemp = &smtp.SMTPError{Code: 451, EnhancedCode: smtp.EnhancedCode{4, 3, 0}, Message: "cannot store"}

func (s *session) Data(r io.Reader) error {
	if len(s.rcpts) == 0 {
		_, _ = io.Copy(io.Discard, r)
		return &smtp.SMTPError{Code: 554, EnhancedCode: smtp.EnhancedCode{5, 5, 1}, Message: "no recipients"}
	}
	dir, err := s.b.maildir(s.rcpts[0])
	if err != nil {
		_, _ = io.Copy(io.Discard, r)
		log.Printf("gosmtp: %v", err)
		return errTemp
	}
	if err := s.b.deliver(dir, r); err != nil {
		_, _ = io.Copy(io.Discard, r)
		log.Printf("gosmtp: %v", err)
		return errTemp
	}
	return nil
}

// deliver writes one message: tmp/, fsync, rename into new/, fsync new/.
func (b *backend) deliver(dir string, r io.Reader) error {
	var rnd [4]byte
	_, _ = rand.Read(rnd[:])
	name := fmt.Sprintf("%d.M%dP%dQ%d_%s.gosmtp", time.Now().Unix(), time.Now().Nanosecond()/1000,
		os.Getpid(), b.seq.Add(1), hex.EncodeToString(rnd[:]))
	tmp := filepath.Join(dir, "tmp", name)
	f, err := os.OpenFile(tmp, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
	if err != nil {
		return err
	}
	n, err := io.Copy(f, r)
	if err == nil && b.fsync {
		err = f.Sync()
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		_ = os.Remove(tmp)
		return err
	}
	if err := os.Rename(tmp, filepath.Join(dir, "new", fmt.Sprintf("%s,S=%d", name, n))); err != nil {
		_ = os.Remove(tmp)
		return err
	}
	if !b.fsync {
		return nil
	}
	d, err := os.Open(filepath.Join(dir, "new"))
	if err != nil {
		return err
	}
	err = d.Sync()
	if cerr := d.Close(); err == nil {
		err = cerr
	}
	return err
}
