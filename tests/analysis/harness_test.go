package analysis

// The live side of the analysis tests: the real weir binary (WEIR_BIN) in front of two upstreams served by this
// test, traffic through it, and its /metrics and /stats read back.

import (
	"bufio"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"sync/atomic"
	"syscall"
	"testing"
	"time"
)

const pollTimeout = 10 * time.Second

// repoPath is <rel> from the repository root (this package lives in tests/analysis).
func repoPath(rel string) string {
	return filepath.Join("..", "..", rel)
}

func weirBin(t *testing.T) string {
	bin := os.Getenv("WEIR_BIN")
	if bin == "" {
		bin = repoPath("build/weir")
	}
	abs, err := filepath.Abs(bin)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(abs); err != nil {
		t.Fatalf("weir binary: %v (build it with make, or set WEIR_BIN)", err)
	}
	return abs
}

// upstreams: stable always answers 200; the canary answers 500 to every path under /broken (what a developer's
// test of a broken feature hits), and to every second other request while <failing> is set.
type upstreams struct {
	stable, canary *httptest.Server
	failing        atomic.Bool
	canaryN        atomic.Int64
}

func startUpstreams(t *testing.T) *upstreams {
	u := &upstreams{}
	u.stable = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		io.WriteString(w, "stable\n")
	}))
	u.canary = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		n := u.canaryN.Add(1)
		if strings.HasPrefix(r.URL.Path, "/broken") || (u.failing.Load() && n%2 == 0) {
			w.WriteHeader(http.StatusInternalServerError)
			io.WriteString(w, "canary failed\n")
			return
		}
		io.WriteString(w, "canary\n")
	}))
	t.Cleanup(func() {
		u.stable.Close()
		u.canary.Close()
	})
	return u
}

type weir struct {
	t          *testing.T
	cmd        *exec.Cmd
	port       int
	admin      int
	sock       string
	errPath    string
	sent       int // requests sent through it, to wait for their counting
	client     *http.Client
	exitStatus chan error
}

func freePort(t *testing.T) int {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port
}

func waitPort(t *testing.T, port int, w *weir) {
	deadline := time.Now().Add(pollTimeout)
	for time.Now().Before(deadline) {
		c, err := net.DialTimeout("tcp", fmt.Sprintf("127.0.0.1:%d", port), time.Second)
		if err == nil {
			c.Close()
			return
		}
		select {
		case err := <-w.exitStatus:
			t.Fatalf("weir exited before listening (%v): %s", err, readFile(w.errPath))
		case <-time.After(10 * time.Millisecond):
		}
	}
	t.Fatalf("port %d not open within %v: %s", port, pollTimeout, readFile(w.errPath))
}

func readFile(path string) string {
	b, _ := os.ReadFile(path)
	return string(b)
}

// startWeir runs weir with one worker ahead of <u>, the canary at <canaryWeight> percent, variant-header on (the
// client counts where each request went) and the admin listener on a port of its own.
func startWeir(t *testing.T, u *upstreams, canaryWeight string) *weir {
	dir := t.TempDir()
	w := &weir{t: t, port: freePort(t), admin: freePort(t), sock: filepath.Join(dir, "weir.sock"),
		errPath: filepath.Join(dir, "weir.err"), exitStatus: make(chan error, 1),
		client: &http.Client{Timeout: pollTimeout}}
	errf, err := os.Create(w.errPath)
	if err != nil {
		t.Fatal(err)
	}
	defer errf.Close()
	w.cmd = exec.Command(weirBin(t), "--listen", fmt.Sprintf("127.0.0.1:%d", w.port),
		"--admin", fmt.Sprintf("127.0.0.1:%d", w.admin), "--control", w.sock, "--workers", "1",
		"--stable", u.stable.Listener.Addr().String(), "--canary", u.canary.Listener.Addr().String(),
		"--weight", "canary", canaryWeight, "--variant-header", "on")
	w.cmd.Stderr = errf
	if err := w.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() { w.exitStatus <- w.cmd.Wait() }()
	t.Cleanup(w.stop)
	waitPort(t, w.port, w)
	waitPort(t, w.admin, w)
	return w
}

var sanitizerReport = regexp.MustCompile(`ERROR: AddressSanitizer|ERROR: LeakSanitizer|runtime error:|SUMMARY: UndefinedBehaviorSanitizer`)

// stop ends weir with SIGTERM and fails the test unless it exits 0 without a sanitizer report.
func (w *weir) stop() {
	if w.cmd == nil {
		return
	}
	w.client.CloseIdleConnections()
	w.cmd.Process.Signal(syscall.SIGTERM)
	var err error
	select {
	case err = <-w.exitStatus:
	case <-time.After(pollTimeout):
		w.cmd.Process.Kill()
		err = <-w.exitStatus
		w.t.Errorf("weir did not exit within %v of SIGTERM", pollTimeout)
	}
	w.cmd = nil
	log := readFile(w.errPath)
	if err != nil {
		w.t.Errorf("weir exited with %v: %s", err, log)
	} else if sanitizerReport.MatchString(log) {
		w.t.Errorf("sanitizer report from weir: %s", log)
	}
}

// control sends one request on the control socket and fails the test unless the reply is "ok".
func (w *weir) control(line string) {
	c, err := net.DialTimeout("unix", w.sock, pollTimeout)
	if err != nil {
		w.t.Fatal(err)
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(pollTimeout))
	if _, err := io.WriteString(c, line+"\n"); err != nil {
		w.t.Fatal(err)
	}
	r := bufio.NewReader(c)
	first, err := r.ReadString('\n')
	if err != nil || first != "ok\n" {
		w.t.Fatalf("%s: %q %v", line, first, err)
	}
}

// get sends GET <path> through weir (with x-canary: 1 when <dev>) and returns the status and the variant weir
// chose.
func (w *weir) get(path string, dev bool) (int, string) {
	req, _ := http.NewRequest("GET", fmt.Sprintf("http://127.0.0.1:%d%s", w.port, path), nil)
	if dev {
		req.Header.Set("x-canary", "1")
	}
	resp, err := w.client.Do(req)
	if err != nil {
		w.t.Fatal(err)
	}
	io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	w.sent++
	return resp.StatusCode, resp.Header.Get("x-weir-variant")
}

// weighted sends requests for the weights to place until <n> of them went to the canary.
func (w *weir) weighted(n int) {
	for got, tries := 0, 0; got < n; tries++ {
		if tries > 100*n+100 {
			w.t.Fatalf("only %d of %d requests reached the canary", got, n)
		}
		if _, v := w.get("/app", false); v == "canary" {
			got++
		}
	}
}

// developer sends <n> header-routed requests to a path the canary fails.
func (w *weir) developer(n int) {
	for i := 0; i < n; i++ {
		if status, v := w.get("/broken/feature", true); v != "canary" || status != 500 {
			w.t.Fatalf("developer request: %d from %q, want 500 from the canary", status, v)
		}
	}
}

func (w *weir) adminGet(path string) string {
	resp, err := w.client.Get(fmt.Sprintf("http://127.0.0.1:%d%s", w.admin, path))
	if err != nil {
		w.t.Fatal(err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil || resp.StatusCode != 200 {
		w.t.Fatalf("GET %s: %d %v", path, resp.StatusCode, err)
	}
	return string(b)
}

var countLine = regexp.MustCompile(`(?m)^weir_request_duration_seconds_count\{[^}]*\} (\d+)$`)

// scrape returns /metrics once every request sent so far is counted (weir counts a request when it ends, which
// may be a moment after the client has its response).
func (w *weir) scrape() string {
	deadline := time.Now().Add(pollTimeout)
	for {
		m := w.adminGet("/metrics")
		total := 0
		for _, c := range countLine.FindAllStringSubmatch(m, -1) {
			n, _ := strconv.Atoi(c[1])
			total += n
		}
		if total == w.sent {
			return m
		}
		if total > w.sent || time.Now().After(deadline) {
			w.t.Fatalf("weir counted %d requests, %d were sent:\n%s", total, w.sent, m)
		}
		time.Sleep(5 * time.Millisecond)
	}
}
