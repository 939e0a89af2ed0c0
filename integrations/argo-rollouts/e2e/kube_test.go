package e2e

import (
	"encoding/json"
	"fmt"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"

	"github.com/argoproj/argo-rollouts/pkg/apis/rollouts/v1alpha1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

// fakeAPI is a Kubernetes API server that serves a few Secrets and Services of namespace default, enough for the
// plugin's client-go calls; it returns a KUBECONFIG environment entry for the plugin process.
func fakeAPI(t *testing.T, objs ...any) string {
	byPath := make(map[string][]byte)
	for _, o := range objs {
		var path string
		switch v := o.(type) {
		case *corev1.Secret:
			v.APIVersion, v.Kind = "v1", "Secret"
			path = "/api/v1/namespaces/" + v.Namespace + "/secrets/" + v.Name
		case *corev1.Service:
			v.APIVersion, v.Kind = "v1", "Service"
			path = "/api/v1/namespaces/" + v.Namespace + "/services/" + v.Name
		}
		b, err := json.Marshal(o)
		if err != nil {
			t.Fatal(err)
		}
		byPath[path] = b
	}
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		if b, ok := byPath[r.URL.Path]; ok && r.Method == "GET" {
			w.Write(b)
			return
		}
		w.WriteHeader(http.StatusNotFound)
		fmt.Fprintf(w, `{"kind":"Status","apiVersion":"v1","status":"Failure","reason":"NotFound","code":404,"message":"%s not found"}`,
			r.URL.Path)
	}))
	t.Cleanup(srv.Close)
	kc := filepath.Join(t.TempDir(), "kubeconfig")
	cfg := fmt.Sprintf(`apiVersion: v1
kind: Config
clusters: [{name: fake, cluster: {server: %q}}]
users: [{name: plugin, user: {token: fake}}]
contexts: [{name: fake, context: {cluster: fake, user: plugin}}]
current-context: fake
`, srv.URL)
	if err := os.WriteFile(kc, []byte(cfg), 0o600); err != nil {
		t.Fatal(err)
	}
	return "KUBECONFIG=" + kc
}

func tokenSecret(token string) *corev1.Secret {
	return &corev1.Secret{ObjectMeta: metav1.ObjectMeta{Name: "weir-control-token", Namespace: "default"},
		Data: map[string][]byte{"token": []byte(token + "\n")}}
}

func secretConfig(f *fleet) map[string]any {
	return map[string]any{"replicas": f.addrs(), "tokenSecret": map[string]string{"name": "weir-control-token"},
		"timeout": "2s", "syncInterval": "200ms"}
}

// The token can come from a Secret (read with client-go); a missing Secret is named in the error.
func TestTokenFromSecret(t *testing.T) {
	f := startFleet(t, 2)
	p := startPlugin(t, fakeAPI(t, tokenSecret(f.token)))
	mustOK(t, "SetWeight", p.SetWeight(rollout(t, secretConfig(f)), 15, nil))
	for _, w := range f.w {
		if m, _ := w.weights(); m["canary"] != "15.00" {
			t.Errorf("%s: %v", w.name, m)
		}
	}
	cfg := secretConfig(f)
	cfg["tokenSecret"] = map[string]string{"name": "nope"}
	if e := p.SetWeight(rollout(t, cfg), 15, nil); !e.HasError() || !strings.Contains(e.Error(), "default/nope") {
		t.Errorf("SetWeight with a missing Secret: %v", e)
	}
}

// An experiment's additional destination becomes a weir variant (its Service resolved to CLUSTER-IP:PORT), gets its
// share of real traffic, is verified, and goes away (weight 0, then `del upstream`) when the experiment ends.
func TestExperimentDestination(t *testing.T) {
	f := startFleet(t, 2)
	exp := startUpstream(t, "exp")
	host, port, _ := net.SplitHostPort(exp)
	pn, _ := strconv.Atoi(port)
	svc := &corev1.Service{ObjectMeta: metav1.ObjectMeta{Name: "demo-exp-canary", Namespace: "default"},
		Spec: corev1.ServiceSpec{ClusterIP: host, Ports: []corev1.ServicePort{{Name: "http", Port: int32(pn)}}}}
	p := startPlugin(t, fakeAPI(t, tokenSecret(f.token), svc))
	ro := rollout(t, secretConfig(f))
	dests := []v1alpha1.WeightDestination{{Weight: 40, ServiceName: "demo-exp-canary", PodTemplateHash: "7f9c"}}

	mustOK(t, "SetWeight", p.SetWeight(ro, 30, dests))
	for _, w := range f.w {
		m, _ := w.weights()
		if m["canary"] != "30.00" || m["demo-exp-canary"] != "40.00" || m["stable"] != "30.00" {
			t.Errorf("%s: weights %v", w.name, m)
		}
		if u := strings.Join(w.mustCtl("show", "upstreams"), "\n"); !strings.Contains(u, "demo-exp-canary "+exp) {
			t.Errorf("%s: show upstreams lacks demo-exp-canary %s:\n%s", w.name, exp, u)
		}
	}
	// 300 requests at 40 %: 120 expected, 8.5 standard deviation; the bounds are over 4 of them away.
	c := f.w[0].traffic(300, "/", nil)
	if c["exp"] < 80 || c["exp"] > 160 || c["canary"] == 0 || c["stable"] == 0 {
		t.Errorf("traffic at canary 30, experiment 40: %v", c)
	}
	if !verified(t, p, ro, 30, dests) {
		t.Error("VerifyWeight false with the experiment at its weight")
	}
	if verified(t, p, ro, 30, []v1alpha1.WeightDestination{{Weight: 10, ServiceName: "demo-exp-canary"}}) {
		t.Error("VerifyWeight true with the experiment at another weight")
	}

	mustOK(t, "SetWeight", p.SetWeight(ro, 30, nil))
	for _, w := range f.w {
		if m, _ := w.weights(); m["canary"] != "30.00" || m["stable"] != "70.00" || m["demo-exp-canary"] != "" {
			t.Errorf("%s: after the experiment: %v", w.name, m)
		}
		if u := strings.Join(w.mustCtl("show", "upstreams"), "\n"); strings.Contains(u, "demo-exp-canary") {
			t.Errorf("%s: the experiment's variant is still declared:\n%s", w.name, u)
		}
	}
	if c := f.w[1].traffic(50, "/", nil); c["exp"] != 0 {
		t.Errorf("traffic after the experiment: %v", c)
	}
}
