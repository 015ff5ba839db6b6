package e2e

import (
	"bytes"
	"compress/gzip"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"testing"
	"text/template"
	"time"

	corev1 "k8s.io/api/core/v1"

	"golang.org/x/sys/unix"

	"github.com/mesh-dev/mesh/install/manifests"
	"github.com/mesh-dev/mesh/proxy/metrics/metricstest"
)

const (
	// vizHostileNS is the attacker's namespace, outside the mesh.
	vizHostileNS = "e2e-viz-hostile"
	// hostileBodyBytes is the size of every hostile /metrics: the 50 MB of
	// issue 12's test 4.
	hostileBodyBytes = 50 << 20
	// hostileRounds is how many times viz is served each shape.
	hostileRounds = 2
	// vizAdminPort serves mesh-viz's own /metrics
	// (install/manifests/35-viz.yaml).
	vizAdminPort = 9990
	// vizMemorySlack is how far mesh-viz's resident memory may rise above
	// its baseline while it is attacked. A scrape keeps at most 8 MiB of
	// body in flight and 1 MiB of label values (controller/viz), so even
	// 16 scrapes at once stay under it; a parse that held a 50 MB body
	// would not.
	vizMemorySlack = 64 << 20
	// vizBaselineFor is how long mesh-viz is watched before the attack.
	vizBaselineFor = 10 * time.Second
	// vizSampleEvery paces the memory samples.
	vizSampleEvery = time.Second
)

// TestVizHostileMetrics is issue 12's test 4: an ordinary user's pod
// dressed up as a meshed one (the mesh.dev/proxy-version annotation, a
// container named mesh-proxy with a mesh-admin port) serves 50 MB
// /metrics of several hostile shapes, each scraped twice by mesh-viz.
// mesh-viz must refuse every one as too_large, its memory must stay
// within vizMemorySlack of what it used before, under its limit, and no
// container of the control plane (mesh-controller's identity,
// destination, policy and injector, and mesh-viz) may restart.
//
// The hostile server is the test process's own, listening inside the
// pod's network namespace (listenInNetns): viz reaches it at the pod's IP
// exactly as it would a server in the pod's image.
func TestVizHostileMetrics(t *testing.T) {
	needEnv(t)
	t.Parallel() // alongside the other tests that leave the mesh as they found it (main_test.go)
	ctx, cancel := context.WithTimeout(t.Context(), 6*time.Minute)
	defer cancel()
	ensureInstalled(t, ctx)
	ns := manifests.DefaultNamespace
	vizPod := &runningPods(t, ctx, ns, manifests.NameLabel+"=mesh-viz")[0]
	limit := vizMemoryLimit(t, vizPod)
	restarts := restartCounts(t, ctx, ns)
	watch := newVizWatch(t, ctx, vizPod)

	base := watch.run(ctx, vizBaselineFor, func(vizSample) bool { return false })
	t.Logf("mesh-viz before the attack (%s): %s", vizBaselineFor, base)
	if base.samples == 0 {
		t.Fatalf("no sample of mesh-viz's memory before the attack: %v", base.lastErr)
	}

	srv := newHostileServer(t, hostileRounds)
	applyVizHostile(t, ctx)
	pod := waitPodReady(t, ctx, vizHostileNS, "hostile")
	if len(pod.Spec.InitContainers) != 0 || len(pod.Spec.Containers) != 1 {
		t.Fatalf("the hostile pod was changed on admission (%d init containers, %d containers): it must run outside the mesh", len(pod.Spec.InitContainers), len(pod.Spec.Containers))
	}
	container, port := hostileAdminPort(t, pod)
	srv.serveIn(t, podContainerNetns(t, pod, container), port)

	// The attack lasts until every body was served and viz counted each
	// refusal; a round takes DefaultInterval (5s).
	baseTooLarge := base.last.errs["too_large"]
	budget := time.Duration(srv.want)*5*time.Second + 40*time.Second
	attack := watch.run(ctx, budget, func(s vizSample) bool {
		return srv.finished() && s.errs["too_large"]-baseTooLarge >= float64(srv.want)
	})
	served := srv.report(t)
	t.Logf("mesh-viz during the attack: %s", attack)
	if !attack.stopped {
		t.Errorf("after %s: viz fetched %d of the %d hostile bodies and counted %.0f too_large refusals (want one a body); its scrape errors: %v",
			budget, len(served), srv.want, attack.last.errs["too_large"]-baseTooLarge, attack.last.errs)
	}
	for _, b := range served {
		if b.whole && !b.compressed {
			t.Errorf("viz read the whole %s (%d bytes): it must hang up at its cap", b.shape, b.sent)
		}
	}
	if attack.failed > 0 {
		t.Errorf("%d of %d samples of mesh-viz's /metrics failed during the attack (last: %v): it must keep answering", attack.failed, attack.samples+attack.failed, attack.lastErr)
	}

	before, peak := base.rss, attack.rss
	if attack.last.hwm > base.last.hwm {
		// Its resident memory reached a new high during the attack: the
		// kernel's high-water mark catches a spike between two samples.
		peak = max(peak, attack.last.hwm)
	}
	t.Logf("mesh-viz resident memory: %.1f MiB before, %.1f MiB at the most while attacked (%+.1f MiB; bound +%d MiB, limit %d MiB); Go heap in use %.1f -> %.1f MiB",
		before/(1<<20), peak/(1<<20), (peak-before)/(1<<20), vizMemorySlack>>20, limit>>20, base.heap/(1<<20), attack.heap/(1<<20))
	if peak > before+vizMemorySlack {
		t.Errorf("mesh-viz's resident memory rose from %.1f to %.1f MiB while attacked, more than %d MiB: a hostile /metrics grows it",
			before/(1<<20), peak/(1<<20), vizMemorySlack>>20)
	}
	if peak >= float64(limit) {
		t.Errorf("mesh-viz's resident memory reached %.1f MiB, its limit is %d MiB", peak/(1<<20), limit>>20)
	}
	checkControlPlaneRestarts(t, ctx, restarts)
}

// applyVizHostile applies testdata/viz-hostile.yaml and deletes its
// namespace when the test ends, passed or not.
func applyVizHostile(t *testing.T, ctx context.Context) {
	t.Helper()
	tmpl, err := template.ParseFiles(filepath.Join(e2e.root, "test", "e2e", "testdata", "viz-hostile.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	var b bytes.Buffer
	if err := tmpl.Execute(&b, map[string]string{"NS": vizHostileNS, "Version": e2e.version}); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
		defer cancel()
		deleteNamespace(t, ctx, vizHostileNS)
	})
	mustRun(t, ctx, b.Bytes(), e2e.kubectl, "apply", "-f", "-")
}

// checkControlPlaneRestarts fails t if a container of the control plane
// restarted since before was taken, or a pod of it was replaced.
func checkControlPlaneRestarts(t *testing.T, ctx context.Context, before map[string]int32) {
	t.Helper()
	after := restartCounts(t, ctx, manifests.DefaultNamespace)
	changed := false
	for name, n := range before {
		if m, ok := after[name]; !ok {
			t.Errorf("control plane container %s is gone: its pod was replaced", name)
			changed = true
		} else if m != n {
			t.Errorf("control plane container %s restarted %d times during the attack", name, m-n)
			changed = true
		}
	}
	for name := range after {
		if _, ok := before[name]; !ok {
			t.Errorf("control plane container %s is new: a pod was replaced", name)
			changed = true
		}
	}
	if changed {
		dumpNamespace(t, manifests.DefaultNamespace)
	}
	t.Logf("control plane containers, none restarted: %d", len(after))
}

// vizMemoryLimit is the memory limit of mesh-viz's container.
func vizMemoryLimit(t *testing.T, pod *corev1.Pod) int64 {
	t.Helper()
	for _, c := range pod.Spec.Containers {
		if lim := c.Resources.Limits.Memory(); c.Name == "viz" && lim != nil && lim.Value() > 0 {
			return lim.Value()
		}
	}
	t.Fatalf("pod %s/%s: container viz has no memory limit; install/manifests/35-viz.yaml sets one", pod.Namespace, pod.Name)
	return 0
}

// hostileAdminPort returns the container of pod that declares the port
// mesh-admin, where viz scrapes an injected proxy, and that port.
func hostileAdminPort(t *testing.T, pod *corev1.Pod) (container string, port int32) {
	t.Helper()
	for _, c := range pod.Spec.Containers {
		for _, p := range c.Ports {
			if p.Name == "mesh-admin" {
				return c.Name, p.ContainerPort
			}
		}
	}
	t.Fatalf("pod %s/%s declares no port mesh-admin: viz would not scrape it", pod.Namespace, pod.Name)
	return "", 0
}

// podContainerNetns is the network namespace of a process of pod's
// container named container.
func podContainerNetns(t *testing.T, pod *corev1.Pod, container string) string {
	t.Helper()
	for _, cs := range pod.Status.ContainerStatuses {
		if cs.Name != container {
			continue
		}
		_, id, _ := strings.Cut(cs.ContainerID, "://")
		ns, err := containerNetns(id)
		if err != nil {
			t.Fatalf("pod %s/%s: %v", pod.Namespace, pod.Name, err)
		}
		return ns
	}
	t.Fatalf("pod %s/%s: no status for container %s", pod.Namespace, pod.Name, container)
	return ""
}

// vizSample is one reading of mesh-viz's memory and scrape errors.
type vizSample struct {
	rss  float64 // process_resident_memory_bytes
	heap float64 // go_memstats_heap_inuse_bytes
	// hwm is the process's VmHWM, the most resident memory it ever had,
	// read by the host from /proc.
	hwm  float64
	errs map[string]float64 // mesh_controller_viz_scrape_errors_total by reason
}

// vizPeak is the most of each figure over a phase's samples.
type vizPeak struct {
	rss, heap float64
	last      vizSample
	samples   int
	failed    int
	lastErr   error
	// stopped reports whether the phase ended because its condition was
	// met rather than by its time running out.
	stopped bool
}

func (p vizPeak) String() string {
	return fmt.Sprintf("%d samples (%d failed): RSS at most %.1f MiB (high-water mark %.1f MiB), Go heap in use at most %.1f MiB; scrape errors %v",
		p.samples, p.failed, p.rss/(1<<20), p.last.hwm/(1<<20), p.heap/(1<<20), p.last.errs)
}

// vizWatch samples mesh-viz's own /metrics through a port-forward to its
// admin port, as an operator's Prometheus would see it, and its process'
// high-water mark from the host.
type vizWatch struct {
	proc   string // /proc/PID of mesh-viz
	url    string // its /metrics through the port-forward
	client *http.Client
}

func newVizWatch(t *testing.T, ctx context.Context, pod *corev1.Pod) *vizWatch {
	t.Helper()
	proc := filepath.Dir(filepath.Dir(podContainerNetns(t, pod, "viz"))) // /proc/PID/ns/net
	fctx, stop := context.WithCancel(ctx)
	local, done, err := forwardPodPort(fctx, pod, vizAdminPort)
	if err != nil {
		stop()
		t.Fatalf("port-forward to %s/%s:%d: %v", pod.Namespace, pod.Name, vizAdminPort, err)
	}
	tr := &http.Transport{DisableKeepAlives: true}
	t.Cleanup(func() {
		tr.CloseIdleConnections()
		stop()
		<-done
	})
	return &vizWatch{proc: proc, url: "http://" + local + "/metrics", client: &http.Client{Transport: tr, Timeout: 5 * time.Second}}
}

// run samples every vizSampleEvery until stop says so or d has passed.
func (w *vizWatch) run(ctx context.Context, d time.Duration, stop func(vizSample) bool) vizPeak {
	ctx, cancel := context.WithTimeout(ctx, d)
	defer cancel()
	var p vizPeak
	for {
		s, err := w.sample(ctx)
		switch {
		case err != nil && ctx.Err() != nil:
			return p // the sample was cut short by the phase's end
		case err != nil:
			p.failed++
			p.lastErr = err
		default:
			p.samples++
			p.rss, p.heap, p.last = max(p.rss, s.rss), max(p.heap, s.heap), s
			if stop(s) {
				p.stopped = true
				return p
			}
		}
		select {
		case <-ctx.Done():
			return p
		case <-time.After(vizSampleEvery):
		}
	}
}

func (w *vizWatch) sample(ctx context.Context) (vizSample, error) {
	hwm, err := readVmHWM(w.proc)
	if err != nil {
		return vizSample{}, fmt.Errorf("mesh-viz's process: %w", err)
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, w.url, nil)
	if err != nil {
		return vizSample{}, err
	}
	res, err := w.client.Do(req)
	if err != nil {
		return vizSample{}, fmt.Errorf("mesh-viz's /metrics: %w", err)
	}
	defer res.Body.Close()
	if res.StatusCode != http.StatusOK {
		return vizSample{}, fmt.Errorf("mesh-viz's /metrics: %s", res.Status)
	}
	fams, err := metricstest.Parse(io.LimitReader(res.Body, 4<<20))
	if err != nil {
		return vizSample{}, fmt.Errorf("mesh-viz's /metrics: %w", err)
	}
	for _, name := range []string{"process_resident_memory_bytes", "go_memstats_heap_inuse_bytes"} {
		if fams[name] == nil {
			return vizSample{}, fmt.Errorf("mesh-viz's /metrics has no %s", name)
		}
	}
	s := vizSample{
		rss:  fams.Sum("process_resident_memory_bytes"),
		heap: fams.Sum("go_memstats_heap_inuse_bytes"),
		hwm:  hwm,
		errs: map[string]float64{},
	}
	if fam := fams["mesh_controller_viz_scrape_errors_total"]; fam != nil {
		for _, m := range fam.GetMetric() {
			for _, l := range m.GetLabel() {
				if l.GetName() == "reason" {
					s.errs[l.GetValue()] = m.GetCounter().GetValue()
				}
			}
		}
	}
	return s, nil
}

// readVmHWM reads the peak resident set size of the process at proc.
func readVmHWM(proc string) (float64, error) {
	b, err := os.ReadFile(filepath.Join(proc, "status"))
	if err != nil {
		return 0, err
	}
	for line := range strings.Lines(string(b)) {
		if v, ok := strings.CutPrefix(line, "VmHWM:"); ok {
			kb, err := strconv.ParseFloat(strings.TrimSuffix(strings.TrimSpace(v), " kB"), 64)
			if err != nil {
				return 0, fmt.Errorf("VmHWM %q: %w", v, err)
			}
			return kb * 1024, nil
		}
	}
	return 0, fmt.Errorf("%s/status has no VmHWM", proc)
}

// listenInNetns listens on addr inside the network namespace at nsPath.
// A socket keeps the namespace it was made in, and so does every
// connection it accepts: the test's server answers at the pod's IP as if
// the pod ran it. The switch happens on a locked OS thread; if the switch
// back fails the thread stays locked and ends with its goroutine, so no
// other goroutine runs in the pod's namespace.
func listenInNetns(nsPath, addr string) (net.Listener, error) {
	type result struct {
		ln  net.Listener
		err error
	}
	ch := make(chan result, 1)
	go func() {
		runtime.LockOSThread()
		ln, back, err := listenOnThread(nsPath, addr)
		if back {
			runtime.UnlockOSThread()
		}
		ch <- result{ln, err}
	}()
	r := <-ch
	return r.ln, r.err
}

// listenOnThread does listenInNetns' work on the calling, locked thread;
// back reports whether the thread is in its own namespace again.
func listenOnThread(nsPath, addr string) (ln net.Listener, back bool, err error) {
	orig, err := os.Open(fmt.Sprintf("/proc/self/task/%d/ns/net", unix.Gettid()))
	if err != nil {
		return nil, true, err
	}
	defer orig.Close()
	target, err := os.Open(nsPath)
	if err != nil {
		return nil, true, err
	}
	defer target.Close()
	if err := unix.Setns(int(target.Fd()), unix.CLONE_NEWNET); err != nil {
		return nil, true, fmt.Errorf("enter %s: %w", nsPath, err)
	}
	ln, err = net.Listen("tcp", addr)
	back = unix.Setns(int(orig.Fd()), unix.CLONE_NEWNET) == nil
	return ln, back, err
}

// hostileServer serves want hostile /metrics, cycling through its shapes,
// then answers 503: viz scrapes it every round, and the test counts one
// too_large refusal for each body served.
type hostileServer struct {
	shapes []hostileShape
	want   int

	mu      sync.Mutex
	started int           // bodies begun; guarded by mu
	served  []hostileBody // bodies ended; guarded by mu
}

// hostileShape writes one kind of hostile body.
type hostileShape struct {
	name string
	// serve writes the body and returns the bytes the connection took
	// and whether the body was compressed on the wire.
	serve func(w http.ResponseWriter, r *http.Request) (sent int64, compressed bool, err error)
}

// hostileBody is one body served.
type hostileBody struct {
	shape      string
	sent       int64
	compressed bool
	whole      bool // the body was written to its end: viz did not hang up
	err        error
	took       time.Duration
}

func newHostileServer(t *testing.T, rounds int) *hostileServer {
	t.Helper()
	family := hostileFamily()
	bomb := gzipBomb(t)
	s := &hostileServer{shapes: []hostileShape{
		{"family of many series (Content-Length)", func(w http.ResponseWriter, r *http.Request) (int64, bool, error) {
			w.Header().Set("Content-Length", strconv.Itoa(len(family)))
			n, err := writeChunks(w, family)
			return n, false, err
		}},
		{"single endless line", func(w http.ResponseWriter, r *http.Request) (int64, bool, error) {
			n, err := writeStream(w, func(b []byte, i int) []byte {
				if i == 0 {
					b = append(b, `mesh_proxy_tcp_open_total{target_addr="`...)
				}
				return append(b, bytes.Repeat([]byte("a"), 1024)...)
			})
			return n, false, err
		}},
		{"valid text that goes on (a family viz skips)", func(w http.ResponseWriter, r *http.Request) (int64, bool, error) {
			n, err := writeStream(w, func(b []byte, i int) []byte {
				if i == 0 {
					b = append(b, "# TYPE hostile_padding_total counter\n"...)
				}
				return fmt.Appendf(b, "hostile_padding_total{n=\"%d\"} %d\n", i, i)
			})
			return n, false, err
		}},
		{"histogram of endless buckets", func(w http.ResponseWriter, r *http.Request) (int64, bool, error) {
			n, err := writeStream(w, func(b []byte, i int) []byte {
				if i == 0 {
					b = append(b, "# TYPE mesh_proxy_http_response_latency_seconds histogram\n"...)
				}
				return fmt.Appendf(b, "mesh_proxy_http_response_latency_seconds_bucket{direction=\"inbound\",le=\"%d\"} %d\n", i+1, i)
			})
			return n, false, err
		}},
		{"gzip bomb", func(w http.ResponseWriter, r *http.Request) (int64, bool, error) {
			if !strings.Contains(r.Header.Get("Accept-Encoding"), "gzip") {
				// A client that does not ask for gzip would not undo it:
				// the body would be refused as malformed, which proves
				// nothing about the cap. Serve the family plain instead.
				n, err := writeChunks(w, family)
				return n, false, err
			}
			w.Header().Set("Content-Encoding", "gzip")
			w.Header().Set("Content-Length", strconv.Itoa(len(bomb)))
			n, err := writeChunks(w, bomb)
			return n, true, err
		}},
	}}
	s.want = rounds * len(s.shapes)
	t.Logf("hostile bodies: %d MiB each; the family %d bytes, the gzip bomb %d bytes that inflate to %d MiB", hostileBodyBytes>>20, len(family), len(bomb), hostileBodyBytes>>20)
	return s
}

// serveIn starts serving on port in the network namespace at nsPath,
// until the test ends.
func (s *hostileServer) serveIn(t *testing.T, nsPath string, port int32) {
	t.Helper()
	ln, err := listenInNetns(nsPath, fmt.Sprintf(":%d", port))
	if err != nil {
		t.Fatalf("listen on the hostile pod's port %d: %v", port, err)
	}
	srv := &http.Server{Handler: s, ReadHeaderTimeout: 5 * time.Second, WriteTimeout: 30 * time.Second}
	done := make(chan struct{})
	go func() {
		defer close(done)
		srv.Serve(ln)
	}()
	t.Cleanup(func() {
		srv.Close()
		<-done
	})
}

func (s *hostileServer) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if r.URL.Path != "/metrics" {
		http.NotFound(w, r)
		return
	}
	s.mu.Lock()
	i := s.started
	if i < s.want {
		s.started++
	}
	s.mu.Unlock()
	if i >= s.want {
		http.Error(w, "the attack is over", http.StatusServiceUnavailable)
		return
	}
	shape := s.shapes[i%len(s.shapes)]
	w.Header().Set("Content-Type", "text/plain; version=0.0.4; charset=utf-8")
	start := time.Now()
	sent, compressed, err := shape.serve(w, r)
	b := hostileBody{shape: shape.name, sent: sent, compressed: compressed, whole: err == nil, err: err, took: time.Since(start)}
	s.mu.Lock()
	s.served = append(s.served, b)
	s.mu.Unlock()
}

// finished reports whether every body was served.
func (s *hostileServer) finished() bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return len(s.served) == s.want
}

// report logs the bodies served and returns them.
func (s *hostileServer) report(t *testing.T) []hostileBody {
	t.Helper()
	s.mu.Lock()
	served := append([]hostileBody(nil), s.served...)
	s.mu.Unlock()
	for _, b := range served {
		end := "viz hung up"
		switch {
		case b.whole:
			end = "written whole"
		case !isHangUp(b.err):
			end = b.err.Error()
		}
		t.Logf("served %-45s %9d bytes on the wire in %6s: %s", b.shape, b.sent, b.took.Round(time.Millisecond), end)
	}
	return served
}

// isHangUp reports whether err is the peer closing the connection.
func isHangUp(err error) bool {
	return errors.Is(err, unix.EPIPE) || errors.Is(err, unix.ECONNRESET)
}

// hostileFamily is one family of response counters, hostileBodyBytes of
// distinct label sets, each a plausible proxy's.
func hostileFamily() []byte {
	b := make([]byte, 0, hostileBodyBytes+256)
	b = append(b, "# TYPE mesh_proxy_http_responses_total counter\n"...)
	for i := 0; len(b) < hostileBodyBytes; i++ {
		b = fmt.Appendf(b, "mesh_proxy_http_responses_total{direction=\"inbound\",authority=\"web.shop.svc.cluster.local:80\",target_addr=\"10.%d.%d.%d:8080\",status_code=\"200\",classification=\"success\"} %d\n",
			i>>16&0xff, i>>8&0xff, i&0xff, i)
	}
	return b
}

// gzipBomb is hostileBodyBytes of comment lines, valid text that viz
// reads and skips, gzipped to a few dozen KiB: viz must count the body
// after the transport inflates it.
func gzipBomb(t *testing.T) []byte {
	t.Helper()
	line := append(append([]byte("# "), bytes.Repeat([]byte("x"), 1021)...), '\n')
	block := bytes.Repeat(line, (1<<20)/len(line))
	var out bytes.Buffer
	zw, err := gzip.NewWriterLevel(&out, gzip.BestCompression)
	if err != nil {
		t.Fatal(err)
	}
	for n := 0; n < hostileBodyBytes; n += len(block) {
		if _, err := zw.Write(block); err != nil {
			t.Fatal(err)
		}
	}
	if err := zw.Close(); err != nil {
		t.Fatal(err)
	}
	return out.Bytes()
}

// writeChunks writes body in 64 KiB writes and returns how much was
// written when it ended or failed.
func writeChunks(w io.Writer, body []byte) (int64, error) {
	var sent int64
	for len(body) > 0 {
		n, err := w.Write(body[:min(len(body), 64<<10)])
		sent += int64(n)
		if err != nil {
			return sent, err
		}
		body = body[n:]
	}
	return sent, nil
}

// writeStream writes hostileBodyBytes made by next, called with a buffer
// to append to and the index of the piece, without a Content-Length.
func writeStream(w io.Writer, next func(b []byte, i int) []byte) (int64, error) {
	var sent int64
	buf := make([]byte, 0, 80<<10)
	for i := 0; sent < hostileBodyBytes; {
		buf = buf[:0]
		for ; len(buf) < 64<<10; i++ {
			buf = next(buf, i)
		}
		n, err := w.Write(buf)
		sent += int64(n)
		if err != nil {
			return sent, err
		}
	}
	return sent, nil
}
