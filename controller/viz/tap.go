package viz

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"
	corev1 "k8s.io/api/core/v1"

	tapv1 "github.com/mesh-dev/mesh/api/tap/v1"
	vizv1 "github.com/mesh-dev/mesh/api/viz/v1"
)

// maxTapRPS bounds the max_rps a client may ask of each proxy.
const maxTapRPS = 10000

// tapBuffer is how many events wait for the client before the relay
// stops reading from the proxies, whose own bounded queues then drop
// events (api/tap/v1).
const tapBuffer = 256

// parseTap returns the namespace and resource of a tap request, and the
// filters to send the proxies.
func parseTap(r *http.Request) (string, ref, *tapv1.WatchRequest, error) {
	q, err := query(r, "namespace", "resource", "method", "authority", "path", "max_rps")
	if err != nil {
		return "", ref{}, nil, err
	}
	if q.Get("resource") == "" {
		return "", ref{}, nil, badRequest("resource is required: KIND/NAME, KIND one of deploy, pod or ns")
	}
	res, err := parseRef(q.Get("resource"))
	if err != nil {
		return "", ref{}, nil, badRequest("resource: %v", err)
	}
	if !isWorkload(res.Kind) && res.Kind != kindPod && res.Kind != kindNamespace {
		return "", ref{}, nil, badRequest("resource %s: tap takes a deploy, pod or ns", q.Get("resource"))
	}
	ns, err := namespaceParam(q)
	switch {
	case err != nil:
		return "", ref{}, nil, err
	case res.Kind == kindNamespace:
		ns = res.Name
	case ns == "":
		return "", ref{}, nil, badRequest("namespace is required for resource %s", q.Get("resource"))
	}
	req := &tapv1.WatchRequest{Method: q.Get("method"), Authority: q.Get("authority"), PathPrefix: q.Get("path")}
	if m := req.Method; m != "" && strings.ContainsFunc(m, func(c rune) bool { return c < 'A' || c > 'Z' }) {
		return "", ref{}, nil, badRequest("method %q: use an HTTP method in capitals, like GET", m)
	}
	if p := req.PathPrefix; p != "" && !strings.HasPrefix(p, "/") {
		return "", ref{}, nil, badRequest("path %q: a path prefix starts with /", p)
	}
	if s := q.Get("max_rps"); s != "" {
		n, err := strconv.ParseUint(s, 10, 32)
		if err != nil || n == 0 || n > maxTapRPS {
			return "", ref{}, nil, badRequest("max_rps %q: use a whole number from 1 to %d", s, maxTapRPS)
		}
		req.MaxRps = uint32(n)
	}
	return ns, res, req, nil
}

// tapPods returns the Running meshed pods of res in ns, at most
// MaxTapPods of them.
func (v *Viz) tapPods(ns string, res ref) ([]*corev1.Pod, error) {
	kind, name := res.Kind, res.Name
	if kind == kindNamespace {
		name = ""
	}
	rows, err := v.rows(kind, ns, name)
	if err != nil {
		return nil, err
	}
	if len(rows) == 0 {
		return nil, notFound("%s not found in namespace %s", res, ns)
	}
	var pods []*corev1.Pod
	for _, r := range rows {
		for _, p := range r.pods {
			if scrapeable(p) {
				pods = append(pods, p)
			}
		}
	}
	// The same pods on every request, when there are more than the cap.
	slices.SortFunc(pods, func(a, b *corev1.Pod) int { return strings.Compare(a.Name, b.Name) })
	pods = pods[:min(len(pods), v.cfg.MaxTapPods)]
	if len(pods) == 0 {
		return nil, notFound("%s in namespace %s has no running meshed pod to tap: is it injected (mesh.dev/inject: enabled)?", res, ns)
	}
	return pods, nil
}

// serveTap relays the tap streams of a resource's pods as NDJSON until
// the client goes away or every stream has ended.
func (v *Viz) serveTap(w http.ResponseWriter, r *http.Request) error {
	ns, res, req, err := parseTap(r)
	if err != nil {
		return err
	}
	if v.cfg.TapTLS == nil {
		return &httpError{status: http.StatusServiceUnavailable, msg: "tap is off: viz has no identity to present to the proxies"}
	}
	pods, err := v.tapPods(ns, res)
	if err != nil {
		return err
	}
	w.Header().Set("Content-Type", "application/x-ndjson")
	w.Header().Set("Cache-Control", "no-store")
	w.WriteHeader(http.StatusOK)
	rc := http.NewResponseController(w)
	rc.Flush()
	v.cfg.Log.Info("viz: tap started", "namespace", ns, "resource", res.String(), "pods", len(pods))

	ctx, cancel := context.WithCancel(r.Context())
	defer cancel()
	events := make(chan vizv1.TapEvent, tapBuffer)
	var wg sync.WaitGroup
	for _, p := range pods {
		wg.Go(func() { v.tapPod(ctx, p, req, events) })
	}
	go func() {
		wg.Wait()
		close(events)
	}()
	enc := json.NewEncoder(w)
	for ev := range events {
		if ctx.Err() != nil {
			continue // drain until every relay has stopped
		}
		if err := enc.Encode(ev); err != nil {
			cancel()
			continue
		}
		if err := rc.Flush(); err != nil {
			cancel()
		}
	}
	return nil
}

// tapPod relays pod's tap stream to out until ctx ends; a failure ends
// the pod's part with an "error" event naming it.
func (v *Viz) tapPod(ctx context.Context, pod *corev1.Pod, req *tapv1.WatchRequest, out chan<- vizv1.TapEvent) {
	v.metrics.tapStreams(1)
	defer v.metrics.tapStreams(-1)
	err := v.watchPod(ctx, pod, req, out)
	if ctx.Err() != nil {
		return // the client went away
	}
	if err == nil || errors.Is(err, io.EOF) {
		err = errors.New("the proxy ended the stream")
	}
	ev := vizv1.TapEvent{Type: "error", Error: fmt.Sprintf("pod %s/%s: tap: %v", pod.Namespace, pod.Name, err)}
	select {
	case out <- ev:
	case <-ctx.Done():
	}
}

// watchPod streams pod's events to out over mutual TLS, checking that the
// server is pod's identity.
func (v *Viz) watchPod(ctx context.Context, pod *corev1.Pod, req *tapv1.WatchRequest, out chan<- vizv1.TapEvent) error {
	id, err := v.podID(pod)
	if err != nil {
		return fmt.Errorf("identity: %w", err)
	}
	addr := net.JoinHostPort(pod.Status.PodIP, strconv.Itoa(v.cfg.TapPort))
	opts := []grpc.DialOption{grpc.WithTransportCredentials(credentials.NewTLS(v.cfg.TapTLS(id)))}
	if v.cfg.Dial != nil {
		opts = append(opts, grpc.WithContextDialer(func(ctx context.Context, addr string) (net.Conn, error) {
			return v.cfg.Dial(ctx, "tcp", addr)
		}))
	}
	// passthrough: the address is an IP, nothing to resolve.
	conn, err := grpc.NewClient("passthrough:///"+addr, opts...)
	if err != nil {
		return err
	}
	defer conn.Close()
	stream, err := tapv1.NewTapClient(conn).Watch(ctx, req)
	if err != nil {
		return err
	}
	for {
		ev, err := stream.Recv()
		if err != nil {
			return err
		}
		te, ok := tapEvent(pod, id.String(), ev)
		if !ok {
			continue // a type this relay does not know
		}
		select {
		case out <- te:
		case <-ctx.Done():
			return nil
		}
	}
}

// tapEvent converts a proxy's event to the API's. IDs are the proxy's
// request numbers, prefixed with the pod so they are unique in a relay of
// many pods. A proxy reports the identity its peer proved; its own, self,
// which it proved to this relay, fills the other side of an mTLS hop. It
// returns false for an event of unknown type.
func tapEvent(pod *corev1.Pod, self string, ev *tapv1.Event) (vizv1.TapEvent, bool) {
	out := vizv1.TapEvent{
		ID:          pod.Name + ":" + strconv.FormatUint(ev.GetId(), 10),
		Time:        ev.GetTimestamp().AsTime(),
		Namespace:   pod.Namespace,
		Pod:         pod.Name,
		Direction:   ev.GetDirection(),
		Src:         ev.GetSrcAddr(),
		Dst:         ev.GetDstAddr(),
		DstWorkload: ev.GetDstWorkload(),
		ClientID:    ev.GetClientId(),
		ServerID:    ev.GetServerId(),
		Method:      ev.GetMethod(),
		Scheme:      ev.GetScheme(),
		Authority:   ev.GetAuthority(),
		Path:        ev.GetPath(),
		TraceID:     ev.GetTraceId(),
	}
	switch {
	case out.Direction == "inbound" && out.ClientID != "" && out.ServerID == "":
		out.ServerID = self
	case out.Direction == "outbound" && out.ServerID != "" && out.ClientID == "":
		out.ClientID = self
	}
	switch ev.GetType() {
	case tapv1.Event_REQUEST:
		out.Type = "request"
	case tapv1.Event_RESPONSE:
		out.Type = "response"
		out.Status = int(ev.GetHttpStatus())
		if ev.GrpcStatus != nil {
			s := int(ev.GetGrpcStatus())
			out.GRPCStatus = &s
		}
		ms := float64(ev.GetLatency().AsDuration()) / float64(time.Millisecond)
		out.LatencyMs = &ms
		ok := ev.GetSuccess()
		out.Success = &ok
	default:
		return out, false
	}
	return out, true
}
