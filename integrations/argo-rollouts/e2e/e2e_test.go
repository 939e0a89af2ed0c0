package e2e

import (
	"slices"
	"strings"
	"testing"

	"github.com/argoproj/argo-rollouts/pkg/apis/rollouts/v1alpha1"
	rolloutsrpc "github.com/argoproj/argo-rollouts/rollout/trafficrouting/plugin/rpc"
	"github.com/argoproj/argo-rollouts/utils/plugin/types"
)

// verified calls VerifyWeight and says whether it answered true.
func verified(t *testing.T, p rolloutsrpc.TrafficRouterPlugin, ro *v1alpha1.Rollout, w int32, add []v1alpha1.WeightDestination) bool {
	t.Helper()
	v, e := p.VerifyWeight(ro, w, add)
	if e.HasError() {
		t.Fatalf("VerifyWeight: %v", e)
	}
	b := v.IsVerified()
	return b != nil && *b
}

func mustOK(t *testing.T, what string, e types.RpcError) {
	t.Helper()
	if e.HasError() {
		t.Fatalf("%s: %v", what, e)
	}
}

// A Rollout's steps, through Argo's RPC client, move all three replicas: weight, header route (one weir route per
// alternative), mirror route, full promotion, and the end of the rollout removing only its managed routes.
func TestRolloutStepsMoveEveryReplica(t *testing.T) {
	f := startFleet(t, 3)
	f.w[0].mustCtl("set", "header-route", "ops-debug", "header", "x-ops", "exact", "1") // not the Rollout's
	p := startPlugin(t)
	ro := rollout(t, f.config(t, f.token), "beta", "shadow")

	if typ := p.Type(); typ != "weir" {
		t.Errorf("Type() = %q", typ)
	}
	mustOK(t, "UpdateHash", p.UpdateHash(ro, "6d4f8c9b7", "5b7c9d8e1", nil))
	mustOK(t, "SetWeight", p.SetWeight(ro, 20, nil))
	for _, w := range f.w {
		if m, _ := w.weights(); m["canary"] != "20.00" || m["stable"] != "80.00" {
			t.Errorf("%s: weights %v after SetWeight(20)", w.name, m)
		}
	}
	if !verified(t, p, ro, 20, nil) {
		t.Error("VerifyWeight(20) false with every replica at 20")
	}
	if verified(t, p, ro, 30, nil) {
		t.Error("VerifyWeight(30) true with every replica at 20")
	}

	hr := &v1alpha1.SetHeaderRoute{Name: "beta", Match: []v1alpha1.HeaderRoutingMatch{
		{HeaderName: "X-Beta", HeaderValue: &v1alpha1.StringMatch{Exact: "yes please"}}}}
	mustOK(t, "SetHeaderRoute", p.SetHeaderRoute(ro, hr))
	wantBeta := `set header-route beta to canary header x-beta exact "yes please"`
	for _, w := range f.w {
		if r := w.routes(); !slices.Contains(r, wantBeta) {
			t.Errorf("%s: routes %q lack %q", w.name, r, wantBeta)
		}
		// Traffic: the header reaches the canary whatever the weights (20 % here); a near miss follows the weights.
		if c := w.traffic(20, "/", map[string]string{"X-Beta": "yes please"}); c["canary"] != 20 {
			t.Errorf("%s: header route traffic: %v", w.name, c)
		}
	}

	mr := &v1alpha1.SetMirrorRoute{Name: "shadow", Percentage: ptr(int32(100)), Match: []v1alpha1.RouteMatch{{
		Method:  &v1alpha1.StringMatch{Exact: "GET"},
		Path:    &v1alpha1.StringMatch{Prefix: "/mirrored/"},
		Headers: map[string]v1alpha1.StringMatch{"X-Shadow": {Exact: "on"}},
	}}}
	mustOK(t, "SetMirrorRoute", p.SetMirrorRoute(ro, mr))
	wantShadow := `set mirror-route shadow 100.00 to canary method GET path prefix /mirrored/ header x-shadow exact on`
	for _, w := range f.w {
		if r := w.routes(); !slices.Contains(r, wantShadow) {
			t.Errorf("%s: routes %q lack %q", w.name, r, wantShadow)
		}
	}
	// Weight 0 for the copy test: every primary goes to stable, so every matching request is copied to the canary.
	mustOK(t, "SetWeight", p.SetWeight(ro, 0, nil))
	before := upstreamCount(t, f.canary)
	if c := f.w[1].traffic(10, "/mirrored/x", map[string]string{"X-Shadow": "on"}); c["stable"] != 10 {
		t.Errorf("mirrored primaries: %v", c)
	}
	eventually(t, "10 copies reach the canary", func() bool { return upstreamCount(t, f.canary)-before == 10 })

	mustOK(t, "SetWeight", p.SetWeight(ro, 100, nil))
	for _, w := range f.w {
		if c := w.traffic(20, "/", nil); c["canary"] != 20 {
			t.Errorf("%s: at weight 100: %v", w.name, c)
		}
	}
	if !verified(t, p, ro, 100, nil) {
		t.Error("VerifyWeight(100) false")
	}

	mustOK(t, "RemoveManagedRoutes", p.RemoveManagedRoutes(ro))
	for _, w := range f.w {
		for _, l := range w.routes() {
			if strings.Contains(l, " beta") || strings.Contains(l, " shadow") {
				t.Errorf("%s: managed route left: %q", w.name, l)
			}
		}
	}
	if r := f.w[0].routes(); len(r) != 1 || !strings.Contains(r[0], "ops-debug") {
		t.Errorf("the route the Rollout does not manage: %q", r)
	}
}

// Argo repeats its calls on every reconcile: a replica that already applies the state keeps its generation.
func TestRepeatedCallsKeepGeneration(t *testing.T) {
	f := startFleet(t, 2)
	p := startPlugin(t)
	ro := rollout(t, f.config(t, f.token), "beta")
	hr := &v1alpha1.SetHeaderRoute{Name: "beta", Match: []v1alpha1.HeaderRoutingMatch{
		{HeaderName: "x-beta", HeaderValue: &v1alpha1.StringMatch{Prefix: "y"}}}}
	round := func() {
		mustOK(t, "UpdateHash", p.UpdateHash(ro, "aaa111", "bbb222", nil))
		mustOK(t, "SetWeight", p.SetWeight(ro, 35, nil))
		mustOK(t, "SetHeaderRoute", p.SetHeaderRoute(ro, hr))
	}
	round()
	_, g0 := f.w[0].weights()
	_, g1 := f.w[1].weights()
	if g0 == "0" || g1 == "0" {
		t.Fatalf("the first round changed nothing: generations %s %s", g0, g1)
	}
	for i := 0; i < 3; i++ {
		round()
	}
	if _, g := f.w[0].weights(); g != g0 {
		t.Errorf("weir0: generation %s -> %s after repeating the same calls", g0, g)
	}
	if _, g := f.w[1].weights(); g != g1 {
		t.Errorf("weir1: generation %s -> %s after repeating the same calls", g1, g)
	}
}

// One replica down: SetWeight fails naming it, the others apply the weight, VerifyWeight is false; once it is back,
// the background sync brings it in step without another call.
func TestReplicaDown(t *testing.T) {
	f := startFleet(t, 3)
	p := startPlugin(t)
	ro := rollout(t, f.config(t, f.token))
	f.w[2].p.stop()

	e := p.SetWeight(ro, 40, nil)
	if !e.HasError() || !strings.Contains(e.Error(), f.w[2].ctlAddr) || strings.Contains(e.Error(), f.w[0].ctlAddr) ||
		!strings.Contains(e.Error(), "1 of 3") {
		t.Errorf("SetWeight with %s down: %v", f.w[2].ctlAddr, e)
	}
	for _, w := range f.w[:2] {
		if m, _ := w.weights(); m["canary"] != "40.00" {
			t.Errorf("%s: %v; the replicas that are up must apply the weight", w.name, m)
		}
	}
	if verified(t, p, ro, 40, nil) {
		t.Error("VerifyWeight true with a replica down")
	}
}

// A replica that restarts mid-rollout (no state file) converges within seconds, with no Argo call in between.
func TestRestartedReplicaConverges(t *testing.T) {
	f := startFleet(t, 2)
	p := startPlugin(t)
	ro := rollout(t, f.config(t, f.token), "beta")
	mustOK(t, "SetWeight", p.SetWeight(ro, 25, nil))
	mustOK(t, "SetHeaderRoute", p.SetHeaderRoute(ro, &v1alpha1.SetHeaderRoute{Name: "beta",
		Match: []v1alpha1.HeaderRoutingMatch{{HeaderName: "x-beta", HeaderValue: &v1alpha1.StringMatch{Exact: "1"}}}}))

	w := f.w[1]
	w.p.stop()
	w.run()
	eventually(t, "the restarted replica applies weight 25 and route beta", func() bool {
		m, _ := w.weights()
		return m["canary"] == "25.00" && slices.Contains(w.routes(), "set header-route beta to canary header x-beta exact 1")
	})
	if c := w.traffic(10, "/", map[string]string{"x-beta": "1"}); c["canary"] != 10 {
		t.Errorf("restarted replica, header route traffic: %v", c)
	}
	if !verified(t, p, ro, 25, nil) {
		t.Error("VerifyWeight(25) false after convergence")
	}
}

// A wrong token: the call fails saying so, nothing changes.
func TestWrongToken(t *testing.T) {
	f := startFleet(t, 2)
	p := startPlugin(t)
	ro := rollout(t, f.config(t, "not-the-token"))
	e := p.SetWeight(ro, 50, nil)
	if !e.HasError() || !strings.Contains(e.Error(), "authentication failed") || !strings.Contains(e.Error(), "2 of 2") {
		t.Errorf("SetWeight with a wrong token: %v", e)
	}
	for _, w := range f.w {
		if m, g := w.weights(); m["canary"] != "0.00" || g != "0" {
			t.Errorf("%s: %v generation %s after a refused token", w.name, m, g)
		}
	}
	if verified(t, p, ro, 0, nil) {
		t.Error("VerifyWeight true with a wrong token")
	}
}

// A regex weir refuses: the call fails with weir's reason and every replica named; the route is not there.
func TestRefusedRegex(t *testing.T) {
	f := startFleet(t, 2)
	p := startPlugin(t)
	ro := rollout(t, f.config(t, f.token), "beta")
	mustOK(t, "SetWeight", p.SetWeight(ro, 10, nil))
	// A valid RE2 regex that POSIX ERE does not accept (a repeated anchor): weir refuses it.
	e := p.SetHeaderRoute(ro, &v1alpha1.SetHeaderRoute{Name: "beta", Match: []v1alpha1.HeaderRoutingMatch{
		{HeaderName: "x-id", HeaderValue: &v1alpha1.StringMatch{Regex: "^*a"}}}})
	if !e.HasError() || !strings.Contains(e.Error(), "regex") || !strings.Contains(e.Error(), f.w[0].ctlAddr) ||
		!strings.Contains(e.Error(), f.w[1].ctlAddr) {
		t.Errorf("SetHeaderRoute with a regex weir refuses: %v", e)
	}
	for _, w := range f.w {
		if r := w.routes(); len(r) != 0 {
			t.Errorf("%s: routes %q after a refused regex", w.name, r)
		}
	}
	// The refused route is not left in the desired state: the next call (another one) succeeds, and so does a good
	// regex.
	mustOK(t, "SetWeight", p.SetWeight(ro, 20, nil))
	mustOK(t, "SetHeaderRoute", p.SetHeaderRoute(ro, &v1alpha1.SetHeaderRoute{Name: "beta",
		Match: []v1alpha1.HeaderRoutingMatch{{HeaderName: "x-id", HeaderValue: &v1alpha1.StringMatch{Regex: "[0-9]+"}}}}))
}

// Argo's match list is a list of alternatives: one weir route each (NAME, NAME~1, ...); a shorter list later drops
// the extra ones, and only the Rollout's own routes are touched.
func TestAlternativesOneRouteEach(t *testing.T) {
	f := startFleet(t, 2)
	p := startPlugin(t)
	ro := rollout(t, f.config(t, f.token), "beta", "shadow")
	mustOK(t, "SetWeight", p.SetWeight(ro, 0, nil))
	hr := &v1alpha1.SetHeaderRoute{Name: "beta", Match: []v1alpha1.HeaderRoutingMatch{
		{HeaderName: "X-Beta", HeaderValue: &v1alpha1.StringMatch{Exact: "yes please"}},
		{HeaderName: "User-Agent", HeaderValue: &v1alpha1.StringMatch{Regex: "tester/[0-9]+"}},
	}}
	mustOK(t, "SetHeaderRoute", p.SetHeaderRoute(ro, hr))
	wantBeta := []string{
		`set header-route beta to canary header x-beta exact "yes please"`,
		`set header-route beta~1 to canary header user-agent regex tester/[0-9]+`,
	}
	for _, w := range f.w {
		r := w.routes()
		for _, want := range wantBeta {
			if !slices.Contains(r, want) {
				t.Errorf("%s: routes %q lack %q", w.name, r, want)
			}
		}
		// Traffic: both alternatives reach the canary whatever the weights (0 here); a near miss does not.
		if c := w.traffic(20, "/", map[string]string{"X-Beta": "yes please"}); c["canary"] != 20 {
			t.Errorf("%s: exact header alternative: %v", w.name, c)
		}
		if c := w.traffic(20, "/", map[string]string{"User-Agent": "tester/42"}); c["canary"] != 20 {
			t.Errorf("%s: regex header alternative: %v", w.name, c)
		}
	}
	// Fewer alternatives: beta~1 goes.
	hr.Match = hr.Match[:1]
	mustOK(t, "SetHeaderRoute", p.SetHeaderRoute(ro, hr))
	for _, w := range f.w {
		if r := w.routes(); slices.ContainsFunc(r, func(l string) bool { return strings.Contains(l, "beta~1") }) {
			t.Errorf("%s: beta~1 left after the match list shrank: %q", w.name, r)
		}
	}

	for _, w := range f.w {
		if c := w.traffic(10, "/", map[string]string{"User-Agent": "tester/x"}); c["stable"] != 10 {
			t.Errorf("%s: a near miss of the regex: %v", w.name, c)
		}
	}
	mr := &v1alpha1.SetMirrorRoute{Name: "shadow", Percentage: ptr(int32(50)), Match: []v1alpha1.RouteMatch{
		{Path: &v1alpha1.StringMatch{Exact: "/a"}}, {Method: &v1alpha1.StringMatch{Exact: "POST"}}}}
	mustOK(t, "SetMirrorRoute", p.SetMirrorRoute(ro, mr))
	for _, w := range f.w {
		r := w.routes()
		for _, want := range []string{"set mirror-route shadow 50.00 to canary path exact /a",
			"set mirror-route shadow~1 50.00 to canary method POST"} {
			if !slices.Contains(r, want) {
				t.Errorf("%s: routes %q lack %q", w.name, r, want)
			}
		}
	}
	mustOK(t, "SetMirrorRoute", p.SetMirrorRoute(ro, &v1alpha1.SetMirrorRoute{Name: "shadow"}))
	for _, w := range f.w {
		if r := w.routes(); len(r) != 1 || r[0] != "set header-route beta to canary header x-beta exact \"yes please\"" {
			t.Errorf("%s: after removing shadow: %q", w.name, r)
		}
	}
}

// `service` names the replicas by a host name whose every address is one (here localhost: 127.0.0.1).
func TestServiceNamesReplicas(t *testing.T) {
	f := startFleet(t, 1)
	_, port, _ := strings.Cut(f.w[0].ctlAddr, ":")
	cfg := f.config(t, f.token)
	delete(cfg, "replicas")
	cfg["service"] = "localhost:" + port
	p := startPlugin(t)
	ro := rollout(t, cfg)
	mustOK(t, "SetWeight", p.SetWeight(ro, 10, nil))
	if m, _ := f.w[0].weights(); m["canary"] != "10.00" {
		t.Errorf("weights %v after SetWeight(10) through service localhost:%s", m, port)
	}
	cfg["service"] = "no-such-host.invalid:" + port
	if e := p.SetWeight(rollout(t, cfg), 10, nil); !e.HasError() || !strings.Contains(e.Error(), "no-such-host.invalid") {
		t.Errorf("SetWeight with a service that does not resolve: %v", e)
	}
}

// A header value with line breaks, through Argo's RPC, is refused before anything reaches weir: weir would otherwise
// run `del routes` as a request of its own.
func TestLineBreakInjection(t *testing.T) {
	f := startFleet(t, 2)
	for _, w := range f.w {
		w.mustCtl("set", "header-route", "ops-debug", "header", "x-ops", "exact", "1")
	}
	p := startPlugin(t)
	ro := rollout(t, f.config(t, f.token), "beta")
	e := p.SetHeaderRoute(ro, &v1alpha1.SetHeaderRoute{Name: "beta", Match: []v1alpha1.HeaderRoutingMatch{
		{HeaderName: "x-beta", HeaderValue: &v1alpha1.StringMatch{Exact: "1\ndel routes\nx"}}}})
	if !e.HasError() || !strings.Contains(e.Error(), "line break") {
		t.Errorf("SetHeaderRoute with a line break: %v", e)
	}
	for _, w := range f.w {
		if r := w.routes(); len(r) != 1 || !strings.Contains(r[0], "ops-debug") {
			t.Errorf("%s: routes %q after a refused line break", w.name, r)
		}
	}
}

// Argo's weights are out of trafficRouting.maxTrafficWeight: 250 of 1000 is 25 %.
func TestMaxTrafficWeightThroughRPC(t *testing.T) {
	f := startFleet(t, 2)
	p := startPlugin(t)
	ro := rollout(t, f.config(t, f.token))
	ro.Spec.Strategy.Canary.TrafficRouting.MaxTrafficWeight = ptr(int32(1000))
	mustOK(t, "SetWeight", p.SetWeight(ro, 250, nil))
	for _, w := range f.w {
		if m, _ := w.weights(); m["canary"] != "25.00" || m["stable"] != "75.00" {
			t.Errorf("%s: weights %v after SetWeight(250 of 1000)", w.name, m)
		}
	}
	if !verified(t, p, ro, 250, nil) {
		t.Error("VerifyWeight(250 of 1000) false with every replica at 25 %")
	}
	if verified(t, p, ro, 25, nil) {
		t.Error("VerifyWeight(25 of 1000) true with every replica at 25 %")
	}
}

// An RE2 shorthand class reaches weir as its POSIX equivalent and matches what Argo means; an RE2 construct with no
// POSIX equivalent is refused by the plugin, naming it.
func TestRegexDialect(t *testing.T) {
	f := startFleet(t, 1)
	p := startPlugin(t)
	ro := rollout(t, f.config(t, f.token), "beta")
	mustOK(t, "SetWeight", p.SetWeight(ro, 0, nil))
	mustOK(t, "SetHeaderRoute", p.SetHeaderRoute(ro, &v1alpha1.SetHeaderRoute{Name: "beta",
		Match: []v1alpha1.HeaderRoutingMatch{{HeaderName: "x-id", HeaderValue: &v1alpha1.StringMatch{Regex: `\d+`}}}}))
	if c := f.w[0].traffic(10, "/", map[string]string{"x-id": "123"}); c["canary"] != 10 {
		t.Errorf(`x-id: 123 against \d+: %v`, c)
	}
	// POSIX would read \d as a literal d.
	if c := f.w[0].traffic(10, "/", map[string]string{"x-id": "ddd"}); c["stable"] != 10 {
		t.Errorf(`x-id: ddd against \d+: %v`, c)
	}
	e := p.SetHeaderRoute(ro, &v1alpha1.SetHeaderRoute{Name: "beta",
		Match: []v1alpha1.HeaderRoutingMatch{{HeaderName: "x-id", HeaderValue: &v1alpha1.StringMatch{Regex: `(?i)abc`}}}})
	if !e.HasError() || !strings.Contains(e.Error(), "POSIX") {
		t.Errorf("(?i): %v", e)
	}
}
