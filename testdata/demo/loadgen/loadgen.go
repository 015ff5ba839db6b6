// Package loadgen drives traffic through the demo shop: it alternates
// GET / (the product page) and POST /buy?product=ID for the products the
// page lists, and prints a logfmt summary every interval and at the end:
//
//	summary=interval elapsed=10s requests=50 successes=49 failures=1 rps=5.0 p50=3.21ms p99=12.5ms statuses=200:49,503:1 last_error="503: ..."
//	summary=total elapsed=1m0s requests=300 ...
//
// Against any other server, such as echo, whose page lists nothing to buy,
// it only GETs the page (Config.Path). A 2xx answer is a success, anything
// else a failure; statuses counts the answers by code.
package loadgen

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/url"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/spf13/pflag"
)

// Config configures a load run.
type Config struct {
	// Target is the server to load, "host:port" or a URL: the web front
	// end ("web:8080" in the pod) or any HTTP/1.1 server, such as echo.
	Target string
	// Path is the page loadgen GETs, relative to Target: every other
	// request when the page lists products to buy, else every request. It
	// must start with "/" and may have a query; "" means "/".
	Path string
	// RPS is the request rate over all workers; zero sends as fast as
	// Concurrency allows.
	RPS float64
	// Concurrency is the number of requests in flight at most; zero means 1.
	Concurrency int
	// Requests stops the run after this many requests; zero runs until
	// the context ends or Duration passes.
	Requests int
	// Duration stops the run after this long; zero means no limit.
	Duration time.Duration
	// Interval is how often a summary line is printed; zero prints only
	// the final one.
	Interval time.Duration
	// Timeout bounds each request; zero means five seconds.
	Timeout time.Duration
	// MaxFailures makes Run fail when more requests than this failed;
	// negative means any number may fail.
	MaxFailures int
	// Logger receives request errors at debug level; nil discards them.
	Logger *slog.Logger
}

// DefaultConfig returns the configuration of the loadgen pod.
func DefaultConfig() Config {
	return Config{Target: "web:8080", Path: "/", RPS: 5, Concurrency: 2, Interval: 10 * time.Second,
		Timeout: 5 * time.Second, MaxFailures: -1}
}

// AddFlags binds c's fields to flags, with c's values as defaults.
func (c *Config) AddFlags(fs *pflag.FlagSet) {
	fs.StringVar(&c.Target, "target", c.Target, "server to load, host:port or URL: the web front end or e.g. echo")
	fs.StringVar(&c.Path, "path", c.Path, "page to GET; buys what it lists, if anything")
	fs.Float64Var(&c.RPS, "rps", c.RPS, "requests per second over all workers (0: as fast as possible)")
	fs.IntVar(&c.Concurrency, "concurrency", c.Concurrency, "requests in flight at most")
	fs.IntVar(&c.Requests, "requests", c.Requests, "stop after this many requests (0: no limit)")
	fs.DurationVar(&c.Duration, "duration", c.Duration, "stop after this long (0: no limit)")
	fs.DurationVar(&c.Interval, "interval", c.Interval, "print a summary this often (0: only at the end)")
	fs.DurationVar(&c.Timeout, "timeout", c.Timeout, "timeout of one request")
	fs.IntVar(&c.MaxFailures, "max-failures", c.MaxFailures, "exit non-zero if more requests than this fail (-1: never)")
}

// ErrTooManyFailures is returned when more than MaxFailures requests failed.
var ErrTooManyFailures = errors.New("too many failed requests")

// Run sends requests until Requests are done, Duration passes or ctx ends,
// writes summary lines to out, and returns the totals. Requests in flight
// when ctx ends are allowed to finish (within Timeout).
func Run(ctx context.Context, cfg Config, out io.Writer) (Summary, error) {
	base, err := targetURL(cfg.Target)
	if err != nil {
		return Summary{}, err
	}
	if cfg.Path == "" {
		cfg.Path = "/"
	}
	if !strings.HasPrefix(cfg.Path, "/") {
		return Summary{}, fmt.Errorf("bad path %q: want one starting with /", cfg.Path)
	}
	if cfg.Duration > 0 {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, cfg.Duration)
		defer cancel()
	}
	workers := max(cfg.Concurrency, 1)
	tr := &http.Transport{MaxIdleConnsPerHost: workers}
	defer tr.CloseIdleConnections()
	g := &generator{
		cfg: cfg, base: base, log: cfg.Logger,
		client: &http.Client{Transport: tr, Timeout: cfg.Timeout},
		stats:  newStats(time.Now()),
	}
	if g.log == nil {
		g.log = slog.New(slog.DiscardHandler)
	}
	if g.client.Timeout <= 0 {
		g.client.Timeout = 5 * time.Second
	}

	jobs := make(chan int)
	go g.dispatch(ctx, jobs)
	// Requests run on a context the stop signal does not cancel, so the
	// ones in flight finish and are counted instead of failing.
	reqCtx := context.WithoutCancel(ctx)
	var wg sync.WaitGroup
	for range workers {
		wg.Go(func() {
			for n := range jobs {
				g.do(reqCtx, n)
			}
		})
	}
	reported := make(chan struct{})
	stopReports := make(chan struct{})
	go func() {
		defer close(reported)
		g.report(stopReports, out)
	}()
	wg.Wait()
	close(stopReports)
	<-reported

	total := g.stats.totals(time.Now())
	fmt.Fprintf(out, "summary=total %s\n", total)
	if cfg.MaxFailures >= 0 && total.Failures > cfg.MaxFailures {
		return total, fmt.Errorf("%w: %d of %d (allowed %d)", ErrTooManyFailures, total.Failures, total.Requests, cfg.MaxFailures)
	}
	return total, nil
}

func targetURL(target string) (string, error) {
	if !strings.Contains(target, "://") {
		target = "http://" + target
	}
	u, err := url.Parse(target)
	if err != nil || u.Host == "" || (u.Scheme != "http" && u.Scheme != "https") {
		return "", fmt.Errorf("bad target %q: want host:port or an http URL", target)
	}
	return strings.TrimSuffix(u.String(), "/"), nil
}

// generator is one run's state. products is written by any worker that
// reads the page and read by all.
type generator struct {
	cfg      Config
	base     string
	log      *slog.Logger
	client   *http.Client
	stats    *stats
	products atomic.Pointer[[]string]
}

// dispatch hands out request numbers at the configured rate until the run
// is over, then closes jobs.
func (g *generator) dispatch(ctx context.Context, jobs chan<- int) {
	defer close(jobs)
	var tick <-chan time.Time
	if g.cfg.RPS > 0 {
		t := time.NewTicker(time.Duration(float64(time.Second) / g.cfg.RPS))
		defer t.Stop()
		tick = t.C
	}
	for n := 0; g.cfg.Requests <= 0 || n < g.cfg.Requests; n++ {
		if tick != nil && n > 0 {
			select {
			case <-tick:
			case <-ctx.Done():
				return
			}
		}
		select {
		case jobs <- n:
		case <-ctx.Done():
			return
		}
	}
}

// report prints an interval summary every Interval until stop closes.
func (g *generator) report(stop <-chan struct{}, out io.Writer) {
	if g.cfg.Interval <= 0 {
		<-stop
		return
	}
	t := time.NewTicker(g.cfg.Interval)
	defer t.Stop()
	for {
		select {
		case now := <-t.C:
			fmt.Fprintf(out, "summary=interval %s\n", g.stats.rotate(now))
		case <-stop:
			return
		}
	}
}

// buyLink finds the buy forms in the product page.
var buyLink = regexp.MustCompile(`action="/buy\?product=([^"&]+)"`)

// do sends request n: even ones load the page, odd ones buy a product the
// page listed (or load the page, if none is known: the shop has not
// answered yet, or the target is not the shop).
func (g *generator) do(ctx context.Context, n int) {
	method, path := http.MethodGet, g.cfg.Path
	if ids := g.products.Load(); n%2 == 1 && ids != nil && len(*ids) > 0 {
		method, path = http.MethodPost, "/buy?product="+url.QueryEscape((*ids)[n/2%len(*ids)])
	}
	start := time.Now()
	status, body, err := g.send(ctx, method, path)
	latency := time.Since(start)
	ok := err == nil && status >= 200 && status < 300
	var errText string
	switch {
	case err != nil:
		errText = err.Error()
	case !ok:
		errText = fmt.Sprintf("%s %s: %d: %s", method, path, status, strings.TrimSpace(string(body)))
	}
	statusKey := "error"
	if err == nil {
		statusKey = strconv.Itoa(status)
	}
	if errText != "" {
		g.log.Debug("request failed", "err", errText)
	}
	g.stats.add(statusKey, ok, latency, errText)
	if ok && method == http.MethodGet {
		g.learn(body)
	}
}

func (g *generator) send(ctx context.Context, method, path string) (int, []byte, error) {
	req, err := http.NewRequestWithContext(ctx, method, g.base+path, nil)
	if err != nil {
		return 0, nil, err
	}
	resp, err := g.client.Do(req)
	if err != nil {
		return 0, nil, err
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
	return resp.StatusCode, body, err
}

// learn remembers the product ids the page lists.
func (g *generator) learn(page []byte) {
	var ids []string
	for _, m := range buyLink.FindAllSubmatch(page, -1) {
		if id, err := url.QueryUnescape(string(m[1])); err == nil {
			ids = append(ids, id)
		}
	}
	if len(ids) > 0 {
		g.products.Store(&ids)
	}
}
