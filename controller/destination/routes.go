package destination

import (
	"errors"
	"fmt"
	"math"
	"net"
	"strconv"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/durationpb"

	destinationv1 "github.com/mesh-dev/mesh/api/destination/v1"
	"github.com/mesh-dev/mesh/controller/route"
)

// RouteSource is what the Routes RPC serves: controller/route's Index.
type RouteSource interface {
	// Snapshot returns the current snapshot (nil until the first) and a
	// channel closed when a newer one replaces it.
	Snapshot() (*route.Snapshot, <-chan struct{})
}

// Routes is Server.Routes in the caller's namespace.
func (m meshTLSServer) Routes(req *destinationv1.GetDestinationRequest, stream grpc.ServerStreamingServer[destinationv1.RouteTable]) error {
	caller, err := callerNamespace(stream)
	if err != nil {
		return err
	}
	return m.s.routes(req, caller, stream)
}

// Routes implements the Destination service's Routes: it resolves the
// authority to a Service port and sends its RouteTable for the request's
// context namespace, then a new one after every change that alters it.
// As in Get, a goroutine of its own sends, so that this one can end the
// stream while a Send waits on a client that stopped reading. A table
// only replaces the one before, so a slow client costs no queue: it gets
// the latest table when it reads again.
func (s *Server) Routes(req *destinationv1.GetDestinationRequest, stream grpc.ServerStreamingServer[destinationv1.RouteTable]) error {
	return s.routes(req, req.GetContextNamespace(), stream)
}

func (s *Server) routes(req *destinationv1.GetDestinationRequest, clientNS string, stream grpc.ServerStreamingServer[destinationv1.RouteTable]) error {
	if s.routeSource == nil {
		return status.Error(codes.Unimplemented, "destination: this controller serves no routes")
	}
	if !s.synced.Load() {
		return status.Error(codes.Unavailable, "destination: caches not synced yet, retry")
	}
	target, err := s.resolve(req.GetAuthority(), clientNS)
	if err != nil {
		return err
	}
	if target.Service.Name == "" || target.Hostname != "" {
		return status.Errorf(codes.NotFound, "destination: %s is not a Service port; routes attach to Services", target)
	}
	parent := route.ServicePort{Service: target.Service, Port: int32(target.Port)}
	ctx := stream.Context()
	sendErr := make(chan error, 1)
	go func() { sendErr <- s.sendTables(stream, parent, clientNS) }()
	select {
	case err := <-sendErr:
		return err
	case <-ctx.Done():
		return status.FromContextError(ctx.Err()).Err()
	case <-s.stopping:
		return status.Error(codes.Unavailable, "destination: controller shutting down")
	}
}

// sendTables sends parent's table each time a snapshot changes it, until
// the stream's context ends or a Send fails. A table the translator
// refuses is not sent: the client keeps the last good one.
func (s *Server) sendTables(stream grpc.ServerStreamingServer[destinationv1.RouteTable], parent route.ServicePort, clientNS string) error {
	ctx := stream.Context()
	var last *destinationv1.RouteTable
	var version uint64
	for {
		snap, changed := s.routeSource.Snapshot()
		if snap != nil {
			t, err := translateTable(parent, snap.Lookup(parent, clientNS), s.domain)
			switch {
			case err != nil:
				s.log.Error("route table not sent: the client keeps its last one", "service", parent.Service.String(),
					"port", parent.Port, "client_namespace", clientNS, "error", err)
			case last == nil || !proto.Equal(t, last):
				last = t
				version++
				out := proto.CloneOf(t)
				out.Version = version
				if err := stream.Send(out); err != nil {
					return err
				}
			}
		}
		select {
		case <-ctx.Done():
			return status.FromContextError(ctx.Err()).Err()
		case <-changed:
		}
	}
}

// errBadTable marks a table that breaks the API's invariants: it can only
// come from objects the CRDs' validation should have refused.
var errBadTable = errors.New("invalid route table")

// translateTable turns the index's table of parent (nil: no route) into
// protobuf, with Version zero. Backends are named by their Service DNS
// name in domain, for Get.
func translateTable(parent route.ServicePort, t *route.Table, domain string) (*destinationv1.RouteTable, error) {
	out := &destinationv1.RouteTable{Parent: &destinationv1.Resource{
		Kind: "Service", Namespace: parent.Service.Namespace, Name: parent.Service.Name, Port: uint32(parent.Port),
	}}
	if t == nil {
		return out, nil
	}
	var err error
	if out.HttpRules, err = translateRules(t.HTTP, domain); err != nil {
		return nil, err
	}
	if out.GrpcRules, err = translateRules(t.GRPC, domain); err != nil {
		return nil, err
	}
	if t.Default != nil {
		if out.DefaultRule, err = translateRule(*t.Default, domain); err != nil {
			return nil, fmt.Errorf("the policy of Service %s: %w", parent.Service, err)
		}
		out.DefaultRule.Route.Group = ""
	}
	if out.FailureAccrual, err = translateFailureAccrual(t.FailureAccrual); err != nil {
		return nil, fmt.Errorf("the policy of Service %s: %w", parent.Service, err)
	}
	return out, nil
}

func translateRules(rules []route.Rule, domain string) ([]*destinationv1.Rule, error) {
	out := make([]*destinationv1.Rule, 0, len(rules))
	for _, r := range rules {
		pr, err := translateRule(r, domain)
		if err != nil {
			return nil, err
		}
		pr.Matches = []*destinationv1.Match{translateMatch(r.Match)}
		out = append(out, pr)
	}
	return out, nil
}

// translateRule translates r but for its match.
func translateRule(r route.Rule, domain string) (*destinationv1.Rule, error) {
	pr := &destinationv1.Rule{
		Route:    &destinationv1.Resource{Group: "gateway.networking.k8s.io", Kind: r.Route.Kind, Namespace: r.Route.Namespace, Name: r.Route.Name},
		RuleName: r.Name,
	}
	var err error
	if pr.Filters, err = translateFilters(r.Filters); err != nil {
		return nil, fmt.Errorf("%s %s/%s rule %s: %w", r.Route.Kind, r.Route.Namespace, r.Route.Name, r.Name, err)
	}
	for _, b := range r.Backends {
		if b.Weight == 0 || b.Service.Port <= 0 && !failing(b.Filters) {
			return nil, fmt.Errorf("%w: %s/%s rule %s: backend %s port %d weight %d", errBadTable,
				r.Route.Namespace, r.Route.Name, r.Name, b.Service.Service, b.Service.Port, b.Weight)
		}
		fs, err := translateFilters(b.Filters)
		if err != nil {
			return nil, fmt.Errorf("%s/%s rule %s backend %s: %w", r.Route.Namespace, r.Route.Name, r.Name, b.Service.Service, err)
		}
		pr.Backends = append(pr.Backends, &destinationv1.Backend{
			Authority: net.JoinHostPort(b.Service.Service.Name+"."+b.Service.Service.Namespace+".svc."+domain, strconv.Itoa(int(b.Service.Port))),
			Weight:    b.Weight,
			Filters:   fs,
		})
	}
	if pr.Timeouts, err = translateTimeouts(r.Timeouts); err != nil {
		return nil, fmt.Errorf("%s/%s rule %s: %w", r.Route.Namespace, r.Route.Name, r.Name, err)
	}
	if pr.Retry, err = translateRetry(r.Retry); err != nil {
		return nil, fmt.Errorf("%s/%s rule %s: %w", r.Route.Namespace, r.Route.Name, r.Name, err)
	}
	return pr, nil
}

// translateTimeouts translates a rule's timeouts; nil when it has none.
func translateTimeouts(t route.Timeouts) (*destinationv1.Timeouts, error) {
	if t == (route.Timeouts{}) {
		return nil, nil
	}
	out := &destinationv1.Timeouts{}
	for _, f := range []struct {
		d   time.Duration
		out **durationpb.Duration
	}{{t.Request, &out.Request}, {t.BackendRequest, &out.BackendRequest}, {t.Response, &out.Response}, {t.Idle, &out.Idle}} {
		if f.d < 0 {
			return nil, fmt.Errorf("%w: negative timeout", errBadTable)
		}
		if f.d > 0 {
			*f.out = durationpb.New(f.d)
		}
	}
	return out, nil
}

// maxRetryLimit is the most retries the annotations allow
// (controller/route); a table past it was not built from them.
const maxRetryLimit = 10

// translateRetry translates a rule's retry policy; nil for none.
func translateRetry(r *route.Retry) (*destinationv1.Retry, error) {
	if r == nil {
		return nil, nil
	}
	if r.Limit > maxRetryLimit || r.PerTryTimeout < 0 || r.Budget.TTL < 0 || r.Budget.Ratio < 0 || math.IsNaN(r.Budget.Ratio) || math.IsInf(r.Budget.Ratio, 0) {
		return nil, fmt.Errorf("%w: retry limit %d, per-try timeout %v, budget %+v", errBadTable, r.Limit, r.PerTryTimeout, r.Budget)
	}
	out := &destinationv1.Retry{
		Limit:        r.Limit,
		MaxBodyBytes: r.MaxBodyBytes,
		Budget:       &destinationv1.RetryBudget{Ratio: r.Budget.Ratio, MinPerSecond: r.Budget.MinPerSecond, Ttl: durationpb.New(r.Budget.TTL)},
	}
	if r.PerTryTimeout > 0 {
		out.PerTryTimeout = durationpb.New(r.PerTryTimeout)
	}
	for _, s := range r.HTTP {
		if s.Min < 100 || s.Min > s.Max || s.Max > 599 {
			return nil, fmt.Errorf("%w: retry statuses %d-%d", errBadTable, s.Min, s.Max)
		}
		out.Http = append(out.Http, &destinationv1.StatusRange{Min: s.Min, Max: s.Max})
	}
	for _, c := range r.GRPC {
		if c == 0 || c > 16 {
			return nil, fmt.Errorf("%w: retry gRPC code %d", errBadTable, c)
		}
	}
	out.Grpc = r.GRPC
	return out, nil
}

// translateFailureAccrual translates a Service's failure accrual; nil for
// none.
func translateFailureAccrual(f *route.FailureAccrual) (*destinationv1.FailureAccrual, error) {
	if f == nil {
		return nil, nil
	}
	if f.MinBackoff < 0 || f.MaxBackoff < 0 || f.MinBackoff > 0 && f.MaxBackoff > 0 && f.MinBackoff > f.MaxBackoff {
		return nil, fmt.Errorf("%w: failure accrual backoffs %v to %v", errBadTable, f.MinBackoff, f.MaxBackoff)
	}
	out := &destinationv1.FailureAccrual{Disabled: f.Disabled, MaxFailures: f.MaxFailures}
	if f.MinBackoff > 0 {
		out.MinBackoff = durationpb.New(f.MinBackoff)
	}
	if f.MaxBackoff > 0 {
		out.MaxBackoff = durationpb.New(f.MaxBackoff)
	}
	return out, nil
}

// failing reports whether fs answer locally, which makes a backend's
// Service port irrelevant.
func failing(fs []route.Filter) bool {
	for _, f := range fs {
		if f.Kind == route.FilterFail {
			return true
		}
	}
	return false
}

func translateMatch(m route.Match) *destinationv1.Match {
	out := &destinationv1.Match{Method: m.Method, GrpcService: m.GRPCService, GrpcMethod: m.GRPCMethod, GrpcRegex: m.GRPCRegex}
	switch m.PathType {
	case route.PathExact:
		out.Path = &destinationv1.Match_Exact{Exact: m.Path}
	case route.PathPrefix:
		out.Path = &destinationv1.Match_Prefix{Prefix: m.Path}
	case route.PathRegex:
		out.Path = &destinationv1.Match_Regex{Regex: m.Path}
	}
	out.Headers = translateValueMatches(m.Headers)
	out.Query = translateValueMatches(m.Query)
	return out
}

func translateValueMatches(ms []route.ValueMatch) []*destinationv1.HeaderMatch {
	var out []*destinationv1.HeaderMatch
	for _, m := range ms {
		hm := &destinationv1.HeaderMatch{Name: m.Name, Value: &destinationv1.HeaderMatch_Exact{Exact: m.Value}}
		if m.Regex {
			hm.Value = &destinationv1.HeaderMatch_Regex{Regex: m.Value}
		}
		out = append(out, hm)
	}
	return out
}

// redirectCodes are the status codes RequestRedirect allows
// (httproute_types.go, statusCode's enum).
var redirectCodes = map[int]bool{301: true, 302: true, 303: true, 307: true, 308: true}

func translateFilters(fs []route.Filter) ([]*destinationv1.Filter, error) {
	var out []*destinationv1.Filter
	for _, f := range fs {
		var pf *destinationv1.Filter
		switch f.Kind {
		case route.FilterRequestHeaders:
			pf = &destinationv1.Filter{Kind: &destinationv1.Filter_RequestHeaders{RequestHeaders: translateHeaders(f.Headers)}}
		case route.FilterResponseHeaders:
			pf = &destinationv1.Filter{Kind: &destinationv1.Filter_ResponseHeaders{ResponseHeaders: translateHeaders(f.Headers)}}
		case route.FilterRedirect:
			r := f.Redirect
			if !redirectCodes[r.StatusCode] || r.Port < 0 {
				return nil, fmt.Errorf("%w: redirect status %d port %d", errBadTable, r.StatusCode, r.Port)
			}
			pf = &destinationv1.Filter{Kind: &destinationv1.Filter_Redirect{Redirect: &destinationv1.Redirect{
				Scheme: r.Scheme, Hostname: r.Hostname, Path: translatePath(r.Path), Port: uint32(r.Port), StatusCode: uint32(r.StatusCode),
			}}}
		case route.FilterRewrite:
			pf = &destinationv1.Filter{Kind: &destinationv1.Filter_Rewrite{Rewrite: &destinationv1.Rewrite{
				Hostname: f.Rewrite.Hostname, Path: translatePath(f.Rewrite.Path),
			}}}
		case route.FilterFault:
			ft, err := translateFault(f.Fault)
			if err != nil {
				return nil, err
			}
			pf = &destinationv1.Filter{Kind: &destinationv1.Filter_Fault{Fault: ft}}
		case route.FilterFail:
			if f.Fail.Status < 100 || f.Fail.Status > 599 {
				return nil, fmt.Errorf("%w: local answer with status %d", errBadTable, f.Fail.Status)
			}
			pf = &destinationv1.Filter{Kind: &destinationv1.Filter_Fail{Fail: &destinationv1.Fail{Status: uint32(f.Fail.Status), Message: f.Fail.Message}}}
		default:
			return nil, fmt.Errorf("%w: filter kind %d", errBadTable, f.Kind)
		}
		out = append(out, pf)
	}
	return out, nil
}

// million is a whole share in a Fault's per_million.
const million = 1_000_000

// translateFault translates an HTTPFault as controller/route checked it
// against the CRD's schema: shares of at most the whole, an abort status
// of 200-599, a delay not negative, and at least one of the two.
func translateFault(f route.Fault) (*destinationv1.Fault, error) {
	out := &destinationv1.Fault{}
	if a := f.Abort; a != nil {
		if a.PerMillion > million || a.Status < 200 || a.Status > 599 {
			return nil, fmt.Errorf("%w: fault abort of %d per million with status %d", errBadTable, a.PerMillion, a.Status)
		}
		out.Abort = &destinationv1.Fault_Abort{PerMillion: a.PerMillion, HttpStatus: uint32(a.Status)}
	}
	if d := f.Delay; d != nil {
		if d.PerMillion > million || d.Duration < 0 {
			return nil, fmt.Errorf("%w: fault delay of %d per million for %v", errBadTable, d.PerMillion, d.Duration)
		}
		out.Delay = &destinationv1.Fault_Delay{PerMillion: d.PerMillion, Duration: durationpb.New(d.Duration)}
	}
	if out.Abort == nil && out.Delay == nil {
		return nil, fmt.Errorf("%w: fault with neither abort nor delay", errBadTable)
	}
	return out, nil
}

func translateHeaders(h route.HeaderModifier) *destinationv1.HeaderModifier {
	out := &destinationv1.HeaderModifier{Remove: h.Remove}
	for _, s := range h.Set {
		out.Set = append(out.Set, &destinationv1.Header{Name: s.Name, Value: s.Value})
	}
	for _, a := range h.Add {
		out.Add = append(out.Add, &destinationv1.Header{Name: a.Name, Value: a.Value})
	}
	return out
}

func translatePath(p route.PathModifier) *destinationv1.PathModifier {
	switch p.Type {
	case route.PathReplaceFull:
		return &destinationv1.PathModifier{Replace: &destinationv1.PathModifier_Full{Full: p.Value}}
	case route.PathReplacePrefix:
		return &destinationv1.PathModifier{Replace: &destinationv1.PathModifier_Prefix{Prefix: p.Value}}
	}
	return nil
}
