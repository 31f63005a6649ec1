package doctor

import (
	"bufio"
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"strings"
	"syscall"
	"time"
)

// ProbeConfig says what Probe connects to.
type ProbeConfig struct {
	Host    string // the MX's name or address
	Port    string // default "25"
	Timeout time.Duration
	// Helo is the name the probe introduces itself with (default the
	// local hostname).
	Helo string
}

// The two blocks a port-25 connection usually meets, explained once.
const blockedFix = "two usual causes: (1) the server's provider filters inbound port 25 (many clouds do until you ask; check its firewall or security group too); " +
	"(2) the network you probe from blocks outbound port 25, as most home, office and hotel networks do: probe again from another network, e.g. a mobile hotspot"

// Probe connects to an MX from the outside, as a sender would: it reads
// the banner, says EHLO and tries STARTTLS. Run it from another machine.
func Probe(ctx context.Context, pc ProbeConfig) []Finding {
	if pc.Port == "" {
		pc.Port = "25"
	}
	if pc.Timeout <= 0 {
		pc.Timeout = 10 * time.Second
	}
	if pc.Helo == "" {
		pc.Helo, _ = os.Hostname()
		if !strings.Contains(pc.Helo, ".") {
			pc.Helo = "doctor.invalid"
		}
	}
	d := &doc{}
	addr := net.JoinHostPort(pc.Host, pc.Port)
	name := "connect " + addr
	dl := net.Dialer{Timeout: pc.Timeout}
	c, err := dl.DialContext(ctx, "tcp", addr)
	if err != nil {
		var de *net.DNSError
		switch {
		case errors.As(err, &de):
			d.add(name, Fail, "cannot resolve "+pc.Host+": "+err.Error(), "check the name, or give the address")
		case errors.Is(err, syscall.ECONNREFUSED):
			d.add(name, Fail, "connection refused: the host is reachable but nothing accepts on port "+pc.Port,
				"start nanomx on the server and check listen (and that no firewall rejects port 25)")
		default:
			d.add(name, Fail, "no answer: "+err.Error(), blockedFix)
		}
		return d.out
	}
	defer c.Close()
	d.add(name, OK, "connected from "+c.LocalAddr().String(), "")
	_ = c.SetDeadline(time.Now().Add(3 * pc.Timeout))
	r := bufio.NewReader(io.LimitReader(c, 1<<20))
	banner, err := readReply(r)
	switch {
	case err != nil:
		d.add("banner", Fail, "connected, but no greeting arrived: "+err.Error(),
			"something between you and the server accepts the connection without passing it on (a proxy or antivirus on your network?)")
		return d.out
	case !strings.HasPrefix(banner, "220"):
		d.add("banner", Fail, "the server refuses: "+banner, "")
		return d.out
	}
	d.add("banner", OK, banner, "")
	fmt.Fprintf(c, "EHLO %s\r\n", pc.Helo)
	ext, last, err := readEHLO(r)
	if err != nil || !strings.HasPrefix(last, "250") {
		d.add("ehlo", Fail, "EHLO not accepted: "+last+errText(err), "")
		return d.out
	}
	d.add("ehlo", OK, "accepted; extensions: "+strings.Join(ext, ", "), "")
	if !contains(ext, "STARTTLS") {
		d.add("starttls", Warn, "not offered: mail to this MX travels unencrypted", "set tls_cert and tls_key")
		return d.out
	}
	fmt.Fprint(c, "STARTTLS\r\n")
	if line, err := readReply(r); err != nil || !strings.HasPrefix(line, "220") {
		d.add("starttls", Fail, "STARTTLS refused: "+line+errText(err), "")
		return d.out
	}
	tc := tls.Client(c, &tls.Config{ServerName: pc.Host, InsecureSkipVerify: true})
	if err := tc.HandshakeContext(ctx); err != nil {
		d.add("starttls", Fail, "handshake failed: "+err.Error(), "")
		return d.out
	}
	st := tc.ConnectionState()
	detail := fmt.Sprintf("%s, %s", tls.VersionName(st.Version), tls.CipherSuiteName(st.CipherSuite))
	if len(st.PeerCertificates) > 0 {
		leaf := st.PeerCertificates[0]
		err := leaf.VerifyHostname(pc.Host)
		if err != nil {
			d.add("starttls", Warn, detail+"; the certificate does not name "+pc.Host+": "+err.Error(), "")
		} else {
			d.add("starttls", OK, detail+"; certificate names "+pc.Host, "")
		}
	}
	fmt.Fprint(tc, "QUIT\r\n")
	return d.out
}

func errText(err error) string {
	if err == nil {
		return ""
	}
	return " (" + err.Error() + ")"
}

// readEHLO reads an EHLO reply: the extension keywords and the last line.
func readEHLO(r *bufio.Reader) ([]string, string, error) {
	var ext []string
	for i := 0; ; i++ {
		line, err := r.ReadString('\n')
		if err != nil {
			return ext, strings.TrimSpace(line), err
		}
		line = strings.TrimRight(line, "\r\n")
		if i > 0 && len(line) > 4 {
			if f := strings.Fields(line[4:]); len(f) > 0 {
				ext = append(ext, strings.ToUpper(f[0]))
			}
		}
		if len(line) < 4 || line[3] != '-' {
			return ext, line, nil
		}
	}
}

func contains(s []string, v string) bool {
	for _, x := range s {
		if x == v {
			return true
		}
	}
	return false
}
