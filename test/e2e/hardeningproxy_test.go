package e2e

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/mesh-dev/mesh/internal/names"
	"github.com/mesh-dev/mesh/proxy/metrics"
	"github.com/mesh-dev/mesh/proxy/metrics/metricstest"
)

// fixedSeries bounds the series a proxy exports beyond metrics.MaxSeries:
// the Go and process collectors, discovery, router and identity, which do
// not depend on traffic (docs/metrics.md: "plus under 100 fixed series").
const fixedSeries = 100

const mib = 1 << 20

// proxyPeak is the most a pod's proxy used while an attack ran: from its
// own /metrics, scraped every few seconds through the API server as a
// user would, and from the kernel, which keeps the peak memory charged to
// the container's cgroup (the number its memory limit is enforced on).
type proxyPeak struct {
	pod   *corev1.Pod
	limit int64 // the mesh-proxy container's memory limit, in bytes
	proc  proxyProc

	// From /metrics.
	rss     float64 // highest process_resident_memory_bytes
	series  int     // most samples in one scrape
	own     int     // of which the mesh's own families (not go_*, process_*)
	starts  []float64
	scrapes int
	failed  int
	lastErr error

	// From /proc/PID/status at each scrape: the anonymous and file-backed
	// parts of the RSS, in bytes. The file-backed part is mostly the
	// binary's text, shared by every proxy and charged to whichever
	// cgroup touched it first.
	anon, file float64
	// From the cgroup when the attack ends.
	cgroupPeak, oomKills int64
	cgroupErr            error
}

// watchProxies samples the proxies of pods every 2s until the returned
// function is called, which takes a last sample and returns the peaks.
func watchProxies(t *testing.T, ctx context.Context, pods ...*corev1.Pod) func() []*proxyPeak {
	t.Helper()
	peaks := make([]*proxyPeak, len(pods))
	for i, pod := range pods {
		proc, err := findProxyProc(pod)
		if err != nil {
			t.Fatalf("pod %s: %v", pod.Name, err)
		}
		peaks[i] = &proxyPeak{pod: pod, limit: proxyMemoryLimit(t, pod), proc: proc}
	}
	sample := func() {
		for _, p := range peaks {
			p.sample(ctx)
		}
	}
	stop, done := make(chan struct{}), make(chan struct{})
	go func() {
		defer close(done)
		tick := time.NewTicker(2 * time.Second)
		defer tick.Stop()
		for {
			sample()
			select {
			case <-stop:
				return
			case <-ctx.Done():
				return
			case <-tick.C:
			}
		}
	}()
	return func() []*proxyPeak {
		close(stop)
		<-done
		sample()
		for _, p := range peaks {
			p.cgroupPeak, p.oomKills, p.cgroupErr = p.proc.memoryPeak()
		}
		return peaks
	}
}

// proxyMemoryLimit is the memory limit the injector gave pod's proxy.
func proxyMemoryLimit(t *testing.T, pod *corev1.Pod) int64 {
	t.Helper()
	for _, c := range pod.Spec.InitContainers {
		if c.Name == names.ProxyContainerName {
			if lim := c.Resources.Limits.Memory(); lim != nil && lim.Value() > 0 {
				return lim.Value()
			}
		}
	}
	t.Fatalf("pod %s/%s: container %s has no memory limit; the injector sets one (install/inject)",
		pod.Namespace, pod.Name, names.ProxyContainerName)
	return 0
}

func (p *proxyPeak) sample(ctx context.Context) {
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	if anon, file, err := p.proc.rss(); err == nil {
		p.anon, p.file = max(p.anon, anon), max(p.file, file)
	}
	p.scrapes++
	body, err := e2e.client.CoreV1().Pods(p.pod.Namespace).
		ProxyGet("http", p.pod.Name, fmt.Sprint(names.AdminPort), "metrics", nil).DoRaw(ctx)
	var fams metricstest.Families
	if err == nil {
		fams, err = metricstest.Parse(bytes.NewReader(body))
	}
	if err == nil && (fams["process_resident_memory_bytes"] == nil || fams["process_start_time_seconds"] == nil) {
		err = fmt.Errorf("no process_resident_memory_bytes or process_start_time_seconds in %d bytes of /metrics", len(body))
	}
	if err != nil {
		p.failed++
		p.lastErr = err
		return
	}
	all, own := countSeries(body)
	p.series, p.own = max(p.series, all), max(p.own, own)
	p.rss = max(p.rss, fams.Sum("process_resident_memory_bytes"))
	if start := fams.Sum("process_start_time_seconds"); !slices.Contains(p.starts, start) {
		p.starts = append(p.starts, start)
	}
}

// countSeries counts the samples of a Prometheus text exposition, one a
// line, in all and outside the Go and process collectors.
func countSeries(body []byte) (all, own int) {
	for line := range bytes.Lines(body) {
		line = bytes.TrimSpace(line)
		if len(line) == 0 || line[0] == '#' {
			continue
		}
		all++
		if !bytes.HasPrefix(line, []byte("go_")) && !bytes.HasPrefix(line, []byte("process_")) {
			own++
		}
	}
	return all, own
}

// check fails t unless the proxy ran as one process, stayed under its
// memory limit and under the documented series bound.
func (p *proxyPeak) check(t *testing.T) {
	t.Helper()
	name := p.pod.Name
	t.Logf("proxy of %s: peak RSS %.1f MiB (anonymous %.1f, file-backed %.1f), cgroup peak %.1f MiB, limit %.0f MiB; at most %d series (%d of the mesh's families; bound %d + %d fixed); %d of %d scrapes failed",
		name, p.rss/mib, p.anon/mib, p.file/mib, float64(p.cgroupPeak)/mib, float64(p.limit)/mib,
		p.series, p.own, metrics.MaxSeries, fixedSeries, p.failed, p.scrapes)
	if p.failed == p.scrapes {
		t.Errorf("proxy of %s: all %d scrapes of /metrics failed, the last: %v", name, p.scrapes, p.lastErr)
		return
	}
	if p.failed > 0 {
		t.Logf("proxy of %s: last failed scrape: %v", name, p.lastErr)
	}
	if len(p.starts) > 1 {
		t.Errorf("proxy of %s: the process restarted during the attack: process_start_time_seconds took %d values %v", name, len(p.starts), p.starts)
	}
	if p.rss >= float64(p.limit) {
		t.Errorf("proxy of %s: RSS (process_resident_memory_bytes) reached %.1f MiB, at or over its memory limit of %.0f MiB",
			name, p.rss/mib, float64(p.limit)/mib)
	}
	switch {
	case p.cgroupErr != nil:
		t.Errorf("proxy of %s: read its memory cgroup at the end: %v (a restarted container has a new one)", name, p.cgroupErr)
	case p.oomKills > 0:
		t.Errorf("proxy of %s: the kernel OOM-killed %d processes of its container", name, p.oomKills)
	case p.cgroupPeak >= p.limit:
		t.Errorf("proxy of %s: the memory charged to its container peaked at %.1f MiB, at its limit of %.0f MiB",
			name, float64(p.cgroupPeak)/mib, float64(p.limit)/mib)
	}
	if p.own > metrics.MaxSeries {
		t.Errorf("proxy of %s: %d series of the mesh's own families, over metrics.MaxSeries = %d (docs/metrics.md)", name, p.own, metrics.MaxSeries)
	}
	if p.series > metrics.MaxSeries+fixedSeries {
		t.Errorf("proxy of %s: %d series in /metrics, over the documented %d + %d fixed", name, p.series, metrics.MaxSeries, fixedSeries)
	}
}

// proxyProc is a proxy's process as the host sees it.
type proxyProc struct {
	dir    string // /proc/PID
	cgroup string // its memory cgroup's directory
	v2     bool   // cgroup v2 (memory.peak) rather than v1 (memory.max_usage_in_bytes)
}

// findProxyProc finds the process of pod's proxy container and its memory
// cgroup.
func findProxyProc(pod *corev1.Pod) (proxyProc, error) {
	var id string
	for _, cs := range pod.Status.InitContainerStatuses {
		if cs.Name == names.ProxyContainerName {
			_, id, _ = strings.Cut(cs.ContainerID, "://")
		}
	}
	if id == "" {
		return proxyProc{}, fmt.Errorf("no container ID for %s", names.ProxyContainerName)
	}
	netns, err := containerNetns(id) // /proc/PID/ns/net
	if err != nil {
		return proxyProc{}, err
	}
	p := proxyProc{dir: filepath.Dir(filepath.Dir(netns))}
	b, err := os.ReadFile(filepath.Join(p.dir, "cgroup"))
	if err != nil {
		return proxyProc{}, err
	}
	var unified string
	for line := range strings.Lines(string(b)) {
		// hierarchy-ID:controllers:path (cgroups(7))
		f := strings.SplitN(strings.TrimSpace(line), ":", 3)
		switch {
		case len(f) != 3:
		case slices.Contains(strings.Split(f[1], ","), "memory"):
			p.cgroup = filepath.Join("/sys/fs/cgroup/memory", f[2])
			return p, nil
		case f[0] == "0" && f[1] == "":
			unified = f[2]
		}
	}
	if unified == "" {
		return proxyProc{}, fmt.Errorf("%s/cgroup names no memory cgroup", p.dir)
	}
	p.cgroup, p.v2 = filepath.Join("/sys/fs/cgroup", unified), true
	return p, nil
}

// rss reads the anonymous and file-backed resident memory of the process.
func (p proxyProc) rss() (anon, file float64, err error) {
	b, err := os.ReadFile(filepath.Join(p.dir, "status"))
	if err != nil {
		return 0, 0, err
	}
	for line := range strings.Lines(string(b)) {
		name, value, _ := strings.Cut(line, ":")
		kb, err := strconv.ParseFloat(strings.TrimSuffix(strings.TrimSpace(value), " kB"), 64)
		switch {
		case err != nil:
		case name == "RssAnon":
			anon = kb * 1024
		case name == "RssFile":
			file = kb * 1024
		}
	}
	return anon, file, nil
}

// memoryPeak reads the most memory the kernel ever charged the cgroup,
// and how many processes it OOM-killed in it.
func (p proxyProc) memoryPeak() (peak, oomKills int64, err error) {
	peakFile, eventsFile := "memory.max_usage_in_bytes", "memory.oom_control"
	if p.v2 {
		peakFile, eventsFile = "memory.peak", "memory.events"
	}
	b, err := os.ReadFile(filepath.Join(p.cgroup, peakFile))
	if err != nil {
		return 0, 0, err
	}
	if peak, err = strconv.ParseInt(strings.TrimSpace(string(b)), 10, 64); err != nil {
		return 0, 0, fmt.Errorf("%s: %w", peakFile, err)
	}
	if b, err = os.ReadFile(filepath.Join(p.cgroup, eventsFile)); err != nil {
		return 0, 0, err
	}
	for line := range strings.Lines(string(b)) {
		if v, ok := strings.CutPrefix(strings.TrimSpace(line), "oom_kill "); ok {
			oomKills, _ = strconv.ParseInt(v, 10, 64)
		}
	}
	return peak, oomKills, nil
}

// checkNoRestarts fails t if the proxy of any of pods was restarted, with
// why it last ended (OOMKilled, say).
func checkNoRestarts(t *testing.T, ctx context.Context, pods ...*corev1.Pod) {
	t.Helper()
	for _, p := range pods {
		now, err := e2e.client.CoreV1().Pods(p.Namespace).Get(ctx, p.Name, metav1.GetOptions{})
		if err != nil {
			t.Errorf("pod %s/%s: %v", p.Namespace, p.Name, err)
			continue
		}
		found := false
		for _, cs := range now.Status.InitContainerStatuses {
			if cs.Name != names.ProxyContainerName {
				continue
			}
			found = true
			if cs.RestartCount > 0 {
				last := "unknown"
				if term := cs.LastTerminationState.Terminated; term != nil {
					last = fmt.Sprintf("%s, exit code %d", term.Reason, term.ExitCode)
				}
				t.Errorf("pod %s: the proxy was restarted %d times, want 0; it last ended: %s", p.Name, cs.RestartCount, last)
			}
		}
		if !found {
			t.Errorf("pod %s: no status for container %s", p.Name, names.ProxyContainerName)
		}
	}
}

// dumpProxy logs the end of what pod's proxy logged, and of its previous
// run if it was restarted, for a failure's diagnosis.
func dumpProxy(t *testing.T, pod *corev1.Pod) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	for _, prev := range []string{"--previous=false", "--previous=true"} {
		r := command(ctx, nil, nil, e2e.kubectl, "logs", "-n", pod.Namespace, pod.Name, "-c", names.ProxyContainerName, "--tail=30", prev)
		t.Logf("kubectl logs %s -c %s %s:\n%s%s", pod.Name, names.ProxyContainerName, prev, r.stdout, r.stderr)
	}
}
