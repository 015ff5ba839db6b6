// Package viz is the live-stats component of mesh-viz, its own
// Deployment apart from the controller (controller.RunViz): the viz API
// (api/viz/v1) that `mesh viz` and the dashboard read, answered from the
// proxies' own metrics without a Prometheus, and the tap relay.
//
// # Who may ask
//
// The API listens on loopback only (127.0.0.1:8085 by default), which no
// pod but its own reaches: `mesh viz` comes in through a port-forward,
// so the cluster's RBAC (create pods/portforward in the control plane's
// namespace) decides who reads the stats. Tap is not on it: TapHandler
// is served by the tap API (controller/tapapi), which the Kubernetes API
// server fronts and which checks the caller's right to tap the resource
// with a SubjectAccessReview (issue 12).
//
// # Scrape, not push
//
// Every Interval it scrapes http://<pod IP>:<mesh-admin port>/metrics of
// every Running pod the injector gave a proxy (mesh.dev/proxy-version and
// a mesh-proxy container declaring its mesh-admin port), as found in
// viz's pod cache; each body is read with a cap and parsed as it streams,
// keeping only the families viz uses (scrape.go, parse.go), so a hostile
// pod costs viz a bounded read. The proxies stay passive: they
// need no controller address and send nothing, so a proxy started with no
// flags exports the same metrics it always does. The endpoint is the one a
// Prometheus would scrape, so the totals `mesh viz` shows and a Prometheus
// would sum agree by construction (docs/metrics.md). The series are
// cumulative counters, so a restart of viz or a missed scrape loses no
// count, only resolution: the next scrape's delta carries what the missed
// one would have. Scrapes run at most Concurrency at a time, each within
// ScrapeTimeout, so a hung proxy costs one slot for one timeout.
//
// The proxies do not label their series with their own pod, workload or
// identity: viz knows which pod it scraped, and adds them from its cache (the workload from the pod's owner, see internal/workload; the
// identity from its ServiceAccount).
//
// # Store
//
// The store keeps, in memory, a ring of steps (one per scrape round) over
// Retention, 16 minutes by default so that every window the API accepts
// (up to 15 minutes) is covered. A step holds, for each label set of each
// pod that did something since the previous scrape, the deltas of its
// counters: responses and successes, latency observations per histogram
// bucket (whatever buckets the proxy exports), TCP connections opened and
// closed, bytes read and written, inbound requests and connections denied
// by authorization policy; and the open-connections gauge. Per pod
// it keeps the raw values of the last scrape, from which the next deltas
// are taken; a counter that went down, or a proxy whose
// process_start_time_seconds changed, was reset, and its new value is the
// delta. A pod's first scrape only sets its baseline, unless its proxy
// started after the store did and within the retention: then all of its
// counts belong to the store's window and are taken from zero, so a new
// pod's first seconds are not lost. A deleted pod's baseline goes at the
// next round; its history stays until it ages out, so a workload's stats
// run on across a rollout.
//
// Denials (decision="deny" of mesh_proxy_inbound_http_authz_total and
// mesh_proxy_inbound_tcp_authz_total) are summed over their server, authz
// and client_id labels into one label set per pod, so they cost one label
// set per pod whatever the number of clients, and no byte in the samples
// of the others (the counter fits in a sample's padding).
//
// Memory is bounded by the retention and by MaxSeries, the label sets the
// baselines may hold (beyond it a pod's new label sets are not stored, and
// counted in mesh_controller_viz_series_dropped_total). A step holds a
// sample only for a label set that changed or has connections open. A
// sample is 80 bytes, and 16 more per latency bucket hit in the step, so
// a label set busy in every step costs about 27 KiB over 16 minutes of 5s
// steps (with four buckets hit per step), plus its baseline, about
// 0.5 KiB. The default MaxSeries, 10000, is a few hundred pods (a pod has
// a few dozen label sets); it bounds the store near 270 MiB in the worst
// case, every label set busy in every step, and to a fraction of that in
// practice, where most label sets are idle in most steps.
//
// # Queries
//
// The API's figures are sums over the samples of a window and the
// baselines of the last scrape: rates over the time the store covers (the
// window, or less just after a start), success rates, and latency
// percentiles interpolated inside the summed buckets as Prometheus'
// histogram_quantile does. See api/viz/v1 for what each answer means.
//
// Routes group a resource's outbound series by the route rule the proxies
// label them with (route_*, docs/metrics.md) and by the Service they were
// sent to, which no label names: viz finds it in its Service cache, by
// the cluster IP the requests were sent to (routes.go).
//
// # Tap
//
// TapHandler relays the tap streams (api/tap/v1) of a resource's pods:
// viz dials each pod's tap server over mutual TLS as its own identity,
// spiffe://<trust domain>/ns/<namespace>/sa/mesh-viz, the only client the
// injected proxies admit (MESH_PROXY_TAP_CLIENT_ID), checking that the
// server is the pod's identity, and writes every event as one line of
// JSON.
package viz

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"strconv"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"golang.org/x/sync/errgroup"
	"k8s.io/client-go/informers"
	corelisters "k8s.io/client-go/listers/core/v1"
	"k8s.io/client-go/tools/cache"

	vizv1 "github.com/mesh-dev/mesh/api/viz/v1"
	"github.com/mesh-dev/mesh/internal/httpserver"
	"github.com/mesh-dev/mesh/internal/names"
)

// Defaults of Config.
const (
	DefaultInterval      = 5 * time.Second
	DefaultScrapeTimeout = 2 * time.Second
	DefaultConcurrency   = 16
	DefaultRetention     = 16 * time.Minute
	DefaultMaxSeries     = 10000
	// DefaultTapPort is mesh-proxy's tap server port.
	DefaultTapPort    = names.TapPort
	DefaultMaxTapPods = 20
)

// DefaultAddr is where the API listens by default: on loopback, for a
// port-forward, on vizv1.Port.
var DefaultAddr = net.JoinHostPort("127.0.0.1", strconv.Itoa(vizv1.Port))

// MinRetention is the shortest Retention: the longest window the API
// serves, 15 minutes, and a step.
const MinRetention = 15 * time.Minute

// Config configures a Viz. Informers is required; the zero value of every
// other field means what its comment says.
type Config struct {
	// Addr to serve the API on; "" means DefaultAddr. The API checks no
	// caller, so anything but a loopback address opens it to every pod.
	Addr string
	// Informers is the process's shared factory; New adds the pod,
	// service and namespace informers to it, so it must be called before
	// the factory starts.
	Informers informers.SharedInformerFactory
	// TrustDomain of the pods' SPIFFE IDs; the zero value means
	// cluster.local.
	TrustDomain spiffeid.TrustDomain

	// Interval between scrape rounds; 0 means DefaultInterval. It is the
	// store's step, and the shortest window and series step it answers.
	Interval time.Duration
	// ScrapeTimeout bounds one pod's scrape; 0 means DefaultScrapeTimeout.
	// It must not exceed Interval.
	ScrapeTimeout time.Duration
	// Concurrency is how many scrapes run at a time; 0 means
	// DefaultConcurrency.
	Concurrency int
	// Retention is how long the store keeps steps; 0 means
	// DefaultRetention. It must be at least MinRetention.
	Retention time.Duration
	// MaxSeries bounds the label sets the store tracks (see the package
	// doc for the memory this means); 0 means DefaultMaxSeries.
	MaxSeries int

	// TapPort is the proxies' tap port; 0 means DefaultTapPort.
	TapPort int
	// MaxTapPods bounds the pods one tap request relays; 0 means
	// DefaultMaxTapPods.
	MaxTapPods int
	// TapTLS returns the client TLS configuration of a connection to a
	// proxy's tap server whose certificate must carry server: viz's own
	// certificate, and the trust anchors. nil makes tap answer 503.
	TapTLS func(server spiffeid.ID) *tls.Config

	// Dial connects the scrapes and the tap relay to "ip:port"; nil means a
	// net.Dialer. Tests map pod addresses to loopback servers with it.
	Dial func(ctx context.Context, network, addr string) (net.Conn, error)
	// Registerer receives the component's metrics; nil registers none.
	Registerer prometheus.Registerer
	// Log; nil discards.
	Log *slog.Logger
	// OnListen is called once with the API's listening address; nil is
	// fine.
	OnListen func(net.Addr)
	// ShutdownGrace bounds how long requests in flight may take after ctx
	// is done; 0 means 5s. Tap streams end with ctx.
	ShutdownGrace time.Duration
}

// Viz scrapes the proxies and serves the viz API. Its methods are safe
// for concurrent use; Run is called once.
type Viz struct {
	cfg        Config
	pods       corelisters.PodLister
	services   corelisters.ServiceLister
	namespaces corelisters.NamespaceLister
	// serviceIndex finds Services by cluster IP (clusterIPIndex): the
	// parent of a route's requests.
	serviceIndex cache.Indexer
	synced       []cache.InformerSynced
	ready        atomic.Bool // the caches synced

	store   *store
	client  *http.Client
	metrics *metrics
}

// New checks cfg, fills in its defaults and adds the informers Viz reads
// to cfg.Informers.
func New(cfg Config) (*Viz, error) {
	if cfg.Informers == nil {
		return nil, errors.New("viz: Informers is required")
	}
	if cfg.Addr == "" {
		cfg.Addr = DefaultAddr
	}
	if cfg.TrustDomain.IsZero() {
		cfg.TrustDomain = spiffeid.RequireTrustDomainFromString("cluster.local")
	}
	setDefault(&cfg.Interval, DefaultInterval)
	setDefault(&cfg.ScrapeTimeout, DefaultScrapeTimeout)
	setDefault(&cfg.Retention, DefaultRetention)
	setDefault(&cfg.Concurrency, DefaultConcurrency)
	setDefault(&cfg.MaxSeries, DefaultMaxSeries)
	setDefault(&cfg.TapPort, DefaultTapPort)
	setDefault(&cfg.MaxTapPods, DefaultMaxTapPods)
	setDefault(&cfg.ShutdownGrace, 5*time.Second)
	switch {
	case cfg.Interval < 0 || cfg.ScrapeTimeout < 0 || cfg.Concurrency < 0 || cfg.MaxSeries < 0 || cfg.MaxTapPods < 0:
		return nil, errors.New("viz: negative interval, timeout or limit")
	case cfg.ScrapeTimeout > cfg.Interval:
		return nil, fmt.Errorf("viz: scrape timeout %s is longer than the interval %s", cfg.ScrapeTimeout, cfg.Interval)
	case cfg.Retention < MinRetention:
		return nil, fmt.Errorf("viz: retention %s is shorter than %s, the longest window", cfg.Retention, MinRetention)
	}
	if cfg.Log == nil {
		cfg.Log = slog.New(slog.NewTextHandler(io.Discard, nil))
	}
	m, err := newMetrics(cfg.Registerer)
	if err != nil {
		return nil, fmt.Errorf("viz: %w", err)
	}
	pods := cfg.Informers.Core().V1().Pods()
	services := cfg.Informers.Core().V1().Services()
	namespaces := cfg.Informers.Core().V1().Namespaces()
	if err := services.Informer().AddIndexers(cache.Indexers{clusterIPIndex: serviceClusterIPs}); err != nil {
		return nil, fmt.Errorf("viz: index services by cluster IP: %w", err)
	}
	v := &Viz{
		cfg:          cfg,
		pods:         pods.Lister(),
		services:     services.Lister(),
		namespaces:   namespaces.Lister(),
		serviceIndex: services.Informer().GetIndexer(),
		synced:       []cache.InformerSynced{pods.Informer().HasSynced, services.Informer().HasSynced, namespaces.Informer().HasSynced},
		store:        newStore(cfg.Retention, cfg.MaxSeries),
		metrics:      m,
	}
	v.client = newScrapeClient(cfg)
	return v, nil
}

func setDefault[T comparable](p *T, def T) {
	var zero T
	if *p == zero {
		*p = def
	}
}

// Run serves the API on Config.Addr and scrapes the proxies once the
// caches have synced, until ctx is done; then it stops both and returns
// nil. It fails when the listener cannot be opened.
func (v *Viz) Run(ctx context.Context) error {
	var lc net.ListenConfig
	ln, err := lc.Listen(ctx, "tcp", v.cfg.Addr)
	if err != nil {
		return fmt.Errorf("viz: %w", err)
	}
	g, ctx := errgroup.WithContext(ctx)
	srv := &http.Server{
		Handler:           v.Handler(),
		ReadHeaderTimeout: 5 * time.Second,
		// The dashboard polls every few seconds; a connection idle for
		// longer than that is one it gave up.
		IdleTimeout:    time.Minute,
		MaxHeaderBytes: 16 << 10,
		ErrorLog:       slog.NewLogLogger(v.cfg.Log.Handler(), slog.LevelWarn),
		BaseContext:    func(net.Listener) context.Context { return ctx },
	}
	v.cfg.Log.Info("viz API listening", "addr", ln.Addr().String())
	if v.cfg.OnListen != nil {
		v.cfg.OnListen(ln.Addr())
	}
	g.Go(func() error {
		if err := httpserver.Run(ctx, srv, func() error { return srv.Serve(ln) }, v.cfg.ShutdownGrace); err != nil {
			return fmt.Errorf("viz: %w", err)
		}
		return nil
	})
	g.Go(func() error { return v.scrapeLoop(ctx) })
	err = g.Wait()
	v.client.CloseIdleConnections()
	return err
}

// Ready returns nil once the caches have synced and the API answers,
// else what it waits for. It does not block.
func (v *Viz) Ready() error {
	if !v.ready.Load() {
		return errNotSynced
	}
	return nil
}

// errNotSynced is what viz waits for before it answers.
var errNotSynced = errors.New("waiting for the pod cache to sync with the API server")

// scrapeLoop runs a scrape round every Interval once the caches have
// synced, until ctx is done.
func (v *Viz) scrapeLoop(ctx context.Context) error {
	if !cache.WaitForCacheSync(ctx.Done(), v.synced...) {
		return nil // ctx ended first
	}
	v.ready.Store(true)
	tick := time.NewTicker(v.cfg.Interval)
	defer tick.Stop()
	for {
		v.round(ctx, time.Now())
		select {
		case <-ctx.Done():
			return nil
		case <-tick.C:
		}
	}
}

// round scrapes every target once and records the results as the step
// at at. A round that outlasts the interval delays the next one (the
// ticker drops ticks); the deltas then span the longer gap.
func (v *Viz) round(ctx context.Context, at time.Time) {
	pods, live, err := v.targets()
	if err != nil {
		v.cfg.Log.Error("viz: listing pods", "err", err)
		return
	}
	results := v.scrapeAll(ctx, pods)
	if ctx.Err() != nil {
		return // a round cut short would read as failed scrapes
	}
	failed := 0
	for _, r := range results {
		if r.err != nil {
			failed++
			v.cfg.Log.Debug("viz: scrape failed", "namespace", r.pod.Namespace, "pod", r.pod.Name, "err", r.err)
		}
	}
	st := v.store.apply(at, results, live)
	v.metrics.round(len(results), failed, st, time.Since(at))
}

// metrics are the component's own, on the controller's registry. A nil
// *metrics counts nothing.
type metrics struct {
	scrapes, failures, dropped prometheus.Counter
	series, samples, duration  prometheus.Gauge
	taps                       prometheus.Gauge
}

func newMetrics(reg prometheus.Registerer) (*metrics, error) {
	if reg == nil {
		return nil, nil
	}
	m := &metrics{
		scrapes: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "mesh_controller_viz_scrapes_total",
			Help: "Scrapes of proxy metrics for mesh viz, failed ones included.",
		}),
		failures: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "mesh_controller_viz_scrape_failures_total",
			Help: "Scrapes of proxy metrics that failed: unreachable, timed out, or not Prometheus text.",
		}),
		dropped: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "mesh_controller_viz_series_dropped_total",
			Help: "New label sets of a scrape that were not stored because the store held its maximum.",
		}),
		series: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "mesh_controller_viz_series",
			Help: "Label sets the viz store tracks, over every scraped pod.",
		}),
		samples: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "mesh_controller_viz_samples",
			Help: "Samples (label sets that changed in a step) the viz store holds over its retention.",
		}),
		duration: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "mesh_controller_viz_scrape_round_seconds",
			Help: "How long the last round of scrapes took, from its start to the store's update.",
		}),
		taps: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "mesh_controller_viz_tap_streams",
			Help: "Tap streams from proxies relayed now.",
		}),
	}
	for _, c := range []prometheus.Collector{m.scrapes, m.failures, m.dropped, m.series, m.samples, m.duration, m.taps} {
		if err := reg.Register(c); err != nil {
			return nil, err
		}
	}
	return m, nil
}

func (m *metrics) round(scrapes, failed int, st applyStats, took time.Duration) {
	if m == nil {
		return
	}
	m.scrapes.Add(float64(scrapes))
	m.failures.Add(float64(failed))
	m.dropped.Add(float64(st.dropped))
	m.series.Set(float64(st.series))
	m.samples.Set(float64(st.samples))
	m.duration.Set(took.Seconds())
}

func (m *metrics) tapStreams(delta float64) {
	if m != nil {
		m.taps.Add(delta)
	}
}
