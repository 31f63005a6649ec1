package bench

import (
	"crypto/ed25519"
	"crypto/rand"
	"crypto/x509"
	"encoding/base64"
	"encoding/pem"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/emersion/go-msgauth/dkim"

	"github.com/nanomx/nanomx/bench/fakesmtp"
)

// TestDKIMSigned: with DKIMKey every message is signed so that it
// verifies (go-msgauth, the key published as its record says), messages
// of several sizes and recipients included, and -verify-maildir still
// finds every one intact.
func TestDKIMSigned(t *testing.T) {
	pub, priv, _ := ed25519.GenerateKey(rand.Reader)
	der, _ := x509.MarshalPKCS8PrivateKey(priv)
	keyFile := filepath.Join(t.TempDir(), "k.pem")
	if err := os.WriteFile(keyFile, pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: der}), 0o600); err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	s := startFake(t, func(s *fakesmtp.Server) { s.Maildir = dir })
	size, err := ParseSize("mix")
	if err != nil {
		t.Fatal(err)
	}
	res := run(t, s, Config{Conns: 3, Count: 40, Size: size, From: "alice@sender.test",
		To: []string{"a@bench.test", "b@bench.test"}, DKIMKey: keyFile, VerifyMaildir: dir})
	if res.Delivered != 40 || res.Verify == nil || !res.Verify.OK() {
		t.Fatalf("delivered %d, verify %+v", res.Delivered, res.Verify)
	}
	files, _ := filepath.Glob(filepath.Join(dir, "new", "*"))
	if len(files) != 40 {
		t.Fatalf("%d files", len(files))
	}
	record := "v=DKIM1; k=ed25519; p=" + base64.StdEncoding.EncodeToString(pub)
	for _, f := range files {
		b, _ := os.ReadFile(f)
		msg := strings.ReplaceAll(strings.ReplaceAll(string(b), "\r\n", "\n"), "\n", "\r\n")
		vs, err := dkim.VerifyWithOptions(strings.NewReader(msg), &dkim.VerifyOptions{
			LookupTXT: func(name string) ([]string, error) {
				if name != DefaultDKIMSelector+"._domainkey.sender.test" {
					t.Errorf("key looked up at %s", name)
				}
				return []string{record}, nil
			},
		})
		if err != nil || len(vs) != 1 || vs[0].Err != nil || vs[0].Domain != "sender.test" {
			t.Fatalf("%s: %v %+v", filepath.Base(f), err, vs)
		}
	}
}
