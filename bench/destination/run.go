package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"os"
	"time"

	discoveryv1 "k8s.io/api/discovery/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/tools/clientcmd"

	"github.com/mesh-dev/mesh/bench/internal/benchdoc"
)

// bench is one run: what it was told, what it made, what it measured. Its
// methods run on run's goroutine.
type bench struct {
	cfg    config
	out    io.Writer // the report
	log    io.Writer // progress
	client kubernetes.Interface
	fx     *fixture
	col    *collector
	began  time.Time
	res    result
}

// run is the whole benchmark. Whether it succeeds, fails or is interrupted
// (ctx), it stops the controller and deletes the namespace before it
// returns.
func run(ctx context.Context, cfg config, out, log io.Writer) (err error) {
	b := &bench{cfg: cfg, out: out, log: log, fx: newFixture(cfg), col: newCollector(), began: time.Now()}
	if b.client, err = newClient(cfg); err != nil {
		return err
	}
	if err := b.describe(ctx); err != nil {
		return err
	}
	dir, err := os.MkdirTemp("", "mesh-bench-destination-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(dir)
	bin := cfg.Controller
	if bin == "" {
		b.logf("building mesh-controller")
		if bin, err = buildController(ctx, dir); err != nil {
			return err
		}
	}

	if err := b.fx.createNamespace(ctx, b.client, log); err != nil {
		return fmt.Errorf("namespace %s: %w", cfg.Namespace, err)
	}
	defer func() {
		b.logf("deleting namespace %s", cfg.Namespace)
		err = errors.Join(err, b.fx.deleteNamespace(context.WithoutCancel(ctx), b.client))
	}()
	if err := b.setup(ctx); err != nil {
		return err
	}

	b.logf("starting mesh-controller")
	t0 := time.Now()
	ctrl, err := startController(ctx, bin, dir, cfg)
	if err != nil {
		return err
	}
	defer func() {
		stopErr := ctrl.stop()
		if err != nil || stopErr != nil {
			fmt.Fprintf(log, "last lines of mesh-controller's log:\n%s\n", ctrl.logTail(20))
		}
		err = errors.Join(err, stopErr)
	}()
	if err := ctrl.waitReady(ctx, 2*time.Minute); err != nil {
		return err
	}
	b.res.ready = time.Since(t0)
	b.logf("mesh-controller ready after %v", b.res.ready.Round(time.Millisecond))
	return b.measure(ctx, ctrl)
}

func newClient(cfg config) (kubernetes.Interface, error) {
	rc, err := clientcmd.BuildConfigFromFlags("", cfg.Kubeconfig)
	if err != nil {
		return nil, fmt.Errorf("kubeconfig: %w", err)
	}
	rc.QPS, rc.Burst = cfg.QPS, cfg.Burst
	rc.UserAgent = "mesh-bench-destination"
	return kubernetes.NewForConfig(rc)
}

func (b *bench) logf(format string, args ...any) {
	fmt.Fprintf(b.log, "%6.1fs  %s\n", time.Since(b.began).Seconds(), fmt.Sprintf(format, args...))
}

// describe records the machine and the cluster as they are before the run.
func (b *bench) describe(ctx context.Context) error {
	b.res.host = benchdoc.DescribeHost(ctx, "controller", "cmd/mesh-controller", "api")
	b.res.loadBefore, b.res.env = loadAvg(), runtimeEnv()
	v, err := b.client.Discovery().ServerVersion()
	if err != nil {
		return fmt.Errorf("cluster %s: %w", b.cfg.Kubeconfig, err)
	}
	b.res.k8sVersion = v.GitVersion
	pods, err := b.client.CoreV1().Pods("").List(ctx, metav1.ListOptions{})
	if err != nil {
		return err
	}
	slices, err := b.client.DiscoveryV1().EndpointSlices("").List(ctx, metav1.ListOptions{})
	if err != nil {
		return err
	}
	b.res.otherPods, b.res.otherSlices = len(pods.Items), len(slices.Items)
	return nil
}

// setup creates the Services and their slices.
func (b *bench) setup(ctx context.Context) error {
	b.logf("creating %d Services with %d endpoints in namespace %s", b.cfg.Services, b.cfg.Endpoints, b.cfg.Namespace)
	t0 := time.Now()
	calls, err := b.fx.createObjects(ctx, b.client)
	if err != nil {
		return err
	}
	b.res.setup, b.res.setupCalls = time.Since(t0), calls+1 // and the namespace
	for _, svc := range b.fx.services {
		b.res.slices += len(svc.slices)
	}
	b.logf("created %d objects in %v", calls, b.res.setup.Round(time.Millisecond))
	return nil
}

// measure opens the streams, makes the changes, and reports.
func (b *bench) measure(ctx context.Context, ctrl *controller) error {
	sctx, stopSampling := context.WithCancel(ctx)
	defer stopSampling()
	smp := newSampler(ctrl)
	smp.setPhase("ready")
	go smp.run(sctx, 250*time.Millisecond)
	var err error
	if b.res.before, err = b.snapshot(ctx, ctrl); err != nil {
		return err
	}

	b.logf("opening %d streams over %d connections", b.cfg.Watchers, b.cfg.conns())
	smp.setPhase("open")
	t0 := time.Now()
	fl, err := openFleet(ctx, b.cfg, ctrl.grpcAddr, b.fx, b.col)
	defer fl.stop()
	if err != nil {
		return err
	}
	b.res.open = time.Since(t0)
	smp.sampleNow(ctx)
	b.logf("every stream holds its first set after %v", b.res.open.Round(time.Millisecond))
	smp.setPhase("steady")
	if b.res.steady, err = b.snapshot(ctx, ctrl); err != nil {
		return err
	}

	stopWatch, err := b.watchSlices(ctx)
	if err != nil {
		return err
	}
	defer stopWatch()
	b.col.arm()
	smp.setPhase("changes")
	b.logf("making %d changes, %v apart", b.cfg.Changes, b.cfg.Interval)
	m0 := markCPU(ctrl.cmd.Process.Pid)
	if err := b.changes(ctx); err != nil {
		return err
	}
	b.res.drained = b.drain(ctx)
	m1 := markCPU(ctrl.cmd.Process.Pid)
	smp.sampleNow(ctx)
	b.res.cpu, b.res.changeWall = m1.since(m0), m1.at.Sub(m0.at)
	if ctx.Err() != nil {
		return context.Cause(ctx)
	}
	final, err := ctrl.sample(ctx)
	if err != nil {
		return err
	}
	b.res.hwm = final.HWM
	b.res.openPeak, b.res.changesPeak = smp.peak("open"), smp.peak("changes")
	stopWatch()
	fl.stop()
	b.res.streamErrs, b.res.wrongSets = len(fl.errors()), fl.wrongSets()
	b.res.lat = b.col.latencies()
	b.res.loadAfter = loadAvg()
	return b.publish()
}

// snapshot samples the controller's memory after the settle pause.
func (b *bench) snapshot(ctx context.Context, ctrl *controller) (memSample, error) {
	select {
	case <-ctx.Done():
		return memSample{}, context.Cause(ctx)
	case <-time.After(b.cfg.Settle):
	}
	return ctrl.sample(ctx)
}

// changes makes cfg.Changes slice updates, one every cfg.Interval (later
// when an Update takes longer), alternately adding and removing one
// endpoint of a random slice.
func (b *bench) changes(ctx context.Context) error {
	rng := rand.New(rand.NewPCG(b.cfg.Seed, b.cfg.Seed^0x9e3779b97f4a7c15))
	api := b.client.DiscoveryV1().EndpointSlices(b.cfg.Namespace)
	next := time.Now()
	for i := range b.cfg.Changes {
		op := opAdd
		if i%2 == 1 {
			op = opRemove
		}
		e, err := b.fx.nextEdit(rng, op)
		if err != nil {
			return err
		}
		ch := &change{key: e.key, svc: e.svc, start: time.Now()}
		b.col.expect(ch)
		stored, err := api.Update(ctx, e.updated, metav1.UpdateOptions{})
		ch.apiDone = time.Now()
		if err != nil {
			return fmt.Errorf("change %d, %s %s in %s: %w", i, op, e.key.addr, e.updated.Name, err)
		}
		e.applied(stored)
		next = next.Add(b.cfg.Interval)
		if now := time.Now(); next.Before(now) {
			next = now
		}
		select {
		case <-ctx.Done():
			return context.Cause(ctx)
		case <-time.After(time.Until(next)):
		}
	}
	b.col.finish()
	return nil
}

// drain waits for the deliveries still due, and reports whether all came
// within cfg.DrainTimeout.
func (b *bench) drain(ctx context.Context) bool {
	select {
	case <-b.col.done:
		return true
	case <-ctx.Done():
	case <-time.After(b.cfg.DrainTimeout):
		b.logf("deliveries still missing %v after the last change", b.cfg.DrainTimeout)
	}
	return false
}

// watchSlices watches the namespace's slices with a plain API watch, as a
// baseline: the time the API server takes to tell any watcher of a change.
// stop ends the watch; it is idempotent.
func (b *bench) watchSlices(ctx context.Context) (stop func(), err error) {
	api := b.client.DiscoveryV1().EndpointSlices(b.cfg.Namespace)
	opts := metav1.ListOptions{LabelSelector: discoveryv1.LabelManagedBy + "=" + managedBy}
	list, err := api.List(ctx, opts)
	if err != nil {
		return nil, err
	}
	known := map[string]map[string]struct{}{}
	for i := range list.Items {
		known[list.Items[i].Name] = sliceAddrs(&list.Items[i])
	}
	opts.ResourceVersion = list.ResourceVersion
	w, err := api.Watch(ctx, opts)
	if err != nil {
		return nil, err
	}
	done := make(chan struct{})
	go func() {
		defer close(done)
		for ev := range w.ResultChan() {
			now := time.Now()
			s, ok := ev.Object.(*discoveryv1.EndpointSlice)
			if !ok {
				continue
			}
			cur, prev := sliceAddrs(s), known[s.Name]
			for a := range cur {
				if _, ok := prev[a]; !ok {
					b.col.watched(changeKey{opAdd, a}, now)
				}
			}
			for a := range prev {
				if _, ok := cur[a]; !ok {
					b.col.watched(changeKey{opRemove, a}, now)
				}
			}
			known[s.Name] = cur
		}
	}()
	return func() { w.Stop(); <-done }, nil
}
