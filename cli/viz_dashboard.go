package cli

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"net"
	"net/http"
	"net/http/httputil"
	"net/url"
	"os"
	"os/exec"
	"runtime"
	"strconv"
	"syscall"
	"time"

	"github.com/spf13/cobra"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"

	vizv1 "github.com/mesh-dev/mesh/api/viz/v1"
	"github.com/mesh-dev/mesh/install/manifests"
	"github.com/mesh-dev/mesh/web/dashboard"
)

// defaultDashboardPort is the dashboard's local port, Linkerd's.
const defaultDashboardPort = 50750

// dashboardConfigPath is where the page reads what the CLI tells it
// (dashboardConfig); it is not under /api/, which is mesh-viz's.
const dashboardConfigPath = "/config.json"

// dashboardConfig is what the page learns from the CLI rather than from
// the viz API. web/dashboard/src/api.ts has its TypeScript shape.
type dashboardConfig struct {
	// JaegerURL is the local URL of the Jaeger UI of mesh install
	// --with-jaeger, through a port-forward; "" without Jaeger. The page
	// links a tapped request with a trace ID to JaegerURL/trace/<ID>.
	JaegerURL string `json:"jaegerUrl,omitempty"`
}

// dashboardShutdown bounds how long the dashboard waits for its requests
// to finish when it stops.
const dashboardShutdown = 2 * time.Second

// dashboardOptions are the flags of `mesh viz dashboard`.
type dashboardOptions struct {
	Port      int
	Show      bool
	NoBrowser bool
}

func newVizDashboardCmd(e *vizEnv) *cobra.Command {
	opts := dashboardOptions{Port: defaultDashboardPort, Show: true}
	cmd := &cobra.Command{
		Use:   "dashboard",
		Short: "Serve the web dashboard on localhost and open it in a browser",
		Long: "dashboard serves the web page of live stats, the service graph and tap on\n" +
			"http://127.0.0.1:PORT, and passes the page's API requests to mesh-viz through\n" +
			"a port-forward. With the Jaeger of mesh install --with-jaeger, it port-forwards to\n" +
			"Jaeger's UI too, and tap links each traced request to its trace. It opens the page\n" +
			"in a browser when there is one (a desktop session\n" +
			"on Linux, or macOS), and runs until interrupted.",
		Example: "  mesh viz dashboard\n  mesh viz dashboard --port 0 --show=false",
		Args:    cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if opts.Port < 0 || opts.Port > 65535 {
				return fmt.Errorf("--port %d: want a port from 1 to 65535, or 0 for any free one", opts.Port)
			}
			return runDashboard(cmd.Context(), e, opts)
		},
	}
	f := cmd.Flags()
	f.IntVar(&opts.Port, "port", opts.Port, "local port to serve the dashboard on (0: any free port)")
	f.BoolVar(&opts.Show, "show", opts.Show, "open the dashboard in a browser, when one is available")
	f.BoolVar(&opts.NoBrowser, "no-browser", false, "never open a browser (the same as --show=false)")
	return cmd
}

// runDashboard serves the dashboard until ctx ends or the connection to
// mesh-viz is lost.
func runDashboard(ctx context.Context, e *vizEnv, opts dashboardOptions) error {
	// Listen first: a port in use fails before any port-forward.
	ln, err := listenDashboard(opts.Port)
	if err != nil {
		return err
	}
	conn, err := e.connect(ctx)
	if err != nil {
		ln.Close()
		return err
	}
	defer conn.close()
	target, err := url.Parse(conn.base)
	if err != nil {
		ln.Close()
		return fmt.Errorf("viz API address %q: %w", conn.base, err)
	}
	addr := ln.Addr().String()
	// Tap goes through the Kubernetes API server (tap.mesh.dev) with the
	// user's credentials, not through the port-forward.
	tapConn, tapErr := e.tapConnect(conn.ctx)
	if tapConn != nil {
		defer tapConn.close()
	}
	var cfg dashboardConfig
	switch jaeger, err := forwardJaeger(conn.ctx, e.Options); {
	case err != nil:
		// Tap, stats and the graph work without it: say so, go on.
		fmt.Fprintf(e.Err, "mesh viz dashboard: tap will not link to traces: %v\n", err)
	case jaeger != nil:
		defer jaeger.Close()
		cfg.JaegerURL = jaeger.URL
	}
	backends := dashboardBackends{viz: target, transport: conn.client.Transport, tap: dashboardTap(tapConn, tapErr), config: cfg}
	srv := &http.Server{
		Handler:           dashboardHandler(dashboard.Files(), addr, backends),
		ReadHeaderTimeout: 10 * time.Second,
		// Requests end with the connection, so open tap streams do not
		// hold up the shutdown.
		BaseContext: func(net.Listener) context.Context { return conn.ctx },
	}
	served := make(chan error, 1)
	go func() { served <- srv.Serve(ln) }()

	pageURL := "http://" + addr
	fmt.Fprintf(e.Out, "mesh viz dashboard: %s\n", pageURL)
	if opts.Show && !opts.NoBrowser {
		e.openBrowser(pageURL)
	}
	select {
	case <-conn.ctx.Done():
	case err := <-served:
		return fmt.Errorf("dashboard server: %w", err)
	}
	sctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), dashboardShutdown)
	defer cancel()
	if err := srv.Shutdown(sctx); err != nil {
		srv.Close()
	}
	<-served
	return conn.ended(ctx)
}

// listenDashboard listens on port of 127.0.0.1 only: the dashboard
// reaches the cluster with the user's credentials, so it is not for
// other machines.
func listenDashboard(port int) (net.Listener, error) {
	ln, err := net.Listen("tcp", net.JoinHostPort("127.0.0.1", strconv.Itoa(port)))
	if errors.Is(err, syscall.EADDRINUSE) {
		return nil, fmt.Errorf("port %d on 127.0.0.1 is in use (another mesh viz dashboard?): pass --port with a free port, or --port 0 for any", port)
	}
	if err != nil {
		return nil, fmt.Errorf("listen on 127.0.0.1:%d: %w; pass --port with another port", port, err)
	}
	return ln, nil
}

// forwardJaeger port-forwards a free local port to the query port (UI)
// of a ready pod of the Jaeger of mesh install --with-jaeger, found as its
// Service in the control-plane namespace. Without that Service it returns
// nil and no error: Jaeger is optional. The forward lasts until ctx ends
// or it is closed.
func forwardJaeger(ctx context.Context, o *Options) (*forward, error) {
	k, err := o.kube()
	if err != nil {
		return nil, err
	}
	ns := o.ControlPlaneNamespace
	pod, err := jaegerPod(ctx, k, ns)
	if pod == "" || err != nil {
		return nil, err
	}
	return portForward(ctx, k.rest, ns, pod, manifests.JaegerQueryPort)
}

// jaegerPod returns a ready pod of Jaeger's Service in ns, "" and no
// error when there is no such Service.
func jaegerPod(ctx context.Context, k *kube, ns string) (string, error) {
	svc, err := k.client.CoreV1().Services(ns).Get(ctx, manifests.JaegerName, metav1.GetOptions{})
	if apierrors.IsNotFound(err) {
		return "", nil
	}
	if err != nil {
		return "", fmt.Errorf("find Service %s in namespace %s: %w", manifests.JaegerName, ns, err)
	}
	if len(svc.Spec.Selector) == 0 {
		return "", fmt.Errorf("the Service %s in namespace %s selects no pods: reinstall it with mesh install --with-jaeger", manifests.JaegerName, ns)
	}
	return readyPod(ctx, k, ns, manifests.JaegerName, labels.SelectorFromSet(svc.Spec.Selector).String())
}

// dashboardBackends are what the dashboard's handler passes requests to,
// and what it tells the page.
type dashboardBackends struct {
	// viz is the viz API's base URL, reached with transport.
	viz       *url.URL
	transport http.RoundTripper
	// tap serves vizv1.PathTap.
	tap    http.Handler
	config dashboardConfig
}

// dashboardHandler serves files and dashboardConfigPath, and passes /api/
// to the viz API, but tap to the tap handler. It answers only requests
// addressed to addr, its own address by IP or as localhost, so that a
// page elsewhere cannot read the API through a DNS name rebound to
// 127.0.0.1.
func dashboardHandler(files fs.FS, addr string, b dashboardBackends) http.Handler {
	proxy := &httputil.ReverseProxy{
		Rewrite:       func(r *httputil.ProxyRequest) { r.SetURL(b.viz) },
		Transport:     b.transport,
		FlushInterval: -1,
		ErrorHandler: func(w http.ResponseWriter, r *http.Request, err error) {
			if r.Context().Err() != nil {
				return // the page went away, or the dashboard is stopping
			}
			writeVizError(w, http.StatusBadGateway, "mesh viz dashboard cannot reach mesh-viz's API: "+err.Error())
		},
	}
	mux := http.NewServeMux()
	mux.HandleFunc("/api/", func(w http.ResponseWriter, r *http.Request) {
		if r.Method != http.MethodGet && r.Method != http.MethodHead {
			w.Header().Set("Allow", "GET, HEAD")
			writeVizError(w, http.StatusMethodNotAllowed, "the viz API answers GET only")
			return
		}
		if r.URL.Path == vizv1.PathTap {
			b.tap.ServeHTTP(w, r)
			return
		}
		proxy.ServeHTTP(w, r)
	})
	config, _ := json.Marshal(b.config) // strings only: it cannot fail
	mux.HandleFunc("GET "+dashboardConfigPath, func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		w.Header().Set("Cache-Control", "no-store") // the port changes with every run
		w.Write(config)
	})
	mux.Handle("/", http.FileServerFS(files))

	_, port, _ := net.SplitHostPort(addr)
	allowed := map[string]bool{addr: true, net.JoinHostPort("localhost", port): true}
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if !allowed[r.Host] {
			http.Error(w, "mesh viz dashboard answers only http://"+addr, http.StatusForbidden)
			return
		}
		mux.ServeHTTP(w, r)
	})
}

// writeVizError answers with the viz API's Error body, which the page
// shows.
func writeVizError(w http.ResponseWriter, code int, msg string) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(code)
	json.NewEncoder(w).Encode(vizv1.Error{Error: msg})
}

// openBrowser opens url in a browser, when there is one; it says so on
// Err when that fails. It does not wait for the browser.
func (e *vizEnv) openBrowser(url string) {
	if e.open != nil {
		e.open(url)
		return
	}
	args := browserCommand(runtime.GOOS, os.Getenv, url)
	if args == nil {
		return
	}
	if _, err := exec.LookPath(args[0]); err != nil {
		return
	}
	cmd := exec.Command(args[0], args[1:]...)
	if err := cmd.Start(); err != nil {
		fmt.Fprintf(e.Err, "could not open a browser (%v): open %s yourself\n", err, url)
		return
	}
	go cmd.Wait() // reap the launcher, which exits once the browser has the page
}

// browserCommand returns the command that opens url in a browser on goos,
// nil where none can show it: on Linux and the BSDs only in a desktop
// session (DISPLAY or WAYLAND_DISPLAY set), never over a bare SSH login.
func browserCommand(goos string, getenv func(string) string, url string) []string {
	switch goos {
	case "darwin":
		return []string{"open", url}
	case "linux", "freebsd", "netbsd", "openbsd", "dragonfly":
		if getenv("DISPLAY") == "" && getenv("WAYLAND_DISPLAY") == "" {
			return nil
		}
		return []string{"xdg-open", url}
	}
	return nil
}
