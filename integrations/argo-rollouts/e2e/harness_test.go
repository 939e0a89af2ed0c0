// Package e2e drives the built plugin binary the way the Argo Rollouts controller does (go-plugin, Argo's own RPC
// client, real v1alpha1.Rollout objects) against real weir processes and upstreams on 127.0.0.1.
//
// Binaries: WEIR_PLUGIN_BIN, WEIR_BIN, WEIR_UPSTREAM_BIN, WEIRCTL_BIN (default: ../../../build/...).
package e2e

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/argoproj/argo-rollouts/pkg/apis/rollouts/v1alpha1"
	rolloutsrpc "github.com/argoproj/argo-rollouts/rollout/trafficrouting/plugin/rpc"
	"github.com/hashicorp/go-hclog"
	goplugin "github.com/hashicorp/go-plugin"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

const bound = 10 * time.Second // every wait in these tests gives up after this long

func bin(t *testing.T, env, name string) string {
	p := os.Getenv(env)
	if p == "" {
		p = filepath.Join("..", "..", "..", "build", name)
	}
	abs, err := filepath.Abs(p)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(abs); err != nil {
		t.Fatalf("%s: %v (build it first: make)", env, err)
	}
	return abs
}

func freePort(t *testing.T) int {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port
}

// waitPort polls until something accepts on <addr> or <p> exits, for at most bound.
func waitPort(t *testing.T, addr string, p *proc) {
	deadline := time.Now().Add(bound)
	for time.Now().Before(deadline) {
		if c, err := net.DialTimeout("tcp", addr, 200*time.Millisecond); err == nil {
			c.Close()
			return
		}
		if p.exited() {
			t.Fatalf("%s exited before listening on %s:\n%s", p.name, addr, p.log())
		}
		time.Sleep(20 * time.Millisecond)
	}
	t.Fatalf("%s did not listen on %s within %v:\n%s", p.name, addr, bound, p.log())
}

type proc struct {
	name string
	cmd  *exec.Cmd
	errf string
	done chan struct{}
}

func (p *proc) exited() bool {
	select {
	case <-p.done:
		return true
	default:
		return false
	}
}

func (p *proc) log() string {
	b, _ := os.ReadFile(p.errf)
	return string(b)
}

func (p *proc) stop() {
	if p.cmd == nil || p.exited() {
		return
	}
	p.cmd.Process.Signal(syscall.SIGKILL)
	select {
	case <-p.done:
	case <-time.After(bound):
	}
}

func start(t *testing.T, name string, argv ...string) *proc {
	f, err := os.Create(filepath.Join(t.TempDir(), name+".err"))
	if err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(argv[0], argv[1:]...)
	cmd.Stdout, cmd.Stderr = f, f
	if err := cmd.Start(); err != nil {
		t.Fatalf("start %s: %v", name, err)
	}
	p := &proc{name: name, cmd: cmd, errf: f.Name(), done: make(chan struct{})}
	go func() { cmd.Wait(); f.Close(); close(p.done) }()
	t.Cleanup(func() {
		p.stop()
		if t.Failed() {
			t.Logf("----- %s -----\n%s", name, p.log())
		}
	})
	return p
}

// startUpstream runs build/weir-upstream, which answers with `x-upstream: NAME`; returns its address.
func startUpstream(t *testing.T, name string) string {
	addr := fmt.Sprintf("127.0.0.1:%d", freePort(t))
	p := start(t, "upstream-"+name, bin(t, "WEIR_UPSTREAM_BIN", "weir-upstream"), "--listen", addr, "--name", name)
	waitPort(t, addr, p)
	return addr
}

// weir is one replica: data-plane, admin and control-tcp ports on 127.0.0.1 and a Unix socket for checking it.
type weir struct {
	t                      *testing.T
	name                   string
	listen, admin, ctlAddr string
	sock, token, stable    string
	canary                 string
	p                      *proc
}

func tokenFile(t *testing.T, token string) string {
	f := filepath.Join(t.TempDir(), "token")
	if err := os.WriteFile(f, []byte(token+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	return f
}

func startWeir(t *testing.T, name, token, stable, canary string) *weir {
	w := &weir{t: t, name: name, token: token, stable: stable, canary: canary,
		listen: fmt.Sprintf("127.0.0.1:%d", freePort(t)), admin: fmt.Sprintf("127.0.0.1:%d", freePort(t)),
		ctlAddr: fmt.Sprintf("127.0.0.1:%d", freePort(t)), sock: filepath.Join(t.TempDir(), "weir.sock")}
	w.run()
	return w
}

// run starts (or restarts, on the same addresses and without a state file) the weir process.
func (w *weir) run() {
	w.p = start(w.t, w.name, bin(w.t, "WEIR_BIN", "weir"), "--workers", "1", "--listen", w.listen, "--admin", w.admin,
		"--control", w.sock, "--control-tcp", w.ctlAddr, "--control-token-file", tokenFile(w.t, w.token),
		"--stable", w.stable, "--canary", w.canary, "--log-level", "warn")
	waitPort(w.t, w.ctlAddr, w.p)
	waitPort(w.t, w.listen, w.p)
}

// ctl runs weirctl on the replica's Unix socket: its data lines, and whether weir answered ok.
func (w *weir) weirctl(args ...string) ([]string, error) {
	cmd := exec.Command(bin(w.t, "WEIRCTL_BIN", "weirctl"), append([]string{"-s", w.sock}, args...)...)
	var out, errb bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errb
	if err := cmd.Run(); err != nil {
		return nil, fmt.Errorf("weirctl %s: %v: %s", strings.Join(args, " "), err, strings.TrimSpace(errb.String()))
	}
	s := strings.TrimRight(out.String(), "\n")
	if s == "" {
		return nil, nil
	}
	return strings.Split(s, "\n"), nil
}

func (w *weir) mustCtl(args ...string) []string {
	w.t.Helper()
	l, err := w.weirctl(args...)
	if err != nil {
		w.t.Fatalf("%s: %v", w.name, err)
	}
	return l
}

// weights reads `get weight`: variant -> percent, and the generation.
func (w *weir) weights() (map[string]string, string) {
	w.t.Helper()
	m := make(map[string]string)
	gen := ""
	for _, l := range w.mustCtl("get", "weight") {
		f := strings.Fields(l)
		if len(f) != 2 {
			w.t.Fatalf("%s: get weight line %q", w.name, l)
		}
		if f[0] == "generation" {
			gen = f[1]
		} else {
			m[f[0]] = f[1]
		}
	}
	return m, gen
}

func (w *weir) routes() []string {
	w.t.Helper()
	return w.mustCtl("show", "routes")
}

// traffic sends <n> GETs of <path> with <hdr> through the replica and counts them by x-upstream.
func (w *weir) traffic(n int, path string, hdr map[string]string) map[string]int {
	w.t.Helper()
	client := &http.Client{Timeout: bound}
	count := make(map[string]int)
	for i := 0; i < n; i++ {
		req, _ := http.NewRequest("GET", "http://"+w.listen+path, nil)
		for k, v := range hdr {
			req.Header.Set(k, v)
		}
		resp, err := client.Do(req)
		if err != nil {
			w.t.Fatalf("%s: request %d: %v", w.name, i, err)
		}
		io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		if resp.StatusCode != 200 {
			w.t.Fatalf("%s: request %d: status %d", w.name, i, resp.StatusCode)
		}
		count[resp.Header.Get("x-upstream")]++
	}
	return count
}

// upstreamCount asks a weir-upstream how many requests it served (/__count).
func upstreamCount(t *testing.T, addr string) int {
	t.Helper()
	resp, err := (&http.Client{Timeout: bound}).Get("http://" + addr + "/__count")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	var n int
	if _, err := fmt.Sscanf(strings.TrimSpace(string(b)), "%d", &n); err != nil {
		t.Fatalf("/__count: %q", b)
	}
	return n
}

// eventually polls <cond> until it holds, for at most bound.
func eventually(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(bound)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("%s: not within %v", what, bound)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// startPlugin starts the built plugin binary exactly as the controller's plugin client does and returns Argo's RPC
// client side of it.
func startPlugin(t *testing.T, env ...string) rolloutsrpc.TrafficRouterPlugin {
	cmd := exec.Command(bin(t, "WEIR_PLUGIN_BIN", "rollouts-plugin-trafficrouter-weir"))
	cmd.Env = append(os.Environ(), env...)
	client := goplugin.NewClient(&goplugin.ClientConfig{
		HandshakeConfig: goplugin.HandshakeConfig{ProtocolVersion: 1, MagicCookieKey: "ARGO_ROLLOUTS_RPC_PLUGIN",
			MagicCookieValue: "trafficrouter"},
		Plugins: map[string]goplugin.Plugin{"RpcTrafficRouterPlugin": &rolloutsrpc.RpcTrafficRouterPlugin{}},
		Cmd:     cmd,
		Managed: true,
		Logger:  hclog.New(&hclog.LoggerOptions{Name: "plugin", Level: hclog.Warn, Output: os.Stderr}),
	})
	t.Cleanup(client.Kill)
	rpcClient, err := client.Client()
	if err != nil {
		t.Fatalf("plugin client: %v", err)
	}
	raw, err := rpcClient.Dispense("RpcTrafficRouterPlugin")
	if err != nil {
		t.Fatalf("dispense: %v", err)
	}
	p, ok := raw.(rolloutsrpc.TrafficRouterPlugin)
	if !ok {
		t.Fatalf("dispensed %T", raw)
	}
	if e := p.InitPlugin(); e.HasError() {
		t.Fatalf("InitPlugin: %v", e)
	}
	return p
}

// rollout is a canary Rollout whose trafficRouting.plugins["weir/weir"] is <cfg>, managing <managed> routes.
func rollout(t *testing.T, cfg map[string]any, managed ...string) *v1alpha1.Rollout {
	raw, err := json.Marshal(cfg)
	if err != nil {
		t.Fatal(err)
	}
	tr := &v1alpha1.RolloutTrafficRouting{Plugins: map[string]json.RawMessage{"weir/weir": raw}}
	for _, m := range managed {
		tr.ManagedRoutes = append(tr.ManagedRoutes, v1alpha1.MangedRoutes{Name: m})
	}
	return &v1alpha1.Rollout{
		ObjectMeta: metav1.ObjectMeta{Name: "demo", Namespace: "default"},
		Spec: v1alpha1.RolloutSpec{Strategy: v1alpha1.RolloutStrategy{Canary: &v1alpha1.CanaryStrategy{
			CanaryService: "demo-canary", StableService: "demo-stable", TrafficRouting: tr,
			Steps: []v1alpha1.CanaryStep{{SetWeight: ptr(int32(20))}},
		}}},
	}
}

func ptr[T any](v T) *T { return &v }

// fleet is N weir replicas in front of one stable and one canary upstream, sharing a token.
type fleet struct {
	stable, canary string
	token          string
	w              []*weir
}

func startFleet(t *testing.T, n int) *fleet {
	f := &fleet{stable: startUpstream(t, "stable"), canary: startUpstream(t, "canary"), token: "s3cret-token"}
	for i := 0; i < n; i++ {
		f.w = append(f.w, startWeir(t, fmt.Sprintf("weir%d", i), f.token, f.stable, f.canary))
	}
	return f
}

func (f *fleet) addrs() []string {
	var a []string
	for _, w := range f.w {
		a = append(a, w.ctlAddr)
	}
	return a
}

// config is the plugin object for the fleet with a token file holding <token>.
func (f *fleet) config(t *testing.T, token string) map[string]any {
	return map[string]any{"replicas": f.addrs(), "tokenFile": tokenFile(t, token), "timeout": "2s",
		"syncInterval": "200ms"}
}
