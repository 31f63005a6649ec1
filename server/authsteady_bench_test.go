package server

import (
	"bufio"
	"bytes"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/nanomx/nanomx/bench/smtpc"
)

// BenchmarkAuthSteady is issue 10's load in its steady state: one server
// per row, its DNS cache warm, b.N messages (10 KB, rsa-sha256 2048-bit
// DKIM-signed) over 50 sessions kept open, from ten loopback clients.
// The client runs in a child process (this test binary, as
// TestAuthSteadyClient), so the CPU, the allocations and any profile are
// the server's alone (the in-process DNS server included, idle once the
// cache is warm). One op is one message. fsync is off (tmpfs when there
// is one).
//
//	go test -run '^$' -bench AuthSteady -benchtime 3000x -count 6 ./server/
func BenchmarkAuthSteady(b *testing.B) {
	dns, data := authBenchWorld(b) // authcheck_bench_test.go
	defer dns.Close()
	dataFile := filepath.Join(b.TempDir(), "msg")
	if err := os.WriteFile(dataFile, data, 0o600); err != nil {
		b.Fatal(err)
	}

	for _, on := range []bool{false, true} {
		b.Run("checks="+map[bool]string{false: "off", true: "on"}[on], func(b *testing.B) {
			cfg := benchConfig(b) // checks_test.go
			cfg.MaxConnectionsPerIP = 100
			cfg.DNSServers = []string{dns.Addr()}
			cfg.DNSTimeout = 2 * time.Second
			cfg.SPF, cfg.DKIM, cfg.DMARC, cfg.IPRev = on, on, on, on
			r := start(b, cfg)
			defer r.stop()

			cl, err := startSteadyClient(r.addr, dataFile)
			if err != nil {
				b.Fatal(err)
			}
			defer cl.close()
			if err := cl.send(4 * steadySessions); err != nil { // warm: every session and the cache
				b.Fatal(err)
			}
			if on {
				box := filepath.Join(cfg.MaildirRoot, "example.test", "bob", "new")
				files, _ := os.ReadDir(box)
				if len(files) == 0 {
					b.Fatal("nothing stored")
				}
				f, _ := os.ReadFile(filepath.Join(box, files[len(files)-1].Name()))
				if !bytes.Contains(f, []byte("dkim=pass")) || !bytes.Contains(f, []byte("dmarc=pass")) || !bytes.Contains(f, []byte("iprev=pass")) || !bytes.Contains(f, []byte("spf=pass")) {
					b.Fatalf("not all pass:\n%.800s", f)
				}
			}
			b.ReportAllocs()
			cpu0 := cpuTime()
			t0 := time.Now()
			b.ResetTimer()
			if err := cl.send(b.N); err != nil {
				b.Fatal(err)
			}
			b.StopTimer()
			n := float64(b.N)
			b.ReportMetric(float64((cpuTime()-cpu0).Nanoseconds())/1e3/n, "srv-cpu-µs/msg")
			b.ReportMetric(n/time.Since(t0).Seconds(), "msgs/s")
		})
	}
}

// steadySessions is BenchmarkAuthSteady's sessions at once.
const steadySessions = 50

// steadyClient is the load generator child of BenchmarkAuthSteady: a
// line "n" on its stdin sends n messages over its sessions, answered
// "ok" or "error ..." on its stdout.
type steadyClient struct {
	cmd *exec.Cmd
	in  io.WriteCloser
	out *bufio.Reader
}

func startSteadyClient(addr, dataFile string) (*steadyClient, error) {
	cmd := exec.Command(os.Args[0], "-test.run=^TestAuthSteadyClient$", "-test.count=1")
	cmd.Env = append(os.Environ(), "NANOMX_STEADY_ADDR="+addr, "NANOMX_STEADY_DATA="+dataFile)
	cmd.Stderr = os.Stderr
	in, err := cmd.StdinPipe()
	if err != nil {
		return nil, err
	}
	out, err := cmd.StdoutPipe()
	if err != nil {
		return nil, err
	}
	if err := cmd.Start(); err != nil {
		return nil, err
	}
	c := &steadyClient{cmd: cmd, in: in, out: bufio.NewReader(out)}
	if line, err := c.out.ReadString('\n'); err != nil || line != "ready\n" {
		c.close()
		return nil, fmt.Errorf("client: %q %v", line, err)
	}
	return c, nil
}

func (c *steadyClient) send(n int) error {
	if _, err := fmt.Fprintf(c.in, "%d\n", n); err != nil {
		return err
	}
	line, err := c.out.ReadString('\n')
	if err != nil {
		return err
	}
	if line != "ok\n" {
		return fmt.Errorf("client: %s", strings.TrimSpace(line))
	}
	return nil
}

func (c *steadyClient) close() {
	c.in.Close()
	done := make(chan struct{})
	go func() { _ = c.cmd.Wait(); close(done) }()
	select {
	case <-done:
	case <-time.After(10 * time.Second):
		_ = c.cmd.Process.Kill()
		<-done
	}
}

// TestAuthSteadyClient is BenchmarkAuthSteady's client when run as its
// child (NANOMX_STEADY_ADDR set); a no-op otherwise.
func TestAuthSteadyClient(t *testing.T) {
	addr := os.Getenv("NANOMX_STEADY_ADDR")
	if addr == "" {
		return
	}
	data, err := os.ReadFile(os.Getenv("NANOMX_STEADY_DATA"))
	if err != nil {
		t.Fatal(err)
	}
	out := bufio.NewWriter(os.Stdout)
	fail := func(err error) {
		fmt.Fprintf(out, "error %v\n", err)
		out.Flush()
		os.Exit(1)
	}
	cs := make([]*smtpc.Conn, steadySessions)
	for s := range cs {
		d := net.Dialer{LocalAddr: &net.TCPAddr{IP: net.IPv4(127, 0, 0, byte(2+s%10))}}
		nc, err := d.Dial("tcp", addr)
		if err != nil {
			fail(err)
		}
		c := smtpc.New(nc)
		c.Timeout = 30 * time.Second
		if err := c.Greeting(); err != nil {
			fail(err)
		}
		if err := c.Ehlo(fmt.Sprintf("c%d.sender.test", 2+s%10)); err != nil {
			fail(err)
		}
		cs[s] = c
	}
	fmt.Fprintln(out, "ready")
	out.Flush()
	in := bufio.NewScanner(os.Stdin)
	for in.Scan() {
		n, err := strconv.Atoi(in.Text())
		if err != nil {
			fail(err)
		}
		var left atomic.Int64
		left.Store(int64(n))
		var wg sync.WaitGroup
		errs := make(chan error, len(cs))
		for _, c := range cs {
			wg.Add(1)
			go func() {
				defer wg.Done()
				for left.Add(-1) >= 0 {
					if err := c.Send("alice@sender.test", []string{"bob@example.test"}, data); err != nil {
						errs <- fmt.Errorf("%v: %s", err, c.Text())
						return
					}
				}
			}()
		}
		wg.Wait()
		close(errs)
		if err := <-errs; err != nil {
			fail(err)
		}
		fmt.Fprintln(out, "ok")
		out.Flush()
	}
	for _, c := range cs {
		_ = c.Quit()
		c.Close()
	}
	os.Exit(0)
}
