package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"math"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"syscall"
	"time"

	"github.com/mesh-dev/mesh/bench/viz/fleet"
)

// promJob is the job name of the proxies' scrape configuration.
const promJob = "mesh-proxy"

// Prometheus' configuration file, the parts the benchmark sets. It is
// written as JSON, which is YAML too.
type (
	promConfig struct {
		Global        promGlobal     `json:"global"`
		ScrapeConfigs []scrapeConfig `json:"scrape_configs"`
	}
	promGlobal struct {
		ScrapeInterval string `json:"scrape_interval"`
		ScrapeTimeout  string `json:"scrape_timeout"`
	}
	scrapeConfig struct {
		JobName       string         `json:"job_name"`
		StaticConfigs []staticConfig `json:"static_configs"`
	}
	staticConfig struct {
		Targets []string          `json:"targets"`
		Labels  map[string]string `json:"labels"`
	}
)

// scrapeTimeout is both scrapers' timeout of one scrape
// (viz.DefaultScrapeTimeout).
const scrapeTimeout = 2 * time.Second

// writePromConfig writes the configuration of a Prometheus that scrapes
// f's proxies every interval into path. Each target carries the namespace,
// pod and deployment labels that relabelling kubernetes_sd_configs' pod
// metadata gives it in a cluster (Linkerd's viz Prometheus adds these and
// more), so that Prometheus can answer per workload like viz does.
func writePromConfig(path string, f *fleet.Fleet, interval time.Duration) error {
	sc := scrapeConfig{JobName: promJob}
	for _, p := range f.Pods {
		sc.StaticConfigs = append(sc.StaticConfigs, staticConfig{
			Targets: []string{f.MetricsAddr(p)},
			Labels:  map[string]string{"namespace": f.Namespace, "pod": p.Name, "deployment": f.Deployments[p.Deployment].Name},
		})
	}
	cfg := promConfig{
		Global:        promGlobal{ScrapeInterval: promDuration(interval), ScrapeTimeout: promDuration(scrapeTimeout)},
		ScrapeConfigs: []scrapeConfig{sc},
	}
	b, err := json.MarshalIndent(cfg, "", "  ")
	if err != nil {
		return err
	}
	return os.WriteFile(path, b, 0o600)
}

// promDuration writes d in Prometheus' duration syntax.
func promDuration(d time.Duration) string { return strconv.FormatInt(d.Milliseconds(), 10) + "ms" }

// startPrometheus starts bin with the configuration file cfgPath, its TSDB
// in dataDir (default retention) and its web server on addr.
func startPrometheus(bin, cfgPath, dataDir, addr, logPath string) (*process, error) {
	return startProcess("prometheus", logPath, bin,
		"--config.file="+cfgPath,
		"--storage.tsdb.path="+dataDir,
		"--web.listen-address="+addr,
	)
}

// promVersion returns the version bin --version names: "2.42.0+ds" of
// "prometheus, version 2.42.0+ds (branch: ...)".
func promVersion(ctx context.Context, bin string) string {
	out, err := exec.CommandContext(ctx, bin, "--version").CombinedOutput()
	if err != nil {
		return "unknown version"
	}
	line, _, _ := bytes.Cut(out, []byte("\n"))
	_, v, ok := bytes.Cut(line, []byte("version "))
	if f := bytes.Fields(v); ok && len(f) > 0 {
		return string(f[0])
	}
	return string(bytes.TrimSpace(line))
}

// promClient queries Prometheus' HTTP API.
type promClient struct {
	base string // http://addr
	http *http.Client
}

// promSample is one element of an instant vector.
type promSample struct {
	Metric map[string]string
	Value  float64
}

// query evaluates the PromQL expression q now and returns its vector.
func (c promClient) query(ctx context.Context, q string) ([]promSample, error) {
	u := c.base + "/api/v1/query?" + url.Values{"query": {q}}.Encode()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, u, nil)
	if err != nil {
		return nil, err
	}
	resp, err := c.http.Do(req)
	if err != nil {
		return nil, fmt.Errorf("prometheus query %s: %w", q, err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(io.LimitReader(resp.Body, 16<<20))
	if err != nil {
		return nil, fmt.Errorf("prometheus query %s: %w", q, err)
	}
	var answer struct {
		Status string `json:"status"`
		Error  string `json:"error"`
		Data   struct {
			ResultType string `json:"resultType"`
			Result     []struct {
				Metric map[string]string `json:"metric"`
				Value  [2]any            `json:"value"`
			} `json:"result"`
		} `json:"data"`
	}
	if err := json.Unmarshal(body, &answer); err != nil {
		return nil, fmt.Errorf("prometheus query %s: %s: %w", q, resp.Status, err)
	}
	if answer.Status != "success" {
		return nil, fmt.Errorf("prometheus query %s: %s", q, answer.Error)
	}
	if answer.Data.ResultType != "vector" {
		return nil, fmt.Errorf("prometheus query %s: a %s, not a vector", q, answer.Data.ResultType)
	}
	out := make([]promSample, 0, len(answer.Data.Result))
	for _, r := range answer.Data.Result {
		s, _ := r.Value[1].(string)
		v, err := strconv.ParseFloat(s, 64)
		if err != nil {
			return nil, fmt.Errorf("prometheus query %s: value %q: %w", q, s, err)
		}
		out = append(out, promSample{Metric: r.Metric, Value: v})
	}
	return out, nil
}

// scalar evaluates q, which must yield at most one sample, and returns its
// value; NaN for an empty vector.
func (c promClient) scalar(ctx context.Context, q string) (float64, error) {
	v, err := c.query(ctx, q)
	switch {
	case err != nil:
		return 0, err
	case len(v) == 0:
		return math.NaN(), nil
	case len(v) > 1:
		return 0, fmt.Errorf("prometheus query %s: %d samples, want one", q, len(v))
	}
	return v[0].Value, nil
}

// by evaluates q and returns its samples' values by their label.
func (c promClient) by(ctx context.Context, q, label string) (map[string]float64, error) {
	v, err := c.query(ctx, q)
	if err != nil {
		return nil, err
	}
	out := make(map[string]float64, len(v))
	for _, s := range v {
		out[s.Metric[label]] = s.Value
	}
	return out, nil
}

// diskUsage returns the bytes the files under dir take on disk, as du(1)
// counts them. Files that go while it walks (Prometheus rotates its WAL)
// are skipped.
func diskUsage(dir string) (int64, error) {
	var n int64
	err := filepath.WalkDir(dir, func(_ string, d fs.DirEntry, err error) error {
		if errors.Is(err, fs.ErrNotExist) {
			return nil
		}
		if err != nil {
			return err
		}
		info, err := d.Info()
		if errors.Is(err, fs.ErrNotExist) {
			return nil
		}
		if err != nil {
			return err
		}
		if st, ok := info.Sys().(*syscall.Stat_t); ok {
			n += st.Blocks * 512 // stat(2): st_blocks counts 512-byte units
		}
		return nil
	})
	return n, err
}
