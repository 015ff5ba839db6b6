package cli

import (
	"bytes"
	"cmp"
	"context"
	"fmt"
	"io"
	"net"
	"slices"
	"strconv"
	"strings"
	"sync"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"

	vizv1 "github.com/mesh-dev/mesh/api/viz/v1"
)

// Bounds of the requests top waits to see the response of: a request
// whose response never comes (the tap's rate limit dropped it, or the
// client gave up) must not be kept for ever.
const (
	maxPendingRequests = 10000
	pendingRequestTTL  = time.Minute
)

func newVizTopCmd(e *vizEnv) *cobra.Command {
	opts := tapOptions{}
	maxRows := 20
	cmd := &cobra.Command{
		Use:   "top [KIND/NAME | KIND NAME]",
		Short: "Show the busiest paths of a deployment, pod or namespace, live",
		Long: "top taps the requests of a resource (by default, of the whole namespace) and shows\n" +
			"the paths requested most, refreshed every second: who asked whom, how often, the best,\n" +
			"worst and last latency, and the success rate. Each proxy reports what it sees, so a\n" +
			"request between two tapped pods shows twice: as the client's proxy sent it (SOURCE is\n" +
			"the client pod) and as the server's proxy received it (DESTINATION is the server pod).",
		Example: "  mesh viz top -n shop\n  mesh viz top deploy/web -n shop --path /api --max-rows 10",
		RunE: func(cmd *cobra.Command, args []string) error {
			if maxRows < 0 {
				return fmt.Errorf("--max-rows %d: want 0 (every row) or more", maxRows)
			}
			kind, name := "ns", ""
			if len(args) > 0 {
				var err error
				if kind, name, err = tapTarget(args, "mesh viz top"); err != nil {
					return err
				}
			} else {
				var err error
				if name, err = e.namespace(opts.Namespace); err != nil {
					return err
				}
			}
			q, err := opts.query(kind, name)
			if err != nil {
				return err
			}
			if q.Namespace, err = e.namespace(q.Namespace); err != nil {
				return err
			}
			return runTop(cmd.Context(), e, q, maxRows)
		},
	}
	opts.addFilterFlags(cmd)
	cmd.Flags().IntVar(&maxRows, "max-rows", maxRows, "show at most this many paths, the busiest (0: all)")
	return cmd
}

// runTop aggregates the tap stream and draws the table every e.topEvery
// until ctx ends.
func runTop(ctx context.Context, e *vizEnv, q tapQuery, maxRows int) error {
	// top is made of tap events: through the tap API, like mesh viz tap.
	conn, err := e.tapConnect(ctx)
	if err != nil {
		return err
	}
	defer conn.close()
	table := newTopTable()
	streamCtx, stopStream := context.WithCancel(conn.ctx)
	defer stopStream()
	streamDone := make(chan error, 1)
	// The stream's goroutine writes only to Err, the loop below only to Out.
	go func() {
		streamDone <- streamTap(streamCtx, conn.client, conn.base, q, func(_ []byte, ev *vizv1.TapEvent) error {
			if ev.Type == tapError {
				fmt.Fprintf(e.Err, "tap: %s\n", ev.Error)
			}
			table.add(ev)
			return nil
		})
	}()
	scr := &screen{w: e.Out, tty: e.tty()}
	tick := time.NewTicker(e.topEvery)
	defer tick.Stop()
	for {
		select {
		case err := <-streamDone:
			if conn.ctx.Err() != nil {
				return conn.ended(ctx)
			}
			return conn.explain(err)
		case <-conn.ctx.Done():
			<-streamDone
			return conn.ended(ctx)
		case <-tick.C:
			var b bytes.Buffer
			writeTopTable(&b, table.rows(maxRows))
			if err := scr.draw(b.Bytes()); err != nil {
				stopStream()
				<-streamDone
				return err
			}
		}
	}
}

// topKey is what a row of top counts: who asked whom for what.
type topKey struct {
	Source, Destination, Method, Path string
}

// topRow is a row of top. Latencies are in milliseconds; Timed is false
// until a response carried one.
type topRow struct {
	topKey
	Count, Successes  uint64
	Best, Worst, Last float64
	Timed             bool
}

// pendingKey names a request: its id is unique within its pod's proxy.
type pendingKey struct{ namespace, pod, id string }

// topTable aggregates response events by topKey, each joined to its
// request event. It is safe for concurrent use; mu guards both maps.
type topTable struct {
	mu      sync.Mutex
	pending map[pendingKey]vizv1.TapEvent
	byKey   map[topKey]*topRow
}

func newTopTable() *topTable {
	return &topTable{pending: map[pendingKey]vizv1.TapEvent{}, byKey: map[topKey]*topRow{}}
}

// add takes one event of the tap stream; it ignores all but requests and
// responses.
func (t *topTable) add(ev *vizv1.TapEvent) {
	k := pendingKey{ev.Namespace, ev.Pod, ev.ID}
	t.mu.Lock()
	defer t.mu.Unlock()
	switch ev.Type {
	case tapRequest:
		if len(t.pending) >= maxPendingRequests {
			t.prune(ev.Time)
		}
		t.pending[k] = *ev
	case tapResponse:
		req, ok := t.pending[k]
		if !ok {
			// The tap began after the request: the response is all there is.
			req = *ev
		}
		delete(t.pending, k)
		key := topKeyOf(&req)
		row := t.byKey[key]
		if row == nil {
			row = &topRow{topKey: key}
			t.byKey[key] = row
		}
		row.Count++
		if success(ev) {
			row.Successes++
		}
		if ev.LatencyMs != nil {
			l := *ev.LatencyMs
			if !row.Timed || l < row.Best {
				row.Best = l
			}
			if !row.Timed || l > row.Worst {
				row.Worst = l
			}
			row.Last, row.Timed = l, true
		}
	}
}

// prune forgets requests older than pendingRequestTTL at now, and every
// request if that is not enough. t.mu is held.
func (t *topTable) prune(now time.Time) {
	for k, req := range t.pending {
		if now.Sub(req.Time) > pendingRequestTTL {
			delete(t.pending, k)
		}
	}
	if len(t.pending) >= maxPendingRequests {
		clear(t.pending)
	}
}

// rows returns copies of the busiest limit rows (every row for limit 0), most
// requests first.
func (t *topTable) rows(limit int) []topRow {
	t.mu.Lock()
	rows := make([]topRow, 0, len(t.byKey))
	for _, r := range t.byKey {
		rows = append(rows, *r)
	}
	t.mu.Unlock()
	slices.SortFunc(rows, func(a, b topRow) int {
		return cmp.Or(cmp.Compare(b.Count, a.Count), strings.Compare(a.Source, b.Source),
			strings.Compare(a.Destination, b.Destination), strings.Compare(a.Method, b.Method),
			strings.Compare(a.Path, b.Path))
	})
	if limit > 0 && len(rows) > limit {
		rows = rows[:limit]
	}
	return rows
}

// topKeyOf is the row a request counts in. The proxy that saw it is one
// end: the source of what it sent out, the destination of what it
// received. The other end is the peer's address, or for outbound
// requests the workload the proxy sent it to, when it knows it. Queries
// are cut from the path, so that one path is one row.
func topKeyOf(req *vizv1.TapEvent) topKey {
	path, _, _ := strings.Cut(req.Path, "?")
	k := topKey{Method: req.Method, Path: path}
	if req.Direction == "outbound" {
		k.Source, k.Destination = req.Pod, cmp.Or(req.DstWorkload, host(req.Dst))
	} else {
		k.Source, k.Destination = host(req.Src), req.Pod
	}
	return k
}

// host returns the host of an ip:port address, or addr when it has no
// port.
func host(addr string) string {
	if h, _, err := net.SplitHostPort(addr); err == nil {
		return h
	}
	return addr
}

// topHeader is the header of top's table.
const topHeader = "SOURCE\tDESTINATION\tMETHOD\tPATH\tCOUNT\tBEST\tWORST\tLAST\tSUCCESS"

// writeTopTable prints rows in their order.
func writeTopTable(w io.Writer, rows []topRow) error {
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, topHeader)
	for _, r := range rows {
		best, worst, last := "-", "-", "-"
		if r.Timed {
			best, worst, last = fmtLatency(&r.Best), fmtLatency(&r.Worst), fmtLatency(&r.Last)
		}
		rate := float64(r.Successes) / float64(r.Count)
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n", safeValue(r.Source), safeValue(r.Destination),
			safeValue(r.Method), safeValue(r.Path), strconv.FormatUint(r.Count, 10), best, worst, last, fmtSuccess(&rate))
	}
	return tw.Flush()
}
