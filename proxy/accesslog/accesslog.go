// Package accesslog writes one line per HTTP request and per opaque TCP
// connection the proxy forwards (issue 15, config.mesh.dev/access-log), in
// an Apache combined-like format or as one JSON object per line.
//
// The request path never waits for the log: a record is copied into a
// bounded queue and one goroutine formats and writes it. When the queue is
// full the record is dropped and counted in
// mesh_proxy_access_log_dropped_total; a log that cannot keep up loses
// lines, requests lose nothing.
//
// Most values come from the client (path, authority, method): they are
// escaped so that no byte of theirs can end a line or break the JSON.
package accesslog

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/mesh-dev/mesh/proxy/metrics"
)

// Format is how lines are written.
type Format string

const (
	// Off writes no access log: the default.
	Off Format = ""
	// Apache is the combined log format's first fields, then the mesh's
	// as key="value" pairs.
	Apache Format = "apache"
	// JSON is one object per line.
	JSON Format = "json"
)

// ErrBadFormat is a --access-log value that names no format.
var ErrBadFormat = errors.New("accesslog: unknown format")

// ParseFormat reads a --access-log value: "", "apache" or "json".
func ParseFormat(s string) (Format, error) {
	switch f := Format(s); f {
	case Off, Apache, JSON:
		return f, nil
	}
	return Off, fmt.Errorf("%w %q: want apache, json or empty (off)", ErrBadFormat, s)
}

// HTTP is what the proxy knows of a request once it is over.
type HTTP struct {
	Start     time.Time // when the request head arrived
	Direction metrics.Direction
	Client    string // the client's ip:port
	Method    string
	Authority string
	Path      string // as sent, with its query
	Proto     string // "HTTP/1.1", "HTTP/2.0"
	// Status is the response's, or the proxy's own answer's; 0 when the
	// client went away before either.
	Status int
	// GRPCStatus is the grpc-status of a gRPC response, -1 for none.
	GRPCStatus int
	Duration   time.Duration // from Start to the response's end
	// RequestBytes and ResponseBytes count body bytes, as Envoy's
	// BYTES_RECEIVED and BYTES_SENT do: heads are not counted.
	RequestBytes, ResponseBytes int64
	// ClientID is the SPIFFE ID the client proved (inbound), ServerID the
	// one the endpoint had to prove (outbound); "" in plain text.
	ClientID, ServerID string
	Route              metrics.RouteRef // zero: no route matched
	Upstream           string           // the endpoint's ip:port; "" when the request went nowhere
	Retries            int              // attempts after the first
	TraceID            string           // 32 hex digits when tracing; "" otherwise
}

// TCP is what the proxy knows of an opaque connection once it is over.
type TCP struct {
	Start       time.Time
	Direction   metrics.Direction
	Client      string // ip:port
	Destination string // the endpoint's ip:port
	Duration    time.Duration
	// FromClient and ToClient count the bytes relayed each way.
	FromClient, ToClient int64
	ClientID, ServerID   string
}

// entry is one queued record: http or tcp, by isTCP.
type entry struct {
	isTCP bool
	http  HTTP
	tcp   TCP
}

// DefaultQueue is the number of records that may wait to be written when
// Config.Queue is 0: a second of a busy proxy's requests, for about
// 400 KB of memory while full.
const DefaultQueue = 1024

// Config configures a Logger.
type Config struct {
	Format Format    // Off makes New return nil
	Out    io.Writer // required: the proxy's stderr
	// Queue bounds the records waiting to be written; 0 means
	// DefaultQueue.
	Queue int
	// Registry, when set, gets mesh_proxy_access_log_dropped_total.
	Registry prometheus.Registerer
}

// Logger queues records and writes them from one goroutine. A nil
// *Logger logs nothing, so that callers need not test for it. Its
// methods are safe for concurrent use.
type Logger struct {
	format  Format
	q       chan entry
	dropped atomic.Uint64
	stop    chan struct{}
	done    chan struct{}
	once    sync.Once
	out     *bufio.Writer
	werr    error // the first write error; written only by run
}

// New returns a Logger writing to cfg.Out, or nil when cfg.Format is Off.
// Close stops it.
func New(cfg Config) (*Logger, error) {
	if _, err := ParseFormat(string(cfg.Format)); err != nil {
		return nil, err
	}
	if cfg.Format == Off {
		return nil, nil
	}
	if cfg.Out == nil {
		return nil, errors.New("accesslog: no writer")
	}
	n := cfg.Queue
	if n <= 0 {
		n = DefaultQueue
	}
	l := &Logger{format: cfg.Format, q: make(chan entry, n), stop: make(chan struct{}), done: make(chan struct{}),
		out: bufio.NewWriterSize(cfg.Out, 16<<10)}
	if cfg.Registry != nil {
		c := prometheus.NewCounterFunc(prometheus.CounterOpts{
			Name: "mesh_proxy_access_log_dropped_total",
			Help: "Access log lines dropped because the log's queue was full: the proxy wrote them slower than it forwarded.",
		}, func() float64 { return float64(l.dropped.Load()) })
		if err := cfg.Registry.Register(c); err != nil {
			return nil, fmt.Errorf("accesslog: %w", err)
		}
	}
	go l.run()
	return l, nil
}

// LogHTTP queues r; it never blocks.
func (l *Logger) LogHTTP(r *HTTP) {
	if l == nil {
		return
	}
	l.put(entry{http: *r})
}

// LogTCP queues c; it never blocks.
func (l *Logger) LogTCP(c *TCP) {
	if l == nil {
		return
	}
	l.put(entry{isTCP: true, tcp: *c})
}

func (l *Logger) put(e entry) {
	select {
	case l.q <- e:
	default:
		l.dropped.Add(1)
	}
}

// Dropped is the number of records dropped so far for a full queue.
func (l *Logger) Dropped() uint64 {
	if l == nil {
		return 0
	}
	return l.dropped.Load()
}

// run writes queued records until Close, then what is left in the queue.
// It flushes whenever the queue runs empty, so that a line is out as soon
// as nothing more waits behind it.
func (l *Logger) run() {
	defer close(l.done)
	buf := make([]byte, 0, 1024)
	for {
		var e entry
		select {
		case e = <-l.q:
		case <-l.stop:
			for {
				select {
				case e = <-l.q:
					buf = l.write(buf, &e)
				default:
					l.flush()
					return
				}
			}
		}
		buf = l.write(buf, &e)
		if len(l.q) == 0 {
			l.flush()
		}
	}
}

func (l *Logger) write(buf []byte, e *entry) []byte {
	buf = buf[:0]
	switch {
	case e.isTCP && l.format == JSON:
		buf = appendTCPJSON(buf, &e.tcp)
	case e.isTCP:
		buf = appendTCPApache(buf, &e.tcp)
	case l.format == JSON:
		buf = appendHTTPJSON(buf, &e.http)
	default:
		buf = appendHTTPApache(buf, &e.http)
	}
	buf = append(buf, '\n')
	if l.out.Available() < len(buf) {
		// Whole lines per write: the proxy's own log shares stderr, and
		// must not land inside one.
		l.flush()
	}
	if l.werr == nil {
		_, l.werr = l.out.Write(buf)
	}
	if cap(buf) > 64<<10 {
		buf = make([]byte, 0, 1024) // one huge path must not stay held
	}
	return buf
}

func (l *Logger) flush() {
	if l.werr == nil {
		l.werr = l.out.Flush()
	}
}

// Close writes what is queued and stops the Logger, or gives up when ctx
// ends first. Records logged after Close are never written.
func (l *Logger) Close(ctx context.Context) error {
	if l == nil {
		return nil
	}
	l.once.Do(func() { close(l.stop) })
	select {
	case <-l.done:
		return l.werr
	case <-ctx.Done():
		return ctx.Err()
	}
}
