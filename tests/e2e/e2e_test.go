package e2e

// make e2e: a real kube-apiserver (on etcd), the real Argo Rollouts controller with weir's plugin installed through
// argo-rollouts-config, the shipped Rollout, Services and AnalysisTemplate, and two weir replicas in front of a
// stable and a canary upstream. Three rollouts run one after the other; every step is checked by traffic.

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/argoproj/argo-rollouts/pkg/apis/rollouts/v1alpha1"
	argoclient "github.com/argoproj/argo-rollouts/pkg/client/clientset/versioned"
	"github.com/argoproj/argo-rollouts/pkg/kubectl-argo-rollouts/cmd/promote"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/client-go/util/retry"
)

const ns = "default"

type env2e struct {
	t        *testing.T
	tl       *timeline
	c        *cluster
	argo     argoclient.Interface
	weirs    []*weir
	stable   *upstream
	canary   *upstream
	analysis string // the template name read from conf/analysis/web.yaml
}

func i32(v int32) *int32 { return &v }

func TestRollouts(t *testing.T) {
	repo := env(t, "REPO")
	tl := &timeline{start: time.Now()}
	dir, err := os.MkdirTemp("", "weir-e2e-")
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("run directory (logs of every process): %s", dir)
	e := &env2e{t: t, tl: tl}
	defer func() {
		if report := os.Getenv("E2E_REPORT"); report != "" {
			status := "passed"
			if t.Failed() {
				status = "FAILED"
			}
			writeReport(report, status, tl)
		}
	}()

	// The workloads: two upstreams and two weir replicas sharing the control token.
	e.stable = startUpstream(t, dir, "stable", freePort(t))
	e.canary = startUpstream(t, dir, "canary", freePort(t))
	token := randHex(32)
	tokenFile := filepath.Join(dir, "token")
	if err := os.WriteFile(tokenFile, []byte(token+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	for i := 1; i <= 2; i++ {
		e.weirs = append(e.weirs, startWeir(t, dir, i, tokenFile, e.stable.port, e.canary.port))
	}
	defer func() {
		for _, w := range e.weirs {
			w.p.stop()
		}
		e.stable.p.stop()
		e.canary.p.stop()
	}()
	tl.add("weir", "weir-1 and weir-2 up (control 127.0.0.1:%d, 127.0.0.1:%d), stable and canary upstreams up",
		e.weirs[0].control, e.weirs[1].control)

	// The control plane.
	e.c = startCluster(t, dir, tl)
	defer e.c.stop()
	e.argo = argoclient.NewForConfigOrDie(e.c.rest)
	crds, _ := filepath.Glob(filepath.Join(env(t, "ARGO_CRDS"), "*-crd.yaml"))
	if len(crds) == 0 {
		t.Fatalf("no CRDs in %s", os.Getenv("ARGO_CRDS"))
	}
	for _, f := range crds {
		for _, o := range readObjects(t, f) {
			e.c.apply(t, "", o)
		}
	}
	tl.add("cluster", "Argo Rollouts CRDs applied from %s (%d files)", os.Getenv("ARGO_CRDS"), len(crds))

	// The plugin, registered as README tells users; only its file location differs (the controller runs here,
	// not in its image, so the binary is where make built it).
	nsObj := &unstructured.Unstructured{Object: map[string]interface{}{"apiVersion": "v1", "kind": "Namespace",
		"metadata": map[string]interface{}{"name": "argo-rollouts"}}}
	e.c.apply(t, "", nsObj)
	for _, o := range readObjects(t, filepath.Join(repo, "docker/kubernetes/argo-rollouts-config.yaml")) {
		plugins, _, _ := unstructured.NestedString(o.Object, "data", "trafficRouterPlugins")
		moved := strings.Replace(plugins, "file:///home/argo-rollouts/rollouts-plugin-trafficrouter-weir",
			"file://"+env(t, "PLUGIN_BIN"), 1)
		if moved == plugins {
			t.Fatalf("argo-rollouts-config.yaml: no file:///home/argo-rollouts/rollouts-plugin-trafficrouter-weir location")
		}
		unstructured.SetNestedField(o.Object, moved, "data", "trafficRouterPlugins")
		e.c.apply(t, "", o)
	}
	// The Secret the README's command creates.
	if _, err := e.c.kube.CoreV1().Secrets(ns).Create(context.Background(), &corev1.Secret{
		ObjectMeta: metav1.ObjectMeta{Name: "weir-control-token"},
		Data:       map[string][]byte{"token": []byte(token)}}, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	wl := startWorkloads(e.c.kube, ns)
	defer wl.close()
	e.c.startController(t, tl)

	// The analysis template, pointed at weir-1's admin port, measuring every 5 s instead of every minute.
	// Every template of conf/analysis/, as its README says to apply them (the Prometheus one is only referenced by
	// the shipped steps, which the first revision skips).
	files, _ := filepath.Glob(filepath.Join(repo, "conf/analysis/*.yaml"))
	for _, f := range files {
		for _, o := range readObjects(t, f) {
			if localTemplate(t, o, e.weirs[0].admin) {
				e.analysis = o.GetName()
			}
			e.c.apply(t, ns, o)
		}
	}
	if e.analysis == "" {
		t.Fatal("conf/analysis/: no AnalysisTemplate with a web metric")
	}
	tl.add("cluster", "AnalysisTemplate %s applied from conf/analysis/web.yaml (url -> 127.0.0.1:%d, interval and initialDelay 5s)",
		e.analysis, e.weirs[0].admin)

	// The Services and the Rollout of docker/kubernetes/rollout.yaml; the plugin is told the replicas' control
	// addresses instead of the weir-control Service's DNS name.
	var rollout *unstructured.Unstructured
	for _, o := range readObjects(t, filepath.Join(repo, "docker/kubernetes/rollout.yaml")) {
		if o.GetKind() == "Rollout" {
			rollout = o
			continue
		}
		e.c.apply(t, ns, o)
	}
	if rollout == nil {
		t.Fatal("rollout.yaml has no Rollout")
	}
	plugin, found, _ := unstructured.NestedMap(rollout.Object, "spec", "strategy", "canary", "trafficRouting", "plugins", "weir/weir")
	if !found {
		t.Fatal("rollout.yaml: no trafficRouting.plugins[weir/weir]")
	}
	delete(plugin, "service")
	plugin["replicas"] = []interface{}{fmt.Sprintf("127.0.0.1:%d", e.weirs[0].control), fmt.Sprintf("127.0.0.1:%d", e.weirs[1].control)}
	unstructured.SetNestedMap(rollout.Object, plugin, "spec", "strategy", "canary", "trafficRouting", "plugins", "weir/weir")
	e.c.apply(t, ns, rollout)
	name := rollout.GetName()
	obs := e.observe(name)
	defer obs()
	e.waitPhase(name, "first revision", func(r *v1alpha1.Rollout) bool {
		return r.Status.Phase == v1alpha1.RolloutPhaseHealthy && r.Status.StableRS != "" && r.Status.StableRS == r.Status.CurrentPodHash
	})
	e.checkAllStable("first revision healthy")

	t.Run("success", func(t *testing.T) { e.t = t; e.scenarioSuccess(name) })
	if t.Failed() {
		return
	}
	t.Run("rollback", func(t *testing.T) { e.t = t; e.scenarioRollback(name) })
	if t.Failed() {
		return
	}
	t.Run("restart", func(t *testing.T) { e.t = t; e.scenarioRestart(name) })
	// The logs stay when something failed, or when E2E_KEEP is set.
	if !t.Failed() && os.Getenv("E2E_KEEP") == "" {
		os.RemoveAll(dir)
	}
}

// localTemplate points every web metric of the template at a local weir admin port and shortens the interval and
// the initial delay (1 minute each in the shipped file) to 5 s.
func localTemplate(t *testing.T, o *unstructured.Unstructured, adminPort int) bool {
	metrics, _, _ := unstructured.NestedSlice(o.Object, "spec", "metrics")
	host := regexp.MustCompile(`^http://weir-admin[^/]*:9901`)
	n := 0
	for i := range metrics {
		m := metrics[i].(map[string]interface{})
		url, ok, _ := unstructured.NestedString(m, "provider", "web", "url")
		if !ok {
			continue
		}
		local := host.ReplaceAllString(url, fmt.Sprintf("http://127.0.0.1:%d", adminPort))
		if local == url {
			t.Fatalf("web.yaml: url %q is not weir-admin's", url)
		}
		unstructured.SetNestedField(m, local, "provider", "web", "url")
		m["interval"] = "5s"
		if _, ok := m["initialDelay"]; ok {
			m["initialDelay"] = "5s"
		}
		n++
	}
	unstructured.SetNestedSlice(o.Object, metrics, "spec", "metrics")
	return n > 0
}

func (e *env2e) get(name string) *v1alpha1.Rollout {
	r, err := e.argo.ArgoprojV1alpha1().Rollouts(ns).Get(context.Background(), name, metav1.GetOptions{})
	if err != nil {
		e.t.Fatal(err)
	}
	return r
}

// release starts a new revision: a new image (the pod template changes) and the scenario's steps.
func (e *env2e) release(name, image string, steps []v1alpha1.CanaryStep, bg *v1alpha1.RolloutAnalysisBackground) {
	err := retry.RetryOnConflict(retry.DefaultRetry, func() error {
		r := e.get(name)
		r.Spec.Template.Spec.Containers[0].Image = image
		r.Spec.Strategy.Canary.Steps = steps
		r.Spec.Strategy.Canary.Analysis = bg
		_, err := e.argo.ArgoprojV1alpha1().Rollouts(ns).Update(context.Background(), r, metav1.UpdateOptions{})
		return err
	})
	if err != nil {
		e.t.Fatal(err)
	}
	e.tl.add("test", "Rollout %s: image %s, %d steps", name, image, len(steps))
}

func (e *env2e) promote(name string) {
	if _, err := promote.PromoteRollout(e.argo.ArgoprojV1alpha1().Rollouts(ns), name, false, false, false); err != nil {
		e.t.Fatal(err)
	}
	e.tl.add("test", "promote (as `kubectl argo rollouts promote %s`)", name)
}

func (e *env2e) waitPhase(name, what string, cond func(r *v1alpha1.Rollout) bool) *v1alpha1.Rollout {
	var r *v1alpha1.Rollout
	waitFor(e.t, what, 180*time.Second, 200*time.Millisecond, func() error {
		r = e.get(name)
		if cond(r) {
			return nil
		}
		if strings.HasPrefix(r.Status.Message, "InvalidSpec") {
			e.t.Fatalf("%s: %s", what, r.Status.Message)
		}
		return fmt.Errorf("phase %s step %v message %q", r.Status.Phase, step(r), r.Status.Message)
	})
	return r
}

func step(r *v1alpha1.Rollout) int32 {
	if r.Status.CurrentStepIndex == nil {
		return -1
	}
	return *r.Status.CurrentStepIndex
}

func verified(r *v1alpha1.Rollout) bool {
	w := r.Status.Canary.Weights
	return w != nil && w.Verified != nil && *w.Verified
}

// atPause waits until the controller stands at step idx paused, and returns the Rollout.
func (e *env2e) atPause(name string, idx int32) *v1alpha1.Rollout {
	return e.waitPhase(name, fmt.Sprintf("paused at step %d", idx), func(r *v1alpha1.Rollout) bool {
		return step(r) == idx && len(r.Status.PauseConditions) > 0 && r.Status.ObservedGeneration == fmt.Sprint(r.Generation)
	})
}

// checkWeight checks that the controller saw the weight verified, that each replica applied it, and that traffic
// through each replica splits accordingly.
func (e *env2e) checkWeight(r *v1alpha1.Rollout, want int32, label string) {
	t := e.t
	if w := r.Status.Canary.Weights; w == nil || w.Canary.Weight != want {
		t.Fatalf("%s: Rollout status weights %+v, want canary %d", label, w, want)
	}
	if !verified(r) {
		t.Fatalf("%s: Rollout is past setWeight %d with weights not verified", label, want)
	}
	for _, w := range e.weirs {
		if got := w.canaryWeight(t); got != float64(want) {
			t.Fatalf("%s: %s applies canary %.2f %%, controller moved on at %d %%", label, w.name(), got, want)
		}
	}
	e.checkSplit(label, float64(want)/100, nil)
}

func (e *env2e) checkSplit(label string, p float64, hdr map[string]string) {
	for _, w := range e.weirs {
		res := w.send(e.t, 400, "/", hdr)
		if res.failed > 0 || res.codes[200] != res.n {
			e.t.Fatalf("%s: %s: %s", label, w.name(), res)
		}
		ok, why := binomialOK(res.by["canary"], res.n, p)
		e.tl.add("traffic", "%s via %s: canary %s", label, w.name(), why)
		if !ok {
			e.t.Fatalf("%s: %s canary split out of bounds: %s", label, w.name(), why)
		}
	}
}

// checkAllStable: both replicas come to no canary weight and no route (the controller's last calls may still be
// on their way), then every request is on stable, x-canary or not.
func (e *env2e) checkAllStable(label string) {
	waitFor(e.t, label+": weir at 0 % with no routes", 30*time.Second, 200*time.Millisecond, func() error {
		for _, w := range e.weirs {
			if c, r := w.canaryWeight(e.t), w.routes(e.t); c != 0 || r != "" {
				return fmt.Errorf("%s: canary %.2f, routes %q", w.name(), c, r)
			}
		}
		return nil
	})
	for _, w := range e.weirs {
		for _, hdr := range []map[string]string{nil, {"x-canary": "1"}} {
			res := w.send(e.t, 200, "/", hdr)
			if res.by["stable"] != res.n || res.codes[200] != res.n {
				e.t.Fatalf("%s: %s (headers %v): %s", label, w.name(), hdr, res)
			}
		}
	}
	e.tl.add("traffic", "%s: both replicas 0 %% canary, no routes; 800 requests (half with x-canary: 1) all on stable", label)
}

// load sends traffic through both replicas until stopped: plain requests, and when devFail, also a developer's
// x-canary requests that the canary answers with 500 (header-routed, so not weighted traffic).
func (e *env2e) load(devFail bool) (stop func() (tally, tally)) {
	done := make(chan struct{})
	var wg sync.WaitGroup
	var mu sync.Mutex
	plain, dev := tally{by: map[string]int{}, codes: map[int]int{}}, tally{by: map[string]int{}, codes: map[int]int{}}
	merge := func(into *tally, r tally) {
		mu.Lock()
		defer mu.Unlock()
		into.n += r.n
		into.failed += r.failed
		for k, v := range r.by {
			into.by[k] += v
		}
		for k, v := range r.codes {
			into.codes[k] += v
		}
	}
	for _, w := range e.weirs {
		wg.Add(1)
		go func(w *weir) {
			defer wg.Done()
			for i := 0; i < 100000; i++ {
				select {
				case <-done:
					return
				case <-time.After(50 * time.Millisecond):
				}
				merge(&plain, w.send(e.t, 8, "/", nil))
				if devFail {
					merge(&dev, w.send(e.t, 2, "/status/500", map[string]string{"x-canary": "1"}))
				}
			}
		}(w)
	}
	return func() (tally, tally) {
		close(done)
		wg.Wait()
		return plain, dev
	}
}

// warm waits until weir-1, which the analysis reads, counts at least n canary requests in its /stats window.
func (e *env2e) warm(n float64) {
	waitFor(e.t, "canary requests in weir-1's window", 60*time.Second, 200*time.Millisecond, func() error {
		st := e.weirs[0].stats(e.t)
		v, _ := st["variants"].(map[string]interface{})
		c, _ := v["canary"].(map[string]interface{})
		if wt, ok := c["weighted"].(map[string]interface{}); ok {
			c = wt
		}
		w, _ := c["window"].(map[string]interface{})
		got, _ := w["requests"].(float64)
		if got < n {
			return fmt.Errorf("%v canary requests in the window", got)
		}
		return nil
	})
}

func (e *env2e) analysisRun(name string) *v1alpha1.AnalysisRun {
	ar, err := e.argo.ArgoprojV1alpha1().AnalysisRuns(ns).Get(context.Background(), name, metav1.GetOptions{})
	if err != nil {
		e.t.Fatal(err)
	}
	return ar
}

func (e *env2e) scenarioSuccess(name string) {
	t := e.t
	e.tl.add("test", "--- scenario 1: success ---")
	steps := []v1alpha1.CanaryStep{
		{SetWeight: i32(10)},
		{Pause: &v1alpha1.RolloutPause{}},
		{SetHeaderRoute: &v1alpha1.SetHeaderRoute{Name: "dev-header", Match: []v1alpha1.HeaderRoutingMatch{
			{HeaderName: "x-canary", HeaderValue: &v1alpha1.StringMatch{Exact: "1"}}}}},
		{Pause: &v1alpha1.RolloutPause{}},
		{SetMirrorRoute: &v1alpha1.SetMirrorRoute{Name: "shadow", Percentage: i32(100), Match: []v1alpha1.RouteMatch{
			{Method: &v1alpha1.StringMatch{Exact: "GET"}, Path: &v1alpha1.StringMatch{Prefix: "/"}}}}},
		{Pause: &v1alpha1.RolloutPause{}},
		{SetWeight: i32(50)},
		{Pause: &v1alpha1.RolloutPause{}},
	}
	bg := &v1alpha1.RolloutAnalysisBackground{StartingStep: i32(6), RolloutAnalysis: e.rolloutAnalysis()}
	e.release(name, "argoproj/rollouts-demo:yellow", steps, bg)

	r := e.atPause(name, 1)
	e.checkWeight(r, 10, "setWeight 10")
	e.promote(name)

	e.atPause(name, 3)
	for _, w := range e.weirs {
		if routes := w.routes(t); !strings.Contains(routes, "dev-header") {
			t.Fatalf("setHeaderRoute: %s routes:\n%s", w.name(), routes)
		}
		res := w.send(t, 200, "/", map[string]string{"x-canary": "1"})
		if res.by["canary"] != res.n {
			t.Fatalf("setHeaderRoute: x-canary: 1 via %s: %s", w.name(), res)
		}
	}
	e.tl.add("traffic", "setHeaderRoute: 400 requests with x-canary: 1 all on canary")
	e.checkSplit("setHeaderRoute, no header", 0.10, nil)
	e.promote(name)

	e.atPause(name, 5)
	for _, w := range e.weirs {
		before, err := e.canary.count()
		if err != nil {
			t.Fatal(err)
		}
		const n = 300
		res := w.send(t, n, "/", nil)
		if res.codes[200] != n {
			t.Fatalf("setMirrorRoute via %s: %s", w.name(), res)
		}
		// Every GET is copied to the canary, so the canary sees at least n requests (its own share plus the
		// copies of stable's) and at most n plus its own share (if copies of its own requests are made too).
		var got int
		waitFor(t, "mirrored copies", 15*time.Second, 50*time.Millisecond, func() error {
			after, err := e.canary.count()
			if err != nil {
				return err
			}
			got = after - before
			if got < n {
				return fmt.Errorf("canary got %d requests for %d GETs (%d served by canary)", got, n, res.by["canary"])
			}
			return nil
		})
		if got > n+res.by["canary"] {
			t.Fatalf("setMirrorRoute via %s: canary got %d requests for %d GETs", w.name(), got, n)
		}
		e.tl.add("traffic", "setMirrorRoute via %s: %d GETs, %d served by canary, canary upstream saw %d (copies included)",
			w.name(), n, res.by["canary"], got)
	}

	// setWeight 50 with the background analysis running; a developer keeps sending failing requests through the
	// header route meanwhile, which must not count against the canary's weighted traffic. The load starts first,
	// so the analysis's first measurement already has canary requests in weir's window (the template calls fewer
	// than 50 inconclusive, which would pause the rollout).
	stopLoad := e.load(true)
	e.warm(100)
	e.promote(name)
	r = e.atPause(name, 7)
	e.checkWeight(r, 50, "setWeight 50")
	var arName string
	waitFor(t, "background analysis measurements", 120*time.Second, 500*time.Millisecond, func() error {
		r := e.get(name)
		s := r.Status.Canary.CurrentBackgroundAnalysisRunStatus
		if s == nil {
			return fmt.Errorf("no background AnalysisRun yet")
		}
		arName = s.Name
		ar := e.analysisRun(s.Name)
		if ar.Status.Phase == v1alpha1.AnalysisPhaseFailed || ar.Status.Phase == v1alpha1.AnalysisPhaseError {
			t.Fatalf("background analysis %s: %s: %s", s.Name, ar.Status.Phase, ar.Status.Message)
		}
		ok := 0
		for _, m := range ar.Status.MetricResults {
			if m.Successful >= 2 {
				ok++
			}
		}
		if ok < len(ar.Spec.Metrics) {
			return fmt.Errorf("%s: %d of %d metrics have 2 successful measurements", s.Name, ok, len(ar.Spec.Metrics))
		}
		return nil
	})
	plain, dev := stopLoad()
	if dev.codes[500] == 0 || dev.by["canary"] != dev.n {
		t.Fatalf("developer requests did not reach the canary's 500s: %s", dev)
	}
	e.tl.add("traffic", "during analysis: weighted %s; developer x-canary /status/500: %s", plain, dev)
	e.tl.add("analysis", "%s: every metric successful twice while the developer's 500s went through the header route", arName)
	e.promote(name)

	e.waitPhase(name, "promoted", func(r *v1alpha1.Rollout) bool {
		return r.Status.Phase == v1alpha1.RolloutPhaseHealthy && r.Status.StableRS == r.Status.CurrentPodHash
	})
	e.tl.add("controller", "rollout complete: stable is the new revision")
	e.checkAllStable("after promotion")
}

func (e *env2e) rolloutAnalysis() v1alpha1.RolloutAnalysis {
	return v1alpha1.RolloutAnalysis{
		Templates: []v1alpha1.AnalysisTemplateRef{{TemplateName: e.analysis}},
		Args: []v1alpha1.AnalysisRunArgument{{Name: "namespace",
			ValueFrom: &v1alpha1.ArgumentValueFrom{FieldRef: &v1alpha1.FieldRef{FieldPath: "metadata.namespace"}}}},
	}
}

func (e *env2e) scenarioRollback(name string) {
	t := e.t
	e.tl.add("test", "--- scenario 2: rollback ---")
	a := e.rolloutAnalysis()
	// The header route comes after a setWeight: before one, the canary ReplicaSet has no replicas and the
	// controller removes managed routes on every reconcile; and an aborted rollout goes back to step 0, whose
	// setHeaderRoute the controller would then apply again after each removal.
	steps := []v1alpha1.CanaryStep{
		{SetWeight: i32(20)},
		{SetHeaderRoute: &v1alpha1.SetHeaderRoute{Name: "dev-header", Match: []v1alpha1.HeaderRoutingMatch{
			{HeaderName: "x-canary", HeaderValue: &v1alpha1.StringMatch{Exact: "1"}}}}},
		{Pause: &v1alpha1.RolloutPause{}},
		{Analysis: &a},
		{Pause: &v1alpha1.RolloutPause{}},
	}
	e.release(name, "argoproj/rollouts-demo:red", steps, nil)
	r := e.atPause(name, 2)
	e.checkWeight(r, 20, "setWeight 20")
	for _, w := range e.weirs {
		if routes := w.routes(t); !strings.Contains(routes, "dev-header") {
			t.Fatalf("setHeaderRoute: %s routes:\n%s", w.name(), routes)
		}
	}
	// The canary breaks: its process goes away, so weir answers its share with 5xx. Only weighted traffic runs.
	e.canary.p.stop()
	e.tl.add("test", "canary upstream stopped: weir answers the canary's share with 5xx")
	stopLoad := e.load(false)
	e.warm(100)
	e.promote(name)
	r = e.waitPhase(name, "abort", func(r *v1alpha1.Rollout) bool { return r.Status.Abort })
	plain, _ := stopLoad()
	e.tl.add("controller", "aborted: %s", r.Status.Message)
	e.tl.add("traffic", "until the abort: %s", plain)
	if plain.codes[200] == plain.n {
		t.Fatalf("no failing canary requests before the abort: %s", plain)
	}
	e.checkAllStable("after abort")
	e.canary.start(t)
	e.tl.add("test", "canary upstream restarted")
}

func (e *env2e) scenarioRestart(name string) {
	t := e.t
	e.tl.add("test", "--- scenario 3: a weir replica restarts mid-rollout ---")
	steps := []v1alpha1.CanaryStep{
		{SetWeight: i32(30)},
		{Pause: &v1alpha1.RolloutPause{}},
		{SetWeight: i32(60)},
		{Pause: &v1alpha1.RolloutPause{}},
	}
	e.release(name, "argoproj/rollouts-demo:green", steps, nil)
	r := e.atPause(name, 1)
	e.checkWeight(r, 30, "setWeight 30")

	// weir-2 goes away and comes back as a new pod would: without its state file, so at 0 % canary.
	w := e.weirs[1]
	w.p.stop()
	os.Remove(w.state)
	w.start(t)
	start := time.Now()
	if got := w.canaryWeight(t); got != 0 {
		t.Fatalf("restarted %s starts at %.2f %%, want 0 (no state)", w.name(), got)
	}
	e.tl.add("test", "%s restarted without its state: canary 0 %%", w.name())
	waitFor(t, "restarted replica converges", 60*time.Second, 100*time.Millisecond, func() error {
		if got := w.canaryWeight(t); got != 30 {
			return fmt.Errorf("%s at %.2f %%", w.name(), got)
		}
		return nil
	})
	e.tl.add("weir", "%s back at 30 %% after %.1fs, with the controller still paused at step 1", w.name(), time.Since(start).Seconds())
	if s := step(e.get(name)); s != 1 {
		t.Fatalf("controller moved to step %d before the replica converged", s)
	}
	e.checkSplit("after the restart", 0.30, nil)
	e.promote(name)
	r = e.atPause(name, 3)
	e.checkWeight(r, 60, "setWeight 60")
	e.promote(name)
	e.waitPhase(name, "promoted", func(r *v1alpha1.Rollout) bool {
		return r.Status.Phase == v1alpha1.RolloutPhaseHealthy && r.Status.StableRS == r.Status.CurrentPodHash
	})
	e.tl.add("controller", "rollout complete")
	e.checkAllStable("after promotion")
}

// observe logs, until stopped, each change the controller makes to the Rollout and its AnalysisRuns and each
// change weir applies (generation, weights, routes).
func (e *env2e) observe(name string) func() {
	done := make(chan struct{})
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		last := map[string]string{}
		note := func(key, who, s string) {
			if last[key] != s {
				last[key] = s
				e.tl.add(who, "%s", s)
			}
		}
		for {
			select {
			case <-done:
				return
			case <-time.After(150 * time.Millisecond):
			}
			ctx, cancel := context.WithTimeout(context.Background(), 3*time.Second)
			if r, err := e.argo.ArgoprojV1alpha1().Rollouts(ns).Get(ctx, name, metav1.GetOptions{}); err == nil {
				wt := "-"
				if w := r.Status.Canary.Weights; w != nil {
					v := "unverified"
					if w.Verified != nil && *w.Verified {
						v = "verified"
					}
					wt = fmt.Sprintf("canary %d %% %s", w.Canary.Weight, v)
				}
				desc := ""
				if s := step(r); s >= 0 && int(s) < len(r.Spec.Strategy.Canary.Steps) {
					desc = " " + describe(r.Spec.Strategy.Canary.Steps[s])
				}
				paused := ""
				if len(r.Status.PauseConditions) > 0 {
					paused = " paused"
				}
				abort := ""
				if r.Status.Abort {
					abort = " ABORTED"
				}
				note("rollout", "controller", fmt.Sprintf("%s step %d%s%s%s, weights %s, %s",
					r.Status.Phase, step(r), desc, paused, abort, wt, r.Status.Message))
			}
			if list, err := e.argo.ArgoprojV1alpha1().AnalysisRuns(ns).List(ctx, metav1.ListOptions{}); err == nil {
				for _, ar := range list.Items {
					var ms []string
					for _, m := range ar.Status.MetricResults {
						val := ""
						if n := len(m.Measurements); n > 0 {
							val = " last " + m.Measurements[n-1].Value
						}
						ms = append(ms, fmt.Sprintf("%s %s (%d ok, %d failed, %d inconclusive%s)", m.Name, m.Phase,
							m.Successful, m.Failed, m.Inconclusive, val))
					}
					note("ar/"+ar.Name, "analysis", fmt.Sprintf("%s %s: %s", ar.Name, ar.Status.Phase, strings.Join(ms, "; ")))
				}
			}
			cancel()
			for _, w := range e.weirs {
				wt, err1 := ctlQuiet(w, "get", "weight")
				rt, err2 := ctlQuiet(w, "show", "routes")
				if err1 != nil || err2 != nil {
					note(w.name(), w.name(), "not answering")
					continue
				}
				rt = strings.ReplaceAll(rt, "\n", " | ")
				if rt == "" {
					rt = "none"
				}
				note(w.name(), w.name(), fmt.Sprintf("%s; routes: %s", strings.ReplaceAll(wt, "\n", ", "), rt))
			}
		}
	}()
	return func() { close(done); wg.Wait() }
}

func describe(s v1alpha1.CanaryStep) string {
	switch {
	case s.SetWeight != nil:
		return fmt.Sprintf("(setWeight %d)", *s.SetWeight)
	case s.Pause != nil:
		return "(pause)"
	case s.SetHeaderRoute != nil:
		return "(setHeaderRoute " + s.SetHeaderRoute.Name + ")"
	case s.SetMirrorRoute != nil:
		return "(setMirrorRoute " + s.SetMirrorRoute.Name + ")"
	case s.Analysis != nil:
		return "(analysis)"
	}
	return ""
}

func writeReport(path, status string, tl *timeline) {
	var b strings.Builder
	fmt.Fprintf(&b, "# make e2e: the last run's timeline\n\n")
	fmt.Fprintf(&b, "Written by `make e2e` (tests/e2e/). Run %s at %s UTC, %.0f s from the first process to the end "+
		"(the binaries were already in the cache).\n\n", status, tl.start.UTC().Format("2006-01-02 15:04"),
		time.Since(tl.start).Seconds())
	b.WriteString("Columns: seconds since start, who (controller: the Rollout's status as the Argo Rollouts " +
		"controller wrote it; analysis: its AnalysisRuns; weir-N: `get weight` and `show routes` of that replica; " +
		"traffic: what real requests through weir showed; test: what the test did).\n\n```\n")
	b.WriteString(tl.text())
	b.WriteString("```\n")
	os.WriteFile(path, []byte(b.String()), 0o644)
}
