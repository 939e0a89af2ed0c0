package plugin

import (
	"context"
	"encoding/json"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/argoproj/argo-rollouts/pkg/apis/rollouts/v1alpha1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

func TestQuoteRoundTrip(t *testing.T) {
	in := []string{"set", "header-route", "r", "header", "x-a", "exact", `a "b" \c`, "", "tab\there", "plain"}
	line := formatLine(in)
	if want := `set header-route r header x-a exact "a \"b\" \\c" "" "tab	here" plain`; line != want {
		t.Fatalf("formatLine: %q, want %q", line, want)
	}
	out, err := splitLine(line)
	if err != nil || !slices.Equal(out, in) {
		t.Fatalf("splitLine(%q) = %q, %v", line, out, err)
	}
	if _, err := splitLine(`a "b`); err == nil {
		t.Fatal("unterminated quote accepted")
	}
}

func TestHeaderRoutesOnePerAlternative(t *testing.T) {
	hr := &v1alpha1.SetHeaderRoute{Name: "beta", Match: []v1alpha1.HeaderRoutingMatch{
		{HeaderName: "X-Beta", HeaderValue: &v1alpha1.StringMatch{Exact: "yes please"}},
		{HeaderName: "User-Agent", HeaderValue: &v1alpha1.StringMatch{Prefix: "Mozilla"}},
		{HeaderName: "x-id", HeaderValue: &v1alpha1.StringMatch{Regex: "[0-9]+"}},
	}}
	specs, err := headerRoutes(hr, "canary")
	if err != nil {
		t.Fatal(err)
	}
	want := []string{
		`set header-route beta to canary header x-beta exact "yes please"`,
		`set header-route beta~1 to canary header user-agent prefix Mozilla`,
		`set header-route beta~2 to canary header x-id regex [0-9]+`,
	}
	if len(specs) != len(want) {
		t.Fatalf("%d routes, want %d", len(specs), len(want))
	}
	for i, s := range specs {
		if got := formatLine(s.Tokens); got != want[i] {
			t.Errorf("route %d: %q, want %q", i, got, want[i])
		}
	}
	if specs, err := headerRoutes(&v1alpha1.SetHeaderRoute{Name: "beta"}, "canary"); err != nil || specs != nil {
		t.Errorf("empty match: %v, %v; want removal", specs, err)
	}
	bad := []v1alpha1.HeaderRoutingMatch{{HeaderName: "x", HeaderValue: &v1alpha1.StringMatch{Exact: "a", Regex: "b"}}}
	if _, err := headerRoutes(&v1alpha1.SetHeaderRoute{Name: "r", Match: bad}, "canary"); err == nil {
		t.Error("exact and regex together accepted")
	}
	bad = []v1alpha1.HeaderRoutingMatch{{HeaderName: "x y", HeaderValue: &v1alpha1.StringMatch{Exact: "a"}}}
	if _, err := headerRoutes(&v1alpha1.SetHeaderRoute{Name: "r", Match: bad}, "canary"); err == nil {
		t.Error("header name with a space accepted")
	}
	ok := []v1alpha1.HeaderRoutingMatch{{HeaderName: "x", HeaderValue: &v1alpha1.StringMatch{Exact: "a"}}}
	if _, err := headerRoutes(&v1alpha1.SetHeaderRoute{Name: "has space", Match: ok}, "canary"); err == nil {
		t.Error("route name with a space accepted")
	}
}

func TestMirrorRoutesAllConditionsOfAnAlternative(t *testing.T) {
	p := int32(25)
	mr := &v1alpha1.SetMirrorRoute{Name: "shadow", Percentage: &p, Match: []v1alpha1.RouteMatch{
		{
			Method:  &v1alpha1.StringMatch{Exact: "POST"},
			Path:    &v1alpha1.StringMatch{Prefix: "/api/"},
			Headers: map[string]v1alpha1.StringMatch{"X-Zone": {Exact: "eu"}, "Accept": {Regex: "text/.*"}},
		},
		{Path: &v1alpha1.StringMatch{Regex: "/v[0-9]+/orders"}},
	}}
	specs, err := mirrorRoutes(mr, "canary")
	if err != nil {
		t.Fatal(err)
	}
	want := []string{
		`set mirror-route shadow 25.00 to canary method POST path prefix /api/ header accept regex text/.* header x-zone exact eu`,
		`set mirror-route shadow~1 25.00 to canary path regex /v[0-9]+/orders`,
	}
	for i, s := range specs {
		if got := formatLine(s.Tokens); got != want[i] {
			t.Errorf("route %d: %q, want %q", i, got, want[i])
		}
	}
	specs, err = mirrorRoutes(&v1alpha1.SetMirrorRoute{Name: "all", Match: []v1alpha1.RouteMatch{{}}}, "canary")
	if err != nil || formatLine(specs[0].Tokens) != "set mirror-route all 100.00 to canary" {
		t.Errorf("default percentage: %v %v", specs, err)
	}
	regexMethod := []v1alpha1.RouteMatch{{Method: &v1alpha1.StringMatch{Regex: "GET|POST"}}}
	if _, err := mirrorRoutes(&v1alpha1.SetMirrorRoute{Name: "m", Match: regexMethod}, "canary"); err == nil ||
		!strings.Contains(err.Error(), "exactly") {
		t.Errorf("method regex: %v, want a refusal", err)
	}
}

func TestFamilyOf(t *testing.T) {
	for _, c := range []struct {
		name, fam string
		want      bool
	}{{"r", "r", true}, {"r~1", "r", true}, {"r~12", "r", true}, {"r~", "r", false}, {"r~x", "r", false},
		{"rr", "r", false}, {"r-1", "r", false}, {"other", "r", false}} {
		if got := familyOf(c.name, c.fam); got != c.want {
			t.Errorf("familyOf(%q, %q) = %v", c.name, c.fam, got)
		}
	}
}

func TestParseConfig(t *testing.T) {
	c, err := parseConfigJSON([]byte(`{"replicas":["10.0.0.1:9902"],"tokenSecret":{"name":"weir-control-token"}}`), "shop")
	if err != nil {
		t.Fatal(err)
	}
	if c.TokenSecret.Namespace != "shop" || c.TokenSecret.Key != "token" || c.CanaryVariant != "canary" ||
		c.StableVariant != "stable" || c.Timeout.D() != 5*time.Second || c.SyncInterval.D() != 5*time.Second {
		t.Errorf("defaults: %+v %+v", c, c.TokenSecret)
	}
	c, err = parseConfigJSON([]byte(`{"service":"weir-control.shop.svc.cluster.local:9902","tokenFile":"/t",
		"tls":{"enabled":true,"serverName":"weir"},"canaryVariant":"green","timeout":"250ms","syncInterval":2}`), "")
	if err != nil || c.Timeout.D() != 250*time.Millisecond || c.SyncInterval.D() != 2*time.Second || !c.TLS.Enabled ||
		c.CanaryVariant != "green" {
		t.Errorf("full config: %+v, %v", c, err)
	}
	for _, bad := range []string{
		`{"tokenFile":"/t"}`,
		`{"replicas":["a:1"],"service":"b:2","tokenFile":"/t"}`,
		`{"replicas":["a"],"tokenFile":"/t"}`,
		`{"replicas":["a:0"],"tokenFile":"/t"}`,
		`{"replicas":["a:1"]}`,
		`{"replicas":["a:1"],"tokenFile":"/t","tokenSecret":{"name":"s"}}`,
		`{"replicas":["a:1"],"tokenFile":"/t","canaryVariant":"Canary"}`,
		`{"replicas":["a:1"],"tokenFile":"/t","stableVariant":"canary"}`,
		`{"replicas":["a:1"],"tokenFile":"/t","timeout":"soon"}`,
		`{"replicas":["a:1"],"tokenFile":"/t","replica":["b:1"]}`,
	} {
		if _, err := parseConfigJSON([]byte(bad), "ns"); err == nil {
			t.Errorf("accepted %s", bad)
		}
	}
	raw, _ := json.Marshal(map[string]any{"replicas": []string{"127.0.0.1:1"}, "tokenFile": "/t"})
	ro := &v1alpha1.Rollout{ObjectMeta: metav1.ObjectMeta{Name: "r", Namespace: "n"}, Spec: v1alpha1.RolloutSpec{
		Strategy: v1alpha1.RolloutStrategy{Canary: &v1alpha1.CanaryStrategy{TrafficRouting: &v1alpha1.RolloutTrafficRouting{
			Plugins: map[string]json.RawMessage{Name: raw}}}}}}
	if _, err := ParseConfig(ro); err != nil {
		t.Errorf("ParseConfig: %v", err)
	}
	ro.Spec.Strategy.Canary.TrafficRouting.Plugins = nil
	if _, err := ParseConfig(ro); err == nil {
		t.Error("a Rollout without the plugin's object accepted")
	}
}

func TestVariantFor(t *testing.T) {
	if v := variantFor("exp-a"); v != "exp-a" {
		t.Errorf("short name changed: %q", v)
	}
	long := "rollout-experiment-abcdef-1234567-canary-preview"
	v := variantFor(long)
	if !variantRe.MatchString(v) || !strings.HasPrefix(v, long[:23]) || v == variantFor(long+"x") {
		t.Errorf("variantFor(%q) = %q", long, v)
	}
}

func TestServiceEndpoint(t *testing.T) {
	svc := &corev1.Service{ObjectMeta: metav1.ObjectMeta{Name: "exp", Namespace: "shop"}, Spec: corev1.ServiceSpec{
		ClusterIP: "10.96.0.7", Ports: []corev1.ServicePort{{Name: "metrics", Port: 9100}, {Name: "http", Port: 8080}}}}
	if a, err := serviceEndpoint(svc, ""); err != nil || a != "10.96.0.7:8080" {
		t.Errorf("cluster IP: %q %v", a, err)
	}
	svc.Spec.ClusterIP = corev1.ClusterIPNone
	svc.Spec.Ports = svc.Spec.Ports[:1]
	if a, err := serviceEndpoint(svc, ""); err != nil || a != "exp.shop.svc:9100" {
		t.Errorf("headless: %q %v", a, err)
	}
	svc.Spec.ClusterIP = "fd00::7"
	if a, _ := serviceEndpoint(svc, ""); a != "[fd00::7]:9100" {
		t.Errorf("IPv6: %q", a)
	}
}

func TestResolveReplicasService(t *testing.T) {
	addrs, err := resolveReplicas(context.Background(), &Config{Service: "localhost:9902"})
	if err != nil || !slices.Contains(addrs, "127.0.0.1:9902") {
		t.Errorf("localhost: %v %v", addrs, err)
	}
	addrs, err = resolveReplicas(context.Background(), &Config{Replicas: []string{"10.0.0.1:1", "10.0.0.2:1"}})
	if err != nil || len(addrs) != 2 {
		t.Errorf("static: %v %v", addrs, err)
	}
}

// The plan for a replica that runs an old state: stale alternatives of a managed route go, routes the Rollout does
// not manage stay, a retired experiment variant is weighed 0 and then removed.
func TestPlan(t *testing.T) {
	st := &rolloutState{cfg: &Config{CanaryVariant: "canary", StableVariant: "stable"},
		salt: "abc", hasSalt: true, weight: 10, hasWeight: true,
		retired: map[string]bool{"exp-old": true, "exp-gone": true},
		dests:   []dest{{Variant: "exp-new", Addr: "10.0.0.9:80", Weight: 5}},
		managed: []string{"hdr"},
		routes: map[string][]routeSpec{"hdr": {{Name: "hdr", Tokens: []string{"set", "header-route", "hdr", "to",
			"canary", "header", "x-a", "exact", "1"}}}}}
	v := &replicaView{weights: map[string]string{"canary": "0.00", "exp-old": "3.00", "stable": "97.00"},
		routes: map[string][]string{}, order: []string{"ops", "hdr~1", "hdr"}}
	var got []string
	for _, c := range st.plan(v) {
		got = append(got, formatLine(c))
	}
	want := []string{
		"set sticky-salt abc",
		"set upstream exp-new 10.0.0.9:80",
		"set weight canary 10.00 exp-new 5.00 exp-old 0.00",
		"del route hdr~1",
		"set header-route hdr to canary header x-a exact 1",
		"del upstream exp-old",
	}
	if !slices.Equal(got, want) {
		t.Errorf("plan:\n%s\nwant:\n%s", strings.Join(got, "\n"), strings.Join(want, "\n"))
	}
	if !st.differs(v, 0, false) {
		t.Error("a replica at another weight does not differ")
	}
	v = &replicaView{weights: map[string]string{"canary": "10.00", "exp-new": "5.00", "stable": "85.00"}, gen: 4,
		routes: map[string][]string{"hdr": st.routes["hdr"][0].Tokens, "ops": {"set", "header-route", "ops"}},
		order:  []string{"ops", "hdr"}}
	if st.differs(v, 4, true) {
		t.Error("a replica that applies the state differs")
	}
	if !st.differs(v, 3, true) {
		t.Error("a replica whose generation moved does not differ")
	}
}
