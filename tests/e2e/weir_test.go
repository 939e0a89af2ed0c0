package e2e

// weir as the front proxy: two replicas, each with its own listener, admin and control port, in front of two
// weir-upstream processes (stable and canary). Traffic helpers count where real requests went.

import (
	"encoding/json"
	"fmt"
	"io"
	"math"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"
)

// timeline records what each actor did, with the time since the run started; it is printed and written out.
type timeline struct {
	mu    sync.Mutex
	start time.Time
	lines []string
}

func (tl *timeline) add(who, format string, args ...interface{}) {
	tl.mu.Lock()
	defer tl.mu.Unlock()
	l := fmt.Sprintf("%7.1fs  %-10s %s", time.Since(tl.start).Seconds(), who, fmt.Sprintf(format, args...))
	tl.lines = append(tl.lines, l)
	fmt.Println(l)
}

func (tl *timeline) text() string {
	tl.mu.Lock()
	defer tl.mu.Unlock()
	return strings.Join(tl.lines, "\n") + "\n"
}

type upstream struct {
	name string
	port int
	p    *proc
	dir  string
}

func startUpstream(t *testing.T, dir, name string, port int) *upstream {
	u := &upstream{name: name, port: port, dir: dir}
	u.start(t)
	return u
}

func (u *upstream) start(t *testing.T) {
	u.p = startProc(t, u.dir, "upstream-"+u.name, env(t, "WEIR_UPSTREAM_BIN"), nil,
		"--listen", fmt.Sprintf("127.0.0.1:%d", u.port), "--name", u.name)
	waitFor(t, "upstream "+u.name, 20*time.Second, 50*time.Millisecond, func() error {
		_, err := u.count()
		return err
	})
}

// count is the number of requests the upstream served (its /__count).
func (u *upstream) count() (int, error) {
	resp, err := http.Get(fmt.Sprintf("http://127.0.0.1:%d/__count", u.port))
	if err != nil {
		return 0, err
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	var n int
	_, err = fmt.Sscan(string(b), &n)
	return n, err
}

type weir struct {
	id                     int
	dir, conf, sock, state string
	listen, admin, control int
	p                      *proc
	client                 *http.Client
}

func startWeir(t *testing.T, dir string, id int, tokenFile string, stable, canary int) *weir {
	w := &weir{id: id, dir: dir, listen: freePort(t), admin: freePort(t), control: freePort(t)}
	w.conf = filepath.Join(dir, fmt.Sprintf("weir%d.conf", id))
	w.sock = filepath.Join(dir, fmt.Sprintf("weir%d.sock", id))
	w.state = filepath.Join(dir, fmt.Sprintf("weir%d.state", id))
	conf := fmt.Sprintf(`listen 127.0.0.1:%d
admin 127.0.0.1:%d
control %s
control-tcp 127.0.0.1:%d
control-token-file %s
state-file %s
stable 127.0.0.1:%d
canary 127.0.0.1:%d
workers 1
stats-window 60s
`, w.listen, w.admin, w.sock, w.control, tokenFile, w.state, stable, canary)
	if err := os.WriteFile(w.conf, []byte(conf), 0o644); err != nil {
		t.Fatal(err)
	}
	w.client = &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{MaxIdleConnsPerHost: 8}}
	w.start(t)
	return w
}

func (w *weir) name() string { return fmt.Sprintf("weir-%d", w.id) }

func (w *weir) start(t *testing.T) {
	w.p = startProc(t, w.dir, w.name(), env(t, "WEIR_BIN"), nil, "-c", w.conf)
	waitFor(t, w.name()+" /healthz", 20*time.Second, 50*time.Millisecond, func() error {
		if w.p.exited() {
			t.Fatalf("%s exited:\n%s", w.name(), w.p.tail())
		}
		resp, err := http.Get(fmt.Sprintf("http://127.0.0.1:%d/healthz", w.admin))
		if err != nil {
			return err
		}
		resp.Body.Close()
		return nil
	})
}

// ctl runs weirctl on the replica's Unix control socket.
func (w *weir) ctl(t *testing.T, args ...string) string {
	out, err := exec.Command(env(t, "WEIRCTL_BIN"), append([]string{"-s", w.sock}, args...)...).CombinedOutput()
	if err != nil {
		t.Fatalf("%s weirctl %v: %v: %s", w.name(), args, err, out)
	}
	return strings.TrimSpace(string(out))
}

// canaryWeight is the canary's percentage from `get weight`.
func (w *weir) canaryWeight(t *testing.T) float64 {
	for _, l := range strings.Split(w.ctl(t, "get", "weight"), "\n") {
		f := strings.Fields(l)
		if len(f) == 2 && f[0] == "canary" {
			var v float64
			fmt.Sscan(f[1], &v)
			return v
		}
	}
	t.Fatalf("%s: no canary in get weight", w.name())
	return 0
}

func (w *weir) routes(t *testing.T) string { return w.ctl(t, "show", "routes") }

// stats fetches /stats as a generic document.
func (w *weir) stats(t *testing.T) map[string]interface{} {
	resp, err := http.Get(fmt.Sprintf("http://127.0.0.1:%d/stats", w.admin))
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var m map[string]interface{}
	if err := json.NewDecoder(resp.Body).Decode(&m); err != nil {
		t.Fatal(err)
	}
	return m
}

// tally is what a batch of requests showed: responses per upstream name and per status code.
type tally struct {
	n      int
	by     map[string]int
	codes  map[int]int
	failed int
}

func (a tally) String() string {
	return fmt.Sprintf("%d requests: upstream %v, codes %v, transport errors %d", a.n, a.by, a.codes, a.failed)
}

// send makes n requests through the replica with 4 clients; hdr may be nil.
func (w *weir) send(t *testing.T, n int, path string, hdr map[string]string) tally {
	res := tally{by: map[string]int{}, codes: map[int]int{}}
	var mu sync.Mutex
	var wg sync.WaitGroup
	next := make(chan struct{}, n)
	for i := 0; i < n; i++ {
		next <- struct{}{}
	}
	close(next)
	for c := 0; c < 4; c++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for range next {
				req, _ := http.NewRequest("GET", fmt.Sprintf("http://127.0.0.1:%d%s", w.listen, path), nil)
				for k, v := range hdr {
					req.Header.Set(k, v)
				}
				resp, err := w.client.Do(req)
				mu.Lock()
				res.n++
				if err != nil {
					res.failed++
				} else {
					io.Copy(io.Discard, resp.Body)
					resp.Body.Close()
					res.codes[resp.StatusCode]++
					res.by[resp.Header.Get("x-upstream")]++
				}
				mu.Unlock()
			}
		}()
	}
	wg.Wait()
	return res
}

// binomialOK says whether k of n is within 5 standard deviations of n*p (about one false alarm in 1.7 million).
func binomialOK(k, n int, p float64) (bool, string) {
	mean := float64(n) * p
	sd := math.Sqrt(float64(n) * p * (1 - p))
	lo, hi := math.Floor(mean-5*sd), math.Ceil(mean+5*sd)
	return float64(k) >= lo && float64(k) <= hi, fmt.Sprintf("%d of %d, expected %.0f..%.0f", k, n, math.Max(lo, 0), hi)
}

// ctlQuiet is ctl for the observer goroutine, which must not stop the test.
func ctlQuiet(w *weir, args ...string) (string, error) {
	out, err := exec.Command(os.Getenv("WEIRCTL_BIN"), append([]string{"-s", w.sock}, args...)...).Output()
	return strings.TrimSpace(string(out)), err
}
