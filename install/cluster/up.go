package cluster

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"sort"
	"strings"
	"time"
)

// ErrPartial is returned by Up when some of the cluster runs and some does
// not: starting over would destroy what runs, so the user decides.
var ErrPartial = errors.New("the cluster is partly running")

// Up brings the cluster up and waits until the node is Ready and CoreDNS
// answers. On a cluster that already runs it says so and changes nothing.
func Up(ctx context.Context, cfg Config) error {
	c, p, err := prepare(cfg)
	if err != nil {
		return err
	}
	release, err := lock(ctx, c.Name)
	if err != nil {
		return err
	}
	defer release()
	pr := &progress{w: c.Log, start: time.Now()}

	version, err := K8sVersion(c.RepoRoot)
	if err != nil {
		return err
	}
	k8sBin := k8sBinDir(c, version)
	st := state(p, components(p, k8sBin))
	switch {
	case st.allRunning():
		pr.say("cluster %s is already running; nothing to do", c.Name)
		printAccess(c.Log, p, k8sBin)
		return nil
	case st.anyRunning():
		return fmt.Errorf("%w (%s); run `make cluster-down` and then `make cluster-up`", ErrPartial, st)
	case st.leftovers:
		if err := pr.step("clean up leftovers of a stopped cluster", func() error { return teardown(ctx, p, pr, true) }); err != nil {
			return err
		}
	}
	if err := up(ctx, c, p, pr, version); err != nil {
		return fmt.Errorf("%w\nlogs are in %s; `make cluster-down` removes what was started", err, p.logs)
	}
	pr.say("cluster %s is ready", c.Name)
	printAccess(c.Log, p, k8sBin)
	return nil
}

// Prepare installs the packages the cluster needs and builds the
// Kubernetes binaries into the cache, without starting anything: what `up`
// does first, done ahead of time (make test-e2e runs it before its timed
// tests, for a first build takes most of a quarter of an hour).
func Prepare(ctx context.Context, cfg Config) error {
	c, _, err := prepare(cfg)
	if err != nil {
		return err
	}
	release, err := lock(ctx, c.Name)
	if err != nil {
		return err
	}
	defer release()
	version, err := K8sVersion(c.RepoRoot)
	if err != nil {
		return err
	}
	pr := &progress{w: c.Log, start: time.Now()}
	if err := prepareHost(ctx, c, pr, version); err != nil {
		return err
	}
	pr.say("Kubernetes %s binaries are in %s", version, k8sBinDir(c, version))
	return nil
}

func up(ctx context.Context, c Config, p paths, pr *progress, version string) error {
	k8sBin := k8sBinDir(c, version)
	if err := prepareHost(ctx, c, pr, version); err != nil {
		return err
	}
	meshVersion, err := Version(c.RepoRoot)
	if err != nil {
		return err
	}
	for _, d := range []string{p.state, p.logs, p.run, p.kubelet, p.containerd, p.cniConf, p.cniData, p.manifests} {
		if err := os.MkdirAll(d, 0o755); err != nil {
			return err
		}
	}
	var images infraImages
	name := "images pause, coredns"
	if !coreDNSCached(c) {
		name = "images pause, coredns (first CoreDNS build, ~80s)"
	}
	steps := []struct {
		name string
		fn   func() error
	}{
		{name, func() (err error) { images, err = buildInfraImages(ctx, c, p, meshVersion); return err }},
		{"certificates, tokens, kubeconfigs", func() error { return writePKI(p) }},
		{"configuration files", func() error { return writeConfigs(p, images) }},
		{"node network namespace " + p.name + " (" + NodeIP + ")", func() error { return createNodeNetns(ctx, p) }},
		{"cgroup parent /" + p.name, func() error { return createCgroupParents(p.name) }},
		{"save kernel sysctls kubelet changes", func() error { return saveSysctls(p) }},
	}
	for _, s := range steps {
		if err := pr.step(s.name, s.fn); err != nil {
			return err
		}
	}
	return startAll(ctx, c, p, pr, k8sBin, images)
}

// prepareHost installs missing packages and builds missing binaries.
func prepareHost(ctx context.Context, c Config, pr *progress, version string) error {
	if missing := missingPackages(); len(missing) > 0 {
		if err := pr.step("apt-get install "+strings.Join(missing, " "), func() error {
			return installPackages(ctx, missing)
		}); err != nil {
			return err
		}
	}
	if err := pr.step("kernel features", checkKernel); err != nil {
		return err
	}
	if k8sCached(c, version) {
		return nil
	}
	pr.say("building Kubernetes %s into %s (about 11 minutes on 2 cores, once per machine)", version, k8sBinDir(c, version))
	return pr.step("build Kubernetes "+version, func() error { return buildK8s(ctx, c, pr, version) })
}

func coreDNSCached(c Config) bool {
	_, err := os.Stat(filepath.Join(c.CacheDir, "coredns"))
	return err == nil
}

// startGroups are the components started together, each group once the one
// before is ready: etcd and containerd need nothing; the apiserver needs
// etcd; the rest need the apiserver. Starting a group at once saves the
// seconds each would spend waiting for the one before.
var startGroups = [][]string{
	{"etcd", "containerd"},
	{"kube-apiserver"},
	{"kube-controller-manager", "kube-scheduler", "kubelet", "kube-proxy"},
}

// startAll starts the components group by group, imports the images once
// containerd runs, then waits for the node and deploys CoreDNS.
func startAll(ctx context.Context, c Config, p paths, pr *progress, k8sBin string, images infraImages) error {
	client := healthClient(p)
	byName := map[string]component{}
	for _, comp := range components(p, k8sBin) {
		byName[comp.name] = comp
	}
	for _, group := range startGroups {
		err := pr.step("start "+strings.Join(group, ", "), func() error {
			procs := make([]*process, 0, len(group))
			for _, name := range group {
				proc, err := start(p, byName[name])
				if err != nil {
					return err
				}
				procs = append(procs, proc)
			}
			for _, proc := range procs {
				if err := waitFor(ctx, p, c.Timeout, proc, readiness(p, proc.comp, client)); err != nil {
					return fmt.Errorf("%s: %w", proc.comp.name, err)
				}
			}
			return nil
		})
		if err != nil {
			return err
		}
		if slices.Contains(group, "containerd") {
			if err := pr.step("import images", func() error { return importImages(ctx, p, images) }); err != nil {
				return err
			}
		}
	}
	if err := pr.step("node "+NodeName+" Ready", func() error {
		return waitFor(ctx, p, c.Timeout, nil, func(ctx context.Context) error { return nodeReady(ctx, p, k8sBin) })
	}); err != nil {
		return err
	}
	return pr.step("CoreDNS "+DNSIP, func() error {
		if _, err := kubectl(ctx, p, k8sBin, "apply", "-f", filepath.Join(p.manifests, "coredns.yaml")); err != nil {
			return err
		}
		_, err := kubectl(ctx, p, k8sBin, "-n", "kube-system", "rollout", "status", "deployment/coredns",
			"--timeout="+c.Timeout.String())
		return err
	})
}

// readiness returns the check that says a component is up.
func readiness(p paths, comp component, client *http.Client) func(context.Context) error {
	switch {
	case comp.name == "containerd":
		return func(ctx context.Context) error { return ctr(ctx, p, "version") }
	case comp.name == "kube-apiserver":
		return func(ctx context.Context) error {
			return checkHealth(ctx, client, "https://"+NodeIP+":6443/readyz")
		}
	case comp.health != "":
		return func(ctx context.Context) error { return checkHealth(ctx, client, comp.health) }
	}
	return func(context.Context) error { return nil }
}

// ctr runs containerd's client against the cluster's containerd, in the
// k8s.io namespace the CRI plugin uses.
func ctr(ctx context.Context, p paths, args ...string) error {
	return run(ctx, "ctr", append([]string{"--address", p.containerdSock, "-n", "k8s.io"}, args...)...)
}

// importImages loads the infrastructure images and every tarball `make
// images` left in build/images into the cluster's containerd.
func importImages(ctx context.Context, p paths, images infraImages) error {
	tars := append([]string(nil), images.tarballs...)
	built, _ := filepath.Glob(filepath.Join(p.images, "*.tar")) // none built is fine
	sort.Strings(built)
	tars = append(tars, built...)
	for _, t := range tars {
		if err := ctr(ctx, p, "images", "import", t); err != nil {
			return fmt.Errorf("import %s: %w", t, err)
		}
	}
	return nil
}

// LoadImages imports build/images/*.tar into a running cluster.
func LoadImages(ctx context.Context, cfg Config) error {
	c, p, err := prepare(cfg)
	if err != nil {
		return err
	}
	if _, err := os.Stat(p.containerdSock); err != nil {
		return fmt.Errorf("the cluster is not running (no %s): run `make cluster-up` first", p.containerdSock)
	}
	pr := &progress{w: c.Log, start: time.Now()}
	built, _ := filepath.Glob(filepath.Join(p.images, "*.tar"))
	if len(built) == 0 {
		return fmt.Errorf("no image tarballs in %s: run `make images` first", p.images)
	}
	for _, t := range built {
		if err := pr.step("import "+filepath.Base(t), func() error { return ctr(ctx, p, "images", "import", t) }); err != nil {
			return err
		}
	}
	return nil
}

// printAccess tells the user how to reach the cluster.
func printAccess(w io.Writer, p paths, k8sBin string) {
	fmt.Fprintf(w, "\n    export KUBECONFIG=%s\n    export PATH=%s:$PATH   # kubectl %s\n\n", p.kubeconfig, k8sBin, filepath.Base(k8sBin))
}
