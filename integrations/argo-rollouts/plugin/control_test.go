package plugin

import (
	"bufio"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"io"
	"math/big"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// tlsControl is a TLS listener on 127.0.0.1 that answers the control protocol's auth (token "tok") and `get weight`,
// standing in for weir's control-tls (e2e TestControlTLS runs the real one). Returns its address and the CA file.
func tlsControl(t *testing.T) (string, string) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "weir.test"},
		DNSNames: []string{"weir.test"}, NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
		IsCA: true, BasicConstraintsValid: true, KeyUsage: x509.KeyUsageDigitalSignature | x509.KeyUsageCertSign,
		ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	ca := filepath.Join(t.TempDir(), "ca.pem")
	if err := os.WriteFile(ca, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), 0o600); err != nil {
		t.Fatal(err)
	}
	l, err := tls.Listen("tcp", "127.0.0.1:0", &tls.Config{Certificates: []tls.Certificate{{Certificate: [][]byte{der},
		PrivateKey: key}}})
	if err != nil {
		t.Fatal(err)
	}
	serveLines(t, l, func(line string) (string, bool) {
		switch line {
		case "auth tok":
			return "ok\n\n", true
		case "get weight":
			return "ok\ncanary 5.00\nstable 95.00\ngeneration 3\n\n", true
		}
		return "error: authentication failed\n\n", false
	})
	return l.Addr().String(), ca
}

// serveLines answers each request line of every connection <l> accepts with what <answer> returns for it (without
// its line end), closing the connection after an answer when <answer> says so, until the test ends.
func serveLines(t *testing.T, l net.Listener, answer func(line string) (reply string, keep bool)) {
	t.Cleanup(func() { l.Close() })
	go func() {
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			go func(c net.Conn) {
				defer c.Close()
				c.SetDeadline(time.Now().Add(5 * time.Second))
				r := bufio.NewReader(c)
				for {
					line, err := r.ReadString('\n')
					if err != nil {
						return
					}
					reply, keep := answer(strings.TrimRight(line, "\r\n"))
					if _, err := io.WriteString(c, reply); err != nil || !keep {
						return
					}
				}
			}(c)
		}
	}()
}

func TestControlOverTLS(t *testing.T) {
	addr, ca := tlsControl(t)
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()

	c, err := dialControl(ctx, addr, &TLSConfig{Enabled: true, CAFile: ca, ServerName: "weir.test"}, "tok")
	if err != nil {
		t.Fatalf("verified TLS: %v", err)
	}
	lines, err := c.do("get", "weight")
	c.Close()
	if err != nil || len(lines) != 3 || lines[0] != "canary 5.00" {
		t.Fatalf("get weight over TLS: %q %v", lines, err)
	}
	if _, err := dialControl(ctx, addr, &TLSConfig{Enabled: true, CAFile: ca, ServerName: "other.test"}, "tok"); err == nil ||
		!strings.Contains(err.Error(), "tls") {
		t.Errorf("a certificate for another name accepted: %v", err)
	}
	if _, err := dialControl(ctx, addr, &TLSConfig{Enabled: true}, "tok"); err == nil {
		t.Error("a certificate from an unknown CA accepted")
	}
	if c, err := dialControl(ctx, addr, &TLSConfig{Enabled: true, InsecureSkipVerify: true}, "tok"); err != nil {
		t.Errorf("insecureSkipVerify: %v", err)
	} else {
		c.Close()
	}
	if _, err := dialControl(ctx, addr, &TLSConfig{Enabled: true, CAFile: ca, ServerName: "weir.test"}, "bad"); err == nil ||
		err.Error() != "auth: authentication failed" {
		t.Errorf("wrong token: %v", err)
	}
	if _, err := dialControl(ctx, addr, &TLSConfig{Enabled: true, CAFile: filepath.Join(t.TempDir(), "none")}, "tok"); err == nil ||
		!strings.Contains(err.Error(), "caFile") {
		t.Errorf("missing caFile: %v", err)
	}
}
