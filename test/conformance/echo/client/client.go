// Package client is the `client` command of the conformance echo app: the
// Gateway API conformance suite execs it inside an echo pod
// (conformance/utils/echo/pod.go MeshPod.request) as
//
//	client http://echo/path --method=GET -H name:value --count=500
//	client grpc://echo:7070
//
// and parses what it prints with utils/echo ParseResponse, or, with
// --count, splits it at blank lines into one answer per request
// (parseMultipleResponses). So each request prints one section:
//
//	[0] StatusCode=200
//	[0 body] Hostname=echo-v1-6d8f-abcde
//	[0 body] ...
//	[0] ResponseHeader=X-Header-Set:v1
//	[0] Url=http://echo/path
//
// in that order because the parser takes the first match of each field
// anywhere in the text: first the status the client got (not the 200 the
// server wrote into its body), then the server's key=value lines, and only
// then what a request or a mesh may fill with arbitrary text that could
// read as a field, the response headers as received (after the mesh
// changed them) and the URL asked for. Never a blank line inside a
// section. Redirects are never followed: the redirect tests read the 3xx
// itself.
package client

import (
	"bufio"
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"sort"
	"strings"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/wrapperspb"

	"github.com/mesh-dev/mesh/test/conformance/echo/server"
)

// Header is one -H name:value flag.
type Header struct{ Name, Value string }

// Config is one invocation of the client.
type Config struct {
	// URL is http://host[:port]/path?query or grpc://host:port.
	URL string
	// Method is the HTTP method; empty means GET. Ignored for gRPC.
	Method string
	// Headers are sent in order; a Host header sets the HTTP Host (and
	// the gRPC authority).
	Headers []Header
	// Count is the number of requests, one after the other on one
	// connection where the server keeps it; zero means 1.
	Count int
	// Timeout bounds each request; zero means 5 s.
	Timeout time.Duration
}

// ErrFailed is wrapped by Run's error when a request got no answer (no
// connection, reset, timeout). A 4xx or 5xx answer is an answer: it is
// printed and is not an error.
var ErrFailed = errors.New("requests failed")

// ParseArgs reads the arguments after "client". The URL may come before,
// after or between the flags, as the suite puts it first.
func ParseArgs(args []string, stderr io.Writer) (Config, error) {
	var cfg Config
	fs := flag.NewFlagSet("client", flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.StringVar(&cfg.Method, "method", "GET", "HTTP `method`")
	fs.IntVar(&cfg.Count, "count", 1, "number of `requests` to send")
	fs.DurationVar(&cfg.Timeout, "timeout", 5*time.Second, "time allowed for each request")
	fs.Func("H", "request header `name:value` (repeatable)", func(s string) error {
		name, value, ok := strings.Cut(s, ":")
		if !ok || strings.TrimSpace(name) == "" {
			return fmt.Errorf("header %q is not name:value", s)
		}
		cfg.Headers = append(cfg.Headers, Header{Name: strings.TrimSpace(name), Value: value})
		return nil
	})
	var positional []string
	for {
		if err := fs.Parse(args); err != nil {
			return Config{}, err
		}
		if fs.NArg() == 0 {
			break
		}
		positional = append(positional, fs.Arg(0))
		args = fs.Args()[1:]
	}
	if len(positional) != 1 {
		return Config{}, fmt.Errorf("client: want exactly one URL, got %d: %q", len(positional), positional)
	}
	cfg.URL = positional[0]
	if cfg.Count < 1 {
		return Config{}, fmt.Errorf("client: --count=%d: want at least 1", cfg.Count)
	}
	return cfg, nil
}

// Run sends cfg.Count requests and prints one section per request to out.
// It sends them all even when some fail, and then returns an error
// wrapping ErrFailed that counts the failures.
func Run(ctx context.Context, cfg Config, out io.Writer) error {
	if cfg.Count == 0 {
		cfg.Count = 1
	}
	if cfg.Timeout == 0 {
		cfg.Timeout = 5 * time.Second
	}
	if cfg.Method == "" {
		cfg.Method = http.MethodGet
	}
	u, err := url.Parse(cfg.URL)
	if err != nil {
		return fmt.Errorf("client: %w", err)
	}
	var send func(ctx context.Context, w *section) error
	switch u.Scheme {
	case "http":
		h := newHTTPSender(cfg)
		defer h.c.CloseIdleConnections()
		send = h.send
	case "grpc":
		if u.Path != "" && u.Path != "/" {
			return fmt.Errorf("client: %s: a grpc URL has no path (the app has one method, %s)", cfg.URL, server.EchoMethod)
		}
		g, err := newGRPCSender(cfg, u.Host)
		if err != nil {
			return err
		}
		defer g.conn.Close()
		send = g.send
	default:
		return fmt.Errorf("client: %s: scheme %q is neither http nor grpc", cfg.URL, u.Scheme)
	}
	bw := bufio.NewWriter(out)
	failed := 0
	var last error
	for i := range cfg.Count {
		if i > 0 {
			bw.WriteString("\n")
		}
		w := &section{w: bw, prefix: fmt.Sprintf("[%d] ", i), bodyPrefix: fmt.Sprintf("[%d body] ", i)}
		rctx, cancel := context.WithTimeout(ctx, cfg.Timeout)
		err := send(rctx, w)
		cancel()
		if err != nil {
			failed++
			last = err
			w.line("Error", err.Error())
		}
		w.line("Url", cfg.URL)
		if ctx.Err() != nil {
			break
		}
	}
	if err := bw.Flush(); err != nil {
		return fmt.Errorf("client: write: %w", err)
	}
	if failed > 0 {
		return fmt.Errorf("client: %d of %d %w, the last: %w", failed, cfg.Count, ErrFailed, last)
	}
	return nil
}

// section writes the lines of one request.
type section struct {
	w                  *bufio.Writer
	prefix, bodyPrefix string
}

func (s *section) line(key, value string) {
	s.w.WriteString(s.prefix + key + "=" + oneLine(value) + "\n")
}

// headers writes one line per value, names sorted.
func (s *section) headers(key string, h map[string][]string) {
	names := make([]string, 0, len(h))
	for n := range h {
		names = append(names, n)
	}
	sort.Strings(names)
	for _, n := range names {
		for _, v := range h[n] {
			s.line(key, n+":"+v)
		}
	}
}

// body writes the answer's body under the body prefix, leaving out blank
// lines, which would end the section for the batch parser.
func (s *section) body(text string) {
	for l := range strings.SplitSeq(text, "\n") {
		l = strings.TrimRight(l, "\r")
		if strings.TrimSpace(l) == "" {
			continue
		}
		s.w.WriteString(s.bodyPrefix + l + "\n")
	}
}

func oneLine(s string) string { return strings.NewReplacer("\r", " ", "\n", " ").Replace(s) }

// maxBody bounds what one answer may print: the echo server's answers are
// under a kilobyte, and an error page has no reason to be larger.
const maxBody = 64 << 10

type httpSender struct {
	cfg Config
	c   *http.Client
}

func newHTTPSender(cfg Config) *httpSender {
	tr := &http.Transport{
		// Send only the headers the test asked for.
		DisableCompression:  true,
		MaxIdleConnsPerHost: 1,
	}
	return &httpSender{cfg: cfg, c: &http.Client{
		Transport: tr,
		CheckRedirect: func(*http.Request, []*http.Request) error {
			return http.ErrUseLastResponse
		},
	}}
}

func (h *httpSender) send(ctx context.Context, w *section) error {
	req, err := http.NewRequestWithContext(ctx, h.cfg.Method, h.cfg.URL, nil)
	if err != nil {
		return err
	}
	for _, hd := range h.cfg.Headers {
		if strings.EqualFold(hd.Name, "Host") {
			req.Host = hd.Value
			continue
		}
		req.Header.Add(hd.Name, hd.Value)
	}
	resp, err := h.c.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(io.LimitReader(resp.Body, maxBody))
	if err != nil {
		return fmt.Errorf("reading the body of a %d answer: %w", resp.StatusCode, err)
	}
	w.line("StatusCode", fmt.Sprint(resp.StatusCode))
	w.body(string(body))
	w.headers("ResponseHeader", resp.Header)
	return nil
}

// noAnswer are the codes grpc-go returns when no server answered.
var noAnswer = map[codes.Code]bool{codes.Unavailable: true, codes.DeadlineExceeded: true, codes.Canceled: true}

type grpcSender struct {
	cfg  Config
	conn *grpc.ClientConn
	md   metadata.MD
}

func newGRPCSender(cfg Config, target string) (*grpcSender, error) {
	opts := []grpc.DialOption{grpc.WithTransportCredentials(insecure.NewCredentials())}
	md := metadata.MD{}
	for _, hd := range cfg.Headers {
		if strings.EqualFold(hd.Name, "Host") {
			opts = append(opts, grpc.WithAuthority(hd.Value))
			continue
		}
		md.Append(hd.Name, hd.Value)
	}
	conn, err := grpc.NewClient("dns:///"+target, opts...)
	if err != nil {
		return nil, fmt.Errorf("client: grpc %s: %w", target, err)
	}
	return &grpcSender{cfg: cfg, conn: conn, md: md}, nil
}

func (g *grpcSender) send(ctx context.Context, w *section) error {
	ctx = metadata.NewOutgoingContext(ctx, g.md)
	var hdr metadata.MD
	out := new(wrapperspb.StringValue)
	err := g.conn.Invoke(ctx, server.EchoMethod, wrapperspb.String(""), out, grpc.Header(&hdr))
	st, ok := status.FromError(err)
	if !ok {
		return err
	}
	if len(hdr) == 0 && noAnswer[st.Code()] {
		// No response headers and a code the client library makes up
		// itself when a connection fails or the deadline passes: as
		// with HTTP, no answer is an error, not a status to compare.
		return err
	}
	w.line("StatusCode", server.GRPCStatusCode(uint32(st.Code())))
	w.body(out.GetValue())
	w.headers("ResponseHeader", hdr)
	if st.Code() != 0 {
		w.line("Message", st.Message())
	}
	return nil
}
