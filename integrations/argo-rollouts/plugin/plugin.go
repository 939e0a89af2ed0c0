// Package plugin implements Argo Rollouts' traffic-router plugin interface for weir (SPEC §8): every call becomes
// control requests (SPEC §4) sent to every weir replica, and a background sync keeps replicas that missed a call (or
// restarted) in step between Argo's calls.
package plugin

import (
	"context"
	"fmt"
	"slices"
	"sync"
	"time"

	"github.com/argoproj/argo-rollouts/pkg/apis/rollouts/v1alpha1"
	"github.com/argoproj/argo-rollouts/utils/plugin/types"
	"github.com/hashicorp/go-hclog"
)

// stateTTL: a Rollout that Argo has not called for this long is forgotten (deleted, or moved to another router), and
// its state is no longer pushed. Argo reconciles every Rollout at least every 15 minutes (its resync), and each
// reconcile calls SetWeight; a Rollout forgotten by mistake is tracked again at its next call.
const stateTTL = 35 * time.Minute

// Plugin is the server side of Argo's RpcTrafficRouterPlugin.
type Plugin struct {
	log  hclog.Logger
	kube kube

	mu       sync.Mutex
	states   map[string]*rolloutState // by namespace/name; a state holds the UID of the Rollout it is for
	lastCall map[*rolloutState]time.Time
	ttl      time.Duration
	now      func() time.Time
}

// New returns a plugin that logs to <log>.
func New(log hclog.Logger) *Plugin {
	return &Plugin{log: log, states: make(map[string]*rolloutState), lastCall: make(map[*rolloutState]time.Time),
		ttl: stateTTL, now: time.Now}
}

// maxWeight is the Rollout's trafficRouting.maxTrafficWeight: Argo's weights are out of it (default 100).
func maxWeight(ro *v1alpha1.Rollout) int32 {
	if tr := ro.Spec.Strategy.Canary.TrafficRouting; tr != nil && tr.MaxTrafficWeight != nil && *tr.MaxTrafficWeight > 0 {
		return *tr.MaxTrafficWeight
	}
	return 100
}

func rpcErr(err error) types.RpcError {
	if err == nil {
		return types.RpcError{}
	}
	return types.RpcError{ErrorString: err.Error()}
}

// InitPlugin has nothing to prepare: the Kubernetes client is made when a Rollout first needs it.
func (p *Plugin) InitPlugin() types.RpcError { return types.RpcError{} }

// Type names the router in Argo's events and conditions.
func (p *Plugin) Type() string { return "weir" }

// begin finds (or starts tracking) <ro>'s state with its current configuration and returns it locked.
func (p *Plugin) begin(ro *v1alpha1.Rollout) (*rolloutState, error) {
	cfg, err := ParseConfig(ro)
	if err != nil {
		return nil, err
	}
	key, uid := ro.Namespace+"/"+ro.Name, string(ro.UID)
	p.mu.Lock()
	st, ok := p.states[key]
	if ok && st.uid != uid {
		// The Rollout was deleted and made again: the new one starts from nothing, and the old one's state is no
		// longer pushed.
		p.forget(st)
		ok = false
	}
	if !ok {
		st = &rolloutState{key: key, uid: uid, retired: make(map[string]bool), routes: make(map[string][]routeSpec),
			gens: make(map[string]uint64), cfg: cfg}
		p.states[key] = st
		go p.syncLoop(st)
	}
	p.lastCall[st] = p.now()
	p.mu.Unlock()
	st.mu.Lock()
	st.cfg = cfg
	st.managed = managedNames(ro)
	st.maxWeight = maxWeight(ro)
	return st, nil
}

// forget stops tracking <st>. p.mu is held.
func (p *Plugin) forget(st *rolloutState) {
	if p.states[st.key] == st {
		delete(p.states, st.key)
	}
	delete(p.lastCall, st)
	st.gone.Store(true)
}

// live says whether <st> is still tracked, forgetting it when Argo has not called for it for the TTL.
func (p *Plugin) live(st *rolloutState) bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	if st.gone.Load() {
		return false
	}
	if p.now().Sub(p.lastCall[st]) > p.ttl {
		p.log.Info("forgetting a Rollout not called for", "rollout", st.key, "uid", st.uid, "ttl", p.ttl)
		p.forget(st)
		return false
	}
	return true
}

// push sends the whole state to every replica (an Argo call) or to those that do not apply it (<force> false).
// st.mu is held.
func (p *Plugin) push(st *rolloutState, force bool) error {
	ctx := context.Background()
	addrs, token, err := p.prepare(ctx, st.cfg)
	if err != nil {
		return err
	}
	gens := make(map[string]uint64, len(addrs))
	var gmu sync.Mutex
	err = forEachReplica(ctx, st.cfg, addrs, func(ctx context.Context, addr string) error {
		g, known := st.gens[addr]
		ng, err := st.syncReplica(ctx, addr, token, force, g, known)
		if err == nil {
			gmu.Lock()
			gens[addr] = ng
			gmu.Unlock()
		}
		return err
	})
	// A replica that failed must be checked in full next time: forget its generation.
	for _, a := range addrs {
		if g, ok := gens[a]; ok {
			st.gens[a] = g
		} else {
			delete(st.gens, a)
		}
	}
	return err
}

// prepare lists the replicas and reads the token, each within the per-replica timeout.
func (p *Plugin) prepare(ctx context.Context, cfg *Config) ([]string, string, error) {
	rctx, cancel := context.WithTimeout(ctx, cfg.Timeout.D())
	defer cancel()
	addrs, err := resolveReplicas(rctx, cfg)
	if err != nil {
		return nil, "", err
	}
	tctx, cancel2 := context.WithTimeout(ctx, cfg.Timeout.D())
	defer cancel2()
	token, err := p.kube.token(tctx, cfg)
	return addrs, token, err
}

func (p *Plugin) call(ro *v1alpha1.Rollout, what string, change func(st *rolloutState) error) types.RpcError {
	st, err := p.begin(ro)
	if err != nil {
		return rpcErr(fmt.Errorf("%s: %w", what, err))
	}
	defer st.mu.Unlock()
	prev := st.snapshot()
	if err := change(st); err != nil {
		st.restore(prev)
		return rpcErr(fmt.Errorf("%s: %w", what, err))
	}
	if err := st.check(); err != nil {
		st.restore(prev)
		return rpcErr(fmt.Errorf("%s: %w", what, err))
	}
	if err := p.push(st, true); err != nil {
		if onlyUnacknowledged(err) {
			// weir made every change but some worker did not acknowledge one in time: the goal stands, the background
			// sync checks those replicas again, and VerifyWeight reads what they apply.
			p.log.Warn("call applied but not verified", "rollout", st.key, "call", what, "error", err)
			st.lastErr = ""
			return types.RpcError{}
		}
		// A replica that is down keeps the new state as the goal (the background sync gets it there); a request weir
		// refuses (a regex it cannot compile, say) would be refused on every sync too, so the goal stays the old one.
		if refused(err) {
			st.restore(prev)
		}
		p.log.Warn("call failed", "rollout", st.key, "call", what, "error", err)
		return rpcErr(fmt.Errorf("%s: %w", what, err))
	}
	st.lastErr = ""
	return types.RpcError{}
}

// UpdateHash: the canary's pod-template hash salts weir's sticky hash, so each release picks a fresh cohort.
func (p *Plugin) UpdateHash(ro *v1alpha1.Rollout, canaryHash, stableHash string, _ []v1alpha1.WeightDestination) types.RpcError {
	return p.call(ro, "UpdateHash", func(st *rolloutState) error {
		if err := checkToken("canary hash", canaryHash); err != nil {
			return err
		}
		if canaryHash != "" {
			st.salt, st.hasSalt = canaryHash, true
		}
		return nil
	})
}

// SetWeight sets the canary's weight and the experiment destinations' (each a weir variant, declared at run time).
func (p *Plugin) SetWeight(ro *v1alpha1.Rollout, desiredWeight int32, additional []v1alpha1.WeightDestination) types.RpcError {
	return p.call(ro, "SetWeight", func(st *rolloutState) error {
		if desiredWeight < 0 || desiredWeight > st.maxWeight {
			return fmt.Errorf("weight %d is not within 0..%d (maxTrafficWeight)", desiredWeight, st.maxWeight)
		}
		dests, err := p.destinations(ro.Namespace, st.cfg, st.maxWeight, additional)
		if err != nil {
			return err
		}
		for _, d := range st.dests {
			if !slices.ContainsFunc(dests, func(n dest) bool { return n.Variant == d.Variant }) {
				st.retired[d.Variant] = true
			}
		}
		for _, d := range dests {
			delete(st.retired, d.Variant)
		}
		st.weight, st.hasWeight, st.dests = desiredWeight, true, dests
		return nil
	})
}

func (p *Plugin) destinations(ns string, cfg *Config, maxW int32, add []v1alpha1.WeightDestination) ([]dest, error) {
	out := make([]dest, 0, len(add))
	sum := int32(0)
	for _, wd := range add {
		if wd.ServiceName == "" {
			return nil, fmt.Errorf("additional destination without serviceName")
		}
		v := variantFor(wd.ServiceName)
		if v == cfg.CanaryVariant || v == cfg.StableVariant {
			return nil, fmt.Errorf("additional destination %s would be weir variant %s, the canary or stable one", wd.ServiceName, v)
		}
		ctx, cancel := context.WithTimeout(context.Background(), cfg.Timeout.D())
		addr, err := p.kube.destination(ctx, ns, wd.ServiceName, cfg.ClusterDomain)
		cancel()
		if err != nil {
			return nil, fmt.Errorf("additional destination %s: %w", wd.ServiceName, err)
		}
		sum += wd.Weight
		out = append(out, dest{Variant: v, Addr: addr, Weight: wd.Weight})
	}
	if sum > maxW || sum < 0 {
		return nil, fmt.Errorf("additional destinations weigh %d together, over maxTrafficWeight %d", sum, maxW)
	}
	return out, nil
}

func (p *Plugin) setRoute(ro *v1alpha1.Rollout, what, name string, specs []routeSpec, err error) types.RpcError {
	return p.call(ro, what, func(st *rolloutState) error {
		if err != nil {
			return err
		}
		if !slices.Contains(st.managed, name) {
			return fmt.Errorf("route %q is not in the Rollout's managedRoutes", name)
		}
		st.routes[name] = specs
		return nil
	})
}

// SetHeaderRoute: one weir header route to the canary per match alternative; an empty match removes the route.
func (p *Plugin) SetHeaderRoute(ro *v1alpha1.Rollout, hr *v1alpha1.SetHeaderRoute) types.RpcError {
	cfg, err := ParseConfig(ro)
	if err != nil {
		return rpcErr(fmt.Errorf("SetHeaderRoute: %w", err))
	}
	specs, err := headerRoutes(hr, cfg.CanaryVariant)
	return p.setRoute(ro, "SetHeaderRoute", hr.Name, specs, err)
}

// SetMirrorRoute: one weir mirror route copying to the canary per match alternative; an empty match removes it.
func (p *Plugin) SetMirrorRoute(ro *v1alpha1.Rollout, mr *v1alpha1.SetMirrorRoute) types.RpcError {
	cfg, err := ParseConfig(ro)
	if err != nil {
		return rpcErr(fmt.Errorf("SetMirrorRoute: %w", err))
	}
	specs, err := mirrorRoutes(mr, cfg.CanaryVariant)
	return p.setRoute(ro, "SetMirrorRoute", mr.Name, specs, err)
}

// RemoveManagedRoutes deletes every weir route of the Rollout's managedRoutes (NAME and its NAME~N alternatives);
// other routes stay.
func (p *Plugin) RemoveManagedRoutes(ro *v1alpha1.Rollout) types.RpcError {
	return p.call(ro, "RemoveManagedRoutes", func(st *rolloutState) error {
		clear(st.routes)
		return nil
	})
}

// VerifyWeight is true only when every replica answers `get weight` with the canary and each destination at its
// weight. It changes nothing; replicas that could not be asked make it false (and are logged).
func (p *Plugin) VerifyWeight(ro *v1alpha1.Rollout, desiredWeight int32, additional []v1alpha1.WeightDestination) (types.RpcVerified, types.RpcError) {
	cfg, err := ParseConfig(ro)
	if err != nil {
		return types.NotVerified, rpcErr(fmt.Errorf("VerifyWeight: %w", err))
	}
	ctx := context.Background()
	addrs, token, err := p.prepare(ctx, cfg)
	if err != nil {
		return types.NotVerified, rpcErr(fmt.Errorf("VerifyWeight: %w", err))
	}
	maxW := maxWeight(ro)
	want := map[string]string{cfg.CanaryVariant: pct(desiredWeight, maxW)}
	for _, wd := range additional {
		want[variantFor(wd.ServiceName)] = pct(wd.Weight, maxW)
	}
	err = forEachReplica(ctx, cfg, addrs, func(ctx context.Context, addr string) error {
		c, err := dialControl(ctx, addr, &cfg.TLS, token)
		if err != nil {
			return err
		}
		defer c.Close()
		lines, err := c.do("get", "weight")
		if err != nil {
			return err
		}
		have, _, err := parseWeights(lines)
		if err != nil {
			return err
		}
		for v, w := range want {
			if have[v] != w {
				return fmt.Errorf("%s is at %q, not %s", v, have[v], w)
			}
		}
		return nil
	})
	if err != nil {
		p.log.Info("weight not verified", "rollout", ro.Namespace+"/"+ro.Name, "reason", err)
		return types.NotVerified, types.RpcError{}
	}
	return types.Verified, types.RpcError{}
}

// syncLoop pushes <st> every syncInterval to replicas that do not apply it, until Argo stops calling for it.
func (p *Plugin) syncLoop(st *rolloutState) {
	for {
		st.mu.Lock()
		iv := st.cfg.SyncInterval.D()
		st.mu.Unlock()
		time.Sleep(iv)
		if !p.live(st) {
			return
		}
		st.mu.Lock()
		if st.gone.Load() { // replaced while this loop waited for the lock
			st.mu.Unlock()
			return
		}
		err := p.push(st, false)
		msg := ""
		if err != nil {
			msg = err.Error()
		}
		if msg != st.lastErr {
			if err != nil {
				p.log.Warn("background sync failed", "rollout", st.key, "error", err)
			} else {
				p.log.Info("background sync: every replica applies the state again", "rollout", st.key)
			}
			st.lastErr = msg
		}
		st.mu.Unlock()
	}
}
