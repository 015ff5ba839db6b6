// Package cni is the mesh's chained CNI plugin and the installer that puts
// it on a node. Chained after the cluster's own network plugins, the
// plugin installs a meshed pod's interception rules (the rules of
// `mesh-proxy init`, from proxy/iptables) while the runtime creates the
// pod's network, so injected pods need no init container with NET_ADMIN
// and namespaces that enforce the Pod Security Standard "restricted" can
// be meshed.
//
// The plugin follows the CNI specification (github.com/containernetworking/cni,
// SPEC.md): it reads its configuration on stdin and the CNI_* environment,
// passes the previous plugin's result through unchanged, and writes it on
// stdout. It logs to stderr, which runtimes show with a failed ADD, or to
// the file its configuration names.
package cni

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/exec"
	"slices"
	"strings"
	"time"

	"github.com/containernetworking/cni/pkg/skel"
	"github.com/containernetworking/cni/pkg/types"
	current "github.com/containernetworking/cni/pkg/types/100"
	"github.com/containernetworking/cni/pkg/version"
	"github.com/containernetworking/plugins/pkg/ns"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/tools/clientcmd"

	"github.com/mesh-dev/mesh/proxy/iptables"
)

// PluginType is the plugin's binary name and its "type" in a conflist.
const PluginType = "mesh-cni"

// DefaultAPITimeout bounds the one API request ADD makes, so a slow API
// server delays the sandbox by at most this much before kubelet retries.
const DefaultAPITimeout = 10 * time.Second

// NetConf is the plugin's entry in the conflist.
type NetConf struct {
	types.PluginConf
	// Kubeconfig is the path, on the node, of the kubeconfig the plugin
	// reads pods with. Required.
	Kubeconfig string `json:"kubeconfig"`
	// IPTablesMode picks the node's iptables binaries: "" runs iptables,
	// iptables-restore, iptables-save as the node's PATH resolves them
	// (the node's default, like mesh-proxy init in its image); "legacy"
	// and "nft" run iptables-legacy-* or iptables-nft-* explicitly.
	IPTablesMode string `json:"iptablesMode,omitempty"`
	// ExcludeNamespaces are never meshed, and ADD does not ask the API
	// server about their pods, so they start even while it is down.
	ExcludeNamespaces []string `json:"excludeNamespaces,omitempty"`
	// LogFile, if set, receives the log instead of stderr.
	LogFile string `json:"logFile,omitempty"`
	// LogLevel is debug, info (""), warn or error.
	LogLevel string `json:"logLevel,omitempty"`
	// APITimeout is a Go duration; "" means DefaultAPITimeout.
	APITimeout string `json:"apiTimeout,omitempty"`
}

// ParseNetConf reads the plugin's configuration, with the previous
// plugin's result parsed into PrevResult.
func ParseNetConf(data []byte) (*NetConf, error) {
	var c NetConf
	if err := json.Unmarshal(data, &c); err != nil {
		return nil, fmt.Errorf("%s config: %w", PluginType, err)
	}
	if err := version.ParsePrevResult(&c.PluginConf); err != nil {
		return nil, fmt.Errorf("%s config: prevResult: %w", PluginType, err)
	}
	if c.Kubeconfig == "" {
		return nil, fmt.Errorf("%s config: no kubeconfig; run `mesh-cni install`, which writes one", PluginType)
	}
	switch c.IPTablesMode {
	case "", "legacy", "nft":
	default:
		return nil, fmt.Errorf("%s config: iptablesMode %q: want legacy, nft or empty for the node's default", PluginType, c.IPTablesMode)
	}
	if _, err := c.apiTimeout(); err != nil {
		return nil, err
	}
	return &c, nil
}

func (c *NetConf) apiTimeout() (time.Duration, error) {
	if c.APITimeout == "" {
		return DefaultAPITimeout, nil
	}
	d, err := time.ParseDuration(c.APITimeout)
	if err != nil || d <= 0 {
		return 0, fmt.Errorf("%s config: apiTimeout %q: want a positive duration such as 10s", PluginType, c.APITimeout)
	}
	return d, nil
}

// PodRef names the pod of a CNI call, from CNI_ARGS.
type PodRef struct{ Namespace, Name string }

func (r PodRef) String() string { return r.Namespace + "/" + r.Name }

// ParseArgs reads K8S_POD_NAMESPACE and K8S_POD_NAME from CNI_ARGS
// ("K=V;K=V"). ok is false when the runtime is not Kubernetes'.
func ParseArgs(args string) (ref PodRef, ok bool) {
	for _, kv := range strings.Split(args, ";") {
		k, v, _ := strings.Cut(kv, "=")
		switch strings.TrimSpace(k) {
		case "K8S_POD_NAMESPACE":
			ref.Namespace = strings.TrimSpace(v)
		case "K8S_POD_NAME":
			ref.Name = strings.TrimSpace(v)
		}
	}
	return ref, ref.Namespace != "" && ref.Name != ""
}

// PodGetter reads one pod. clientPods makes the real one, from a
// kubeconfig; tests substitute their own.
type PodGetter func(ctx context.Context, ref PodRef) (*corev1.Pod, error)

// Plugin carries out CNI commands. The zero value reads pods with the
// kubeconfig the configuration names and runs iptables inside the pod's
// network namespace.
type Plugin struct {
	// Pods, if set, replaces the API client (tests).
	Pods PodGetter
	// Stdout receives the result, Stderr the log when the configuration
	// names no file; nil means os.Stdout and os.Stderr.
	Stdout, Stderr io.Writer
}

// Main carries out the command the runtime's CNI_* environment names. On
// failure it prints the CNI error and exits with status 1; on success it
// returns, and the caller exits 0.
func Main(p *Plugin) {
	skel.PluginMainFuncs(skel.CNIFuncs{
		Add:   p.Add,
		Del:   p.Del,
		Check: p.Check,
		// Nothing the plugin makes outlives the pod's network namespace,
		// so there is nothing to collect and nothing to report.
		GC:     func(*skel.CmdArgs) error { return nil },
		Status: func(*skel.CmdArgs) error { return nil },
	}, version.All, "mesh-cni: installs the mesh's interception rules in meshed pods")
}

// Add installs the interception rules in a meshed pod and passes the
// previous result through. For a pod that is not meshed it changes
// nothing; for a meshed pod any failure fails the sandbox, and kubelet
// retries it.
func (p *Plugin) Add(args *skel.CmdArgs) error {
	conf, err := ParseNetConf(args.StdinData)
	if err != nil {
		return err
	}
	log, closeLog := p.logger(conf)
	defer closeLog()
	log = log.With("container", shortID(args.ContainerID), "netns", args.Netns)
	dec, ref, err := p.decide(conf, args, log)
	if err != nil {
		log.Error("ADD failed", "pod", ref.String(), "err", err)
		return err
	}
	if dec.Mesh {
		start := time.Now()
		if err := p.install(conf, args.Netns, rulesConfig(dec.Rules), log); err != nil {
			err = fmt.Errorf("pod %s/%s: installing the mesh's interception rules: %w "+
				"(the pod is meshed, so it cannot start without them; check the node's iptables or set iptablesMode in the %s conflist entry)",
				ref.Namespace, ref.Name, err, PluginType)
			log.Error("ADD failed", "err", err)
			return err
		}
		log.Info("pod meshed", "pod", ref.String(), "from", dec.Reason, "took", time.Since(start))
	}
	return p.printResult(conf)
}

// decide finds the pod and says what to do with it.
func (p *Plugin) decide(conf *NetConf, args *skel.CmdArgs, log *slog.Logger) (Decision, PodRef, error) {
	ref, ok := ParseArgs(args.Args)
	switch {
	case !ok:
		log.Debug("not a Kubernetes pod (no K8S_POD_NAMESPACE/K8S_POD_NAME in CNI_ARGS)")
		return Decision{}, ref, nil
	case slices.Contains(conf.ExcludeNamespaces, ref.Namespace):
		log.Debug("namespace excluded", "pod", ref.String())
		return Decision{}, ref, nil
	}
	get := p.Pods
	if get == nil {
		var err error
		if get, err = clientPods(conf.Kubeconfig); err != nil {
			return Decision{}, ref, err
		}
	}
	timeout, _ := conf.apiTimeout() // checked by ParseNetConf
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	pod, err := get(ctx, ref)
	if apierrors.IsNotFound(err) {
		// Deleted before its sandbox was made: nothing will run in it.
		log.Info("pod not found; leaving its network as it is", "pod", ref.String())
		return Decision{}, ref, nil
	}
	if err != nil {
		// Without the pod we cannot tell whether it is meshed, and a
		// meshed pod that started without its rules would send plain
		// text; kubelet retries the sandbox.
		return Decision{}, ref, fmt.Errorf("pod %s/%s: reading it from the API server with %s: %w "+
			"(kubelet retries; if the API server is reachable, check that `mesh-cni install` is running on this node and its ServiceAccount may get pods)",
			ref.Namespace, ref.Name, conf.Kubeconfig, err)
	}
	dec, err := Decide(pod, log)
	if err != nil {
		return Decision{}, ref, fmt.Errorf("pod %s/%s: %w (re-create the pod; if it persists, the injector and %s versions differ)",
			ref.Namespace, ref.Name, err, PluginType)
	}
	if !dec.Mesh {
		log.Debug("pod not meshed", "pod", ref.String(), "reason", dec.Reason)
	}
	return dec, ref, nil
}

// Del succeeds: the rules live in the pod's network namespace and go with it.
func (p *Plugin) Del(args *skel.CmdArgs) error {
	// A DEL may come with a configuration that no longer parses (the
	// installer changed it in between); it must still succeed.
	return nil
}

// Check verifies that a meshed pod still has its rules: the jumps into the
// mesh's chains from PREROUTING and OUTPUT.
func (p *Plugin) Check(args *skel.CmdArgs) error {
	conf, err := ParseNetConf(args.StdinData)
	if err != nil {
		return err
	}
	log, closeLog := p.logger(conf)
	defer closeLog()
	dec, ref, err := p.decide(conf, args, log)
	if err != nil || !dec.Mesh {
		return err
	}
	var saved []byte
	err = ns.WithNetNSPath(args.Netns, func(ns.NetNS) error {
		var err error
		saved, err = exec.Command(binary(conf.IPTablesMode, "iptables-save"), "-t", "nat").Output()
		return err
	})
	if err != nil {
		return fmt.Errorf("pod %s/%s: reading its nat table: %w", ref.Namespace, ref.Name, err)
	}
	for _, chain := range []string{iptables.InboundChain, iptables.OutboundChain} {
		if !strings.Contains(string(saved), "-j "+chain) {
			return fmt.Errorf("pod %s/%s is meshed but its nat table does not jump to %s: delete the pod to have it re-created", ref.Namespace, ref.Name, chain)
		}
	}
	return nil
}

// install runs proxy/iptables inside the pod's network namespace. The
// iptables binaries are the node's: they run in a child process forked
// from the thread that ns.WithNetNSPath moved into the namespace, which
// the child inherits.
func (p *Plugin) install(conf *NetConf, netns string, cfg iptables.Config, log *slog.Logger) error {
	mode := conf.IPTablesMode
	cfg.Command = func(ctx context.Context, name string, args ...string) *exec.Cmd {
		return exec.CommandContext(ctx, binary(mode, name), restoreWaits(name, args)...)
	}
	if _, err := exec.LookPath(binary(mode, "ip6tables-restore")); err != nil {
		cfg.NoIPv6 = true // proxy/iptables trusts a custom Command to have it
	}
	// proxy/iptables logs every rule at info, which in an init
	// container's log is useful, but would be a dozen lines per pod in the
	// runtime's log: ADD logs one line, and the rules only at debug.
	if !log.Enabled(context.Background(), slog.LevelDebug) {
		log = slog.New(floor{log.Handler(), slog.LevelWarn})
	}
	return ns.WithNetNSPath(netns, func(ns.NetNS) error {
		return iptables.Install(context.Background(), cfg, log)
	})
}

// floor is a slog.Handler that drops records below min.
type floor struct {
	slog.Handler
	min slog.Level
}

func (f floor) Enabled(ctx context.Context, l slog.Level) bool {
	return l >= f.min && f.Handler.Enabled(ctx, l)
}

func (f floor) WithAttrs(attrs []slog.Attr) slog.Handler {
	return floor{f.Handler.WithAttrs(attrs), f.min}
}

func (f floor) WithGroup(name string) slog.Handler { return floor{f.Handler.WithGroup(name), f.min} }

// restoreWaits adds -w to an iptables-restore command. On the node, unlike
// in an init container with its own /run, the legacy backend's lock
// (/run/xtables.lock) is shared with kube-proxy and with other pods' ADDs,
// and a restore that does not wait for it fails at once. The nft backend
// takes no lock and ignores -w.
func restoreWaits(name string, args []string) []string {
	if !strings.HasSuffix(name, "-restore") || slices.Contains(args, "-w") {
		return args
	}
	return append([]string{"-w"}, args...)
}

// binary names the iptables tool for mode: iptables-restore becomes
// iptables-legacy-restore in "legacy" mode, ip6tables becomes
// ip6tables-nft in "nft" mode, as Debian and RHEL name them.
func binary(mode, name string) string {
	if mode == "" {
		return name
	}
	return strings.Replace(name, "tables", "tables-"+mode, 1)
}

func clientPods(kubeconfig string) (PodGetter, error) {
	rc, err := clientcmd.BuildConfigFromFlags("", kubeconfig)
	if err != nil {
		return nil, fmt.Errorf("kubeconfig %s: %w (is `mesh-cni install` running on this node?)", kubeconfig, err)
	}
	rc.UserAgent = PluginType
	cs, err := kubernetes.NewForConfig(rc)
	if err != nil {
		return nil, fmt.Errorf("kubeconfig %s: %w", kubeconfig, err)
	}
	return func(ctx context.Context, ref PodRef) (*corev1.Pod, error) {
		return cs.CoreV1().Pods(ref.Namespace).Get(ctx, ref.Name, metav1.GetOptions{})
	}, nil
}

// printResult writes the previous plugin's result, or an empty one when
// the plugin is first in its chain.
func (p *Plugin) printResult(conf *NetConf) error {
	res := conf.PrevResult
	if res == nil {
		res = &current.Result{CNIVersion: current.ImplementedSpecVersion}
	}
	res, err := res.GetAsVersion(conf.CNIVersion)
	if err != nil {
		return fmt.Errorf("result as CNI %s: %w", conf.CNIVersion, err)
	}
	w := p.Stdout
	if w == nil {
		w = os.Stdout
	}
	return res.PrintTo(w)
}

// logger opens the log the configuration names.
func (p *Plugin) logger(conf *NetConf) (*slog.Logger, func()) {
	var level slog.Level
	if err := level.UnmarshalText([]byte(conf.LogLevel)); err != nil || conf.LogLevel == "" {
		level = slog.LevelInfo
	}
	w, closeLog := p.Stderr, func() {}
	if w == nil {
		w = os.Stderr
	}
	if conf.LogFile != "" {
		f, err := os.OpenFile(conf.LogFile, os.O_WRONLY|os.O_APPEND|os.O_CREATE, 0o600)
		if err == nil {
			w, closeLog = f, func() { f.Close() }
		} else {
			fmt.Fprintf(w, "%s: log file: %v; logging to stderr\n", PluginType, err)
		}
	}
	log := slog.New(slog.NewTextHandler(w, &slog.HandlerOptions{Level: level})).With("plugin", PluginType)
	return log, closeLog
}

func shortID(id string) string {
	if len(id) > 12 {
		return id[:12]
	}
	return id
}
