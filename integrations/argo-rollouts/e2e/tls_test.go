package e2e

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"fmt"
	"math/big"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// selfSigned writes a self-signed certificate for 127.0.0.1 and weir.test, and its key, under a temporary directory.
func selfSigned(t *testing.T) (cert, key string) {
	k, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "weir.test"},
		NotBefore: time.Now().Add(-time.Minute), NotAfter: time.Now().Add(time.Hour),
		DNSNames: []string{"weir.test"}, IPAddresses: []net.IP{net.ParseIP("127.0.0.1")},
		KeyUsage: x509.KeyUsageDigitalSignature | x509.KeyUsageCertSign, BasicConstraintsValid: true, IsCA: true,
		ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &k.PublicKey, k)
	if err != nil {
		t.Fatal(err)
	}
	kd, err := x509.MarshalECPrivateKey(k)
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	cert, key = filepath.Join(dir, "cert.pem"), filepath.Join(dir, "key.pem")
	if err := os.WriteFile(cert, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(key, pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: kd}), 0o600); err != nil {
		t.Fatal(err)
	}
	return cert, key
}

// The plugin's tls option against weir's control-tls: verified calls apply; a CA that did not sign weir's
// certificate fails the call as a TLS error and changes nothing.
func TestControlTLS(t *testing.T) {
	stable, canary := startUpstream(t, "stable"), startUpstream(t, "canary")
	cert, key := selfSigned(t)
	other, _ := selfSigned(t)
	w := &weir{t: t, name: "weir-tls", token: "s3cret-token", stable: stable, canary: canary,
		listen: fmt.Sprintf("127.0.0.1:%d", freePort(t)), admin: fmt.Sprintf("127.0.0.1:%d", freePort(t)),
		ctlAddr: fmt.Sprintf("127.0.0.1:%d", freePort(t)), sock: filepath.Join(t.TempDir(), "weir.sock")}
	w.p = start(t, w.name, bin(t, "WEIR_BIN", "weir"), "--workers", "1", "--listen", w.listen, "--admin", w.admin,
		"--control", w.sock, "--control-tcp", w.ctlAddr, "--control-token-file", tokenFile(t, w.token),
		"--stable", stable, "--canary", canary, "--log-level", "warn",
		"--control-tls", "on", "--tls-certificate", cert, key)
	waitPort(t, w.ctlAddr, w.p)
	waitPort(t, w.listen, w.p)

	p := startPlugin(t)
	cfg := map[string]any{"replicas": []string{w.ctlAddr}, "tokenFile": tokenFile(t, w.token), "timeout": "2s",
		"syncInterval": "200ms", "tls": map[string]any{"enabled": true, "caFile": cert}}
	ro := rollout(t, cfg)
	mustOK(t, "SetWeight over TLS", p.SetWeight(ro, 30, nil))
	if m, g := w.weights(); m["canary"] != "30.00" || g != "1" {
		t.Fatalf("after SetWeight 30 over TLS: %v generation %s", m, g)
	}
	if !verified(t, p, ro, 30, nil) {
		t.Error("VerifyWeight 30 over TLS: false")
	}

	bad := map[string]any{"replicas": []string{w.ctlAddr}, "tokenFile": tokenFile(t, w.token), "timeout": "2s",
		"syncInterval": "200ms", "tls": map[string]any{"enabled": true, "caFile": other, "serverName": "weir.test"}}
	rb := rollout(t, bad)
	rb.Name = "other" // its own desired state in the plugin
	if e := p.SetWeight(rb, 60, nil); !e.HasError() || !strings.Contains(e.Error(), "tls") {
		t.Errorf("SetWeight with a CA that did not sign weir's certificate: %v", e)
	}
	if m, _ := w.weights(); m["canary"] != "30.00" {
		t.Errorf("weights changed by a refused TLS call: %v", m)
	}
}
