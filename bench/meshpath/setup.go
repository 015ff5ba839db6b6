package main

import (
	"context"
	"crypto/rand"
	"crypto/x509"
	_ "embed"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"github.com/spiffe/go-spiffe/v2/spiffeid"

	"github.com/mesh-dev/mesh/internal/names"
)

// Ports of the lab. Interception skips directPort and pairPort in both
// pods (`mesh-proxy init --skip-inbound-ports --skip-outbound-ports`, as
// the config.mesh.dev/skip-*-ports annotations do), so the direct rows and
// the nginx pair cross no proxy; appPort is intercepted.
const (
	appPort       = 8080 // the application, through the proxies
	directPort    = 8081 // the same application, around them
	pairPort      = 8443 // nginx B, TLS 1.3
	pairLocalPort = 8090 // nginx A, on the client pod's loopback
)

// appNamespace is the Kubernetes namespace of the lab's two pods.
const appNamespace = "bench"

// The nginx configurations, with @NAME@ placeholders.
var (
	//go:embed nginx-app.conf
	appConf string
	//go:embed nginx-pair-client.conf
	pairClientConf string
	//go:embed nginx-pair-server.conf
	pairServerConf string
)

// readyTimeout bounds each wait for a server of the lab to come up.
const readyTimeout = 30 * time.Second

// setup builds the lab and starts every server in it: the control plane,
// the application, the two proxies and the nginx pair; then it checks that
// each path answers, and that the mesh path is mesh TLS.
func (b *bench) setup(ctx context.Context) error {
	var err error
	if b.lab, err = newLab(ctx, b.dir, b.stderr); err != nil {
		return err
	}
	if b.client, err = b.lab.addPod(ctx, "client"); err != nil {
		return err
	}
	if b.server, err = b.lab.addPod(ctx, "server"); err != nil {
		return err
	}
	if b.ctl, err = b.lab.addPod(ctx, "control-plane"); err != nil {
		return err
	}
	b.clientID = spiffeid.RequireFromSegments(b.td, "ns", appNamespace, "sa", "client")
	b.serverID = spiffeid.RequireFromSegments(b.td, "ns", appNamespace, "sa", "server")
	if b.pki, err = newLabPKI(b.td); err != nil {
		return err
	}
	steps := []func(context.Context) error{
		b.startController, b.startApp, b.intercept, b.startProxies, b.startPair, b.checkPaths,
	}
	for _, step := range steps {
		if err := step(ctx); err != nil {
			return err
		}
	}
	return nil
}

// startController writes the issuer and the pods' tokens, and starts the
// control plane in its pod.
func (b *bench) startController(ctx context.Context) error {
	issuer := filepath.Join(b.dir, "issuer")
	if err := b.pki.writeIssuer(issuer); err != nil {
		return err
	}
	cfg := controllerConfig{
		IssuerDir:    issuer,
		TrustDomain:  b.td.Name(),
		IdentityAddr: b.ctl.ip.String() + ":" + strconv.Itoa(names.IdentityPort),
		APIAddr:      b.ctl.ip.String() + ":" + strconv.Itoa(names.DestinationPort),
	}
	for _, p := range []*pod{b.client, b.server} {
		token, err := randomToken()
		if err != nil {
			return err
		}
		dir := filepath.Join(b.dir, p.name)
		if err := os.MkdirAll(dir, 0o755); err != nil {
			return err
		}
		// Readable by the proxy alone, as kubelet mounts it for its UID.
		path := filepath.Join(dir, "token")
		if err := os.WriteFile(path, []byte(token), 0o600); err != nil {
			return err
		}
		if err := os.Chown(path, names.ProxyUID, names.ProxyUID); err != nil {
			return err
		}
		cfg.Pods = append(cfg.Pods, podSpec{
			Name: p.name, Namespace: appNamespace, ServiceAccount: p.name, IP: p.ip.String(), Port: appPort, Token: token,
		})
	}
	raw, err := json.MarshalIndent(cfg, "", "\t")
	if err != nil {
		return err
	}
	path := filepath.Join(b.dir, "controller.json")
	if err := os.WriteFile(path, raw, 0o600); err != nil {
		return err
	}
	self, err := os.Executable()
	if err != nil {
		return err
	}
	cmd := b.ctl.command(ctx, self, "controller", "--config", path)
	b.note(b.ctl, "meshpath controller --config DIR/controller.json")
	proc, err := b.lab.start("controller", cmd)
	if err != nil {
		return err
	}
	b.procs["controller"] = proc
	return waitFor(ctx, proc, "the control plane's readiness", func() (bool, error) {
		log, err := os.ReadFile(proc.logPath)
		return strings.Contains(string(log), "ready identity="), err
	})
}

func randomToken() (string, error) {
	var b [24]byte
	if _, err := rand.Read(b[:]); err != nil {
		return "", err
	}
	return hex.EncodeToString(b[:]), nil
}

// startApp starts the application in the server pod.
func (b *bench) startApp(ctx context.Context) error {
	proc, err := b.startNginx(ctx, b.server, "app", appConf)
	if err != nil {
		return err
	}
	b.procs["app"] = proc
	return nil
}

// intercept runs `mesh-proxy init` in both pods, as the injector's init
// container does, with the lab's skipped ports.
func (b *bench) intercept(ctx context.Context) error {
	skip := strconv.Itoa(directPort) + "," + strconv.Itoa(pairPort)
	args := []string{"init", "--skip-inbound-ports=" + skip, "--skip-outbound-ports=" + skip}
	for _, p := range []*pod{b.client, b.server} {
		b.note(p, "mesh-proxy "+strings.Join(args, " "))
		if _, err := p.run(ctx, b.proxyBin, args...); err != nil {
			return err
		}
	}
	return nil
}

// startProxies starts the server's proxy and then the client's, each as
// UID 2102 with the environment the injector gives an injected pod's
// proxy, and waits until both are ready: ready means a certificate from
// the identity service, and for the server its inbound policy.
func (b *bench) startProxies(ctx context.Context) error {
	for _, p := range []*pod{b.server, b.client} {
		env := b.proxyEnv(p)
		cmd := p.commandAs(ctx, names.ProxyUID, b.proxyBin)
		cmd.Env = env
		b.note(p, strings.Join(meshEnvOf(env), " ")+" setpriv --reuid=2102 --regid=2102 --clear-groups mesh-proxy")
		proc, err := b.lab.start(p.name+"-proxy", cmd)
		if err != nil {
			return err
		}
		b.procs[p.name+"-proxy"] = proc
		if err := waitFor(ctx, proc, "the "+p.name+" proxy's /ready", func() (bool, error) {
			_, err := p.run(ctx, "curl", "-fsS", "--max-time", "1", "http://127.0.0.1:"+strconv.Itoa(names.AdminPort)+"/ready")
			return err == nil, nil
		}); err != nil {
			return err
		}
	}
	return nil
}

// proxyEnv is the proxy's environment in pod p: this program's, but for
// any MESH_PROXY_ variable, so GOMAXPROCS, GOGC and the like can be tried
// on the proxies, plus what the injector sets.
func (b *bench) proxyEnv(p *pod) []string {
	var env []string
	for _, kv := range os.Environ() {
		if !strings.HasPrefix(kv, "MESH_PROXY_") {
			env = append(env, kv)
		}
	}
	ctl := b.ctl.ip.String()
	return append(env,
		"MESH_PROXY_LOG_LEVEL=warn",
		"MESH_PROXY_IDENTITY_ADDR="+ctl+":"+strconv.Itoa(names.IdentityPort),
		"MESH_PROXY_IDENTITY_SERVER_ID="+controllerID(b.td).String(),
		"MESH_PROXY_DESTINATION_ADDR="+ctl+":"+strconv.Itoa(names.DestinationPort),
		"MESH_PROXY_TRUST_DOMAIN="+b.td.Name(),
		"MESH_PROXY_TRUST_ANCHORS="+string(b.pki.anchorsPEM()),
		"MESH_PROXY_NAMESPACE="+appNamespace,
		"MESH_PROXY_POD_NAME="+p.name,
		"MESH_PROXY_SERVICE_ACCOUNT="+p.name,
		"MESH_PROXY_IDENTITY_TOKEN_FILE="+filepath.Join(b.dir, p.name, "token"),
		// Inside the lab's network no request may fall back to plain text.
		"MESH_PROXY_CLUSTER_NETWORKS="+labSubnet.String(),
	)
}

// meshEnvOf returns env's MESH_PROXY_ variables for the report, with the
// run's paths and the anchors' PEM shortened.
func meshEnvOf(env []string) []string {
	var out []string
	for _, kv := range env {
		k, v, _ := strings.Cut(kv, "=")
		if !strings.HasPrefix(k, "MESH_PROXY_") {
			continue
		}
		if k == "MESH_PROXY_TRUST_ANCHORS" {
			v = "<the test CA's PEM>"
		}
		out = append(out, k+"="+v)
	}
	return out
}

// startPair issues the nginx pair's certificates and starts nginx B in
// the server pod, then nginx A in the client pod.
func (b *bench) startPair(ctx context.Context) error {
	for _, side := range []struct {
		p    *pod
		name string
		conf string
		leaf leaf
	}{
		{b.server, "nginx-b", pairServerConf, leaf{name: "server", usage: x509.ExtKeyUsageServerAuth, dnsName: b.serverName(), id: b.serverID}},
		{b.client, "nginx-a", pairClientConf, leaf{name: "client", usage: x509.ExtKeyUsageClientAuth, dnsName: "client." + appNamespace + ".svc.cluster.local", id: b.clientID}},
	} {
		dir := filepath.Join(b.dir, side.name)
		if err := os.MkdirAll(dir, 0o755); err != nil {
			return err
		}
		if err := b.pki.writeLeaf(dir, side.leaf); err != nil {
			return err
		}
		if err := os.WriteFile(filepath.Join(dir, "ca.crt"), b.pki.anchorsPEM(), 0o644); err != nil {
			return err
		}
		proc, err := b.startNginx(ctx, side.p, side.name, side.conf)
		if err != nil {
			return err
		}
		b.procs[side.name] = proc
	}
	return nil
}

// serverName is the DNS name of nginx B's certificate, which nginx A
// checks.
func (b *bench) serverName() string { return "server." + appNamespace + ".svc.cluster.local" }

// startNginx renders conf into the directory name, checks it with nginx
// -t, and starts nginx with it in pod p.
func (b *bench) startNginx(ctx context.Context, p *pod, name, conf string) (*process, error) {
	dir := filepath.Join(b.dir, name)
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, err
	}
	rendered, err := render(conf, confValues(dir, b.server.ip, b.serverName()))
	if err != nil {
		return nil, fmt.Errorf("%s: %w", name, err)
	}
	path := filepath.Join(dir, "nginx.conf")
	if err := os.WriteFile(path, []byte(rendered), 0o644); err != nil {
		return nil, err
	}
	args := []string{"-p", dir + "/", "-c", path, "-e", filepath.Join(dir, "error.log")}
	if _, err := p.run(ctx, "nginx", append([]string{"-t", "-q"}, args...)...); err != nil {
		return nil, err
	}
	b.note(p, "nginx "+strings.Join(args, " ")+" -g 'daemon off;'")
	args = append(args, "-g", "daemon off;")
	return b.lab.start(name, p.command(ctx, "nginx", args...))
}

// confValues are the values of the nginx configurations' placeholders.
func confValues(dir string, serverIP netip.Addr, serverName string) map[string]string {
	return map[string]string{
		"DIR": dir, "SERVER_IP": serverIP.String(), "SERVER_NAME": serverName,
		"APP_PORT": strconv.Itoa(appPort), "DIRECT_PORT": strconv.Itoa(directPort),
		"PAIR_PORT": strconv.Itoa(pairPort), "PAIR_LOCAL_PORT": strconv.Itoa(pairLocalPort),
	}
}

// render fills in every @NAME@ of conf, and fails on one it has no value
// for.
func render(conf string, values map[string]string) (string, error) {
	var out strings.Builder
	for {
		i := strings.IndexByte(conf, '@')
		if i < 0 {
			out.WriteString(conf)
			return out.String(), nil
		}
		j := strings.IndexByte(conf[i+1:], '@')
		if j < 0 {
			return "", fmt.Errorf("unmatched @ in %q", conf[i:min(len(conf), i+20)])
		}
		key := conf[i+1 : i+1+j]
		v, ok := values[key]
		if !ok {
			return "", fmt.Errorf("no value for @%s@", key)
		}
		out.WriteString(conf[:i])
		out.WriteString(v)
		conf = conf[i+j+2:]
	}
}

// waitFor polls ok until it says true, failing when proc exits, when ok
// fails, or after readyTimeout.
func waitFor(ctx context.Context, proc *process, what string, ok func() (bool, error)) error {
	deadline := time.Now().Add(readyTimeout)
	for {
		if err := proc.alive(); err != nil {
			return err
		}
		done, err := ok()
		if err != nil {
			return fmt.Errorf("waiting for %s: %w", what, err)
		}
		if done {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("%s: not there after %v; the end of %s's log:\n%s", what, readyTimeout, proc.name, logTail(proc.logPath))
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(100 * time.Millisecond):
		}
	}
}

// checkPaths sends one request along each path from the client pod and
// checks the answers, that the mesh request was mesh TLS with the pods'
// identities on both proxies, and that the nginx pair speaks TLS 1.3 with
// a verified client certificate.
func (b *bench) checkPaths(ctx context.Context) error {
	before, err := b.meshCounts(ctx)
	if err != nil {
		return err
	}
	for _, path := range allPaths {
		body, err := b.client.run(ctx, "curl", "-fsS", "--max-time", "5", b.url(path))
		if err != nil {
			return fmt.Errorf("the %s path: %w", path, err)
		}
		if body != "ok" {
			return fmt.Errorf("the %s path answered %q, want \"ok\"", path, body)
		}
	}
	if _, err := b.checkMesh(ctx, before, 1, 0); err != nil {
		return fmt.Errorf("the first request along the mesh path: %w", err)
	}
	tls, err := b.client.run(ctx, "curl", "-fsS", "--max-time", "5", "http://127.0.0.1:"+strconv.Itoa(pairLocalPort)+"/meshpath-tls")
	if err != nil {
		return fmt.Errorf("the nginx pair's TLS check: %w", err)
	}
	if tls != "TLSv1.3 SUCCESS" {
		return fmt.Errorf("between nginx A and B: %q, want TLS 1.3 with a verified client certificate (\"TLSv1.3 SUCCESS\")", tls)
	}
	return b.checkWorkers()
}

// checkWorkers makes sure the servers run with the workers the
// comparison is about.
func (b *bench) checkWorkers() error {
	for name, want := range map[string]int{"app": 1, "nginx-a": 2, "nginx-b": 2} {
		got, err := children(b.procs[name].pid())
		if err != nil {
			return err
		}
		if len(got) != want {
			return fmt.Errorf("%s runs %d worker processes, want %d", name, len(got), want)
		}
	}
	return nil
}

// note records a command the lab ran in pod p, for the report.
func (b *bench) note(p *pod, cmd string) {
	b.commands = append(b.commands, p.name+": "+strings.ReplaceAll(cmd, b.dir, "DIR"))
}

// preflight checks what the run needs before it makes anything.
func preflight(cfg benchConfig) error {
	if os.Geteuid() != 0 {
		return fmt.Errorf("needs root (network namespaces, iptables): sudo make bench-proxy")
	}
	var missing []string
	for _, tool := range []string{"ip", "iptables", "iptables-restore", "nsenter", "setpriv", "curl", "nginx", "wrk"} {
		if _, err := exec.LookPath(tool); err != nil {
			missing = append(missing, tool)
		}
	}
	if len(missing) > 0 {
		return fmt.Errorf("missing %s: sudo make deps", strings.Join(missing, ", "))
	}
	if st, err := os.Stat(cfg.Proxy); err != nil || st.Mode()&0o111 == 0 {
		return fmt.Errorf("--proxy %s is not an executable file: make build", cfg.Proxy)
	}
	return nil
}
