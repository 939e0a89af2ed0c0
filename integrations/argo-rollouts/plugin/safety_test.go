package plugin

import (
	"bufio"
	"encoding/json"
	"fmt"
	"net"
	"os"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/argoproj/argo-rollouts/pkg/apis/rollouts/v1alpha1"
	"github.com/hashicorp/go-hclog"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/apimachinery/pkg/util/intstr"
)

// fakeWeir is a plain-TCP control listener on 127.0.0.1 (token "tok") that keeps a canary weight, records every
// request line, and answers `set weight` with <setWeightReply> after applying it.
type fakeWeir struct {
	mu             sync.Mutex
	lines          []string
	weight         string
	gen            int
	setWeightReply string
}

func startFakeWeir(t *testing.T, setWeightReply string) (*fakeWeir, string) {
	f := &fakeWeir{weight: "0.00", setWeightReply: setWeightReply}
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	serveLines(t, l, f.answer)
	return f, l.Addr().String()
}

func (f *fakeWeir) answer(line string) (string, bool) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.lines = append(f.lines, line)
	tok, _ := splitLine(line)
	switch {
	case line == "auth tok", line == "show routes", len(tok) > 1 && tok[1] == "sticky-salt":
		return "ok\n\n", true
	case line == "get weight":
		return fmt.Sprintf("ok\ncanary %s\nstable x\ngeneration %d\n\n", f.weight, f.gen), true
	case len(tok) == 4 && tok[0] == "set" && tok[1] == "weight":
		f.weight = tok[3]
		f.gen++
		return f.setWeightReply, true
	}
	return "error: unknown command\n\n", true
}

func (f *fakeWeir) sent() []string {
	f.mu.Lock()
	defer f.mu.Unlock()
	return append([]string(nil), f.lines...)
}

func testRollout(t *testing.T, uid string, cfg map[string]any) *v1alpha1.Rollout {
	raw, err := json.Marshal(cfg)
	if err != nil {
		t.Fatal(err)
	}
	return &v1alpha1.Rollout{ObjectMeta: metav1.ObjectMeta{Name: "demo", Namespace: "shop", UID: types.UID(uid)},
		Spec: v1alpha1.RolloutSpec{Strategy: v1alpha1.RolloutStrategy{Canary: &v1alpha1.CanaryStrategy{
			TrafficRouting: &v1alpha1.RolloutTrafficRouting{Plugins: map[string]json.RawMessage{Name: raw},
				ManagedRoutes: []v1alpha1.MangedRoutes{{Name: "beta"}}}}}}}
}

func fakeConfig(t *testing.T, addr string) map[string]any {
	tf := t.TempDir() + "/token"
	if err := os.WriteFile(tf, []byte("tok\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	return map[string]any{"replicas": []string{addr}, "tokenFile": tf, "timeout": "2s", "syncInterval": "1h"}
}

// A value with a line break would end weir's request there and run the rest as a request of its own: it is refused
// before anything is sent, whichever way it enters.
func TestLineBreakInjectionRefused(t *testing.T) {
	fw, addr := startFakeWeir(t, "ok\n\n")
	p := New(hclog.NewNullLogger())
	ro := testRollout(t, "u1", fakeConfig(t, addr))
	for _, v := range []string{"1\ndel routes\nx", "1\rdel routes", "a\x00b"} {
		e := p.SetHeaderRoute(ro, &v1alpha1.SetHeaderRoute{Name: "beta", Match: []v1alpha1.HeaderRoutingMatch{
			{HeaderName: "x-a", HeaderValue: &v1alpha1.StringMatch{Exact: v}}}})
		if !e.HasError() || !strings.Contains(e.Error(), "line break") {
			t.Errorf("header value %q: %v", v, e)
		}
		if e := p.UpdateHash(ro, v, "s", nil); !e.HasError() || !strings.Contains(e.Error(), "line break") {
			t.Errorf("canary hash %q: %v", v, e)
		}
	}
	for _, l := range fw.sent() {
		if strings.Contains(l, "del routes") || strings.Contains(l, "header-route") || strings.Contains(l, "sticky-salt") {
			t.Errorf("sent %q", l)
		}
	}
	// The low-level send refuses it too.
	a, b := net.Pipe()
	defer a.Close()
	defer b.Close()
	a.SetDeadline(time.Now().Add(2 * time.Second)) // a request sent would find no reader
	c := &ctlConn{c: a, r: bufio.NewReader(a)}
	if _, err := c.do("set", "sticky-salt", "x\ndel routes"); err == nil || !strings.Contains(err.Error(), "line break") {
		t.Errorf("do: %v", err)
	}
}

// weir's reply to a change published without every worker's acknowledgement is not a refusal: the goal stays, and
// VerifyWeight reads what the replica applies.
func TestUnacknowledgedIsNotRefused(t *testing.T) {
	_, addr := startFakeWeir(t, "error: generation 7 published but not acknowledged within 3000 ms by worker 1: the "+
		"change is applied and stays; those workers route by an older table until they take it\n\n")
	p := New(hclog.NewNullLogger())
	ro := testRollout(t, "u1", fakeConfig(t, addr))
	if e := p.SetWeight(ro, 30, nil); e.HasError() {
		t.Errorf("SetWeight: %v", e)
	}
	st := p.states["shop/demo"]
	st.mu.Lock()
	if !st.hasWeight || st.weight != 30 {
		t.Errorf("goal after an unacknowledged change: weight %d (set %v), want 30", st.weight, st.hasWeight)
	}
	if _, ok := st.gens[addr]; ok {
		t.Error("the replica's generation is taken as verified")
	}
	st.mu.Unlock()
	if v, e := p.VerifyWeight(ro, 30, nil); e.HasError() || v.IsVerified() == nil || !*v.IsVerified() {
		t.Errorf("VerifyWeight(30): %v %v", v.IsVerified(), e)
	}

	// A real refusal still restores the previous goal.
	_, addr2 := startFakeWeir(t, "error: bad number\n\n")
	ro2 := testRollout(t, "u2", fakeConfig(t, addr2))
	ro2.Name = "other"
	if e := p.SetWeight(ro2, 30, nil); !e.HasError() {
		t.Error("a refused SetWeight succeeded")
	}
	if st := p.states["shop/other"]; st.hasWeight {
		t.Errorf("goal after a refusal: weight %d", st.weight)
	}
}

// Argo's weights are out of maxTrafficWeight.
func TestMaxTrafficWeight(t *testing.T) {
	for _, c := range []struct {
		w, max int32
		want   string
	}{{30, 100, "30.00"}, {250, 1000, "25.00"}, {1, 3, "33.33"}, {2, 3, "66.66"}, {1, 400, "0.25"},
		{1, 10000, "0.01"}, {1000, 1000, "100.00"}, {0, 7, "0.00"}} {
		if got := pct(c.w, c.max); got != c.want {
			t.Errorf("pct(%d, %d) = %s, want %s", c.w, c.max, got, c.want)
		}
	}
	fw, addr := startFakeWeir(t, "ok\n\n")
	p := New(hclog.NewNullLogger())
	ro := testRollout(t, "u1", fakeConfig(t, addr))
	maxW := int32(1000)
	ro.Spec.Strategy.Canary.TrafficRouting.MaxTrafficWeight = &maxW
	if e := p.SetWeight(ro, 250, nil); e.HasError() {
		t.Fatalf("SetWeight: %v", e)
	}
	if fw.weight != "25.00" {
		t.Errorf("weight 250 of 1000 sent as %s", fw.weight)
	}
	if v, _ := p.VerifyWeight(ro, 250, nil); v.IsVerified() == nil || !*v.IsVerified() {
		t.Error("VerifyWeight(250 of 1000) false at 25.00")
	}
	if e := p.SetWeight(ro, 1001, nil); !e.HasError() {
		t.Error("weight over maxTrafficWeight accepted")
	}
}

// A replica whose generation is unknown (a push to it failed) gets the whole state again even when its weights and
// routes look right: its salt is not visible.
func TestDiffersUnknownGeneration(t *testing.T) {
	st := &rolloutState{cfg: &Config{CanaryVariant: "canary"}, salt: "abc", hasSalt: true, weight: 10, hasWeight: true,
		maxWeight: 100}
	v := &replicaView{weights: map[string]string{"canary": "10.00"}, gen: 4}
	if !st.differs(v, 0, false) {
		t.Error("a replica of unknown generation does not differ")
	}
	if st.differs(v, 4, true) {
		t.Error("a replica at its known generation differs")
	}
}

// The state is the Rollout's (by UID): one made again under the same name starts afresh, and the old state's sync
// ends; a Rollout not called for the TTL is forgotten.
func TestStateByUIDAndTTL(t *testing.T) {
	_, addr := startFakeWeir(t, "ok\n\n")
	p := New(hclog.NewNullLogger())
	now := time.Unix(1000, 0)
	p.now = func() time.Time { return now }
	ro := testRollout(t, "uid-1", fakeConfig(t, addr))
	if e := p.SetWeight(ro, 40, nil); e.HasError() {
		t.Fatal(e)
	}
	old := p.states["shop/demo"]
	ro2 := testRollout(t, "uid-2", fakeConfig(t, addr))
	if e := p.UpdateHash(ro2, "abc", "", nil); e.HasError() {
		t.Fatal(e)
	}
	st := p.states["shop/demo"]
	if st == old || st.hasWeight || st.uid != "uid-2" {
		t.Errorf("the re-made Rollout inherits the state: uid %s, weight %d (set %v)", st.uid, st.weight, st.hasWeight)
	}
	if p.live(old) {
		t.Error("the replaced Rollout's state is still live")
	}
	if !p.live(st) {
		t.Error("a Rollout just called is not live")
	}
	now = now.Add(p.ttl + time.Second)
	if p.live(st) || p.states["shop/demo"] != nil {
		t.Error("a Rollout not called for the TTL is still tracked")
	}
}

func TestConfigExactKeys(t *testing.T) {
	for _, c := range []struct{ raw, want string }{
		{`{"replicas":["a:1"],"tokenFile":"/t","CanaryVariant":"green"}`, `"CanaryVariant" (did you mean "canaryVariant"?)`},
		{`{"replicas":["a:1"],"tokenFile":"/t","syncIntervall":"5s"}`, `unknown field "syncIntervall"`},
		{`{"replicas":["a:1"],"tokenFile":"/t","tls":{"Enabled":true}}`, `"tls.Enabled"`},
		{`{"replicas":["a:1"],"tokenSecret":{"name":"s","KEY":"k"}}`, `"tokenSecret.KEY"`},
		{`{"replicas":["a:1"],"tokenFile":"/t","clusterDomain":"Bad_Domain"}`, `clusterDomain`},
	} {
		_, err := parseConfigJSON([]byte(c.raw), "ns")
		if err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%s: %v, want an error naming %s", c.raw, err, c.want)
		}
	}
	c, err := parseConfigJSON([]byte(`{"replicas":["a:1"],"tokenFile":"/t","clusterDomain":"k8s.example.org"}`), "ns")
	if err != nil || c.ClusterDomain != "k8s.example.org" {
		t.Errorf("clusterDomain: %+v %v", c, err)
	}
}

func TestHeadlessServiceEndpoint(t *testing.T) {
	svc := &corev1.Service{ObjectMeta: metav1.ObjectMeta{Name: "exp", Namespace: "shop"}, Spec: corev1.ServiceSpec{
		ClusterIP: corev1.ClusterIPNone, Ports: []corev1.ServicePort{{Name: "http", Port: 80,
			TargetPort: intstr.FromInt32(8080)}}}}
	if a, err := serviceEndpoint(svc, ""); err != nil || a != "exp.shop.svc:8080" {
		t.Errorf("headless, numeric targetPort: %q %v", a, err)
	}
	if a, err := serviceEndpoint(svc, "k8s.example.org"); err != nil || a != "exp.shop.svc.k8s.example.org:8080" {
		t.Errorf("headless, clusterDomain: %q %v", a, err)
	}
	svc.Spec.Ports[0].TargetPort = intstr.IntOrString{}
	if a, err := serviceEndpoint(svc, ""); err != nil || a != "exp.shop.svc:80" {
		t.Errorf("headless, no targetPort: %q %v", a, err)
	}
	svc.Spec.Ports[0].TargetPort = intstr.FromString("web")
	if _, err := serviceEndpoint(svc, ""); err == nil || !strings.Contains(err.Error(), `named targetPort "web"`) {
		t.Errorf("headless, named targetPort: %v", err)
	}
	svc.Spec.ClusterIP = "10.96.0.7" // kube-proxy maps the Service port: the targetPort does not matter
	if a, err := serviceEndpoint(svc, ""); err != nil || a != "10.96.0.7:80" {
		t.Errorf("cluster IP: %q %v", a, err)
	}
}

func TestPosixRegex(t *testing.T) {
	for _, c := range []struct{ in, want string }{
		{`[0-9]+`, `[0-9]+`},
		{`\d+`, `[0-9]+`},
		{`\D`, `[^0-9]`},
		{`\w+@\w+\.com`, `[0-9A-Za-z_]+@[0-9A-Za-z_]+\.com`},
		{`a\sb`, "a[\t\f ]b"},
		{`(?:ab)+c`, `(ab)+c`},
		{`a.*?b+?c??d{2,3}?`, `a.*b+c?d{2,3}`},
		{`[\d\-x]`, `[0-9x-]`},
		{`[\]a]`, `[]a]`},
		{`[^\^]`, `[^^]`},
		{`[\^]`, `\^`},
		{`[\\.]`, `[.\]`},
		{`a{x`, `a\{x`},
		{`\/v1\/`, `/v1/`},
		{`[[:alpha:]_]`, `[[:alpha:]_]`},
		{`\.\*\(`, `\.\*\(`},
		{`a|b$`, `a|b$`},
	} {
		got, err := posixRegex(c.in)
		if err != nil || got != c.want {
			t.Errorf("posixRegex(%q) = %q, %v; want %q", c.in, got, err, c.want)
		}
	}
	for _, bad := range []string{`(?i)abc`, `\bword\b`, `\pL`, `\Qa.b\E`, `(?P<x>a)`, `a{,3}`, `é`, `\x41`, `\n`,
		`(unclosed`, `[\D]`, `\A`, `a\z`} {
		if got, err := posixRegex(bad); err == nil {
			t.Errorf("posixRegex(%q) = %q, want a refusal", bad, got)
		}
	}
	hr := &v1alpha1.SetHeaderRoute{Name: "r", Match: []v1alpha1.HeaderRoutingMatch{{HeaderName: "x",
		HeaderValue: &v1alpha1.StringMatch{Regex: `\d+`}}}}
	if specs, err := headerRoutes(hr, "canary"); err != nil || specs[0].Tokens[len(specs[0].Tokens)-1] != "[0-9]+" {
		t.Errorf("header route regex: %v %v", specs, err)
	}
	hr.Match[0].HeaderValue.Regex = `(?i)beta`
	if _, err := headerRoutes(hr, "canary"); err == nil || !strings.Contains(err.Error(), "POSIX") {
		t.Errorf("(?i): %v", err)
	}
}
