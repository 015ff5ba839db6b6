package main

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"math"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"time"

	vizv1 "github.com/mesh-dev/mesh/api/viz/v1"
)

// vizClient reads vizserver's viz API.
type vizClient struct {
	base string // http://addr
	http *http.Client
}

func (c vizClient) statURL(namespace, kind string) string {
	return c.base + vizv1.PathStat + "?" + url.Values{"kind": {kind}, "namespace": {namespace}}.Encode()
}

// stat returns the StatList of kind's resources in namespace.
func (c vizClient) stat(ctx context.Context, namespace, kind string) (vizv1.StatList, error) {
	var list vizv1.StatList
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, c.statURL(namespace, kind), nil)
	if err != nil {
		return list, err
	}
	resp, err := c.http.Do(req)
	if err != nil {
		return list, fmt.Errorf("viz stat: %w", err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(io.LimitReader(resp.Body, 16<<20))
	if err != nil {
		return list, fmt.Errorf("viz stat: %w", err)
	}
	if resp.StatusCode != http.StatusOK {
		return list, fmt.Errorf("viz stat kind=%s: %s: %s", kind, resp.Status, strings.TrimSpace(string(body)))
	}
	if err := json.Unmarshal(body, &list); err != nil {
		return list, fmt.Errorf("viz stat kind=%s: %w", kind, err)
	}
	return list, nil
}

// totals returns the totalRequests of kind's rows in namespace by name.
func (c vizClient) totals(ctx context.Context, namespace, kind string) (map[string]float64, error) {
	list, err := c.stat(ctx, namespace, kind)
	if err != nil {
		return nil, err
	}
	out := make(map[string]float64, len(list.Rows))
	for _, r := range list.Rows {
		out[r.Resource.Name] = float64(r.TotalRequests)
	}
	return out, nil
}

// agreement is one figure as both scrapers answer it, per resource.
type agreement struct {
	what       string // what the figure is, for the report
	promQL     string // Prometheus' query
	viz, prom  map[string]float64
	total      [2]float64 // sums: viz, Prometheus
	rows, same int        // resources, and those both count alike
}

func newAgreement(what, promQL string, viz, prom map[string]float64) agreement {
	a := agreement{what: what, promQL: promQL, viz: viz, prom: prom}
	names := map[string]bool{}
	for n := range viz {
		names[n] = true
	}
	for n := range prom {
		names[n] = true
	}
	for n := range names {
		a.rows++
		v, vok := viz[n]
		p, pok := prom[n]
		if vok && pok && v == math.Round(p) {
			a.same++
		}
		a.total[0] += v
		a.total[1] += p
	}
	return a
}

func (a agreement) ok() bool { return a.rows > 0 && a.same == a.rows }

// compare waits until both scrapers have scraped every proxy since the
// traffic stopped, then asks both for the responses the proxies counted,
// and reads what each holds.
func (b *bench) compare(ctx context.Context, ps *fleetProxies) error {
	frozen := time.Now()
	ctx, cancel := context.WithTimeout(ctx, 3*b.cfg.Interval+20*time.Second)
	defer cancel()
	ns := b.cfg.Namespace
	for {
		list, err := b.vizc.stat(ctx, ns, "ns")
		if err != nil {
			return err
		}
		oldest, err := b.promc.scalar(ctx, fmt.Sprintf(`min(timestamp(up{job=%q}))`, promJob))
		if err != nil {
			return err
		}
		if list.Collected.After(frozen) && oldest > float64(frozen.UnixNano())/1e9 {
			break
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("viz or prometheus did not scrape every proxy after the traffic stopped: %w", context.Cause(ctx))
		case <-time.After(time.Second):
		}
	}
	b.logf("both scraped every proxy since; comparing")

	responses := fmt.Sprintf(`mesh_proxy_http_responses_total{job=%q, namespace=%q, direction=%%q}`, promJob, ns)
	in, out := fmt.Sprintf(responses, "inbound"), fmt.Sprintf(responses, "outbound")
	for _, q := range []struct {
		what, kind, promQL, by string
	}{
		{checkInbound, "ns", "sum by (namespace) (" + in + ")", "namespace"},
		{"inbound responses per deployment", "deploy", "sum by (deployment) (" + in + ")", "deployment"},
		{checkOutbound, "svc", "sum by (dst_service) (" + out + ")", "dst_service"},
	} {
		viz, err := b.vizc.totals(ctx, ns, q.kind)
		if err != nil {
			return err
		}
		prom, err := b.promc.by(ctx, q.promQL, q.by)
		if err != nil {
			return err
		}
		b.res.checks = append(b.res.checks, newAgreement(q.what, q.promQL, viz, prom))
	}
	var err error
	if b.res.promAll, err = b.promc.scalar(ctx, fmt.Sprintf(`sum(mesh_proxy_http_responses_total{job=%q})`, promJob)); err != nil {
		return err
	}
	return b.holdings(ctx, ps)
}

// holdings records what each scraper holds at the end, and how its
// scrapes went.
func (b *bench) holdings(ctx context.Context, ps *fleetProxies) error {
	r := &b.res
	var err error
	if r.seriesPerProxy, err = ps.seriesOf(ctx, 0); err != nil {
		return err
	}
	vm, err := textMetrics(ctx, b.vizc.http, b.vizAdmin+"/metrics")
	if err != nil {
		return fmt.Errorf("vizserver /metrics: %w", err)
	}
	r.vizLabelSets, r.vizSamples = vm["mesh_controller_viz_series"], vm["mesh_controller_viz_samples"]
	r.vizScrapes, r.vizFailed = vm["mesh_controller_viz_scrapes_total"], vm["mesh_controller_viz_scrape_failures_total"]
	r.vizDropped, r.vizRound = vm["mesh_controller_viz_series_dropped_total"], vm["mesh_controller_viz_scrape_round_seconds"]
	r.vizHeap = vm["go_memstats_heap_inuse_bytes"]

	pm, err := textMetrics(ctx, b.promc.http, b.promc.base+"/metrics")
	if err != nil {
		return fmt.Errorf("prometheus /metrics: %w", err)
	}
	r.promHeadSeries, r.promAppended = pm["prometheus_tsdb_head_series"], pm["prometheus_tsdb_head_samples_appended_total"]
	r.promHeap = pm["go_memstats_heap_inuse_bytes"]
	// Every scrape of the run is still in the head block (2 hours).
	span := int(time.Since(b.began).Seconds()) + 60
	up := fmt.Sprintf(`up{job=%q}[%ds]`, promJob, span)
	if r.promScrapes, err = b.promc.scalar(ctx, "sum(count_over_time("+up+"))"); err != nil {
		return err
	}
	// In one expression, so that a scrape between two queries cannot
	// count as a failure.
	if r.promFailed, err = b.promc.scalar(ctx, "sum(count_over_time("+up+")) - sum(sum_over_time("+up+"))"); err != nil {
		return err
	}
	if r.promDisk, err = diskUsage(b.promData); err != nil {
		return fmt.Errorf("prometheus data: %w", err)
	}
	return nil
}

// textMetrics reads a Prometheus text exposition and returns each metric
// name's sum over its label sets.
func textMetrics(ctx context.Context, client *http.Client, url string) (map[string]float64, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return nil, err
	}
	resp, err := client.Do(req)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("%s", resp.Status)
	}
	out := map[string]float64{}
	sc := bufio.NewScanner(resp.Body)
	sc.Buffer(nil, 1<<20)
	for sc.Scan() {
		line := sc.Text()
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		// name{labels} value [timestamp]; label values may hold spaces.
		name, rest := line, ""
		if i := strings.IndexAny(line, "{ "); i >= 0 {
			name, rest = line[:i], line[i:]
		}
		if strings.HasPrefix(rest, "{") {
			j := strings.LastIndexByte(rest, '}')
			if j < 0 {
				continue
			}
			rest = rest[j+1:]
		}
		f := strings.Fields(rest)
		if len(f) == 0 {
			continue
		}
		if v, err := strconv.ParseFloat(f[0], 64); err == nil {
			out[name] += v
		}
	}
	return out, sc.Err()
}
