package manifests

import (
	"fmt"
	"net"
	"os"
	"os/exec"
	"path"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	rollouts "github.com/argoproj/argo-rollouts/pkg/apis/rollouts/v1alpha1"
	plugintypes "github.com/argoproj/argo-rollouts/utils/plugin/types"
	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	policyv1 "k8s.io/api/policy/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/util/intstr"
	psapi "k8s.io/pod-security-admission/api"
	"k8s.io/pod-security-admission/policy"
	weirplugin "weir/integrations/argo-rollouts/plugin"
)

const k8sDir = "docker/kubernetes"

func TestStrictDecodeEveryDocument(t *testing.T) {
	docs := loadAll(t)
	kinds := map[string]int{}
	for _, d := range docs {
		kinds[d.kind]++
	}
	t.Logf("%d documents decoded strictly: %v", len(docs), kinds)
}

// The decoder itself: a misspelt field in a real document must fail, including a misspelling only in letter case
// (which encoding/json would accept) and a duplicated key.
func TestStrictDecodeRejectsMisspeltFields(t *testing.T) {
	root := repoRoot(t)
	cases := []struct{ file, kind, from, to string }{
		{"weir.yaml", "Deployment", "readOnlyRootFilesystem:", "readOnlyRootFileSystem:"},
		{"weir.yaml", "Deployment", "terminationGracePeriodSeconds:", "terminationGracePeriod:"},
		{"weir.yaml", "Service", "publishNotReadyAddresses:", "publishNotReadyAddress:"},
		{"weir.yaml", "Deployment", "  replicas: 2\n", "  replicas: 2\n  replicas: 3\n"},
		{"rollout.yaml", "Rollout", "setHeaderRoute:", "setHeaderRoutes:"},
		{"rollout.yaml", "Rollout", "canaryService:", "canaryservice:"},
	}
	for _, c := range cases {
		data, err := os.ReadFile(filepath.Join(root, k8sDir, c.file))
		if err != nil {
			t.Fatal(err)
		}
		ys, err := splitDocs(data)
		if err != nil {
			t.Fatal(err)
		}
		tried := false
		for i, y := range ys {
			d, err := decodeDoc(c.file, i, y)
			if err != nil {
				t.Fatalf("%s document %d: %v", c.file, i, err)
			}
			if d.kind != c.kind || !strings.Contains(string(y), c.from) {
				continue
			}
			tried = true
			bad := []byte(strings.Replace(string(y), c.from, c.to, 1))
			if _, err := decodeDoc(c.file, i, bad); err == nil {
				t.Errorf("%s %s with %q for %q decoded without error", c.file, d.name, c.to, c.from)
			} else {
				t.Logf("%s %s, %q -> %q: %v", c.file, d.name, strings.TrimSpace(c.from), strings.TrimSpace(c.to), err)
			}
			break
		}
		if !tried {
			t.Errorf("%s: no %s containing %q to misspell", c.file, c.kind, c.from)
		}
	}
}

// Every pod template passes the Pod Security Admission library's own "restricted" checks, and carries the fields
// explicitly rather than relying on defaults: non-root, no privilege escalation, no capabilities, RuntimeDefault
// seccomp, a read-only root, requests and limits.
func TestPodSecurityRestricted(t *testing.T) {
	docs := loadAll(t)
	eval, err := policy.NewEvaluator(policy.DefaultChecks())
	if err != nil {
		t.Fatal(err)
	}
	lv := psapi.LevelVersion{Level: psapi.LevelRestricted, Version: psapi.LatestVersion()}
	pts := podTemplates(docs)
	if len(pts) == 0 {
		t.Fatal("no workloads")
	}
	for _, pt := range pts {
		agg := policy.AggregateCheckResults(eval.EvaluatePod(lv, &pt.tmpl.ObjectMeta, &pt.tmpl.Spec))
		if !agg.Allowed {
			t.Errorf("%v: Pod Security restricted forbids: %s", pt.owner, agg.ForbiddenDetail())
		}
		spec := &pt.tmpl.Spec
		psc := spec.SecurityContext
		if psc == nil || psc.RunAsNonRoot == nil || !*psc.RunAsNonRoot {
			t.Errorf("%v: pod securityContext.runAsNonRoot is not true", pt.owner)
		}
		if psc == nil || psc.SeccompProfile == nil || psc.SeccompProfile.Type != corev1.SeccompProfileTypeRuntimeDefault {
			t.Errorf("%v: pod securityContext.seccompProfile is not RuntimeDefault", pt.owner)
		}
		if spec.AutomountServiceAccountToken == nil || *spec.AutomountServiceAccountToken {
			t.Errorf("%v: automountServiceAccountToken is not false (nothing here calls the API)", pt.owner)
		}
		for _, c := range allContainers(spec) {
			where := fmt.Sprintf("%v container %s", pt.owner, c.Name)
			sc := c.SecurityContext
			switch {
			case sc == nil:
				t.Errorf("%s: no securityContext", where)
				continue
			case sc.AllowPrivilegeEscalation == nil || *sc.AllowPrivilegeEscalation:
				t.Errorf("%s: allowPrivilegeEscalation is not false", where)
			case sc.ReadOnlyRootFilesystem == nil || !*sc.ReadOnlyRootFilesystem:
				t.Errorf("%s: readOnlyRootFilesystem is not true", where)
			case sc.RunAsNonRoot == nil || !*sc.RunAsNonRoot:
				t.Errorf("%s: runAsNonRoot is not true", where)
			case sc.Capabilities == nil || len(sc.Capabilities.Drop) != 1 || sc.Capabilities.Drop[0] != "ALL" ||
				len(sc.Capabilities.Add) != 0:
				t.Errorf("%s: capabilities are not exactly drop [ALL]", where)
			}
			for _, r := range []corev1.ResourceName{corev1.ResourceCPU, corev1.ResourceMemory} {
				if _, ok := c.Resources.Requests[r]; !ok {
					t.Errorf("%s: no %s request", where, r)
				}
				if _, ok := c.Resources.Limits[r]; !ok {
					t.Errorf("%s: no %s limit", where, r)
				}
			}
		}
	}
}

// Every image names a tag other than latest, or a digest.
func TestImagesPinned(t *testing.T) {
	docs := loadAll(t)
	n := 0
	for _, pt := range podTemplates(docs) {
		for _, c := range allContainers(&pt.tmpl.Spec) {
			n++
			if err := pinned(c.Image); err != nil {
				t.Errorf("%v container %s: image %q: %v", pt.owner, c.Name, c.Image, err)
			}
		}
	}
	if n == 0 {
		t.Fatal("no containers")
	}
	for _, bad := range []string{"weir", "weir:latest", "registry:5000/weir", "r.example/a/weir:latest"} {
		if pinned(bad) == nil {
			t.Errorf("pinned(%q) accepted it", bad)
		}
	}
}

func pinned(image string) error {
	if strings.Contains(image, "@sha256:") {
		return nil
	}
	last := image[strings.LastIndex(image, "/")+1:]
	i := strings.LastIndex(last, ":")
	switch {
	case i < 0:
		return fmt.Errorf("no tag (means latest)")
	case last[i+1:] == "latest":
		return fmt.Errorf("tag latest")
	}
	return nil
}

// Workloads run at least two replicas, and the front proxy has a PodDisruptionBudget that keeps one up.
func TestReplicasAndDisruptionBudget(t *testing.T) {
	docs := loadAll(t)
	for _, pt := range podTemplates(docs) {
		if pt.replicas == nil || *pt.replicas < 2 {
			t.Errorf("%v: replicas %v, want at least 2", pt.owner, pt.replicas)
		}
	}
	dep := find[*appsv1.Deployment](t, docs, k8sDir, "Deployment", "weir")
	covered := false
	for _, d := range docs {
		pdb, ok := d.obj.(*policyv1.PodDisruptionBudget)
		if !ok || !selects(t, pdb.Spec.Selector, dep.Spec.Template.Labels) {
			continue
		}
		covered = true
		// Either bound must let one pod go (or nodes never drain) and keep at least one.
		n := int(*dep.Spec.Replicas)
		b, what := pdb.Spec.MaxUnavailable, "maxUnavailable"
		if b == nil {
			b, what = pdb.Spec.MinAvailable, "minAvailable"
		}
		if b == nil {
			t.Errorf("%v: neither minAvailable nor maxUnavailable", d)
			continue
		}
		if v, err := intstr.GetScaledValueFromIntOrPercent(b, n, true); err != nil || v < 1 || v >= n {
			t.Errorf("%v: %s %s of %d replicas: want at least 1 and fewer than all", d, what, b.String(), n)
		}
	}
	if !covered {
		t.Error("no PodDisruptionBudget selects Deployment weir's pods")
	}
	if s := dep.Spec.Strategy.RollingUpdate; s == nil || s.MaxUnavailable == nil || s.MaxUnavailable.IntValue() != 0 {
		t.Error("Deployment weir: rollingUpdate.maxUnavailable is not 0 (an update would drop capacity)")
	}
}

func selects(t *testing.T, sel *metav1.LabelSelector, podLabels map[string]string) bool {
	t.Helper()
	if sel == nil {
		return false
	}
	s, err := metav1.LabelSelectorAsSelector(sel)
	if err != nil {
		t.Fatal(err)
	}
	return !s.Empty() && s.Matches(labels.Set(podLabels))
}

// A container behind a load-balanced (non-headless) Service keeps serving while its pod leaves the endpoints:
// it has a preStop hook, and the grace period covers the hook plus weir's drain-timeout.
func TestPreStopBehindServices(t *testing.T) {
	docs := loadAll(t)
	checked := 0
	for _, d := range docs {
		svc, ok := d.obj.(*corev1.Service)
		if !ok || svc.Spec.ClusterIP == corev1.ClusterIPNone || !strings.HasPrefix(d.file, k8sDir) {
			continue
		}
		for _, pt := range podTemplates(docs) {
			if !strings.HasPrefix(pt.owner.file, k8sDir) ||
				!selects(t, &metav1.LabelSelector{MatchLabels: svc.Spec.Selector}, pt.tmpl.Labels) {
				continue
			}
			for _, sp := range svc.Spec.Ports {
				c := containerWithPort(&pt.tmpl.Spec, sp.TargetPort)
				if c == nil {
					t.Errorf("%v: port %s targets %s, which no container of %v exposes", d, sp.Name, sp.TargetPort.String(), pt.owner)
					continue
				}
				checked++
				if c.Lifecycle == nil || c.Lifecycle.PreStop == nil {
					t.Errorf("%v container %s: behind Service %s but no preStop hook", pt.owner, c.Name, svc.Name)
				}
			}
		}
	}
	if checked == 0 {
		t.Fatal("no Service selects any container")
	}

	dep := find[*appsv1.Deployment](t, docs, k8sDir, "Deployment", "weir")
	c := containerNamed(t, &dep.Spec.Template.Spec, "weir")
	wait := preStopSeconds(t, c)
	drain := confDuration(t, weirConf(t, docs, &dep.Spec.Template.Spec, c), "drain-timeout", 30*time.Second)
	grace := dep.Spec.Template.Spec.TerminationGracePeriodSeconds
	if wait < 5 {
		t.Errorf("Deployment weir: preStop waits %ds, too short for endpoints to update", wait)
	}
	if grace == nil || time.Duration(*grace)*time.Second <= time.Duration(wait)*time.Second+drain {
		t.Errorf("Deployment weir: terminationGracePeriodSeconds %v does not exceed preStop %ds + drain-timeout %v", grace, wait, drain)
	}
}

func preStopSeconds(t *testing.T, c *corev1.Container) int64 {
	t.Helper()
	if c.Lifecycle == nil || c.Lifecycle.PreStop == nil {
		t.Fatalf("container %s: no preStop", c.Name)
	}
	h := c.Lifecycle.PreStop
	switch {
	case h.Sleep != nil:
		return h.Sleep.Seconds
	case h.Exec != nil && len(h.Exec.Command) == 2 && path.Base(h.Exec.Command[0]) == "sleep":
		s, err := strconv.ParseInt(h.Exec.Command[1], 10, 64)
		if err != nil {
			t.Fatalf("container %s: preStop %v: %v", c.Name, h.Exec.Command, err)
		}
		return s
	}
	t.Fatalf("container %s: preStop is neither sleep nor exec sleep N", c.Name)
	return 0
}

func hasWeir(spec *corev1.PodSpec) bool {
	for _, c := range allContainers(spec) {
		if c.Name == "weir" {
			return true
		}
	}
	return false
}

func containerNamed(t *testing.T, spec *corev1.PodSpec, name string) *corev1.Container {
	t.Helper()
	for _, c := range allContainers(spec) {
		if c.Name == name {
			return c
		}
	}
	t.Fatalf("no container %s", name)
	return nil
}

func containerWithPort(spec *corev1.PodSpec, target intstr.IntOrString) *corev1.Container {
	for _, c := range allContainers(spec) {
		for _, p := range c.Ports {
			if (target.Type == intstr.String && p.Name == target.StrVal) ||
				(target.Type == intstr.Int && p.ContainerPort == target.IntVal) {
				return c
			}
		}
	}
	return nil
}

func containerPort(t *testing.T, c *corev1.Container, name string) int32 {
	t.Helper()
	for _, p := range c.Ports {
		if p.Name == name {
			return p.ContainerPort
		}
	}
	t.Fatalf("container %s: no port named %s", c.Name, name)
	return 0
}

// The Services everything else names (the plugin, the analysis templates, Prometheus), as fixed for the project.
func TestServices(t *testing.T) {
	docs := loadAll(t)
	dep := find[*appsv1.Deployment](t, docs, k8sDir, "Deployment", "weir")
	weir := containerNamed(t, &dep.Spec.Template.Spec, "weir")
	if dep.Spec.Template.Labels["app.kubernetes.io/name"] != "weir" {
		t.Error("Deployment weir's pods are not labelled app.kubernetes.io/name: weir")
	}
	want := []struct {
		svc, port string
		number    int32
		container int32
		headless  bool
	}{
		{"weir", "http", 80, 8080, false},
		{"weir-control", "control", 9902, 9902, true},
		{"weir-admin", "admin", 9901, 9901, false},
	}
	for _, w := range want {
		s := find[*corev1.Service](t, docs, k8sDir, "Service", w.svc)
		if !selects(t, &metav1.LabelSelector{MatchLabels: s.Spec.Selector}, dep.Spec.Template.Labels) {
			t.Errorf("Service %s does not select Deployment weir's pods", w.svc)
		}
		if len(s.Spec.Ports) != 1 || s.Spec.Ports[0].Name != w.port || s.Spec.Ports[0].Port != w.number {
			t.Errorf("Service %s: ports %+v, want only %s %d", w.svc, s.Spec.Ports, w.port, w.number)
		} else if c := containerWithPort(&dep.Spec.Template.Spec, s.Spec.Ports[0].TargetPort); c != weir ||
			containerPort(t, weir, w.port) != w.container {
			t.Errorf("Service %s: targetPort %s is not weir's container port %d", w.svc, s.Spec.Ports[0].TargetPort.String(), w.container)
		}
		headless := s.Spec.ClusterIP == corev1.ClusterIPNone
		if headless != w.headless {
			t.Errorf("Service %s: headless %v, want %v", w.svc, headless, w.headless)
		}
		if w.headless && !s.Spec.PublishNotReadyAddresses {
			t.Errorf("Service %s: publishNotReadyAddresses is not true (a starting replica would miss the split)", w.svc)
		}
	}
	// Prometheus finds the pods; a scrape annotation on a Service too would scrape each pod twice and double the
	// analysis sums.
	for _, pt := range podTemplates(docs) {
		if !strings.HasPrefix(pt.owner.file, k8sDir) || !hasWeir(&pt.tmpl.Spec) {
			continue
		}
		a := pt.tmpl.Annotations
		if a["prometheus.io/scrape"] != "true" || a["prometheus.io/port"] != "9901" || a["prometheus.io/path"] != "/metrics" {
			t.Errorf("%v: pod prometheus.io annotations %v, want scrape true, port 9901, path /metrics", pt.owner, a)
		}
	}
	for _, d := range docs {
		if s, ok := d.obj.(*corev1.Service); ok && s.Annotations["prometheus.io/scrape"] != "" {
			t.Errorf("%v: prometheus.io/scrape on a Service scrapes its pods a second time", d)
		}
	}
	for _, name := range []string{"demo-stable", "demo-canary"} {
		s := find[*corev1.Service](t, docs, k8sDir, "Service", name)
		if len(s.Spec.Ports) != 1 || s.Spec.Ports[0].Name != "http" || s.Spec.Ports[0].Port != 80 {
			t.Errorf("Service %s: ports %+v, want http 80", name, s.Spec.Ports)
		}
	}
	if weir.ReadinessProbe == nil || weir.ReadinessProbe.HTTPGet == nil || weir.ReadinessProbe.HTTPGet.Path != "/readyz" ||
		weir.ReadinessProbe.HTTPGet.Port.String() != "admin" {
		t.Error("Deployment weir: readiness is not GET /readyz on the admin port")
	}
	if weir.LivenessProbe == nil || weir.LivenessProbe.HTTPGet == nil || weir.LivenessProbe.HTTPGet.Path != "/healthz" ||
		weir.LivenessProbe.HTTPGet.Port.String() != "admin" {
		t.Error("Deployment weir: liveness is not GET /healthz on the admin port")
	}
}

// The token only ever comes from the user-made Secret weir-control-token: no Secret with a value is shipped.
func TestNoShippedSecret(t *testing.T) {
	docs := loadAll(t)
	for _, d := range docs {
		if d.kind == "Secret" {
			t.Errorf("%v: a shipped Secret would be a fixed token; the user creates weir-control-token", d)
		}
	}
	refs := 0
	for _, pt := range podTemplates(docs) {
		for _, v := range pt.tmpl.Spec.Volumes {
			var secrets []*corev1.SecretProjection
			if v.Secret != nil {
				t.Errorf("%v volume %s: use a projected volume with items token", pt.owner, v.Name)
			}
			if v.Projected != nil {
				for _, s := range v.Projected.Sources {
					if s.Secret != nil {
						secrets = append(secrets, s.Secret)
					}
				}
			}
			for _, s := range secrets {
				refs++
				if s.Name != "weir-control-token" || len(s.Items) != 1 || s.Items[0].Key != "token" {
					t.Errorf("%v volume %s: secret %s %v, want weir-control-token key token", pt.owner, v.Name, s.Name, s.Items)
				}
			}
		}
	}
	if refs == 0 {
		t.Error("no pod mounts the Secret weir-control-token")
	}
}

// weirConf returns the weir.conf that container c reads (/etc/weir/weir.conf from the ConfigMap mounted there) as
// directive -> values.
func weirConf(t *testing.T, docs []doc, spec *corev1.PodSpec, c *corev1.Container) map[string][]string {
	t.Helper()
	for _, m := range c.VolumeMounts {
		if m.MountPath != "/etc/weir" {
			continue
		}
		for _, v := range spec.Volumes {
			if v.Name != m.Name || v.Projected == nil {
				continue
			}
			for _, s := range v.Projected.Sources {
				if s.ConfigMap == nil {
					continue
				}
				for _, it := range s.ConfigMap.Items {
					if it.Path == "weir.conf" {
						cm := find[*corev1.ConfigMap](t, docs, k8sDir, "ConfigMap", s.ConfigMap.Name)
						return parseConf(cm.Data[it.Key])
					}
				}
			}
		}
	}
	t.Fatalf("container %s: no ConfigMap with weir.conf mounted at /etc/weir", c.Name)
	return nil
}

func parseConf(text string) map[string][]string {
	conf := map[string][]string{}
	for _, line := range strings.Split(text, "\n") {
		line, _, _ = strings.Cut(line, "#")
		f := strings.Fields(line)
		if len(f) >= 2 {
			conf[f[0]] = append(conf[f[0]], strings.Join(f[1:], " "))
		}
	}
	return conf
}

func confDuration(t *testing.T, conf map[string][]string, key string, def time.Duration) time.Duration {
	t.Helper()
	v := conf[key]
	if len(v) == 0 {
		return def
	}
	d, err := time.ParseDuration(v[len(v)-1])
	if err != nil {
		t.Fatalf("weir.conf %s %s: %v", key, v[len(v)-1], err)
	}
	return d
}

// Each weir container's weir.conf agrees with its pod: listeners on the container ports, the token file from the
// Secret, the control socket and state file on writable emptyDirs (the root file system is read-only).
func TestWeirConfMatchesPods(t *testing.T) {
	docs := loadAll(t)
	n := 0
	for _, pt := range podTemplates(docs) {
		for _, c := range allContainers(&pt.tmpl.Spec) {
			if c.Name != "weir" {
				continue
			}
			n++
			where := fmt.Sprintf("%v container weir", pt.owner)
			conf := weirConf(t, docs, &pt.tmpl.Spec, c)
			for _, l := range []struct{ directive, port string }{{"admin", "admin"}, {"control-tcp", "control"}, {"listen", "http"}} {
				vals := conf[l.directive]
				if l.directive == "listen" && containerWithPort(&pt.tmpl.Spec, intstr.FromString("http")) == nil {
					continue // a sidecar listening on loopback only
				}
				if len(vals) != 1 {
					t.Errorf("%s: weir.conf has %d %s lines, want 1", where, len(vals), l.directive)
					continue
				}
				host, port, err := net.SplitHostPort(vals[0])
				if err != nil || port != strconv.Itoa(int(containerPort(t, c, l.port))) || host != "0.0.0.0" {
					t.Errorf("%s: %s %s is not 0.0.0.0 on container port %s", where, l.directive, vals[0], l.port)
				}
			}
			if got := conf["control-token-file"]; len(got) != 1 || got[0] != "/etc/weir/token" {
				t.Errorf("%s: control-token-file %v, want /etc/weir/token (the Secret's projection)", where, got)
			}
			for _, key := range []string{"control", "state-file"} {
				vals := conf[key]
				if len(vals) != 1 || !onEmptyDir(&pt.tmpl.Spec, c, vals[0]) {
					t.Errorf("%s: %s %v is not on a writable emptyDir mount", where, key, vals)
				}
			}
			for _, key := range []string{"stable", "canary"} {
				if got := conf[key]; len(got) != 1 || got[0] != "demo-"+key+":80" {
					t.Errorf("%s: %s %v, want demo-%s:80", where, key, got, key)
				}
			}
		}
	}
	if n < 2 {
		t.Fatalf("%d weir containers, want the front proxy and the sidecar", n)
	}
}

func onEmptyDir(spec *corev1.PodSpec, c *corev1.Container, file string) bool {
	for _, m := range c.VolumeMounts {
		if m.ReadOnly || path.Dir(file) != m.MountPath {
			continue
		}
		for _, v := range spec.Volumes {
			if v.Name == m.Name && v.EmptyDir != nil {
				return true
			}
		}
	}
	return false
}

// The example Rollout: its plugin configuration in the project's schema, the Services it names, and every step's
// route and analysis template resolvable.
func TestRollout(t *testing.T) {
	docs := loadAll(t)
	ro := find[*rollouts.Rollout](t, docs, k8sDir, "Rollout", "demo")
	can := ro.Spec.Strategy.Canary
	if can == nil || can.TrafficRouting == nil {
		t.Fatal("Rollout demo: no canary strategy with trafficRouting")
	}
	if can.CanaryService != "demo-canary" || can.StableService != "demo-stable" {
		t.Errorf("canaryService %q stableService %q, want demo-canary and demo-stable", can.CanaryService, can.StableService)
	}
	for _, name := range []string{can.CanaryService, can.StableService} {
		s := find[*corev1.Service](t, docs, k8sDir, "Service", name)
		if !selects(t, &metav1.LabelSelector{MatchLabels: s.Spec.Selector}, ro.Spec.Template.Labels) {
			t.Errorf("Service %s does not select the Rollout's pods", name)
		}
	}

	// The configuration as the plugin itself reads it (its own parser: unknown fields, missing or conflicting
	// settings fail), and once more strictly into its type, where a key in the wrong case fails too.
	if len(can.TrafficRouting.Plugins) != 1 {
		t.Errorf("trafficRouting.plugins has %d entries, want %s only", len(can.TrafficRouting.Plugins), weirplugin.Name)
	}
	pc, err := weirplugin.ParseConfig(ro)
	if err != nil {
		t.Fatal(err)
	}
	if err := strictDecode(can.TrafficRouting.Plugins[weirplugin.Name], &weirplugin.Config{}); err != nil {
		t.Errorf("plugins %s: %v", weirplugin.Name, err)
	}
	if pc.Service == "" {
		t.Error("plugin: replicas given as a list; the example names the headless Service weir-control")
	} else if host, port, err := net.SplitHostPort(pc.Service); err != nil || port != "9902" ||
		!strings.HasPrefix(host, "weir-control.") || !strings.HasSuffix(host, ".svc.cluster.local") {
		t.Errorf("plugin service %q is not weir-control.NAMESPACE.svc.cluster.local:9902", pc.Service)
	}
	if s := pc.TokenSecret; s == nil || s.Name != "weir-control-token" || s.Key != "token" {
		t.Errorf("plugin tokenSecret %+v, want name weir-control-token, key token", s)
	}
	if pc.CanaryVariant != "canary" || pc.StableVariant != "stable" {
		t.Errorf("plugin variants %q/%q, want canary/stable", pc.CanaryVariant, pc.StableVariant)
	}

	managed := map[string]bool{}
	for _, r := range can.TrafficRouting.ManagedRoutes {
		managed[r.Name] = true
	}
	templates := map[string]*rollouts.AnalysisTemplate{}
	for _, d := range docs {
		if at, ok := d.obj.(*rollouts.AnalysisTemplate); ok && strings.HasPrefix(d.file, "conf/analysis") {
			templates[at.Name] = at
		}
	}
	seen := map[string]bool{}
	for i, s := range can.Steps {
		switch {
		case s.SetWeight != nil:
			seen["setWeight"] = true
		case s.Pause != nil:
			seen["pause"] = true
		case s.SetHeaderRoute != nil:
			seen["setHeaderRoute"] = true
			if !managed[s.SetHeaderRoute.Name] {
				t.Errorf("step %d: header route %q is not in managedRoutes", i, s.SetHeaderRoute.Name)
			}
		case s.SetMirrorRoute != nil:
			seen["setMirrorRoute"] = true
			if !managed[s.SetMirrorRoute.Name] {
				t.Errorf("step %d: mirror route %q is not in managedRoutes", i, s.SetMirrorRoute.Name)
			}
		case s.Analysis != nil:
			seen["analysis"] = true
			checkAnalysisStep(t, i, s.Analysis, templates)
		}
	}
	for _, k := range []string{"setWeight", "pause", "setHeaderRoute", "setMirrorRoute", "analysis"} {
		if !seen[k] {
			t.Errorf("Rollout demo has no %s step", k)
		}
	}
}

// checkAnalysisStep: every template exists in conf/analysis/, and every argument a template needs a value for is
// given by the step.
func checkAnalysisStep(t *testing.T, step int, a *rollouts.RolloutAnalysis, templates map[string]*rollouts.AnalysisTemplate) {
	t.Helper()
	given := map[string]bool{}
	for _, arg := range a.Args {
		if arg.Value == "" && arg.ValueFrom == nil {
			t.Errorf("step %d: argument %s has no value", step, arg.Name)
		}
		given[arg.Name] = true
	}
	if len(a.Templates) == 0 {
		t.Errorf("step %d: analysis without templates", step)
	}
	for _, ref := range a.Templates {
		if ref.IsClusterScope() {
			t.Errorf("step %d: template %s is cluster-scoped; conf/analysis/ has AnalysisTemplates", step, ref.TemplateName)
			continue
		}
		at := templates[ref.TemplateName]
		if at == nil {
			t.Errorf("step %d: no AnalysisTemplate %q in conf/analysis/", step, ref.TemplateName)
			continue
		}
		for _, arg := range at.Spec.Args {
			if arg.Value == nil && arg.ValueFrom == nil && !given[arg.Name] {
				t.Errorf("step %d: template %s needs argument %s, which the step does not give", step, at.Name, arg.Name)
			}
		}
	}
}

// argo-rollouts-config registers the plugin under the fixed name and location.
func TestArgoRolloutsConfig(t *testing.T) {
	docs := loadAll(t)
	cm := find[*corev1.ConfigMap](t, docs, k8sDir, "ConfigMap", "argo-rollouts-config")
	var items []plugintypes.PluginItem
	if err := strictDecode([]byte(cm.Data["trafficRouterPlugins"]), &items); err != nil {
		t.Fatalf("trafficRouterPlugins: %v", err)
	}
	if len(items) != 1 || items[0].Name != "weir/weir" ||
		items[0].Location != "file:///home/argo-rollouts/rollouts-plugin-trafficrouter-weir" {
		t.Errorf("trafficRouterPlugins %+v, want weir/weir at file:///home/argo-rollouts/rollouts-plugin-trafficrouter-weir", items)
	}
}

// weir itself accepts every weir.conf shipped for containers (`weir -t`), with the pod's directories moved to a
// temporary one: the ConfigMaps' and the image's docker/weir.conf.
func TestWeirConfAcceptedByWeir(t *testing.T) {
	docs := loadAll(t)
	bin := os.Getenv("WEIR_BIN")
	if bin == "" {
		bin = filepath.Join(repoRoot(t), "build", "weir")
	}
	if _, err := os.Stat(bin); err != nil {
		t.Fatalf("weir binary (WEIR_BIN or build/weir; run make): %v", err)
	}
	confs := map[string]string{}
	for _, d := range docs {
		if cm, ok := d.obj.(*corev1.ConfigMap); ok && cm.Data["weir.conf"] != "" {
			confs[d.String()] = cm.Data["weir.conf"]
		}
	}
	image, err := os.ReadFile(filepath.Join(repoRoot(t), "docker", "weir.conf"))
	if err != nil {
		t.Fatal(err)
	}
	confs["docker/weir.conf"] = string(image)
	if len(confs) < 3 {
		t.Fatalf("%d weir.conf files, want the image's, the front proxy's and the sidecar's", len(confs))
	}
	for name, text := range confs {
		dir := t.TempDir()
		for _, sub := range []string{"etc", "run", "lib"} {
			if err := os.Mkdir(filepath.Join(dir, sub), 0o755); err != nil {
				t.Fatal(err)
			}
		}
		if err := os.WriteFile(filepath.Join(dir, "etc", "token"), []byte("0123456789abcdef\n"), 0o600); err != nil {
			t.Fatal(err)
		}
		var directives []string // comments may name the pod's paths in prose
		for _, line := range strings.Split(text, "\n") {
			line, _, _ = strings.Cut(line, "#")
			directives = append(directives, line)
		}
		moved := strings.NewReplacer("/etc/weir/", dir+"/etc/", "/run/weir/", dir+"/run/", "/var/lib/weir/", dir+"/lib/").
			Replace(strings.Join(directives, "\n"))
		if strings.Contains(moved, "/etc/weir/") || strings.Contains(moved, "/run/weir/") || strings.Contains(moved, "/var/lib/weir/") {
			t.Errorf("%s: a path under the pod's directories is not a file in them", name)
		}
		file := filepath.Join(dir, "weir.conf")
		if err := os.WriteFile(file, []byte(moved), 0o644); err != nil {
			t.Fatal(err)
		}
		out, err := exec.Command(bin, "-t", "-c", file).CombinedOutput()
		if err != nil {
			t.Errorf("%s: weir -t: %v: %s", name, err, out)
		}
	}
}
