package route

import (
	"errors"
	"math"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"google.golang.org/protobuf/types/known/durationpb"

	destinationv1 "github.com/mesh-dev/mesh/api/destination/v1"
)

func statuses(minMax ...uint32) []*destinationv1.StatusRange {
	var out []*destinationv1.StatusRange
	for i := 0; i+1 < len(minMax); i += 2 {
		out = append(out, &destinationv1.StatusRange{Min: minMax[i], Max: minMax[i+1]})
	}
	return out
}

// TestCompilePolicy checks what a rule's retry policy and its response
// and idle timeouts compile to.
func TestCompilePolicy(t *testing.T) {
	tests := []struct {
		name string
		in   *destinationv1.Rule
		want *Rule
	}{{
		name: "timeouts",
		in: &destinationv1.Rule{Timeouts: &destinationv1.Timeouts{
			Request: seconds(10), Response: durationpb.New(250 * time.Millisecond), Idle: seconds(60),
		}},
		want: &Rule{RequestTimeout: 10 * time.Second, ResponseTimeout: 250 * time.Millisecond, IdleTimeout: time.Minute},
	}, {
		name: "retry with the defaults",
		in:   &destinationv1.Rule{Retry: &destinationv1.Retry{Http: statuses(500, 599), Limit: 1}},
		want: &Rule{Retry: &RetryPolicy{HTTP: []StatusRange{{500, 599}}, Limit: 1, MaxBodyBytes: 65536,
			Budget: Budget{Ratio: 0.2, MinPerSecond: 10, TTL: 10 * time.Second}}},
	}, {
		name: "ranges sorted and merged, codes sorted once",
		in: &destinationv1.Rule{Retry: &destinationv1.Retry{
			Http: statuses(503, 504, 429, 429, 500, 502, 502, 503), Grpc: []uint32{14, 1, 14, 4},
			Limit: 3, PerTryTimeout: durationpb.New(500 * time.Millisecond), MaxBodyBytes: 1024,
			Budget: &destinationv1.RetryBudget{Ratio: 0.5, MinPerSecond: 2, Ttl: seconds(5)},
		}},
		want: &Rule{Retry: &RetryPolicy{HTTP: []StatusRange{{429, 429}, {500, 504}}, GRPC: []int{1, 4, 14}, Limit: 3,
			PerTryTimeout: 500 * time.Millisecond, MaxBodyBytes: 1024, Budget: Budget{Ratio: 0.5, MinPerSecond: 2, TTL: 5 * time.Second}}},
	}, {
		name: "limit 0 keeps the per-try timeout; a budget without ttl lasts 10s",
		in: &destinationv1.Rule{Retry: &destinationv1.Retry{PerTryTimeout: seconds(1),
			Budget: &destinationv1.RetryBudget{MinPerSecond: 1}}},
		want: &Rule{Retry: &RetryPolicy{PerTryTimeout: time.Second, MaxBodyBytes: 65536, Budget: Budget{MinPerSecond: 1, TTL: 10 * time.Second}}},
	}}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			tab := mustCompile(t, &destinationv1.RouteTable{HttpRules: []*destinationv1.Rule{tc.in}})
			if diff := cmp.Diff(tc.want, tab.HTTPRules()[0]); diff != "" {
				t.Errorf("compiled rule (-want +got):\n%s", diff)
			}
		})
	}
}

func TestRetryConditions(t *testing.T) {
	p := mustCompile(t, &destinationv1.RouteTable{HttpRules: []*destinationv1.Rule{{Retry: &destinationv1.Retry{
		Http: statuses(502, 504, 429, 429), Grpc: []uint32{14, 1},
	}}}}).HTTPRules()[0].Retry
	for status, want := range map[int]bool{428: false, 429: true, 430: false, 500: false, 501: false, 502: true, 503: true, 504: true, 505: false, 200: false} {
		if got := p.RetryHTTP(status); got != want {
			t.Errorf("RetryHTTP(%d) = %v, want %v", status, got, want)
		}
	}
	for code, want := range map[int]bool{0: false, 1: true, 2: false, 13: false, 14: true, 16: false} {
		if got := p.RetryGRPC(code); got != want {
			t.Errorf("RetryGRPC(%d) = %v, want %v", code, got, want)
		}
	}
	var none *RetryPolicy
	if none.RetryHTTP(503) || none.RetryGRPC(14) {
		t.Error("a nil policy retries")
	}
}

func TestCompilePolicyInvalid(t *testing.T) {
	tests := []struct {
		name string
		in   *destinationv1.RouteTable
	}{
		{"status below 100", ruleWith(&destinationv1.Retry{Http: statuses(99, 200)})},
		{"status above 599", ruleWith(&destinationv1.Retry{Http: statuses(500, 600)})},
		{"range upside down", ruleWith(&destinationv1.Retry{Http: statuses(504, 502)})},
		{"grpc OK", ruleWith(&destinationv1.Retry{Grpc: []uint32{0}})},
		{"grpc code past the last", ruleWith(&destinationv1.Retry{Grpc: []uint32{17}})},
		{"negative per-try timeout", ruleWith(&destinationv1.Retry{PerTryTimeout: seconds(-1)})},
		{"budget ratio NaN", ruleWith(&destinationv1.Retry{Budget: &destinationv1.RetryBudget{Ratio: math.NaN()}})},
		{"budget ratio negative", ruleWith(&destinationv1.Retry{Budget: &destinationv1.RetryBudget{Ratio: -0.1}})},
		{"budget ttl", ruleWith(&destinationv1.Retry{Budget: &destinationv1.RetryBudget{Ttl: &durationpb.Duration{Nanos: -1}}})},
		{"negative idle timeout", &destinationv1.RouteTable{HttpRules: []*destinationv1.Rule{{Timeouts: &destinationv1.Timeouts{Idle: seconds(-1)}}}}},
		{"invalid response timeout", &destinationv1.RouteTable{HttpRules: []*destinationv1.Rule{{Timeouts: &destinationv1.Timeouts{
			Response: &durationpb.Duration{Seconds: math.MaxInt64}}}}}},
		{"default rule", &destinationv1.RouteTable{DefaultRule: &destinationv1.Rule{Retry: &destinationv1.Retry{Grpc: []uint32{99}}}}},
		{"backoffs upside down", &destinationv1.RouteTable{FailureAccrual: &destinationv1.FailureAccrual{MinBackoff: seconds(10), MaxBackoff: seconds(1)}}},
		{"negative backoff", &destinationv1.RouteTable{FailureAccrual: &destinationv1.FailureAccrual{MaxBackoff: seconds(-1)}}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			tab, err := Compile(tc.in)
			if !errors.Is(err, ErrInvalid) {
				t.Fatalf("Compile = %v, %v; want an error that is ErrInvalid", tab, err)
			}
			t.Log(err)
		})
	}
}

func ruleWith(r *destinationv1.Retry) *destinationv1.RouteTable {
	pr := httpRule("r", prefix("/"))
	pr.Retry = r
	return &destinationv1.RouteTable{HttpRules: []*destinationv1.Rule{pr}}
}

// serviceRule is a default rule as the controller sends it: the Service,
// its policy, nothing else.
func serviceRule() *destinationv1.Rule {
	return &destinationv1.Rule{
		Route:    &destinationv1.Resource{Kind: "Service", Namespace: "ns", Name: "web"},
		Timeouts: &destinationv1.Timeouts{Request: seconds(2)},
		Retry:    &destinationv1.Retry{Http: statuses(500, 599), Limit: 2},
	}
}

// TestDefaultRule checks that a table with no rules but a default one
// gives it every request, going to the target's own endpoints, while
// tables with rules keep answering no match for requests none holds.
func TestDefaultRule(t *testing.T) {
	only := mustCompile(t, &destinationv1.RouteTable{DefaultRule: serviceRule()})
	if only.Empty() {
		t.Fatal("a table with a default rule is Empty")
	}
	def := only.Default()
	want := &Rule{Route: RouteRef{Kind: "Service", Namespace: "ns", Name: "web"}, RequestTimeout: 2 * time.Second,
		Retry:    &RetryPolicy{HTTP: []StatusRange{{500, 599}}, Limit: 2, MaxBodyBytes: DefaultMaxBodyBytes, Budget: DefaultBudget},
		Backends: []Backend{{Weight: 1}}}
	if diff := cmp.Diff(want, def); diff != "" {
		t.Errorf("default rule (-want +got):\n%s", diff)
	}
	for _, tc := range []struct {
		r    request
		grpc bool
	}{{get("/"), false}, {req("POST", "/x/y?z=1"), false}, {req("POST", "/pkg.Echo/Echo"), true}} {
		m, ok := only.Match(tc.r, tc.grpc)
		if !ok || m.Rule != def || m.Prefix != "" {
			t.Errorf("Match(%s %s, grpc %v) = %+v, %v; want the default rule", tc.r.method, tc.r.path, tc.grpc, m, ok)
		}
	}
	if b, ok := def.PickBackend(); !ok || b.Authority != "" || b.Fail != nil {
		t.Errorf("the default rule's backend = %+v, %v; want the target's own (empty authority)", b, ok)
	}

	withRules := mustCompile(t, &destinationv1.RouteTable{HttpRules: []*destinationv1.Rule{httpRule("a", prefix("/a"))}, DefaultRule: serviceRule()})
	if withRules.Default() == nil {
		t.Error("a table with rules lost its default rule")
	}
	if m, ok := withRules.Match(get("/b"), false); ok {
		t.Errorf("a request no rule matches got %q; want no match (404) even with a default rule", m.Rule.Name)
	}
	grpcOnly := mustCompile(t, &destinationv1.RouteTable{GrpcRules: []*destinationv1.Rule{grpcRule("g", anyMatch())}, DefaultRule: serviceRule()})
	if m, ok := grpcOnly.Match(get("/"), false); ok {
		t.Errorf("an HTTP request to a GRPCRoute's table got %q; want no match", m.Rule.Name)
	}

	// A default rule that answers itself keeps no backend.
	failing := serviceRule()
	failing.Filters = []*destinationv1.Filter{failFilter(503, "x")}
	if b := mustCompile(t, &destinationv1.RouteTable{DefaultRule: failing}).Default().Backends; len(b) != 0 {
		t.Errorf("a failing default rule has backends %+v", b)
	}

	var nilTable *Table
	if nilTable.Default() != nil || nilTable.FailureAccrual() != (FailureAccrual{}) || !nilTable.Empty() {
		t.Error("a nil table has a default rule, a failure accrual, or is not empty")
	}
	if !mustCompile(t, &destinationv1.RouteTable{}).Empty() {
		t.Error("a table with nothing is not Empty")
	}
}

func TestCompileFailureAccrual(t *testing.T) {
	tests := []struct {
		name string
		in   *destinationv1.FailureAccrual
		want FailureAccrual
	}{
		{"none", nil, FailureAccrual{}},
		{"consecutive", &destinationv1.FailureAccrual{MaxFailures: 3, MinBackoff: durationpb.New(100 * time.Millisecond), MaxBackoff: seconds(30)},
			FailureAccrual{MaxFailures: 3, MinBackoff: 100 * time.Millisecond, MaxBackoff: 30 * time.Second}},
		{"one backoff", &destinationv1.FailureAccrual{MinBackoff: seconds(120)}, FailureAccrual{MinBackoff: 2 * time.Minute}},
		{"disabled drops the rest", &destinationv1.FailureAccrual{Disabled: true, MaxFailures: 3}, FailureAccrual{Disabled: true}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			tab := mustCompile(t, &destinationv1.RouteTable{FailureAccrual: tc.in})
			if got := tab.FailureAccrual(); got != tc.want {
				t.Errorf("FailureAccrual() = %+v, want %+v", got, tc.want)
			}
			if !tab.Empty() {
				t.Error("a table with only a failure accrual is not Empty")
			}
		})
	}
}
