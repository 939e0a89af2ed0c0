package plugin

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"maps"
	"net"
	"slices"
	"sort"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"

	"github.com/argoproj/argo-rollouts/pkg/apis/rollouts/v1alpha1"
)

// dest is an additional destination of an experiment, as a weir variant.
type dest struct {
	Variant string
	Addr    string
	Weight  int32
}

// rolloutState is what one Rollout wants every weir replica to apply. Argo's calls change it; every call and every
// background sync pushes it (mu is held for the whole pass, so the two never interleave).
type rolloutState struct {
	mu   sync.Mutex
	key  string // namespace/name
	uid  string // the Rollout's UID: a Rollout deleted and made again under the same name is another one
	cfg  *Config
	gone atomic.Bool // replaced by a Rollout of the same name, or not called for stateTTL: the sync loop ends

	maxWeight int32 // trafficRouting.maxTrafficWeight: Argo's weights are out of it

	salt      string
	hasSalt   bool
	weight    int32
	hasWeight bool
	dests     []dest
	retired   map[string]bool        // variants this plugin declared that no destination wants any more
	managed   []string               // the Rollout's managedRoutes, in order
	routes    map[string][]routeSpec // desired weir routes per managed route; none: the route must not exist

	gens    map[string]uint64 // per replica: the generation it had once it last applied this state
	lastErr string            // of the last background sync, so a lasting failure is logged once
}

// desired is the part of rolloutState that Argo's calls change.
type desired struct {
	salt      string
	hasSalt   bool
	weight    int32
	hasWeight bool
	dests     []dest
	retired   map[string]bool
	routes    map[string][]routeSpec
}

func (st *rolloutState) snapshot() desired {
	return desired{salt: st.salt, hasSalt: st.hasSalt, weight: st.weight, hasWeight: st.hasWeight,
		dests: slices.Clone(st.dests), retired: maps.Clone(st.retired), routes: maps.Clone(st.routes)}
}

func (st *rolloutState) restore(d desired) {
	st.salt, st.hasSalt, st.weight, st.hasWeight = d.salt, d.hasSalt, d.weight, d.hasWeight
	st.dests, st.retired, st.routes = d.dests, d.retired, d.routes
}

// refused says whether some replica answered `error:` (as opposed to not answering at all).
func refused(err error) bool {
	var re *replicaErrors
	if !errors.As(err, &re) {
		return false
	}
	for _, e := range re.errs {
		var we *weirError
		if errors.As(e, &we) && !we.unacknowledged() {
			return true
		}
	}
	return false
}

// onlyUnacknowledged says whether every replica that failed did so only because some of its workers did not
// acknowledge a change in time: each change is made, only not verified yet.
func onlyUnacknowledged(err error) bool {
	var re *replicaErrors
	if !errors.As(err, &re) {
		return false
	}
	for _, e := range re.errs {
		var we *weirError
		if !errors.As(e, &we) || !we.unacknowledged() {
			return false
		}
	}
	return true
}

// replicaView is what a replica applies now, read with `get weight` and `show routes`.
type replicaView struct {
	weights map[string]string // variant -> percent as weir prints it ("10.00")
	gen     uint64
	routes  map[string][]string // route name -> tokens of its `set ...` line
	order   []string            // route names in weir's order
}

// pct writes Argo weight <w> out of <max> (the Rollout's trafficRouting.maxTrafficWeight, default 100) as the percent
// weir takes, with two decimals. It rounds down, so weights that add up to <max> never add up to more than 100.
func pct(w, max int32) string {
	if max <= 0 {
		max = 100
	}
	bp := int64(w) * 10000 / int64(max)
	return fmt.Sprintf("%d.%02d", bp/100, bp%100)
}

func parseWeights(lines []string) (map[string]string, uint64, error) {
	w := make(map[string]string)
	var gen uint64
	seen := false
	for _, l := range lines {
		f := strings.Fields(l)
		if len(f) != 2 {
			return nil, 0, fmt.Errorf("get weight: unexpected line %q", l)
		}
		if f[0] == "generation" {
			g, err := strconv.ParseUint(f[1], 10, 64)
			if err != nil {
				return nil, 0, fmt.Errorf("get weight: bad generation %q", f[1])
			}
			gen, seen = g, true
			continue
		}
		w[f[0]] = f[1]
	}
	if !seen {
		return nil, 0, fmt.Errorf("get weight: no generation line")
	}
	return w, gen, nil
}

func readView(c *ctlConn) (*replicaView, error) {
	lines, err := c.do("get", "weight")
	if err != nil {
		return nil, err
	}
	v := &replicaView{routes: make(map[string][]string)}
	if v.weights, v.gen, err = parseWeights(lines); err != nil {
		return nil, err
	}
	lines, err = c.do("show", "routes")
	if err != nil {
		return nil, err
	}
	for _, l := range lines {
		tok, err := splitLine(l)
		if err != nil || len(tok) < 3 {
			return nil, fmt.Errorf("show routes: unexpected line %q", l)
		}
		v.routes[tok[2]] = tok
		v.order = append(v.order, tok[2])
	}
	return v, nil
}

func equalTokens(a, b []string) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if a[i] != b[i] {
			return false
		}
	}
	return true
}

// differs says whether replica <v> does not apply the state (generation <gen> known from an earlier pass, or not).
func (st *rolloutState) differs(v *replicaView, gen uint64, known bool) bool {
	// Its salt is not visible, so a replica whose generation is unknown (never synced, or a push to it failed) or
	// moved (restarted, or changed by someone else) gets everything again; every request is idempotent.
	if !known || v.gen != gen {
		return true
	}
	if st.hasWeight {
		if v.weights[st.cfg.CanaryVariant] != pct(st.weight, st.maxWeight) {
			return true
		}
		for _, d := range st.dests {
			if v.weights[d.Variant] != pct(d.Weight, st.maxWeight) {
				return true
			}
		}
	}
	for r := range st.retired {
		if _, ok := v.weights[r]; ok {
			return true
		}
	}
	for _, m := range st.managed {
		want := st.routes[m]
		have := 0
		for _, name := range v.order {
			if familyOf(name, m) {
				have++
			}
		}
		if have != len(want) {
			return true
		}
		for _, r := range want {
			if !equalTokens(v.routes[r.Name], r.Tokens) {
				return true
			}
		}
	}
	return false
}

// plan lists the requests that make replica <v> apply the whole state. Each is idempotent: weir answers ok and keeps
// its generation when it already applies it.
func (st *rolloutState) plan(v *replicaView) [][]string {
	var cmds [][]string
	if st.hasSalt {
		cmds = append(cmds, []string{"set", "sticky-salt", st.salt})
	}
	for _, d := range st.dests {
		cmds = append(cmds, []string{"set", "upstream", d.Variant, d.Addr})
	}
	retired := make([]string, 0, len(st.retired))
	for r := range st.retired {
		if _, ok := v.weights[r]; ok {
			retired = append(retired, r)
		}
	}
	sort.Strings(retired)
	if st.hasWeight {
		w := []string{"set", "weight", st.cfg.CanaryVariant, pct(st.weight, st.maxWeight)}
		for _, d := range st.dests {
			w = append(w, d.Variant, pct(d.Weight, st.maxWeight))
		}
		for _, r := range retired {
			w = append(w, r, "0.00")
		}
		cmds = append(cmds, w)
	}
	for _, m := range st.managed {
		want := make(map[string]bool)
		for _, r := range st.routes[m] {
			want[r.Name] = true
		}
		for _, name := range v.order {
			if familyOf(name, m) && !want[name] {
				cmds = append(cmds, []string{"del", "route", name})
			}
		}
		for _, r := range st.routes[m] {
			cmds = append(cmds, r.Tokens)
		}
	}
	for _, r := range retired {
		cmds = append(cmds, []string{"del", "upstream", r})
	}
	return cmds
}

// syncReplica brings one replica to the state: always (<force>, an Argo call) or when it does not apply it (a
// background sync). Returns the replica's generation afterwards.
func (st *rolloutState) syncReplica(ctx context.Context, addr, token string, force bool, gen uint64, known bool) (uint64, error) {
	c, err := dialControl(ctx, addr, &st.cfg.TLS, token)
	if err != nil {
		return 0, err
	}
	defer c.Close()
	v, err := readView(c)
	if err != nil {
		return 0, err
	}
	if !force && !st.differs(v, gen, known) {
		return v.gen, nil
	}
	// A change weir published without every worker's acknowledgement is made: go on with the rest, and report the
	// replica unverified (its generation is then forgotten, so the next sync checks it in full).
	var unverified error
	for _, cmd := range st.plan(v) {
		if _, err := c.do(cmd...); err != nil {
			var we *weirError
			if errors.As(err, &we) && we.unacknowledged() {
				unverified = cmp.Or(unverified, err)
				continue
			}
			return 0, err
		}
	}
	if unverified != nil {
		return 0, unverified
	}
	lines, err := c.do("get", "weight")
	if err != nil {
		return 0, err
	}
	_, g, err := parseWeights(lines)
	return g, err
}

// check refuses a state that a control request could not carry (a line break or NUL in a value), before any of it
// is sent.
func (st *rolloutState) check() error {
	for _, cmd := range st.plan(&replicaView{}) {
		for _, t := range cmd {
			if err := checkToken("value", t); err != nil {
				return err
			}
		}
	}
	return nil
}

// resolveReplicas lists the control addresses: the static list, or every address of the Service's host name now.
func resolveReplicas(ctx context.Context, cfg *Config) ([]string, error) {
	if cfg.Service == "" {
		return append([]string(nil), cfg.Replicas...), nil
	}
	host, port, err := net.SplitHostPort(cfg.Service)
	if err != nil {
		return nil, err
	}
	ips, err := net.DefaultResolver.LookupIPAddr(ctx, host)
	if err != nil {
		return nil, fmt.Errorf("service %s: %w", cfg.Service, err)
	}
	seen := make(map[string]bool)
	var out []string
	for _, ip := range ips {
		a := net.JoinHostPort(ip.IP.String(), port)
		if !seen[a] {
			seen[a] = true
			out = append(out, a)
		}
	}
	sort.Strings(out)
	if len(out) == 0 {
		return nil, fmt.Errorf("service %s: no addresses", cfg.Service)
	}
	return out, nil
}

// replicaErrors names every replica that failed and why.
type replicaErrors struct {
	total int
	errs  map[string]error
}

func (e *replicaErrors) Error() string {
	addrs := make([]string, 0, len(e.errs))
	for a := range e.errs {
		addrs = append(addrs, a)
	}
	sort.Strings(addrs)
	parts := make([]string, len(addrs))
	for i, a := range addrs {
		parts[i] = a + ": " + e.errs[a].Error()
	}
	return fmt.Sprintf("weir: %d of %d replicas failed: %s", len(e.errs), e.total, strings.Join(parts, "; "))
}

// forEachReplica runs <fn> on every replica at once, each bounded by the per-replica timeout, and gathers failures.
func forEachReplica(ctx context.Context, cfg *Config, addrs []string, fn func(ctx context.Context, addr string) error) error {
	var mu sync.Mutex
	var wg sync.WaitGroup
	errs := make(map[string]error)
	for _, a := range addrs {
		wg.Add(1)
		go func(a string) {
			defer wg.Done()
			rctx, cancel := context.WithTimeout(ctx, cfg.Timeout.D())
			defer cancel()
			if err := fn(rctx, a); err != nil {
				mu.Lock()
				errs[a] = err
				mu.Unlock()
			}
		}(a)
	}
	wg.Wait()
	if len(errs) > 0 {
		return &replicaErrors{total: len(addrs), errs: errs}
	}
	return nil
}

// managedNames lists the Rollout's managedRoutes in order.
func managedNames(ro *v1alpha1.Rollout) []string {
	tr := ro.Spec.Strategy.Canary.TrafficRouting
	out := make([]string, 0, len(tr.ManagedRoutes))
	for _, m := range tr.ManagedRoutes {
		out = append(out, m.Name)
	}
	return out
}
