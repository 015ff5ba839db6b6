package main

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/spiffe/go-spiffe/v2/spiffeid"

	"github.com/mesh-dev/mesh/bench/internal/benchdoc"
	"github.com/mesh-dev/mesh/identity/pki"
	"github.com/mesh-dev/mesh/install/certs"
)

// controller is a mesh-controller process the benchmark started.
type controller struct {
	cmd *exec.Cmd
	// grpcAddr is where the benchmark's streams connect: the plain-text
	// loopback listener (--grpc-local-addr) of the same API that proxies
	// reach over mesh TLS on --grpc-addr, which would refuse the
	// benchmark's certificate-less clients.
	grpcAddr  string
	adminAddr string
	logPath   string
	exited    chan struct{} // closed when the process is gone
	waitErr   error         // why; read after exited is closed
	http      *http.Client
}

// buildController builds mesh-controller into dir.
func buildController(ctx context.Context, dir string) (string, error) {
	bin := filepath.Join(dir, "mesh-controller")
	cmd := exec.CommandContext(ctx, "go", "build", "-o", bin, "github.com/mesh-dev/mesh/cmd/mesh-controller")
	if out, err := cmd.CombinedOutput(); err != nil {
		return "", fmt.Errorf("go build mesh-controller: %w\n%s", err, out)
	}
	return bin, nil
}

// startController starts bin on free loopback ports, with a throwaway
// certificate for the injector's listener (no webhook configuration points
// at it) and dir for its files. The controller only reads the cluster, and
// --namespace is the benchmark's. Its environment is the benchmark's, so
// GOGC, GOMAXPROCS and the like can be tried on it.
func startController(ctx context.Context, bin, dir string, cfg config) (*controller, error) {
	tlsDir := filepath.Join(dir, "webhook-tls")
	if err := writeServingPair(tlsDir); err != nil {
		return nil, err
	}
	addrs, err := freeAddrs(5)
	if err != nil {
		return nil, err
	}
	c := &controller{
		grpcAddr:  addrs[4],
		adminAddr: addrs[1],
		logPath:   filepath.Join(dir, "controller.log"),
		exited:    make(chan struct{}),
		http:      &http.Client{Timeout: 2 * time.Second},
	}
	args := []string{
		"--kubeconfig=" + cfg.Kubeconfig,
		"--namespace=" + cfg.Namespace,
		"--proxy-image=bench.invalid/mesh-proxy:bench",
		"--admin-addr=" + c.adminAddr,
		"--webhook-addr=" + addrs[2],
		"--webhook-tls-dir=" + tlsDir,
		"--log-format=text",
	}
	help, _ := exec.CommandContext(ctx, bin, "--help").CombinedOutput()
	args = append(args, grpcArgs(help, addrs[0], c.grpcAddr)...)
	idArgs, err := identityArgs(help, filepath.Join(dir, "identity-issuer"), addrs[3])
	if err != nil {
		return nil, err
	}
	logFile, err := os.Create(c.logPath)
	if err != nil {
		return nil, err
	}
	c.cmd = exec.Command(bin, append(args, idArgs...)...)
	c.cmd.Stdout, c.cmd.Stderr = logFile, logFile
	// Its own process group, so a Ctrl-C reaches the benchmark alone,
	// which then stops the streams before the controller; killed should
	// the benchmark die without cleaning up.
	c.cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
	if err := c.cmd.Start(); err != nil {
		logFile.Close()
		return nil, fmt.Errorf("start mesh-controller: %w", err)
	}
	go func() {
		c.waitErr = c.cmd.Wait()
		logFile.Close()
		close(c.exited)
	}()
	return c, nil
}

// grpcArgs returns the flags of the destination API's listeners for a
// controller whose --help says help: the mesh TLS one on meshAddr, and the
// plain-text loopback one on localAddr, which the benchmark dials. A
// controller from before the loopback listener serves plain text on
// --grpc-addr itself, so it gets localAddr there.
func grpcArgs(help []byte, meshAddr, localAddr string) []string {
	if !bytes.Contains(help, []byte("--grpc-local-addr")) {
		return []string{"--grpc-addr=" + localAddr}
	}
	return []string{"--grpc-addr=" + meshAddr, "--grpc-local-addr=" + localAddr}
}

// identityArgs returns the flags of the identity service when the
// controller's --help, help, lists it (it needs an issuer: a throwaway one
// is written into dir), and none for a controller from before it. The
// benchmark makes no identity requests.
func identityArgs(help []byte, dir, addr string) ([]string, error) {
	if !bytes.Contains(help, []byte("--identity-issuer-dir")) {
		return nil, nil
	}
	id, err := pki.NewIdentity(spiffeid.RequireTrustDomainFromString("cluster.local"), time.Now())
	if err != nil {
		return nil, err
	}
	err = writeFiles(dir, map[string]func() ([]byte, error){
		"tls.crt": func() ([]byte, error) { return id.IssuerCertPEM(), nil },
		"tls.key": id.IssuerKeyPEM,
		"ca.crt":  func() ([]byte, error) { return id.TrustAnchorsPEM(), nil },
	})
	if err != nil {
		return nil, err
	}
	return []string{"--identity-addr=" + addr, "--identity-issuer-dir=" + dir}, nil
}

// freeAddrs returns n loopback addresses with ports free a moment ago. The
// controller takes addresses, not listeners, so another process could take
// a port in between; the controller would then fail to start, and say so.
func freeAddrs(n int) ([]string, error) {
	var addrs []string
	for range n {
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			return nil, err
		}
		defer ln.Close() // held until all are picked, so they differ
		addrs = append(addrs, ln.Addr().String())
	}
	return addrs, nil
}

// writeServingPair writes tls.crt and tls.key for localhost into dir.
func writeServingPair(dir string) error {
	pair, err := certs.NewServing([]string{"localhost"}, time.Now())
	if err != nil {
		return err
	}
	return writeFiles(dir, map[string]func() ([]byte, error){
		"tls.crt": func() ([]byte, error) { return pair.CertPEM(), nil },
		"tls.key": pair.KeyPEM,
	})
}

// writeFiles creates dir and writes each file's content into it.
func writeFiles(dir string, files map[string]func() ([]byte, error)) error {
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return err
	}
	for name, content := range files {
		b, err := content()
		if err != nil {
			return fmt.Errorf("%s: %w", name, err)
		}
		if err := os.WriteFile(filepath.Join(dir, name), b, 0o600); err != nil {
			return err
		}
	}
	return nil
}

// waitReady polls /ready until it answers 200, the process exits, or
// timeout passes.
func (c *controller) waitReady(ctx context.Context, timeout time.Duration) error {
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	why := "no answer yet"
	for {
		req, err := http.NewRequestWithContext(ctx, http.MethodGet, "http://"+c.adminAddr+"/ready", nil)
		if err != nil {
			return err
		}
		if resp, err := c.http.Do(req); err == nil {
			body, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return nil
			}
			why = strings.TrimSpace(string(body))
		}
		select {
		case <-c.exited:
			return fmt.Errorf("mesh-controller exited before it was ready: %v", c.waitErr)
		case <-ctx.Done():
			return fmt.Errorf("mesh-controller not ready (%s): %w", why, context.Cause(ctx))
		case <-time.After(50 * time.Millisecond):
		}
	}
}

// stop ends the process with SIGTERM, or SIGKILL when it has not exited
// after 10 s, and reports an exit that was not clean.
func (c *controller) stop() error {
	select {
	case <-c.exited:
		return fmt.Errorf("mesh-controller exited early: %v", c.waitErr)
	default:
	}
	_ = c.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-c.exited:
		if c.waitErr != nil {
			return fmt.Errorf("mesh-controller: %w", c.waitErr)
		}
		return nil
	case <-time.After(10 * time.Second):
		_ = c.cmd.Process.Kill()
		<-c.exited
		return errors.New("mesh-controller did not stop within 10s of SIGTERM; killed")
	}
}

// logTail returns the last n lines of the controller's log.
func (c *controller) logTail(n int) string {
	b, err := os.ReadFile(c.logPath)
	if err != nil {
		return ""
	}
	lines := strings.Split(strings.TrimRight(string(b), "\n"), "\n")
	return strings.Join(lines[max(0, len(lines)-n):], "\n")
}

// memSample is the controller's memory at one moment, in bytes, or the
// largest of each field over a phase.
type memSample struct {
	RSS        float64 // VmRSS
	RSSFile    float64 // RssFile: the part backed by files, mostly the binary's pages
	HWM        float64 // VmHWM: the peak RSS since the process started
	HeapInuse  float64 // go_memstats_heap_inuse_bytes
	HeapAlloc  float64 // go_memstats_heap_alloc_bytes
	Stacks     float64 // go_memstats_stack_inuse_bytes: goroutine stacks
	Goroutines float64 // go_goroutines
	Streams    float64 // mesh_destination_active_streams
}

func (m memSample) max(o memSample) memSample {
	return memSample{
		RSS: max(m.RSS, o.RSS), RSSFile: max(m.RSSFile, o.RSSFile), HWM: max(m.HWM, o.HWM), HeapInuse: max(m.HeapInuse, o.HeapInuse),
		HeapAlloc: max(m.HeapAlloc, o.HeapAlloc), Stacks: max(m.Stacks, o.Stacks), Goroutines: max(m.Goroutines, o.Goroutines), Streams: max(m.Streams, o.Streams),
	}
}

// sample reads the controller's RSS from /proc and its Go heap from
// /metrics. The heap fields stay zero when /metrics does not answer.
func (c *controller) sample(ctx context.Context) (memSample, error) {
	var m memSample
	status, err := benchdoc.ProcStatus(fmt.Sprintf("/proc/%d/status", c.cmd.Process.Pid))
	if err != nil {
		return m, err
	}
	m.RSS, m.RSSFile, m.HWM = status["VmRSS"], status["RssFile"], status["VmHWM"]
	metrics, err := c.scrape(ctx)
	if err != nil {
		return m, nil
	}
	m.HeapInuse = metrics["go_memstats_heap_inuse_bytes"]
	m.HeapAlloc = metrics["go_memstats_heap_alloc_bytes"]
	m.Stacks = metrics["go_memstats_stack_inuse_bytes"]
	m.Goroutines = metrics["go_goroutines"]
	m.Streams = metrics["mesh_destination_active_streams"]
	return m, nil
}

// scrape returns the label-less samples of the controller's /metrics.
func (c *controller) scrape(ctx context.Context) (map[string]float64, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, "http://"+c.adminAddr+"/metrics", nil)
	if err != nil {
		return nil, err
	}
	resp, err := c.http.Do(req)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("/metrics: %s", resp.Status)
	}
	out := map[string]float64{}
	sc := bufio.NewScanner(resp.Body)
	sc.Buffer(nil, 1<<20)
	for sc.Scan() {
		f := strings.Fields(sc.Text())
		if len(f) < 2 || strings.HasPrefix(f[0], "#") || strings.Contains(f[0], "{") {
			continue
		}
		if v, err := strconv.ParseFloat(f[1], 64); err == nil {
			out[f[0]] = v
		}
	}
	return out, sc.Err()
}
