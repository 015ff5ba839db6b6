package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"strconv"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/mesh-dev/mesh/bench/internal/benchdoc"
	"github.com/mesh-dev/mesh/bench/internal/kubelab"
	"github.com/mesh-dev/mesh/install/cluster"
	"github.com/mesh-dev/mesh/internal/names"
)

// Phase names, as the report shows them.
const (
	phaseWarmup     = "warm-up"
	phaseSteady     = "steady"
	phaseController = "controller killed"
	phaseServer     = "server pod killed"
)

// bench is one run: what it was told, what it drives, what it measured.
// Its methods run on run's goroutine.
type bench struct {
	cfg   config
	out   io.Writer // the report
	log   io.Writer // progress
	began time.Time
	lab   *kubelab.Lab

	d       *driver
	targets []*target
	client  *target // the proxy of the pod the load is sent from

	res result
}

// result is what a run measured, beyond the driver's phases.
type result struct {
	host                  benchdoc.Host
	k8sVersion            string
	mesh                  kubelab.Mesh
	loadBefore, loadAfter string
	clientPod, web        string // the pod the load leaves from; web's address
	steady                time.Duration
	controller, server    replacement
	serverPods            int // of the --kill Deployment when one was killed
	// notes are what the run went on without (a component not ready).
	notes  []string
	phases []*phaseStats
}

// run is the whole benchmark. Whether it succeeds, fails or is interrupted
// (ctx), it stops the load and removes what it made before it returns,
// unless cfg.Keep.
func run(ctx context.Context, cfg config, out, log io.Writer) (err error) {
	tmp, err := os.MkdirTemp("", "mesh-bench-soak-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(tmp)
	b := &bench{cfg: cfg, out: out, log: log, began: time.Now()}
	b.describe(ctx)
	b.lab, err = kubelab.Connect(ctx, kubelab.Config{Mesh: cfg.Mesh, TempDir: tmp, Target: "make soak", Log: log, Logf: b.logf})
	if err != nil {
		return err
	}
	b.res.k8sVersion = b.lab.K8sVersion
	// Cleanups run on a context of their own: Ctrl-C must not stop them.
	cleanup := func(what string, fn func(ctx context.Context) error) {
		ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 6*time.Minute)
		defer cancel()
		if cerr := fn(ctx); cerr != nil {
			err = errors.Join(err, fmt.Errorf("cleanup: %s: %w", what, cerr))
		}
	}
	b.res.mesh, err = b.lab.EnsureMesh(ctx, cfg.MeshNamespace)
	b.res.notes = append(b.res.notes, b.res.mesh.Notes...)
	if b.res.mesh.Installed && !cfg.Keep {
		defer cleanup("mesh uninstall", func(ctx context.Context) error {
			b.logf("mesh uninstall (the run installed it)")
			return b.lab.MeshCmd(ctx, cfg.MeshNamespace, "uninstall")
		})
	}
	if err != nil {
		return err
	}
	// A namespace an earlier run left goes first; one that is not a run's
	// stops the run before anything is made in it.
	if err := b.lab.DeleteNamespace(ctx, cfg.Namespace, namespaceLabel, true); err != nil {
		return err
	}
	if !cfg.Keep {
		defer cleanup("delete namespace "+cfg.Namespace, func(ctx context.Context) error {
			return b.lab.DeleteNamespace(ctx, cfg.Namespace, namespaceLabel, false)
		})
	}
	if err := b.deployDemo(ctx, b.lab.Root, b.lab.Version); err != nil {
		return err
	}
	if err := b.prepareLoad(ctx); err != nil {
		return err
	}
	if err := b.findTargets(ctx); err != nil {
		return err
	}

	b.d.start(ctx)
	defer b.d.stopAndWait()
	if err := b.phases(ctx); err != nil {
		return err
	}
	b.logf("stopping the load; waiting for the requests in flight")
	b.d.stopAndWait()
	b.res.phases = b.d.results()
	b.res.loadAfter = loadAvg()
	return b.publish()
}

func (b *bench) logf(format string, args ...any) {
	fmt.Fprintf(b.log, "%7.1fs  %s\n", time.Since(b.began).Seconds(), fmt.Sprintf(format, args...))
}

// prepareLoad finds the loadgen pod, checks it is meshed, and makes the
// driver that sends from its network namespace to web's ClusterIP; one
// request must get through before the load starts.
func (b *bench) prepareLoad(ctx context.Context) error {
	pods, err := b.lab.RunningPods(ctx, b.cfg.Namespace, clientApp)
	if err != nil {
		return err
	}
	if len(pods) == 0 {
		return fmt.Errorf("no running pod of %s in %s", clientApp, b.cfg.Namespace)
	}
	client := &pods[0]
	if !kubelab.HasProxy(client) {
		return fmt.Errorf("pod %s/%s has no %s container: the injector did not mesh it (mesh check says why)", client.Namespace, client.Name, names.ProxyContainerName)
	}
	netns, err := kubelab.PodNetns(client, clientApp)
	if err != nil {
		return err
	}
	svc, err := b.lab.Client.CoreV1().Services(b.cfg.Namespace).Get(ctx, "web", metav1.GetOptions{})
	if err != nil {
		return err
	}
	port := int(svc.Spec.Ports[0].Port)
	b.res.clientPod = client.Name
	b.res.web = net.JoinHostPort(svc.Spec.ClusterIP, strconv.Itoa(port))
	// The Host the demo loadgen sends: the Service's short name.
	b.d = newDriver(driverConfig{
		Base: "http://" + b.res.web, Host: "web:" + strconv.Itoa(port),
		Dial: cluster.DialInNetns(netns), RPS: b.cfg.RPS, Concurrency: b.cfg.Concurrency, Timeout: b.cfg.Timeout,
	}, phaseWarmup)
	b.logf("load leaves from pod %s (its proxy intercepts it) for web at %s", client.Name, b.res.web)
	return kubelab.Poll(ctx, time.Minute, time.Second, "a first request through the demo", func(ctx context.Context) (bool, string, error) {
		if err := b.d.send(ctx, http.MethodGet, "/"); err != nil {
			return false, err.Error(), nil
		}
		return b.d.products.Load() != nil, "the page lists no product", nil
	})
}

// findTargets picks the processes whose memory and goroutines the steady
// phase follows: the proxy of one pod of each Deployment on the path, the
// controller, and mesh-viz when it runs on its own.
func (b *bench) findTargets(ctx context.Context) error {
	for _, app := range append([]string{clientApp}, servers...) {
		pods, err := b.lab.RunningPods(ctx, b.cfg.Namespace, app)
		if err != nil {
			return err
		}
		if len(pods) == 0 {
			return fmt.Errorf("no running pod of %s in %s", app, b.cfg.Namespace)
		}
		t := &target{name: "proxy of " + app, ns: b.cfg.Namespace, pod: pods[0].Name, container: names.ProxyContainerName, port: names.AdminPort}
		if app == clientApp {
			t.pod = b.res.clientPod
			b.client = t
		}
		b.targets = append(b.targets, t)
	}
	for _, app := range []string{controllerName, vizName} {
		pods, err := b.lab.RunningPods(ctx, b.cfg.MeshNamespace, app)
		if err != nil {
			return err
		}
		if len(pods) == 0 {
			if app == vizName {
				b.vizMissing(ctx)
				continue
			}
			return fmt.Errorf("no running pod of %s in %s", app, b.cfg.MeshNamespace)
		}
		t, err := componentTarget(app, &pods[0])
		if err != nil {
			return err
		}
		b.targets = append(b.targets, t)
	}
	return nil
}

// vizMissing notes why mesh-viz is not sampled: not a Deployment of its
// own in this install, or none of its pods ready.
func (b *bench) vizMissing(ctx context.Context) {
	_, err := b.lab.Client.AppsV1().Deployments(b.cfg.MeshNamespace).Get(ctx, vizName, metav1.GetOptions{})
	if apierrors.IsNotFound(err) {
		b.logf("no %s Deployment in %s: viz runs inside %s, whose figures include it", vizName, b.cfg.MeshNamespace, controllerName)
		return
	}
	note := fmt.Sprintf("%s: no ready pod, so not sampled", vizName)
	b.logf("%s", note)
	b.res.notes = append(b.res.notes, note)
}

// componentTarget is the control-plane pod p's container that serves
// /metrics on its port named "admin".
func componentTarget(name string, p *corev1.Pod) (*target, error) {
	for _, c := range p.Spec.Containers {
		for _, port := range c.Ports {
			if port.Name == "admin" {
				return &target{name: name, ns: p.Namespace, pod: p.Name, container: c.Name, port: int(port.ContainerPort)}, nil
			}
		}
	}
	return nil, fmt.Errorf("pod %s/%s has no container port named admin to read /metrics from", p.Namespace, p.Name)
}

// phases runs the warm-up, steady and kill phases under the load the
// driver sends.
func (b *bench) phases(ctx context.Context) error {
	b.logf("%s: %v at %v RPS", phaseWarmup, b.cfg.Warmup, b.cfg.RPS)
	if err := kubelab.Sleep(ctx, b.cfg.Warmup); err != nil {
		return err
	}
	if err := b.steady(ctx); err != nil {
		return err
	}

	b.d.next(phaseController)
	pods, err := b.lab.RunningPods(ctx, b.cfg.MeshNamespace, controllerName)
	if err != nil {
		return err
	}
	if len(pods) == 0 {
		return fmt.Errorf("no running pod of %s in %s to kill", controllerName, b.cfg.MeshNamespace)
	}
	b.logf("%s: deleting every %s pod", phaseController, controllerName)
	if b.res.controller, err = b.killAndWait(ctx, b.cfg.MeshNamespace, controllerName, pods); err != nil {
		return err
	}
	if err := b.settle(ctx, 2); err != nil {
		return err
	}

	b.d.next(phaseServer)
	if pods, err = b.lab.RunningPods(ctx, b.cfg.Namespace, b.cfg.Kill); err != nil {
		return err
	}
	if len(pods) < 2 {
		return fmt.Errorf("%d running pods of %s: want at least 2, so that the Service keeps one while the other is killed", len(pods), b.cfg.Kill)
	}
	b.res.serverPods = len(pods)
	b.logf("%s: deleting one of the %d pods of %s", phaseServer, len(pods), b.cfg.Kill)
	if b.res.server, err = b.killAndWait(ctx, b.cfg.Namespace, b.cfg.Kill, pods[:1]); err != nil {
		return err
	}
	return b.settle(ctx, 3)
}

// settle lets the load run for cfg.Settle after a replacement, then logs
// the counts of phase i.
func (b *bench) settle(ctx context.Context, i int) error {
	if err := kubelab.Sleep(ctx, b.cfg.Settle); err != nil {
		return err
	}
	p := b.d.snapshot(i)
	b.logf("%s: %d requests, %d failed", p.name, p.requests, p.failures)
	return nil
}

// steady samples every target every cfg.SampleEvery for cfg.Duration.
func (b *bench) steady(ctx context.Context) error {
	b.d.next(phaseSteady)
	p := b.d.snapshot(0)
	b.logf("%s: warm-up had %d requests, %d failed; sampling %d processes every %v for %v",
		phaseSteady, p.requests, p.failures, len(b.targets), b.cfg.SampleEvery, b.cfg.Duration)
	for _, t := range b.targets {
		t.restartsBefore = b.lab.Restarts(ctx, t.ns, t.pod, t.container)
	}
	t0 := time.Now()
	end := time.NewTimer(b.cfg.Duration)
	defer end.Stop()
	tick := time.NewTicker(b.cfg.SampleEvery)
	defer tick.Stop()
	b.sampleAll(ctx)
	for done := false; !done; {
		select {
		case <-ctx.Done():
			return context.Cause(ctx)
		case <-tick.C:
		case <-end.C:
			done = true
		}
		b.sampleAll(ctx)
		s := b.d.snapshot(1)
		b.logf("%s %v/%v: %d requests, %d failed; %s", phaseSteady, time.Since(t0).Round(time.Second), b.cfg.Duration,
			s.requests, s.failures, b.lastReadings())
	}
	b.res.steady = time.Since(t0)
	for _, t := range b.targets {
		t.restartsAfter = b.lab.Restarts(ctx, t.ns, t.pod, t.container)
	}
	return nil
}

func (b *bench) sampleAll(ctx context.Context) {
	for _, t := range b.targets {
		t.sample(ctx, b.lab)
	}
}

// lastReadings is each target's latest RSS and goroutines, for progress.
func (b *bench) lastReadings() string {
	var s string
	for i, t := range b.targets {
		if i > 0 {
			s += ", "
		}
		if len(t.readings) == 0 {
			s += t.name + " -"
			continue
		}
		r := t.readings[len(t.readings)-1]
		s += fmt.Sprintf("%s %s MB/%.0f", t.name, mb(r.rss), r.goroutines)
	}
	return s
}
