package e2e

// The control plane: etcd and kube-apiserver on 127.0.0.1, and the Argo Rollouts controller that talks to it.

import (
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/base64"
	"encoding/hex"
	"encoding/pem"
	"errors"
	"fmt"
	"io"
	"math/big"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"syscall"
	"testing"
	"time"

	"k8s.io/apimachinery/pkg/api/meta"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/util/yaml"
	"k8s.io/client-go/discovery"
	"k8s.io/client-go/discovery/cached/memory"
	"k8s.io/client-go/dynamic"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/restmapper"

	k8serrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

// proc is a child process whose output goes to a log file in the run's directory.
type proc struct {
	name string
	cmd  *exec.Cmd
	log  string
	done chan struct{}
}

func startProc(t *testing.T, dir, name, bin string, env []string, args ...string) *proc {
	t.Helper()
	logPath := filepath.Join(dir, name+".log")
	f, err := os.OpenFile(logPath, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(bin, args...)
	cmd.Dir = dir
	cmd.Stdout, cmd.Stderr = f, f
	cmd.Env = append(os.Environ(), env...)
	// Own process group, so stopping it also stops what it started (the controller's plugin).
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := cmd.Start(); err != nil {
		t.Fatalf("start %s: %v", name, err)
	}
	p := &proc{name: name, cmd: cmd, log: logPath, done: make(chan struct{})}
	go func() { cmd.Wait(); f.Close(); close(p.done) }()
	return p
}

// stop sends SIGTERM to the group and waits up to 10 s, then SIGKILL.
func (p *proc) stop() {
	select {
	case <-p.done:
		return
	default:
	}
	syscall.Kill(-p.cmd.Process.Pid, syscall.SIGTERM)
	select {
	case <-p.done:
	case <-time.After(10 * time.Second):
		syscall.Kill(-p.cmd.Process.Pid, syscall.SIGKILL)
		<-p.done
	}
}

func (p *proc) exited() bool {
	select {
	case <-p.done:
		return true
	default:
		return false
	}
}

func (p *proc) tail() string {
	b, _ := os.ReadFile(p.log)
	if len(b) > 4000 {
		b = b[len(b)-4000:]
	}
	return string(b)
}

// freePort asks the kernel for a free loopback port.
func freePort(t *testing.T) int {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port
}

// waitFor polls cond every step until it holds or limit passes; the last error is reported.
func waitFor(t *testing.T, what string, limit, step time.Duration, cond func() error) {
	t.Helper()
	deadline := time.Now().Add(limit)
	for {
		err := cond()
		if err == nil {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s: not within %s: %v", what, limit, err)
		}
		time.Sleep(step)
	}
}

type cluster struct {
	dir        string
	token      string
	server     string
	kubeconfig string
	rest       *rest.Config
	kube       kubernetes.Interface
	dyn        dynamic.Interface
	mapper     *restmapper.DeferredDiscoveryRESTMapper
	procs      []*proc
}

func writePEM(t *testing.T, path, typ string, der []byte) {
	t.Helper()
	if err := os.WriteFile(path, pem.EncodeToMemory(&pem.Block{Type: typ, Bytes: der}), 0o600); err != nil {
		t.Fatal(err)
	}
}

// selfSigned writes a serving certificate for 127.0.0.1 (its own CA) and its key.
func selfSigned(t *testing.T, certPath, keyPath string) []byte {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber:          big.NewInt(time.Now().UnixNano()),
		Subject:               pkix.Name{CommonName: "kube-apiserver"},
		NotBefore:             time.Now().Add(-time.Hour),
		NotAfter:              time.Now().Add(24 * time.Hour),
		KeyUsage:              x509.KeyUsageDigitalSignature | x509.KeyUsageCertSign,
		ExtKeyUsage:           []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
		BasicConstraintsValid: true,
		IsCA:                  true,
		IPAddresses:           []net.IP{net.ParseIP("127.0.0.1")},
		DNSNames:              []string{"localhost"},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	kder, err := x509.MarshalECPrivateKey(key)
	if err != nil {
		t.Fatal(err)
	}
	writePEM(t, certPath, "CERTIFICATE", der)
	writePEM(t, keyPath, "EC PRIVATE KEY", kder)
	return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der})
}

func randHex(n int) string {
	b := make([]byte, n)
	rand.Read(b)
	return hex.EncodeToString(b)
}

// startCluster starts etcd and kube-apiserver and waits until the API server is ready.
func startCluster(t *testing.T, dir string, tl *timeline) *cluster {
	c := &cluster{dir: dir, token: randHex(16)}
	etcdPort, peerPort, apiPort := freePort(t), freePort(t), freePort(t)
	etcdURL := fmt.Sprintf("http://127.0.0.1:%d", etcdPort)
	peerURL := fmt.Sprintf("http://127.0.0.1:%d", peerPort)
	c.procs = append(c.procs, startProc(t, dir, "etcd", env(t, "ETCD_BIN"), nil,
		"--name", "e2e", "--data-dir", filepath.Join(dir, "etcd"),
		"--listen-client-urls", etcdURL, "--advertise-client-urls", etcdURL,
		"--listen-peer-urls", peerURL, "--initial-advertise-peer-urls", peerURL,
		"--initial-cluster", "e2e="+peerURL))

	certPath, keyPath := filepath.Join(dir, "apiserver.crt"), filepath.Join(dir, "apiserver.key")
	caPEM := selfSigned(t, certPath, keyPath)
	saKey, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		t.Fatal(err)
	}
	saPath := filepath.Join(dir, "sa.key")
	writePEM(t, saPath, "RSA PRIVATE KEY", x509.MarshalPKCS1PrivateKey(saKey))
	tokens := filepath.Join(dir, "tokens.csv")
	if err := os.WriteFile(tokens, []byte(c.token+",e2e-admin,e2e-admin,system:masters\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	// No controller-manager runs, so no admission plugin that expects one (ServiceAccount would wait for
	// token controllers). Authorization: AlwaysAllow; authentication: the static token above.
	c.procs = append(c.procs, startProc(t, dir, "kube-apiserver", filepath.Join(env(t, "E2E_CACHE"), "kube-apiserver"), nil,
		"--etcd-servers", etcdURL,
		"--bind-address", "127.0.0.1", "--advertise-address", "127.0.0.1",
		"--secure-port", fmt.Sprint(apiPort),
		"--tls-cert-file", certPath, "--tls-private-key-file", keyPath,
		"--cert-dir", filepath.Join(dir, "certs"),
		"--token-auth-file", tokens,
		"--authorization-mode", "AlwaysAllow",
		"--service-account-issuer", "https://kubernetes.default.svc.cluster.local",
		"--service-account-key-file", saPath, "--service-account-signing-key-file", saPath,
		"--service-cluster-ip-range", "10.96.0.0/16",
		"--disable-admission-plugins", "ServiceAccount",
		"--enable-priority-and-fairness=false",
		"--profiling=false"))
	c.server = fmt.Sprintf("https://127.0.0.1:%d", apiPort)

	pool := x509.NewCertPool()
	pool.AppendCertsFromPEM(caPEM)
	hc := &http.Client{Timeout: 2 * time.Second, Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: pool}}}
	waitFor(t, "kube-apiserver /readyz", 180*time.Second, 250*time.Millisecond, func() error {
		for _, p := range c.procs {
			if p.exited() {
				t.Fatalf("%s exited:\n%s", p.name, p.tail())
			}
		}
		req, _ := http.NewRequest("GET", c.server+"/readyz", nil)
		req.Header.Set("Authorization", "Bearer "+c.token)
		resp, err := hc.Do(req)
		if err != nil {
			return err
		}
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != 200 {
			return fmt.Errorf("%d %s", resp.StatusCode, body)
		}
		return nil
	})
	tl.add("cluster", "etcd %s and kube-apiserver %s ready", etcdURL, c.server)

	c.kubeconfig = filepath.Join(dir, "kubeconfig")
	kc := fmt.Sprintf(`apiVersion: v1
kind: Config
clusters:
- name: e2e
  cluster:
    server: %s
    certificate-authority-data: %s
users:
- name: e2e-admin
  user:
    token: %s
contexts:
- name: e2e
  context: {cluster: e2e, user: e2e-admin, namespace: default}
current-context: e2e
`, c.server, b64(caPEM), c.token)
	if err := os.WriteFile(c.kubeconfig, []byte(kc), 0o600); err != nil {
		t.Fatal(err)
	}
	c.rest = &rest.Config{Host: c.server, BearerToken: c.token, TLSClientConfig: rest.TLSClientConfig{CAData: caPEM},
		QPS: 100, Burst: 200}
	c.kube = kubernetes.NewForConfigOrDie(c.rest)
	c.dyn = dynamic.NewForConfigOrDie(c.rest)
	dc := discovery.NewDiscoveryClientForConfigOrDie(c.rest)
	c.mapper = restmapper.NewDeferredDiscoveryRESTMapper(memory.NewMemCacheClient(dc))
	return c
}

func (c *cluster) stop() {
	for i := len(c.procs) - 1; i >= 0; i-- {
		c.procs[i].stop()
	}
}

// decodeAll reads every object of a multi-document YAML stream.
func decodeAll(t *testing.T, data []byte) []*unstructured.Unstructured {
	t.Helper()
	dec := yaml.NewYAMLOrJSONDecoder(bytes.NewReader(data), 4096)
	var out []*unstructured.Unstructured
	for {
		var m map[string]interface{}
		if err := dec.Decode(&m); err != nil {
			if errors.Is(err, io.EOF) {
				return out
			}
			t.Fatal(err)
		}
		if len(m) == 0 {
			continue
		}
		out = append(out, &unstructured.Unstructured{Object: m})
	}
}

func readObjects(t *testing.T, path string) []*unstructured.Unstructured {
	t.Helper()
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return decodeAll(t, data)
}

// apply creates the object, or replaces it when it exists (what `kubectl apply` amounts to for a new object).
func (c *cluster) apply(t *testing.T, ns string, o *unstructured.Unstructured) {
	t.Helper()
	gvk := o.GroupVersionKind()
	var m *meta.RESTMapping
	waitFor(t, "API resource "+gvk.String(), 60*time.Second, 250*time.Millisecond, func() error {
		var err error
		m, err = c.mapper.RESTMapping(gvk.GroupKind(), gvk.Version)
		if err != nil {
			c.mapper.Reset()
		}
		return err
	})
	var ri dynamic.ResourceInterface = c.dyn.Resource(m.Resource)
	if m.Scope.Name() == meta.RESTScopeNameNamespace {
		if o.GetNamespace() != "" {
			ns = o.GetNamespace()
		}
		ri = c.dyn.Resource(m.Resource).Namespace(ns)
	}
	ctx := context.Background()
	_, err := ri.Create(ctx, o, metav1.CreateOptions{})
	if k8serrors.IsAlreadyExists(err) {
		cur, gerr := ri.Get(ctx, o.GetName(), metav1.GetOptions{})
		if gerr != nil {
			t.Fatal(gerr)
		}
		o.SetResourceVersion(cur.GetResourceVersion())
		_, err = ri.Update(ctx, o, metav1.UpdateOptions{})
	}
	if err != nil {
		t.Fatalf("apply %s %s: %v", gvk.Kind, o.GetName(), err)
	}
}

// startController runs the Argo Rollouts controller against the cluster, in its own directory (it copies the
// plugins named in argo-rollouts-config into ./plugin-bin at start).
func (c *cluster) startController(t *testing.T, tl *timeline) *proc {
	dir := filepath.Join(c.dir, "controller")
	os.MkdirAll(dir, 0o755)
	metrics, healthz := freePort(t), freePort(t)
	p := startProc(t, dir, "rollouts-controller", filepath.Join(env(t, "E2E_CACHE"), "rollouts-controller"),
		[]string{"KUBECONFIG=" + c.kubeconfig, "POD_NAMESPACE=argo-rollouts"},
		"--kubeconfig", c.kubeconfig, "--leader-elect=false",
		"--metricsPort", fmt.Sprint(metrics), "--healthzPort", fmt.Sprint(healthz),
		"--rollout-resync", "60", "--loglevel", "info")
	c.procs = append(c.procs, p)
	waitFor(t, "rollouts-controller /healthz", 120*time.Second, 250*time.Millisecond, func() error {
		if p.exited() {
			t.Fatalf("rollouts-controller exited:\n%s", p.tail())
		}
		resp, err := http.Get(fmt.Sprintf("http://127.0.0.1:%d/healthz", healthz))
		if err != nil {
			return err
		}
		resp.Body.Close()
		if resp.StatusCode != 200 {
			return fmt.Errorf("status %d", resp.StatusCode)
		}
		return nil
	})
	tl.add("controller", "rollouts-controller running (plugins loaded from argo-rollouts-config)")
	return p
}

func env(t *testing.T, name string) string {
	v := os.Getenv(name)
	if v == "" {
		t.Fatalf("%s is not set (run through `make e2e`)", name)
	}
	return v
}

func b64(b []byte) string { return base64.StdEncoding.EncodeToString(b) }
