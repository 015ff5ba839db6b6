package trace

import (
	"context"
	"fmt"
	"log/slog"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
)

// DefaultQueue is the number of ended spans that may wait for export when
// Config.Queue is 0: about 2 MB while full, at a few hundred bytes a span.
const DefaultQueue = 2048

// Export batching: a batch goes when it is full or its oldest span has
// waited batchWait; an export that takes longer than exportTimeout is
// given up, its spans counted as dropped.
const (
	batchSize     = 256
	batchWait     = 2 * time.Second
	exportTimeout = 5 * time.Second
)

// processor is a SpanProcessor with a bounded queue: OnEnd, on the
// request path, never blocks; one goroutine batches and exports.
type processor struct {
	exp      sdktrace.SpanExporter
	q        chan sdktrace.ReadOnlySpan
	flush    chan chan struct{}
	stop     chan struct{}
	done     chan struct{}
	once     sync.Once
	log      *slog.Logger
	dropped  atomic.Uint64
	exported atomic.Uint64
	// failing is set while exports fail, so that a collector that is down
	// is logged once, not per batch; touched by run only.
	failing bool
}

func newProcessor(exp sdktrace.SpanExporter, queue int, reg prometheus.Registerer, log *slog.Logger) (*processor, error) {
	if queue <= 0 {
		queue = DefaultQueue
	}
	p := &processor{exp: exp, q: make(chan sdktrace.ReadOnlySpan, queue), flush: make(chan chan struct{}),
		stop: make(chan struct{}), done: make(chan struct{}), log: log}
	if reg != nil {
		for _, c := range []prometheus.Collector{
			prometheus.NewCounterFunc(prometheus.CounterOpts{
				Name: "mesh_proxy_trace_spans_dropped_total",
				Help: "Sampled spans not exported: the export queue was full, or the collector did not take them.",
			}, func() float64 { return float64(p.dropped.Load()) }),
			prometheus.NewCounterFunc(prometheus.CounterOpts{
				Name: "mesh_proxy_trace_spans_exported_total",
				Help: "Spans the trace collector took.",
			}, func() float64 { return float64(p.exported.Load()) }),
		} {
			if err := reg.Register(c); err != nil {
				return nil, fmt.Errorf("trace: %w", err)
			}
		}
	}
	go p.run()
	return p, nil
}

func (p *processor) OnStart(context.Context, sdktrace.ReadWriteSpan) {}

// OnEnd queues a sampled span, or drops and counts it when the queue is
// full. Called on the request path.
func (p *processor) OnEnd(s sdktrace.ReadOnlySpan) {
	if !s.SpanContext().IsSampled() {
		return
	}
	select {
	case p.q <- s:
	default:
		p.dropped.Add(1)
	}
}

// run exports batches until Shutdown, then what is queued.
func (p *processor) run() {
	defer close(p.done)
	batch := make([]sdktrace.ReadOnlySpan, 0, batchSize)
	timer := time.NewTimer(batchWait)
	defer timer.Stop()
	send := func() {
		if len(batch) > 0 {
			p.export(batch)
			clear(batch)
			batch = batch[:0]
		}
		timer.Reset(batchWait)
	}
	for {
		select {
		case s := <-p.q:
			if batch = append(batch, s); len(batch) == batchSize {
				send()
			}
		case <-timer.C:
			send()
		case ack := <-p.flush:
			p.drain(&batch)
			send()
			close(ack)
		case <-p.stop:
			p.drain(&batch)
			if len(batch) > 0 {
				p.export(batch)
			}
			return
		}
	}
}

// drain moves what is queued into batch, exporting full batches.
func (p *processor) drain(batch *[]sdktrace.ReadOnlySpan) {
	for {
		select {
		case s := <-p.q:
			if *batch = append(*batch, s); len(*batch) == batchSize {
				p.export(*batch)
				clear(*batch)
				*batch = (*batch)[:0]
			}
		default:
			return
		}
	}
}

func (p *processor) export(batch []sdktrace.ReadOnlySpan) {
	// The export goroutine's own bound: nothing else waits for it.
	ctx, cancel := context.WithTimeout(context.Background(), exportTimeout)
	defer cancel()
	if err := p.exp.ExportSpans(ctx, batch); err != nil {
		p.dropped.Add(uint64(len(batch)))
		if !p.failing {
			p.failing = true
			p.log.Warn("trace collector did not take spans; dropping them until it does (mesh_proxy_trace_spans_dropped_total)",
				"spans", len(batch), "err", err)
		}
		return
	}
	if p.failing {
		p.failing = false
		p.log.Info("trace collector takes spans again")
	}
	p.exported.Add(uint64(len(batch)))
}

// ForceFlush exports what is queued now, within ctx.
func (p *processor) ForceFlush(ctx context.Context) error {
	ack := make(chan struct{})
	select {
	case p.flush <- ack:
	case <-p.done:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
	select {
	case <-ack:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

// Shutdown exports what is queued and stops the exporter, within ctx.
func (p *processor) Shutdown(ctx context.Context) error {
	p.once.Do(func() { close(p.stop) })
	select {
	case <-p.done:
	case <-ctx.Done():
		return ctx.Err()
	}
	return p.exp.Shutdown(ctx)
}
