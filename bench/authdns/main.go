// Command authdns is the DNS server of the sender authentication bench
// (bench/auth.sh): it makes a DKIM key (written to -key as PKCS #8 PEM,
// for nanomx bench -dkim-key) and serves, on loopback, a zone in which
// -domain publishes that key, SPF allowing 127.0.0.0/8 and DMARC
// p=reject, and every client address 127.0.0.2-127.0.0.254 has a PTR
// name that confirms (iprev pass). With -delay every answer waits that
// long. It prints its address and runs until killed. Bench-only: it
// serves the test DNS server (server/resolver/dnstest).
package main

import (
	"crypto/ed25519"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"encoding/base64"
	"encoding/pem"
	"flag"
	"fmt"
	"os"
	"os/signal"
	"strings"
	"syscall"

	"github.com/nanomx/nanomx/bench"
	"github.com/nanomx/nanomx/server/resolver/dnstest"
)

func main() {
	keyFile := flag.String("key", "", "write the DKIM private key (PKCS #8 PEM) to `file` (required)")
	alg := flag.String("alg", "rsa", "key type: rsa (2048 bits) or ed25519")
	domain := flag.String("domain", "sender.test", "the sending `domain`")
	selector := flag.String("selector", bench.DefaultDKIMSelector, "the DKIM `selector`")
	delay := flag.Duration("delay", 0, "answer every query after this `duration`")
	flag.Parse()
	if *keyFile == "" {
		fail("-key is required")
	}
	var priv any
	var rec string
	switch *alg {
	case "rsa":
		k, err := rsa.GenerateKey(rand.Reader, 2048)
		if err != nil {
			fail(err.Error())
		}
		pub, _ := x509.MarshalPKIXPublicKey(&k.PublicKey)
		priv, rec = k, "v=DKIM1; k=rsa; p="+base64.StdEncoding.EncodeToString(pub)
	case "ed25519":
		pub, k, _ := ed25519.GenerateKey(rand.Reader)
		priv, rec = k, "v=DKIM1; k=ed25519; p="+base64.StdEncoding.EncodeToString(pub)
	default:
		fail("-alg must be rsa or ed25519")
	}
	der, err := x509.MarshalPKCS8PrivateKey(priv)
	if err != nil {
		fail(err.Error())
	}
	if err := os.WriteFile(*keyFile, pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: der}), 0o600); err != nil {
		fail(err.Error())
	}
	d := strings.TrimSuffix(*domain, ".") + "."
	var z strings.Builder
	fmt.Fprintf(&z, "%s._domainkey.%s TXT %s\n", *selector, d, quote(rec))
	fmt.Fprintf(&z, "%s TXT \"v=spf1 ip4:127.0.0.0/8 -all\"\n_dmarc.%s TXT \"v=DMARC1; p=reject\"\n", d, d)
	for i := 2; i < 255; i++ {
		fmt.Fprintf(&z, "%d.0.0.127.in-addr.arpa. PTR c%d.%s\nc%d.%s A 127.0.0.%d\n", i, i, d, i, d, i)
	}
	s, err := dnstest.Start(z.String())
	if err != nil {
		fail(err.Error())
	}
	s.Delay(*delay)
	fmt.Println(s.Addr())
	sig := make(chan os.Signal, 1)
	signal.Notify(sig, syscall.SIGTERM, syscall.SIGINT)
	<-sig
	s.Close()
}

// quote writes a TXT value as strings of at most 255 bytes.
func quote(v string) string {
	var parts []string
	for len(v) > 200 {
		parts = append(parts, `"`+v[:200]+`"`)
		v = v[200:]
	}
	return strings.Join(append(parts, `"`+v+`"`), " ")
}

func fail(msg string) {
	fmt.Fprintln(os.Stderr, "authdns:", msg)
	os.Exit(2)
}
