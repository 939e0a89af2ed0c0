package analysis

// What the Prometheus template's queries return over three scrapes of a live weir, computed here the way
// Prometheus 2.x computes it (increase() over a left-closed range with its extrapolation, sum, histogram_quantile's
// interpolation), so that `promtool test rules` can confirm that the shipped queries return exactly that and Argo's
// conditions can then judge it.

import (
	"math"
	"regexp"
	"sort"
	"strconv"
	"strings"
)

// A series of the text format: its name and labels.
type series struct {
	name   string
	labels map[string]string
}

// key is the series in PromQL syntax, labels sorted by name (also its sort order: Prometheus sorts series by their
// label sets, which decides the order of float additions in sum()).
func (s series) key() string {
	names := make([]string, 0, len(s.labels))
	for n := range s.labels {
		names = append(names, n)
	}
	sort.Strings(names)
	var b strings.Builder
	b.WriteString(s.name)
	b.WriteByte('{')
	for i, n := range names {
		if i > 0 {
			b.WriteByte(',')
		}
		b.WriteString(n)
		b.WriteString(`="`)
		b.WriteString(strings.NewReplacer(`\`, `\\`, `"`, `\"`, "\n", `\n`).Replace(s.labels[n]))
		b.WriteByte('"')
	}
	b.WriteByte('}')
	return b.String()
}

var sampleLine = regexp.MustCompile(`^([a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{(.*)\})? (\S+)$`)
var labelPair = regexp.MustCompile(`([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\]|\\.)*)"`)

// parseMetrics reads a /metrics text into series and values, adding <extra> labels to each (what Prometheus adds
// when it scrapes a pod: namespace, pod, instance, job...).
func parseMetrics(text string, extra map[string]string) map[string]float64Series {
	out := map[string]float64Series{}
	for _, line := range strings.Split(text, "\n") {
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		m := sampleLine.FindStringSubmatch(line)
		if m == nil {
			panic("unparsable /metrics line: " + line)
		}
		s := series{name: m[1], labels: map[string]string{}}
		for _, p := range labelPair.FindAllStringSubmatch(m[2], -1) {
			v := strings.NewReplacer(`\\`, `\`, `\"`, `"`, `\n`, "\n").Replace(p[2])
			s.labels[p[1]] = v
		}
		for k, v := range extra {
			s.labels[k] = v
		}
		v, err := strconv.ParseFloat(m[3], 64)
		if err != nil {
			panic("bad value in /metrics line: " + line)
		}
		out[s.key()] = float64Series{series: s, value: v}
	}
	return out
}

type float64Series struct {
	series series
	value  float64
}

// A series over the scrapes: one value per scrape, NaN where the series was not exported yet.
type timeline struct {
	series series
	values []float64
}

// timelines merges scrapes taken one interval apart.
func timelines(scrapes []map[string]float64Series) []timeline {
	byKey := map[string]*timeline{}
	for i, sc := range scrapes {
		for k, s := range sc {
			tl := byKey[k]
			if tl == nil {
				tl = &timeline{series: s.series, values: make([]float64, len(scrapes))}
				for j := range tl.values {
					tl.values[j] = math.NaN()
				}
				byKey[k] = tl
			}
			tl.values[i] = s.value
		}
	}
	keys := make([]string, 0, len(byKey))
	for k := range byKey {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	out := make([]timeline, 0, len(keys))
	for _, k := range keys {
		out = append(out, *byKey[k])
	}
	return out
}

// promtoolValues is the input_series notation of a timeline: "_" where there is no sample.
func (tl timeline) promtoolValues() string {
	parts := make([]string, len(tl.values))
	for i, v := range tl.values {
		if math.IsNaN(v) {
			parts[i] = "_"
		} else {
			parts[i] = strconv.FormatFloat(v, 'g', -1, 64)
		}
	}
	return strings.Join(parts, " ")
}

// increase is Prometheus 2.x's increase(s[rangeSec]) evaluated at the last scrape, the scrapes being <stepSec>
// apart (promql/functions.go extrapolatedRate). ok is false when the range holds fewer than two samples.
func (tl timeline) increase(stepSec, rangeSec float64) (float64, bool) {
	last := float64(len(tl.values)-1) * stepSec
	var ts, vs []float64
	for i, v := range tl.values {
		t := float64(i) * stepSec
		if !math.IsNaN(v) && t >= last-rangeSec {
			ts = append(ts, t)
			vs = append(vs, v)
		}
	}
	if len(vs) < 2 {
		return 0, false
	}
	result := vs[len(vs)-1] - vs[0]
	for i := 1; i < len(vs); i++ {
		if vs[i] < vs[i-1] {
			result += vs[i-1]
		}
	}
	durationToStart := ts[0] - (last - rangeSec)
	durationToEnd := last - ts[len(ts)-1]
	sampledInterval := ts[len(ts)-1] - ts[0]
	averageDurationBetweenSamples := sampledInterval / float64(len(vs)-1)
	if result > 0 && vs[0] >= 0 {
		durationToZero := sampledInterval * (vs[0] / result)
		if durationToZero < durationToStart {
			durationToStart = durationToZero
		}
	}
	threshold := averageDurationBetweenSamples * 1.1
	extrapolateTo := sampledInterval
	if durationToStart < threshold {
		extrapolateTo += durationToStart
	} else {
		extrapolateTo += averageDurationBetweenSamples / 2
	}
	if durationToEnd < threshold {
		extrapolateTo += durationToEnd
	} else {
		extrapolateTo += averageDurationBetweenSamples / 2
	}
	return result * (extrapolateTo / sampledInterval), true
}

// selector is a PromQL selector of equality matchers; "" matches a missing label, as in PromQL.
type selector map[string]string

func (sel selector) matches(s series) bool {
	for k, v := range sel {
		if k == "__name__" {
			if s.name != v {
				return false
			}
		} else if s.labels[k] != v {
			return false
		}
	}
	return true
}

// sumIncrease is sum(increase(<sel>[range])) with, when <codeClass> is not 0, code=~"<codeClass>..". ok is false
// for an empty result.
func sumIncrease(tls []timeline, sel selector, codeClass byte, stepSec, rangeSec float64) (float64, bool) {
	sum, any := 0.0, false
	for _, tl := range tls {
		if !sel.matches(tl.series) || (codeClass != 0 && !strings.HasPrefix(tl.series.labels["code"], string(codeClass))) {
			continue
		}
		if v, ok := tl.increase(stepSec, rangeSec); ok {
			if !any {
				sum, any = v, true
			} else {
				sum += v
			}
		}
	}
	return sum, any
}

// quantileOfBuckets is histogram_quantile(<q>, sum by (le) (increase(<sel>[range]))) over _bucket series
// (promql/quantile.go bucketQuantile). ok is false for an empty result.
func quantileOfBuckets(q float64, tls []timeline, sel selector, stepSec, rangeSec float64) (float64, bool) {
	byLe := map[string]float64{}
	for _, tl := range tls {
		if !sel.matches(tl.series) {
			continue
		}
		if v, ok := tl.increase(stepSec, rangeSec); ok {
			byLe[tl.series.labels["le"]] += v
		}
	}
	if len(byLe) == 0 {
		return 0, false
	}
	type bucket struct{ upper, count float64 }
	var bs []bucket
	for le, c := range byLe {
		u, err := strconv.ParseFloat(le, 64)
		if err != nil {
			panic("bad le " + le)
		}
		bs = append(bs, bucket{u, c})
	}
	sort.Slice(bs, func(i, j int) bool { return bs[i].upper < bs[j].upper })
	if !math.IsInf(bs[len(bs)-1].upper, 1) || len(bs) < 2 {
		return math.NaN(), true
	}
	observations := bs[len(bs)-1].count
	if observations == 0 {
		return math.NaN(), true
	}
	rank := q * observations
	b := sort.Search(len(bs)-1, func(i int) bool { return bs[i].count >= rank })
	if b == len(bs)-1 {
		return bs[len(bs)-2].upper, true
	}
	if b == 0 && bs[0].upper <= 0 {
		return bs[0].upper, true
	}
	var start float64
	end, count := bs[b].upper, bs[b].count
	if b > 0 {
		start = bs[b-1].upper
		count -= bs[b-1].count
		rank -= bs[b-1].count
	}
	return start + (end-start)*(rank/count), true
}
