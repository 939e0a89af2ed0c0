// Package analysis tests the Argo Rollouts AnalysisTemplates of conf/analysis/ the way Argo runs them, against a
// live weir (SPEC §5): an AnalysisRun is built from each shipped template with Argo's own code, its metrics' args
// resolved by Argo's resolver, and each measurement taken by Argo's own providers:
//   - web.yaml: Argo's web provider fetches /stats from the running weir (the URL's host swapped for weir's admin
//     address after checking it names the weir-admin Service), applies the jsonPath and evaluates the conditions;
//   - prometheus.yaml: three scrapes of the running weir's /metrics, labelled as Prometheus labels a scraped pod,
//     become the input of `promtool test rules`, which must find that each shipped query returns what Prometheus'
//     semantics give for that traffic; Argo's Prometheus provider then judges that result (through a Prometheus API
//     that returns it).
//
// The cases: no canary traffic, too few canary requests, a healthy canary, a failing canary, and a healthy weighted
// canary while a developer's header-routed requests to it fail.
package analysis

import (
	"context"
	"encoding/json"
	"fmt"
	"math"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	argoprom "github.com/argoproj/argo-rollouts/metricproviders/prometheus"
	"github.com/argoproj/argo-rollouts/metricproviders/webmetric"
	"github.com/argoproj/argo-rollouts/pkg/apis/rollouts/v1alpha1"
	analysisutil "github.com/argoproj/argo-rollouts/utils/analysis"
	promv1 "github.com/prometheus/client_golang/api/prometheus/v1"
	"github.com/prometheus/common/model"
	log "github.com/sirupsen/logrus"
	"sigs.k8s.io/yaml"
)

const (
	namespace = "demo"
	// The Service of docker/kubernetes/ that the web template must address (SHARED names).
	adminHost = "weir-admin." + namespace + ".svc.cluster.local:9901"
	// Scrapes are one minute apart in the promtool input, and the queries' range is 2 minutes: the range at the last
	// scrape holds all three.
	stepSec  = 60.0
	rangeSec = 120.0
)

// What Prometheus adds to every series it scrapes from weir replica <i> (the prometheus-community chart's
// kubernetes-pods job: the pod's labels, namespace, pod; job and instance from the scrape).
func scrapeLabels(i int) map[string]string {
	return map[string]string{
		"namespace":              namespace,
		"pod":                    fmt.Sprintf("weir-7d4b9c6f5-x2x7%c", 'a'+i),
		"instance":               fmt.Sprintf("10.1.2.%d:9901", 3+i),
		"job":                    "kubernetes-pods",
		"app_kubernetes_io_name": "weir",
	}
}

func loadTemplate(t *testing.T, file string) *v1alpha1.AnalysisTemplate {
	b, err := os.ReadFile(repoPath(filepath.Join("conf/analysis", file)))
	if err != nil {
		t.Fatal(err)
	}
	var tmpl v1alpha1.AnalysisTemplate
	if err := yaml.UnmarshalStrict(b, &tmpl); err != nil {
		t.Fatalf("%s: %v", file, err)
	}
	if tmpl.APIVersion != "argoproj.io/v1alpha1" || tmpl.Kind != "AnalysisTemplate" {
		t.Fatalf("%s: %s %s is not an argoproj.io/v1alpha1 AnalysisTemplate", file, tmpl.APIVersion, tmpl.Kind)
	}
	if err := analysisutil.ValidateMetrics(tmpl.Spec.Metrics); err != nil {
		t.Fatalf("%s: %v", file, err)
	}
	return &tmpl
}

// resolve builds the AnalysisRun a Rollout in <namespace> would start from <tmpl> with <args> (Argo's own factory),
// and returns it with its metrics' {{args.*}} resolved as the analysis controller resolves them.
func resolve(t *testing.T, tmpl *v1alpha1.AnalysisTemplate, args map[string]string) (*v1alpha1.AnalysisRun, []v1alpha1.Metric) {
	var in []v1alpha1.Argument
	for k, v := range args {
		v := v
		in = append(in, v1alpha1.Argument{Name: k, Value: &v})
	}
	run, err := analysisutil.NewAnalysisRunFromTemplates([]*v1alpha1.AnalysisTemplate{tmpl}, nil, in, nil, nil, nil, nil,
		"canary-analysis", "", namespace)
	if err != nil {
		t.Fatal(err)
	}
	var metrics []v1alpha1.Metric
	for _, m := range run.Spec.Metrics {
		rm, err := analysisutil.ResolveMetricArgs(m, run.Spec.Args)
		if err != nil {
			t.Fatalf("metric %s: %v", m.Name, err)
		}
		if strings.Contains(mustJSON(t, rm), "{{") {
			t.Fatalf("metric %s keeps an unresolved argument: %s", m.Name, mustJSON(t, rm))
		}
		metrics = append(metrics, *rm)
	}
	return run, metrics
}

func mustJSON(t *testing.T, v any) string {
	b, err := json.Marshal(v)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

// argDefault is the value the template gives argument <name>.
func argDefault(t *testing.T, tmpl *v1alpha1.AnalysisTemplate, name string) float64 {
	for _, a := range tmpl.Spec.Args {
		if a.Name == name && a.Value != nil {
			v, err := strconv.ParseFloat(*a.Value, 64)
			if err != nil {
				t.Fatal(err)
			}
			return v
		}
	}
	t.Fatalf("%s has no default for %s", tmpl.Name, name)
	return 0
}

var logEntry = log.NewEntry(log.StandardLogger())

// webMeasure takes one measurement of web metric <m> with Argo's web provider, from weir's admin listener.
func webMeasure(t *testing.T, w *weir, run *v1alpha1.AnalysisRun, m v1alpha1.Metric) v1alpha1.Measurement {
	if m.Provider.Web == nil {
		t.Fatalf("metric %s is not a web metric", m.Name)
	}
	u, err := url.Parse(m.Provider.Web.URL)
	if err != nil {
		t.Fatal(err)
	}
	if u.Scheme != "http" || u.Host != adminHost || u.Path != "/stats" {
		t.Fatalf("metric %s reads %s, not http://%s/stats", m.Name, m.Provider.Web.URL, adminHost)
	}
	u.Host = fmt.Sprintf("127.0.0.1:%d", w.admin)
	m.Provider.Web.URL = u.String()
	client, err := webmetric.NewWebMetricHttpClient(m)
	if err != nil {
		t.Fatal(err)
	}
	parser, err := webmetric.NewWebMetricJsonParser(m)
	if err != nil {
		t.Fatal(err)
	}
	return webmetric.NewWebMetricProvider(*logEntry, client, parser).Run(run, m)
}

// A Prometheus HTTP API that answers every instant query with <result>.
type fixedAPI struct {
	promv1.API
	result model.Value
}

func (f fixedAPI) Query(ctx context.Context, query string, ts time.Time, opts ...promv1.Option) (model.Value, promv1.Warnings, error) {
	return f.result, nil, nil
}

// promMeasure takes one measurement of Prometheus metric <m> with Argo's Prometheus provider, the query answering
// <result> (a vector without labels).
func promMeasure(t *testing.T, run *v1alpha1.AnalysisRun, m v1alpha1.Metric, result []float64) v1alpha1.Measurement {
	vec := model.Vector{}
	for _, v := range result {
		vec = append(vec, &model.Sample{Metric: model.Metric{}, Value: model.SampleValue(v)})
	}
	p, err := argoprom.NewPrometheusProvider(fixedAPI{result: vec}, *logEntry, m)
	if err != nil {
		t.Fatal(err)
	}
	return p.Run(run, m)
}

// expectedResults is what each metric of prometheus.yaml must return over <tls>, by metric name.
func expectedResults(t *testing.T, tmpl *v1alpha1.AnalysisTemplate, tls []timeline) map[string][]float64 {
	min := argDefault(t, tmpl, "min-requests")
	weighted := func(name string) selector {
		return selector{"__name__": name, "namespace": namespace, "variant": "canary", "route": ""}
	}
	out := map[string][]float64{}
	if den, ok := sumIncrease(tls, weighted("weir_requests_total"), 0, stepSec, rangeSec); ok && den >= min {
		num, any := sumIncrease(tls, weighted("weir_requests_total"), '5', stepSec, rangeSec)
		if !any {
			num = 0 // or vector(0)
		}
		out["canary-error-rate"] = []float64{num / den}
	}
	if n, ok := sumIncrease(tls, weighted("weir_request_duration_seconds_count"), 0, stepSec, rangeSec); ok && n >= min {
		if q, ok := quantileOfBuckets(0.99, tls, weighted("weir_request_duration_seconds_bucket"), stepSec, rangeSec); ok {
			out["canary-p99"] = []float64{q}
		}
	}
	for _, m := range tmpl.Spec.Metrics {
		if _, known := out[m.Name]; !known && m.Name != "canary-error-rate" && m.Name != "canary-p99" {
			t.Fatalf("prometheus.yaml has a metric this test does not know: %s", m.Name)
		}
	}
	return out
}

func promtoolBin(t *testing.T) string {
	if p, err := exec.LookPath("promtool"); err == nil {
		return p
	}
	p := repoPath("build/tools/promtool")
	if _, err := os.Stat(p); err != nil {
		t.Fatalf("promtool is neither on the PATH nor in build/tools (make test fetches it)")
	}
	return p
}

// The `promtool test rules` input.
type promSample struct {
	Labels string  `json:"labels"`
	Value  float64 `json:"value"`
}
type exprTest struct {
	Expr       string       `json:"expr"`
	EvalTime   string       `json:"eval_time"`
	ExpSamples []promSample `json:"exp_samples"`
}
type inputSeries struct {
	Series string `json:"series"`
	Values string `json:"values"`
}
type unitTest struct {
	Interval       string        `json:"interval"`
	InputSeries    []inputSeries `json:"input_series"`
	PromqlExprTest []exprTest    `json:"promql_expr_test"`
}
type unitFile struct {
	RuleFiles          []string   `json:"rule_files"`
	EvaluationInterval string     `json:"evaluation_interval"`
	Tests              []unitTest `json:"tests"`
}

// promtoolCheck makes promtool evaluate each metric's query over <tls> at the last scrape and compare it with
// <want> (by metric name; missing: an empty result).
func promtoolCheck(t *testing.T, metrics []v1alpha1.Metric, tls []timeline, want map[string][]float64) {
	ut := unitTest{Interval: "1m"}
	for _, tl := range tls {
		ut.InputSeries = append(ut.InputSeries, inputSeries{Series: tl.series.key(), Values: tl.promtoolValues()})
	}
	for _, m := range metrics {
		if m.Provider.Prometheus == nil {
			t.Fatalf("metric %s is not a Prometheus metric", m.Name)
		}
		et := exprTest{Expr: m.Provider.Prometheus.Query, EvalTime: fmt.Sprintf("%gm", float64(len(tls[0].values)-1)*stepSec/60)}
		for _, v := range want[m.Name] {
			if math.IsNaN(v) {
				t.Fatalf("metric %s: NaN cannot be compared by promtool", m.Name)
			}
			et.ExpSamples = append(et.ExpSamples, promSample{Labels: "{}", Value: v})
		}
		ut.PromqlExprTest = append(ut.PromqlExprTest, et)
	}
	b, err := yaml.Marshal(unitFile{RuleFiles: []string{}, EvaluationInterval: "1m", Tests: []unitTest{ut}})
	if err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(t.TempDir(), "analysis_test.yaml")
	if err := os.WriteFile(path, b, 0o600); err != nil {
		t.Fatal(err)
	}
	out, err := exec.Command(promtoolBin(t), "test", "rules", path).CombinedOutput()
	if err != nil {
		t.Fatalf("promtool test rules: %v\n%s\n--- input ---\n%s", err, out, b)
	}
}

// A case: the weights, traffic before the first scrape, then traffic before each of the two later scrapes (through
// each of <replicas> weir processes, 1 when 0), and the phase each metric must come out with (<wantWeb> instead
// for the web provider when set: it reads the first replica only). <args> are given to both templates (the
// namespace always).
type analysisCase struct {
	weight   string
	replicas int
	devRoute bool
	before   func(w *weir, u *upstreams)
	between  func(w *weir, u *upstreams)
	args     map[string]string
	want     map[string]v1alpha1.AnalysisPhase
	wantWeb  map[string]v1alpha1.AnalysisPhase
	check    func(t *testing.T, stats string, tls []timeline) // what the traffic must have produced
}

// The latency thresholds that cannot decide on a live run's speed: weir's and Prometheus' interpolation put a 99th
// percentile at 0.099 ms at least (0.99 of the first bucket, 0.1 ms) and at 60 s at most (the last finite bound).
var (
	p99NeverFails  = map[string]string{"max-p99-ms": "60000", "max-p99-seconds": "60"}
	p99AlwaysFails = map[string]string{"max-p99-ms": "0.05", "max-p99-seconds": "0.00005"}
)

func runCase(t *testing.T, c analysisCase) {
	web, prom := loadTemplate(t, "web.yaml"), loadTemplate(t, "prometheus.yaml")
	u := startUpstreams(t)
	ws := make([]*weir, max(c.replicas, 1))
	for i := range ws {
		ws[i] = startWeir(t, u, c.weight)
		if c.devRoute {
			ws[i].control("set header-route dev header x-canary exact 1")
		}
	}
	// One scrape of every replica, as Prometheus holds them: one series set per pod.
	scrapeAll := func() map[string]float64Series {
		all := map[string]float64Series{}
		for i, w := range ws {
			for k, v := range parseMetrics(w.scrape(), scrapeLabels(i)) {
				all[k] = v
			}
		}
		return all
	}
	for _, w := range ws {
		c.before(w, u)
	}
	scrapes := []map[string]float64Series{scrapeAll()}
	for i := 0; i < 2; i++ {
		for _, w := range ws {
			c.between(w, u)
		}
		scrapes = append(scrapes, scrapeAll())
	}
	tls := timelines(scrapes)
	w := ws[0]
	stats := w.adminGet("/stats?window=60s")
	if c.check != nil {
		c.check(t, stats, tls)
	}
	args := map[string]string{"namespace": namespace}
	for k, v := range c.args {
		args[k] = v
	}

	// Each template takes the arguments it declares and Argo ignores the others (the other one's p99 unit).
	t.Run("web", func(t *testing.T) {
		run, metrics := resolve(t, web, args)
		wantWeb := c.want
		if c.wantWeb != nil {
			wantWeb = c.wantWeb
		}
		for _, m := range metrics {
			got := webMeasure(t, w, run, m)
			if want := wantWeb[m.Name]; got.Phase != want {
				t.Errorf("%s: %s (value %s, %s), want %s\n/stats: %s", m.Name, got.Phase, got.Value, got.Message, want, stats)
			}
		}
	})
	t.Run("prometheus", func(t *testing.T) {
		run, metrics := resolve(t, prom, args)
		want := expectedResults(t, prom, tls)
		promtoolCheck(t, metrics, tls, want)
		for _, m := range metrics {
			got := promMeasure(t, run, m, want[m.Name])
			if w := c.want[m.Name]; got.Phase != w {
				t.Errorf("%s: %s (result %s, %s), want %s", m.Name, got.Phase, got.Value, got.Message, w)
			}
		}
	})
}

func both(p v1alpha1.AnalysisPhase) map[string]v1alpha1.AnalysisPhase {
	return map[string]v1alpha1.AnalysisPhase{"canary-error-rate": p, "canary-p99": p}
}

// Both templates decode strictly into Argo's types, pass Argo's validation, resolve with only `namespace` given, and
// read what SPEC §5 and the manifests name.
func TestTemplatesDecodeAndAddress(t *testing.T) {
	web, prom := loadTemplate(t, "web.yaml"), loadTemplate(t, "prometheus.yaml")
	_, wm := resolve(t, web, map[string]string{"namespace": namespace})
	for _, m := range wm {
		if m.Provider.Web == nil || !strings.HasPrefix(m.Provider.Web.URL, "http://"+adminHost+"/stats") ||
			!strings.Contains(m.Provider.Web.JSONPath, ".weighted.") {
			t.Errorf("web metric %s: %s %s", m.Name, m.Provider.Web.URL, m.Provider.Web.JSONPath)
		}
		if m.SuccessCondition == "" || m.FailureCondition == "" {
			t.Errorf("web metric %s needs both conditions, or a measurement without data is not Inconclusive", m.Name)
		}
	}
	_, pm := resolve(t, prom, map[string]string{"namespace": namespace})
	for _, m := range pm {
		q := m.Provider.Prometheus.Query
		if strings.Contains(q, "job=") || !strings.Contains(q, `namespace="`+namespace+`"`) || !strings.Contains(q, `route=""`) {
			t.Errorf("prometheus metric %s: query must select by namespace and route=\"\" and not by job: %s", m.Name, q)
		}
		if m.SuccessCondition == "" || m.FailureCondition == "" {
			t.Errorf("prometheus metric %s needs both conditions", m.Name)
		}
	}
	// Without the namespace the run cannot be built: no silent default.
	if _, err := analysisutil.NewAnalysisRunFromTemplates([]*v1alpha1.AnalysisTemplate{web}, nil, nil, nil, nil, nil,
		nil, "r", "", namespace); err == nil {
		t.Errorf("web.yaml resolves without a namespace argument")
	}
}

// Only stable traffic: nothing to judge the canary on, so neither template may pass it.
func TestEmptyWindowIsInconclusive(t *testing.T) {
	stableOnly := func(w *weir, u *upstreams) {
		for i := 0; i < 20; i++ {
			if _, v := w.get("/app", false); v != "stable" {
				t.Fatalf("weight 0 sent a request to %q", v)
			}
		}
	}
	runCase(t, analysisCase{weight: "0", before: stableOnly, between: stableOnly, args: p99NeverFails,
		want: both(v1alpha1.AnalysisPhaseInconclusive)})
}

// Fewer weighted canary requests than min-requests: Inconclusive, though every one of them succeeded.
func TestTooFewRequestsIsInconclusive(t *testing.T) {
	runCase(t, analysisCase{weight: "50",
		before:  func(w *weir, u *upstreams) { w.weighted(2) },
		between: func(w *weir, u *upstreams) { w.weighted(4) },
		args:    p99NeverFails, want: both(v1alpha1.AnalysisPhaseInconclusive)})
}

func TestHealthyCanarySucceeds(t *testing.T) {
	runCase(t, analysisCase{weight: "50",
		before:  func(w *weir, u *upstreams) { w.weighted(4) },
		between: func(w *weir, u *upstreams) { w.weighted(50) },
		args:    p99NeverFails, want: both(v1alpha1.AnalysisPhaseSuccessful)})
}

// Half of the canary's weighted responses are 500s (and the latency limit is below anything measurable).
func TestFailingCanaryFails(t *testing.T) {
	runCase(t, analysisCase{weight: "50",
		before: func(w *weir, u *upstreams) {
			u.failing.Store(true)
			w.weighted(4)
		},
		between: func(w *weir, u *upstreams) { w.weighted(50) },
		args:    p99AlwaysFails, want: both(v1alpha1.AnalysisPhaseFailed)})
}

// A developer's header-routed requests to a broken canary feature, more of them than weighted ones: the weighted
// canary traffic is healthy, so the analysis succeeds; the failures are there in the totals and in route="dev".
func TestFailingDeveloperRouteDoesNotFail(t *testing.T) {
	runCase(t, analysisCase{weight: "50", devRoute: true,
		before: func(w *weir, u *upstreams) { w.weighted(4) },
		between: func(w *weir, u *upstreams) {
			w.weighted(50)
			w.developer(60)
		},
		args: p99NeverFails, want: both(v1alpha1.AnalysisPhaseSuccessful),
		check: func(t *testing.T, stats string, tls []timeline) {
			var doc struct {
				Variants map[string]struct {
					Window struct {
						Requests float64 `json:"requests"`
						Errors   float64 `json:"5xx"`
					} `json:"window"`
				} `json:"variants"`
			}
			if err := json.Unmarshal([]byte(stats), &doc); err != nil {
				t.Fatal(err)
			}
			if doc.Variants["canary"].Window.Errors != 120 {
				t.Errorf("the canary's window should hold the developer's 120 errors: %s", stats)
			}
			dev := selector{"__name__": "weir_requests_total", "variant": "canary", "route": "dev", "code": "500"}
			for _, tl := range tls {
				if dev.matches(tl.series) && tl.values[2] == 120 {
					return
				}
			}
			t.Errorf("no weir_requests_total{route=\"dev\",code=\"500\"} series reaching 120")
		}})
}

// Two weir replicas, each seeing fewer weighted canary requests than min-requests but more together: Prometheus sums
// the replicas and judges (Successful); the web provider reads the one replica the Service picked and must not
// (Inconclusive). This is why prometheus.yaml is the one to use with several replicas.
func TestReplicasAreSummedByPrometheusOnly(t *testing.T) {
	runCase(t, analysisCase{weight: "50", replicas: 2,
		before:  func(w *weir, u *upstreams) { w.weighted(2) },
		between: func(w *weir, u *upstreams) { w.weighted(15) },
		args:    p99NeverFails,
		want:    both(v1alpha1.AnalysisPhaseSuccessful), wantWeb: both(v1alpha1.AnalysisPhaseInconclusive)})
}
