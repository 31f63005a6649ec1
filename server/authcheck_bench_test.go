package server

import (
	"bytes"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"encoding/base64"
	"fmt"
	"net"
	"os"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/emersion/go-msgauth/dkim"

	"github.com/nanomx/nanomx/bench/smtpc"
	"github.com/nanomx/nanomx/server/resolver/dnstest"
)

// authBenchWorld starts issue 10's DNS world (a 2048-bit RSA DKIM key for
// sel._domainkey.sender.test, SPF and p=reject DMARC for sender.test, and
// 127.0.0.2-11 with confirming PTR names c2-c11.sender.test) and returns
// it with the load's message: 10 KB, signed by sender.test, ending in the
// data's final dot.
func authBenchWorld(b *testing.B) (*dnstest.Server, []byte) {
	key, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		b.Fatal(err)
	}
	pub, _ := x509.MarshalPKIXPublicKey(&key.PublicKey)
	p := base64.StdEncoding.EncodeToString(pub)
	zone := fmt.Sprintf("sel._domainkey.sender.test. TXT \"v=DKIM1; k=rsa; p=%s\" \"%s\"\n", p[:200], p[200:]) +
		"sender.test. TXT \"v=spf1 ip4:127.0.0.0/24 -all\"\n_dmarc.sender.test. TXT \"v=DMARC1; p=reject\"\n"
	for i := 2; i < 12; i++ {
		zone += fmt.Sprintf("%d.0.0.127.in-addr.arpa. PTR c%d.sender.test.\nc%d.sender.test. A 127.0.0.%d\n", i, i, i, i)
	}
	dns, err := dnstest.Start(zone)
	if err != nil {
		b.Fatal(err)
	}
	var msg bytes.Buffer
	body := "From: Alice <alice@sender.test>\r\nTo: bob@example.test\r\nSubject: bench\r\n\r\n" +
		strings.Repeat(strings.Repeat("b", 98)+"\r\n", 100)
	if err := dkim.Sign(&msg, strings.NewReader(body), &dkim.SignOptions{Domain: "sender.test", Selector: "sel", Signer: key}); err != nil {
		dns.Close()
		b.Fatal(err)
	}
	return dns, append(msg.Bytes(), ".\r\n"...)
}

// BenchmarkAuth is issue 10's load: 50 sessions at once, each sending 10
// DKIM-signed (rsa-sha256, 2048 bits) 10 KB messages from one of ten
// loopback clients, with every sender authentication check off, on
// against a local DNS server, and on with that server answering after
// 500 ms. Each iteration starts a fresh server, so the resolver's cache
// starts cold: the first message of each session pays the DNS latency,
// the rest find the answers cached. fsync is off (tmpfs when there is
// one): the figure is the checks' cost, not the disk's. Reports msgs/s
// and the process CPU per message (client included; compare the rows).
//
//	go test -run '^$' -bench Auth -benchtime 3x ./server/
func BenchmarkAuth(b *testing.B) {
	dns, data := authBenchWorld(b)
	defer dns.Close()

	const sessions, perSession = 50, 10
	for _, tc := range []struct {
		name  string
		on    bool
		delay time.Duration
	}{{"checks=off", false, 0}, {"checks=on", true, 0}, {"checks=on,dns=500ms", true, 500 * time.Millisecond}} {
		b.Run(tc.name, func(b *testing.B) {
			dns.Delay(tc.delay)
			var cpu time.Duration
			var elapsed time.Duration
			for range b.N {
				b.StopTimer()
				cfg := benchConfig(b) // checks_test.go
				cfg.MaxConnectionsPerIP = 100
				cfg.DNSServers = []string{dns.Addr()}
				cfg.DNSTimeout = 2 * time.Second
				cfg.SPF, cfg.DKIM, cfg.DMARC, cfg.IPRev = tc.on, tc.on, tc.on, tc.on
				r := start(b, cfg)
				cpu0 := cpuTime()
				t0 := time.Now()
				b.StartTimer()
				var wg sync.WaitGroup
				errs := make(chan error, sessions)
				for s := range sessions {
					wg.Add(1)
					go func() {
						defer wg.Done()
						d := net.Dialer{LocalAddr: &net.TCPAddr{IP: net.IPv4(127, 0, 0, byte(2+s%10))}}
						nc, err := d.Dial("tcp", r.addr)
						if err != nil {
							errs <- err
							return
						}
						c := smtpc.New(nc)
						c.Timeout = 30 * time.Second
						defer c.Close()
						if err := c.Greeting(); err != nil {
							errs <- err
							return
						}
						if err := c.Ehlo(fmt.Sprintf("c%d.sender.test", 2+s%10)); err != nil {
							errs <- err
							return
						}
						for range perSession {
							if err := c.Send("alice@sender.test", []string{"bob@example.test"}, data); err != nil {
								errs <- fmt.Errorf("%v: %s", err, c.Text())
								return
							}
						}
						_ = c.Quit()
					}()
				}
				wg.Wait()
				b.StopTimer()
				elapsed += time.Since(t0)
				cpu += cpuTime() - cpu0
				close(errs)
				for err := range errs {
					b.Fatal(err)
				}
				if tc.on {
					files, _ := os.ReadDir(cfg.MaildirRoot + "/example.test/bob/new")
					if len(files) == 0 {
						b.Fatal("nothing stored")
					}
					f, _ := os.ReadFile(cfg.MaildirRoot + "/example.test/bob/new/" + files[0].Name())
					if !bytes.Contains(f, []byte("dkim=pass")) || !bytes.Contains(f, []byte("dmarc=pass")) || !bytes.Contains(f, []byte("iprev=pass")) {
						b.Fatalf("not all pass:\n%.800s", f)
					}
				}
				_ = r.stop()
				os.RemoveAll(cfg.MaildirRoot) // each run a fresh one
			}
			n := float64(b.N * sessions * perSession)
			b.ReportMetric(n/elapsed.Seconds(), "msgs/s")
			b.ReportMetric(float64(cpu.Microseconds())/n, "cpu-µs/msg")
		})
	}
}

// cpuTime is the process's user and system CPU time.
func cpuTime() time.Duration {
	var ru syscall.Rusage
	_ = syscall.Getrusage(syscall.RUSAGE_SELF, &ru)
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}
