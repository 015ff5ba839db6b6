// Package server is the echo server of the conformance echo app: it answers
// every HTTP request and every gRPC Echo call with a description of the
// request as key=value lines, the format the Gateway API conformance suite
// parses (sigs.k8s.io/gateway-api/conformance/utils/echo, parse.go), so the
// suite's mesh tests can tell which pod answered, on which port, and which
// headers reached it after the mesh applied the routes.
package server

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"sort"
	"strconv"
	"strings"
	"sync"
	"time"

	"google.golang.org/grpc"
)

// Config says which listeners the server opens. The suite's manifests
// pass them as repeated flags (--port=8080 --grpc=7070 --tcp=9090
// --port=8443 --tls=8443).
type Config struct {
	// HTTPPorts serve HTTP/1.1 and h2c (HTTP/2 with prior knowledge) on
	// each port; a port also in TLSPorts serves HTTPS (h2 and http/1.1 by
	// ALPN) instead. Port 0 picks a free port (tests).
	HTTPPorts []int
	// GRPCPorts serve the Echo gRPC service in plain text (h2c).
	GRPCPorts []int
	// TCPPorts echo every byte they read back to the sender.
	TCPPorts []int
	// TLSPorts lists the HTTPPorts that serve TLS.
	TLSPorts []int
	// CertFile and KeyFile are the PEM certificate and key of the TLS
	// ports; both empty means a self-signed certificate made at start.
	CertFile, KeyFile string
	// Version is reported as ServiceVersion; empty reports nothing.
	Version string
	// Cluster is reported as Cluster; empty reports nothing.
	Cluster string
	// Hostname is reported as Hostname, which the suite compares with the
	// pod name it expects; empty means os.Hostname().
	Hostname string
	// Log receives one line per listener and per serving error; nil
	// discards.
	Log io.Writer
}

// Listener is one open listener of a Server.
type Listener struct {
	// Kind is "http", "https", "grpc" or "tcp".
	Kind string
	// Addr is the bound address; its port is the one reported as
	// ServicePort.
	Addr net.Addr
}

// Server holds the open listeners. Serve runs them until its context ends.
type Server struct {
	cfg       Config
	listeners []Listener
	nets      []net.Listener
	tls       *tls.Config // nil when no port serves TLS
}

// New opens every listener of cfg, so that their addresses are known (and
// connections queue) before Serve is called. On error nothing stays open.
func New(cfg Config) (*Server, error) {
	if cfg.Hostname == "" {
		h, err := os.Hostname()
		if err != nil {
			return nil, fmt.Errorf("server: hostname: %w", err)
		}
		cfg.Hostname = h
	}
	if cfg.Log == nil {
		cfg.Log = io.Discard
	}
	s := &Server{cfg: cfg}
	if len(cfg.TLSPorts) > 0 {
		tc, err := tlsConfig(cfg.CertFile, cfg.KeyFile, cfg.Hostname)
		if err != nil {
			return nil, err
		}
		s.tls = tc
	}
	tlsPort := map[int]bool{}
	for _, p := range cfg.TLSPorts {
		if !contains(cfg.HTTPPorts, p) {
			return nil, fmt.Errorf("server: --tls=%d names no --port", p)
		}
		tlsPort[p] = true
	}
	open := func(kind string, port int) error {
		ln, err := net.Listen("tcp", ":"+strconv.Itoa(port))
		if err != nil {
			return fmt.Errorf("server: %s listener: %w", kind, err)
		}
		s.nets = append(s.nets, ln)
		s.listeners = append(s.listeners, Listener{Kind: kind, Addr: ln.Addr()})
		return nil
	}
	var err error
	for _, p := range cfg.HTTPPorts {
		kind := "http"
		if tlsPort[p] {
			kind = "https"
		}
		if err = open(kind, p); err != nil {
			break
		}
	}
	for _, p := range cfg.GRPCPorts {
		if err != nil {
			break
		}
		err = open("grpc", p)
	}
	for _, p := range cfg.TCPPorts {
		if err != nil {
			break
		}
		err = open("tcp", p)
	}
	if err != nil {
		s.closeAll()
		return nil, err
	}
	if len(s.nets) == 0 {
		return nil, errors.New("server: no listener configured (--port, --grpc or --tcp)")
	}
	return s, nil
}

// Listeners returns the open listeners in the order of Config: HTTP ports,
// then gRPC, then TCP.
func (s *Server) Listeners() []Listener { return append([]Listener(nil), s.listeners...) }

func (s *Server) closeAll() {
	for _, ln := range s.nets {
		ln.Close()
	}
}

// Serve serves every listener until ctx ends, then stops accepting, gives
// requests in flight a second to finish and returns nil. It returns the
// first error of a listener that fails on its own.
func (s *Server) Serve(ctx context.Context) error {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	var (
		wg       sync.WaitGroup
		errOnce  sync.Once
		firstErr error
	)
	fail := func(err error) {
		errOnce.Do(func() { firstErr = err })
		cancel()
	}
	for i, ln := range s.nets {
		l := s.listeners[i]
		fmt.Fprintf(s.cfg.Log, "echo: %s on %s\n", l.Kind, l.Addr)
		port := l.Addr.(*net.TCPAddr).Port
		wg.Add(1)
		switch l.Kind {
		case "http", "https":
			go func() {
				defer wg.Done()
				s.serveHTTP(ctx, ln, port, l.Kind == "https", fail)
			}()
		case "grpc":
			go func() {
				defer wg.Done()
				s.serveGRPC(ctx, ln, port, fail)
			}()
		case "tcp":
			go func() {
				defer wg.Done()
				serveTCP(ctx, ln, fail)
			}()
		}
	}
	wg.Wait()
	return firstErr
}

func (s *Server) serveHTTP(ctx context.Context, ln net.Listener, port int, useTLS bool, fail func(error)) {
	srv := &http.Server{
		Handler:           s.handler(port),
		ReadHeaderTimeout: 10 * time.Second,
		ErrorLog:          nil,
	}
	srv.Protocols = new(http.Protocols)
	srv.Protocols.SetHTTP1(true)
	if useTLS {
		srv.Protocols.SetHTTP2(true)
		srv.TLSConfig = s.tls.Clone()
		ln = tls.NewListener(ln, srv.TLSConfig)
	} else {
		// h2c with prior knowledge, as a mesh proxy speaks to an app
		// whose Service port says appProtocol kubernetes.io/h2c.
		srv.Protocols.SetUnencryptedHTTP2(true)
	}
	done := make(chan struct{})
	go func() {
		defer close(done)
		<-ctx.Done()
		shutdown(srv)
	}()
	if err := srv.Serve(ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
		fail(fmt.Errorf("server: http on port %d: %w", port, err))
	}
	<-done
}

func shutdown(srv *http.Server) {
	// Below main there is no other context to derive from: the parent has
	// ended, and this one bounds how long requests in flight may take.
	ctx, cancel := context.WithTimeout(context.Background(), time.Second)
	defer cancel()
	if srv.Shutdown(ctx) != nil {
		srv.Close()
	}
}

func (s *Server) serveGRPC(ctx context.Context, ln net.Listener, port int, fail func(error)) {
	g := grpc.NewServer()
	g.RegisterService(&serviceDesc, &echoService{s: s, port: port})
	done := make(chan struct{})
	go func() {
		defer close(done)
		<-ctx.Done()
		stopped := make(chan struct{})
		go func() { g.GracefulStop(); close(stopped) }()
		select {
		case <-stopped:
		case <-time.After(time.Second):
			g.Stop()
		}
	}()
	if err := g.Serve(ln); err != nil && !errors.Is(err, grpc.ErrServerStopped) {
		fail(fmt.Errorf("server: grpc on port %d: %w", port, err))
	}
	<-done
}

// serveTCP echoes bytes back on every connection until ctx ends.
func serveTCP(ctx context.Context, ln net.Listener, fail func(error)) {
	var (
		mu    sync.Mutex // guards conns
		conns = map[net.Conn]struct{}{}
		wg    sync.WaitGroup
	)
	stop := context.AfterFunc(ctx, func() {
		ln.Close()
		mu.Lock()
		for c := range conns {
			c.Close()
		}
		mu.Unlock()
	})
	defer stop()
	for {
		c, err := ln.Accept()
		if err != nil {
			if ctx.Err() == nil {
				fail(fmt.Errorf("server: tcp: %w", err))
			}
			wg.Wait()
			return
		}
		mu.Lock()
		conns[c] = struct{}{}
		mu.Unlock()
		wg.Add(1)
		go func() {
			defer wg.Done()
			io.Copy(c, c)
			c.Close()
			mu.Lock()
			delete(conns, c)
			mu.Unlock()
		}()
	}
}

// handler answers every request with 200 and the description of the
// request. The body is drained first so that a client sending one never
// sees a reset.
func (s *Server) handler(port int) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		io.Copy(io.Discard, r.Body)
		rec := s.record(port)
		rec.add("Method", r.Method)
		rec.add("Proto", r.Proto)
		if r.TLS != nil {
			rec.add("Alpn", r.TLS.NegotiatedProtocol)
		}
		if ip, _, err := net.SplitHostPort(r.RemoteAddr); err == nil {
			rec.add("IP", ip)
		}
		// What the client chose, after every field it cannot choose.
		rec.add("Host", r.Host)
		rec.add("URL", r.URL.RequestURI())
		hdr := r.Header.Clone()
		hdr.Set("Host", r.Host) // Go moves it out of Header; the suite may match on it
		rec.headers("RequestHeader", hdr)
		w.Header().Set("Content-Type", "text/plain; charset=utf-8")
		io.WriteString(w, rec.String())
	})
}

// record starts the description every protocol shares. The server's own
// fields come first, then those a client chooses (Host, URL), the headers
// last: parse.go takes the first match of each field anywhere in the
// output, and a path like /?Method=x must never be the first "Method=" it
// sees.
func (s *Server) record(port int) *record {
	rec := &record{}
	rec.add("StatusCode", "200")
	if s.cfg.Version != "" {
		rec.add("ServiceVersion", s.cfg.Version)
	}
	rec.add("ServicePort", strconv.Itoa(port))
	if s.cfg.Cluster != "" {
		rec.add("Cluster", s.cfg.Cluster)
	}
	rec.add("Hostname", s.cfg.Hostname)
	return rec
}

// record is the key=value text of one answer, one field a line.
type record struct{ b strings.Builder }

func (r *record) add(key, value string) {
	r.b.WriteString(key)
	r.b.WriteByte('=')
	// A line break inside a value would start a field of its own.
	r.b.WriteString(strings.NewReplacer("\r", " ", "\n", " ").Replace(value))
	r.b.WriteByte('\n')
}

// headers writes one key=Name:value line per value, names sorted, so a
// header sent twice is read back as two values (parse.go Adds each line).
func (r *record) headers(key string, h map[string][]string) {
	names := make([]string, 0, len(h))
	for n := range h {
		names = append(names, n)
	}
	sort.Strings(names)
	for _, n := range names {
		for _, v := range h[n] {
			r.add(key, n+":"+v)
		}
	}
}

func (r *record) String() string { return r.b.String() }

func contains(ports []int, p int) bool {
	for _, q := range ports {
		if q == p {
			return true
		}
	}
	return false
}
