package cni

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"os"
	"path/filepath"
	"time"

	"github.com/spf13/pflag"
)

// InstallConfig is what `mesh-cni install` puts on the node. Paths are as
// the installer's container sees them (the node's directories mounted in),
// except HostConfDir.
type InstallConfig struct {
	// Binary is the plugin binary to copy; "" means the running one.
	Binary string
	// BinDir is the node's CNI bin dir (containerd's bin_dir), mounted.
	BinDir string
	// ConfDir is the node's CNI conf dir (containerd's conf_dir), mounted.
	ConfDir string
	// HostConfDir is ConfDir's path on the node, which the plugin, running
	// on the node, opens the kubeconfig under; "" means the same as ConfDir.
	HostConfDir string
	// KubeconfigName is the kubeconfig's file name in ConfDir; "" means
	// "mesh-cni.kubeconfig". Its extension keeps runtimes from reading it
	// as a network.
	KubeconfigName string
	// Server, TokenFile and CAFile make the plugin's kubeconfig: the API
	// server's URL, and the installer's ServiceAccount token and CA, read
	// again on every sync so a rotated token reaches the plugin.
	Server            string
	TokenFile, CAFile string
	// Plugin holds the plugin's own settings written into its entry:
	// IPTablesMode, ExcludeNamespaces, LogFile, LogLevel, APITimeout.
	// Its Kubeconfig is set by the installer.
	Plugin NetConf
	// Interval is how often the installer checks that everything is still
	// in place; 0 means 2s.
	Interval time.Duration
	// ReadyFile, when set, is written once the plugin is in the chain and
	// removed before it is taken out: the DaemonSet's readiness probe
	// (`mesh-cni ready`) reads it, so that `mesh install --cni`, which
	// waits for the DaemonSet, lets no meshed pod start before the plugin
	// can intercept it.
	ReadyFile string
}

func (c InstallConfig) withDefaults() (InstallConfig, error) {
	if c.Binary == "" {
		exe, err := os.Executable()
		if err != nil {
			return c, fmt.Errorf("finding the plugin binary: %w", err)
		}
		c.Binary = exe
	}
	if c.HostConfDir == "" {
		c.HostConfDir = c.ConfDir
	}
	if c.KubeconfigName == "" {
		c.KubeconfigName = PluginType + ".kubeconfig"
	}
	if c.Interval == 0 {
		c.Interval = 2 * time.Second
	}
	if c.BinDir == "" || c.ConfDir == "" {
		return c, errors.New("install: the CNI bin dir and conf dir are required")
	}
	return c, nil
}

// Entry is the plugin's conflist entry.
func (c InstallConfig) Entry() (map[string]any, error) {
	c, err := c.withDefaults()
	if err != nil {
		return nil, err
	}
	p := c.Plugin
	p.Type = PluginType
	p.Name, p.CNIVersion = "", ""
	p.Kubeconfig = filepath.Join(c.HostConfDir, c.KubeconfigName)
	raw, err := json.Marshal(p)
	if err != nil {
		return nil, err
	}
	var m map[string]any
	if err := json.Unmarshal(raw, &m); err != nil {
		return nil, err
	}
	// types.PluginConf marshals its ipam and dns as {} even when unset.
	for k, v := range m {
		if obj, ok := v.(map[string]any); ok && len(obj) == 0 {
			delete(m, k)
		}
	}
	return m, nil
}

// Install keeps the plugin installed on the node until ctx is done, then
// removes the entry, the kubeconfig and the binary it added. It checks
// every Interval that the binary is in the bin dir, the kubeconfig holds
// the current token, and the plugin is the last entry of the runtime's
// network configuration, and repairs what is not: the cluster's network
// plugin may rewrite its configuration at any time.
func Install(ctx context.Context, cfg InstallConfig, log *slog.Logger) (err error) {
	cfg, err = cfg.withDefaults()
	if err != nil {
		return err
	}
	entry, err := cfg.Entry()
	if err != nil {
		return err
	}
	// An entry the plugin rejects would fail every pod's ADD on the node,
	// meshed or not: refuse it here instead.
	if err := checkEntry(entry); err != nil {
		return fmt.Errorf("install: %w", err)
	}
	defer func() {
		// Whatever ended the loop, take out what it put in.
		err = errors.Join(err, uninstall(cfg, log))
	}()
	i := &installer{cfg: cfg, entry: entry, log: log}
	tick := time.NewTicker(cfg.Interval)
	defer tick.Stop()
	for {
		switch err := i.sync(); {
		case errors.Is(err, ErrNoNetwork):
			if !i.waiting {
				log.Info("waiting for the cluster's network configuration", "dir", cfg.ConfDir)
			}
			i.waiting = true
		case err != nil && !i.synced:
			// Before anything worked, an error is the installer's
			// configuration: exit, so the pod's status shows why.
			return err
		case err != nil:
			// Afterwards it is something passing, such as a conflist
			// another writer left half-written: retry. Exiting would
			// take the plugin out of the chain meanwhile.
			log.Warn("keeping the plugin installed failed; retrying", "err", err)
		}
		select {
		case <-ctx.Done():
			return nil
		case <-tick.C:
		}
	}
}

// checkEntry parses entry as the plugin will, in a chain.
func checkEntry(entry map[string]any) error {
	withVersion := maps.Clone(entry)
	withVersion["cniVersion"] = "1.0.0"
	raw, err := json.Marshal(withVersion)
	if err != nil {
		return err
	}
	_, err = ParseNetConf(raw)
	return err
}

// installer is the state of one Install; used from one goroutine.
type installer struct {
	cfg     InstallConfig
	entry   map[string]any
	log     *slog.Logger
	waiting bool // logged that no network configuration exists yet
	synced  bool // logged the first complete sync
	copied  bool // this installer has copied the binary once
}

func (i *installer) sync() error {
	if err := i.syncBinary(); err != nil {
		return err
	}
	if err := i.syncKubeconfig(); err != nil {
		return err
	}
	if err := i.syncConflist(); err != nil {
		return err
	}
	if !i.synced {
		if i.cfg.ReadyFile != "" {
			if err := os.WriteFile(i.cfg.ReadyFile, []byte("ready\n"), 0o644); err != nil {
				return fmt.Errorf("writing the ready file: %w", err)
			}
		}
		i.log.Info("installed", "plugin", filepath.Join(i.cfg.BinDir, PluginType), "conf_dir", i.cfg.ConfDir)
		i.synced = true
	}
	return nil
}

// syncBinary copies the plugin when the bin dir's copy is missing or of
// another size (another version).
func (i *installer) syncBinary() error {
	dst := filepath.Join(i.cfg.BinDir, PluginType)
	src, err := os.Open(i.cfg.Binary)
	if err != nil {
		return fmt.Errorf("plugin binary: %w", err)
	}
	defer src.Close()
	st, err := src.Stat()
	if err != nil {
		return err
	}
	if dt, err := os.Stat(dst); err == nil && dt.Size() == st.Size() && i.copied {
		return nil
	}
	// Streamed: the binary is tens of MB, and the container's memory limit
	// is small; its page cache counts against it already.
	if err := copyFileAtomic(dst, src, 0o755); err != nil {
		return fmt.Errorf("copying the plugin into %s: %w", i.cfg.BinDir, err)
	}
	// The first copy is unconditional, so an upgraded installer replaces
	// an older plugin of the same size; later ones repair.
	i.copied = true
	i.log.Info("copied the plugin", "to", dst)
	return nil
}

func (i *installer) syncKubeconfig() error {
	token, err := os.ReadFile(i.cfg.TokenFile)
	if err != nil {
		return fmt.Errorf("ServiceAccount token: %w", err)
	}
	var ca []byte
	if i.cfg.CAFile != "" {
		if ca, err = os.ReadFile(i.cfg.CAFile); err != nil {
			return fmt.Errorf("API server CA: %w", err)
		}
	}
	data, err := Kubeconfig{Server: i.cfg.Server, CA: ca, Token: string(bytes.TrimSpace(token))}.Marshal()
	if err != nil {
		return err
	}
	path := filepath.Join(i.cfg.ConfDir, i.cfg.KubeconfigName)
	if old, err := os.ReadFile(path); err == nil && bytes.Equal(old, data) {
		return nil
	}
	if err := writeFileAtomic(path, data, 0o600); err != nil {
		return fmt.Errorf("writing the plugin's kubeconfig: %w", err)
	}
	i.log.Info("wrote the plugin's kubeconfig", "path", path)
	return nil
}

// syncConflist makes the plugin the last entry of the first network
// configuration, and removes it from any other file that has it (one that
// was first before).
func (i *installer) syncConflist() error {
	first, err := FirstConfFile(i.cfg.ConfDir)
	if err != nil {
		return err
	}
	if err := removeEntries(i.cfg.ConfDir, first, i.log); err != nil {
		return err
	}
	data, err := os.ReadFile(first)
	if err != nil {
		return err
	}
	out, changed, err := InsertPlugin(data, i.entry)
	if err != nil {
		return fmt.Errorf("%s: %w", first, err)
	}
	target := conflistName(first)
	if !changed && target == first {
		return nil
	}
	if err := writeFileAtomic(target, out, 0o644); err != nil {
		return err
	}
	if target != first {
		// The runtime must not see the network twice.
		if err := os.Remove(first); err != nil {
			return err
		}
		i.log.Info("converted the network configuration to a conflist", "from", first, "to", target)
	}
	i.log.Info("chained the plugin", "conflist", target)
	return nil
}

// removeEntries takes the plugin out of every network configuration in dir
// but keep ("" keeps none).
func removeEntries(dir, keep string, log *slog.Logger) error {
	entries, err := os.ReadDir(dir)
	if err != nil {
		return err
	}
	var errs []error
	for _, e := range entries {
		path := filepath.Join(dir, e.Name())
		if path == keep || e.IsDir() {
			continue
		}
		switch filepath.Ext(path) {
		case ".conflist", ".conf", ".json":
		default:
			continue
		}
		data, err := os.ReadFile(path)
		if err != nil {
			errs = append(errs, err)
			continue
		}
		out, removed, err := RemovePlugin(data, PluginType)
		if err != nil || !removed {
			continue // not ours to judge
		}
		if err := writeFileAtomic(path, out, 0o644); err != nil {
			errs = append(errs, err)
			continue
		}
		log.Info("removed the plugin from a network configuration", "conflist", path)
	}
	return errors.Join(errs...)
}

// uninstall removes what Install added, in the order that never leaves a
// network configuration naming a plugin or kubeconfig that is gone.
func uninstall(cfg InstallConfig, log *slog.Logger) error {
	var errs []error
	if cfg.ReadyFile != "" {
		// Not ready first: nothing should count on the plugin from now on.
		if err := os.Remove(cfg.ReadyFile); err != nil && !errors.Is(err, os.ErrNotExist) {
			errs = append(errs, err)
		}
	}
	if err := removeEntries(cfg.ConfDir, "", log); err != nil {
		errs = append(errs, err)
	}
	for _, path := range []string{
		filepath.Join(cfg.ConfDir, cfg.KubeconfigName),
		filepath.Join(cfg.BinDir, PluginType),
	} {
		if err := os.Remove(path); err != nil && !errors.Is(err, os.ErrNotExist) {
			errs = append(errs, err)
		} else if err == nil {
			log.Info("removed", "path", path)
		}
	}
	return errors.Join(errs...)
}

// AddFlags binds the config to the flags of `mesh-cni install`, with the
// paths a DaemonSet pod mounts by default.
func (c *InstallConfig) AddFlags(fs *pflag.FlagSet) {
	fs.StringVar(&c.BinDir, "cni-bin-dir", "/host/opt/cni/bin", "the node's CNI bin dir as mounted in this container")
	fs.StringVar(&c.ConfDir, "cni-conf-dir", "/host/etc/cni/net.d", "the node's CNI conf dir as mounted in this container")
	fs.StringVar(&c.HostConfDir, "host-cni-conf-dir", "/etc/cni/net.d", "the CNI conf dir's path on the node")
	fs.StringVar(&c.Binary, "plugin-binary", "", "the plugin binary to copy (default: this binary)")
	fs.StringVar(&c.Server, "api-server", "", "the API server's URL for the plugin (default: from KUBERNETES_SERVICE_HOST and _PORT)")
	fs.StringVar(&c.TokenFile, "token-file", serviceAccountDir+"/token", "the ServiceAccount token the plugin reads pods with")
	fs.StringVar(&c.CAFile, "ca-file", serviceAccountDir+"/ca.crt", "the API server's CA bundle")
	fs.DurationVar(&c.Interval, "interval", 2*time.Second, "how often to check that the plugin is still installed")
	fs.StringVar(&c.ReadyFile, "ready-file", DefaultReadyFile, "a file written once the plugin is chained, for `mesh-cni ready` (empty: none)")
	fs.StringVar(&c.Plugin.IPTablesMode, "iptables-mode", "", "the node's iptables: legacy, nft, or empty for the iptables on the node's PATH")
	fs.StringSliceVar(&c.Plugin.ExcludeNamespaces, "exclude-namespaces", nil, "namespaces whose pods the plugin never looks up or meshes")
	fs.StringVar(&c.Plugin.LogLevel, "plugin-log-level", "info", "the plugin's log level: debug, info, warn, error")
	fs.StringVar(&c.Plugin.LogFile, "plugin-log-file", "", "a file on the node the plugin logs to (default: stderr, which the runtime logs)")
}

// DefaultReadyFile is where the DaemonSet's installer says it is ready: an
// emptyDir of its pod.
const DefaultReadyFile = "/run/mesh-cni/ready"

// Ready returns nil when the installer has chained the plugin: the ready
// file exists.
func Ready(readyFile string) error {
	if _, err := os.Stat(readyFile); err != nil {
		return fmt.Errorf("the plugin is not chained yet (%w)", err)
	}
	return nil
}

// serviceAccountDir is where Kubernetes mounts a pod's ServiceAccount.
const serviceAccountDir = "/var/run/secrets/kubernetes.io/serviceaccount"
