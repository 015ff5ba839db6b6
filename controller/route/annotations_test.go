package route

import (
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/mesh-dev/mesh/internal/names"
)

// applied is the Rule a policy makes of an empty one.
func applied(p policy) Rule {
	var r Rule
	p.apply(&r)
	return r
}

func retry(limit uint32, http []StatusRange, grpc []uint32, perTry time.Duration) *Retry {
	return &Retry{HTTP: http, GRPC: grpc, Limit: limit, PerTryTimeout: perTry, MaxBodyBytes: 65536,
		Budget: RetryBudget{Ratio: 0.2, MinPerSecond: 10, TTL: 10 * time.Second}}
}

func TestParsePolicy(t *testing.T) {
	tests := []struct {
		name string
		ann  map[string]string
		want Rule
	}{
		{"none", nil, Rule{}},
		{"other annotations", map[string]string{"mesh.dev/inject": "enabled", "example.com/retry": "5xx"}, Rule{}},
		{"5xx", map[string]string{names.AnnotationRetryHTTP: "5xx"}, Rule{Retry: retry(1, []StatusRange{{500, 599}}, nil, 0)}},
		{"gateway-error", map[string]string{names.AnnotationRetryHTTP: "gateway-error"}, Rule{Retry: retry(1, []StatusRange{{502, 504}}, nil, 0)}},
		{"codes merge", map[string]string{names.AnnotationRetryHTTP: "503,504"}, Rule{Retry: retry(1, []StatusRange{{503, 504}}, nil, 0)}},
		{"ranges, classes and codes, sorted and merged", map[string]string{names.AnnotationRetryHTTP: " 500-502 , 429,5XX,gateway-error, 4xx"},
			Rule{Retry: retry(1, []StatusRange{{400, 599}}, nil, 0)}},
		{"disjoint", map[string]string{names.AnnotationRetryHTTP: "503,429,500-501"},
			Rule{Retry: retry(1, []StatusRange{{429, 429}, {500, 501}, {503, 503}}, nil, 0)}},
		{"grpc codes by name", map[string]string{names.AnnotationRetryGRPC: "unavailable,cancelled,deadline-exceeded,internal,resource-exhausted"},
			Rule{Retry: retry(1, nil, []uint32{1, 4, 8, 13, 14}, 0)}},
		{"grpc codes as gRPC spells them", map[string]string{names.AnnotationRetryGRPC: "UNAVAILABLE, DEADLINE_EXCEEDED,unavailable"},
			Rule{Retry: retry(1, nil, []uint32{4, 14}, 0)}},
		{"limit and per-try timeout", map[string]string{names.AnnotationRetryHTTP: "5xx", names.AnnotationRetryLimit: "3", names.AnnotationRetryTimeout: "1m30s"},
			Rule{Retry: retry(3, []StatusRange{{500, 599}}, nil, 90*time.Second)}},
		{"limit 0 keeps the per-try timeout", map[string]string{names.AnnotationRetryLimit: "0", names.AnnotationRetryTimeout: "250ms"},
			Rule{Retry: retry(0, nil, nil, 250*time.Millisecond)}},
		{"timeouts", map[string]string{names.AnnotationTimeoutRequest: "10s", names.AnnotationTimeoutResponse: "500ms", names.AnnotationTimeoutIdle: "5m"},
			Rule{Timeouts: Timeouts{Request: 10 * time.Second, Response: 500 * time.Millisecond, Idle: 5 * time.Minute}}},
		{"a Gateway API duration", map[string]string{names.AnnotationTimeoutRequest: "1h30m10s500ms"},
			Rule{Timeouts: Timeouts{Request: time.Hour + 30*time.Minute + 10*time.Second + 500*time.Millisecond}}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			for _, service := range []bool{false, true} {
				p, accrual, errs := parsePolicy(tc.ann, service)
				if len(errs) > 0 || accrual.ok {
					t.Fatalf("parsePolicy(service %v): errors %v, failure accrual %+v", service, errs, accrual)
				}
				if diff := cmp.Diff(tc.want, applied(p)); diff != "" {
					t.Errorf("policy of a Service %v (-want +got):\n%s", service, diff)
				}
			}
		})
	}
}

// TestParsePolicyErrors checks that each bad annotation gets an error
// naming it, its value and what it takes, and is left unset while the
// good ones around it apply.
func TestParsePolicyErrors(t *testing.T) {
	tests := []struct {
		name, value string
		want        string // in the error, after the name and the value
	}{
		{names.AnnotationRetryHTTP, "5yy", "statuses from 100 to 599"},
		{names.AnnotationRetryHTTP, "600", "statuses from 100 to 599"},
		{names.AnnotationRetryHTTP, "99", "statuses from 100 to 599"},
		{names.AnnotationRetryHTTP, "504-502", "ranges (500-504)"},
		{names.AnnotationRetryHTTP, "5xx,", "classes (5xx)"},
		{names.AnnotationRetryHTTP, "", "gateway-error"},
		{names.AnnotationRetryHTTP, "6xx", "statuses from 100 to 599"},
		{names.AnnotationRetryGRPC, "ok", "cancelled, deadline-exceeded, internal, resource-exhausted, unavailable"},
		{names.AnnotationRetryGRPC, "unavailable,not-found", "comma-separated list"},
		{names.AnnotationRetryGRPC, "14", "unavailable"},
		{names.AnnotationRetryLimit, "11", "from 0 to 10"},
		{names.AnnotationRetryLimit, "-1", "from 0 to 10"},
		{names.AnnotationRetryLimit, "two", "from 0 to 10"},
		{names.AnnotationRetryTimeout, "5", "a duration such as 500ms"},
		{names.AnnotationTimeoutRequest, "-1s", "a duration such as 500ms"},
		{names.AnnotationTimeoutResponse, "soon", "a duration"},
		{names.AnnotationTimeoutIdle, "1d", "a duration"},
		{"retry.mesh.dev/limt", "2", "unknown annotation: want one of retry.mesh.dev/http"},
		{"timeout.mesh.dev/backend-request", "2s", "unknown annotation"},
	}
	for _, tc := range tests {
		t.Run(tc.name+"="+tc.value, func(t *testing.T) {
			good := map[string]string{names.AnnotationTimeoutIdle: "1s", names.AnnotationRetryLimit: "2"}
			ann := map[string]string{tc.name: tc.value}
			for k, v := range good {
				if k != tc.name {
					ann[k] = v
				}
			}
			p, _, errs := parsePolicy(ann, false)
			if len(errs) != 1 {
				t.Fatalf("errors %v, want one", errs)
			}
			if msg := errs[0].Error(); !strings.HasPrefix(msg, "annotation "+tc.name+" "+quote(tc.value)+": ") || !strings.Contains(msg, tc.want) {
				t.Errorf("error %q, want the annotation, %q and %q", msg, tc.value, tc.want)
			}
			if tc.name != names.AnnotationTimeoutIdle && !p.idle.ok {
				t.Error("a good annotation beside the bad one was dropped")
			}
			bad := applied(policy{}.or(p))
			switch tc.name {
			case names.AnnotationRetryHTTP, names.AnnotationRetryGRPC:
				if len(bad.Retry.HTTP)+len(bad.Retry.GRPC) != 0 {
					t.Errorf("the bad annotation set %+v", bad.Retry)
				}
			case names.AnnotationRetryLimit:
				if bad.Retry != nil {
					t.Errorf("the bad limit set %+v", bad.Retry)
				}
			}
		})
	}
}

func TestParseBalancer(t *testing.T) {
	tests := []struct {
		name string
		ann  map[string]string
		want opt[FailureAccrual]
		errs []string // each error's start
	}{
		{name: "none", ann: map[string]string{names.AnnotationRetryHTTP: "5xx"}},
		{name: "consecutive", ann: map[string]string{names.AnnotationFailureAccrual: "consecutive"}, want: some(FailureAccrual{})},
		{name: "tuned", ann: map[string]string{names.AnnotationMaxFailures: "3", names.AnnotationMinBackoff: "500ms", names.AnnotationMaxBackoff: "30s"},
			want: some(FailureAccrual{MaxFailures: 3, MinBackoff: 500 * time.Millisecond, MaxBackoff: 30 * time.Second})},
		{name: "disabled", ann: map[string]string{names.AnnotationFailureAccrual: "disabled", names.AnnotationMaxFailures: "3"},
			want: some(FailureAccrual{Disabled: true})},
		{name: "bad mode", ann: map[string]string{names.AnnotationFailureAccrual: "off", names.AnnotationMaxFailures: "3"},
			want: some(FailureAccrual{MaxFailures: 3}), errs: []string{`annotation balancer.mesh.dev/failure-accrual "off": want consecutive or disabled`}},
		{name: "bad max failures", ann: map[string]string{names.AnnotationMaxFailures: "0"},
			errs: []string{`annotation balancer.mesh.dev/max-failures "0": want a whole number of consecutive failures from 1 to 1000`}},
		{name: "zero backoff", ann: map[string]string{names.AnnotationMinBackoff: "0s"},
			errs: []string{`annotation balancer.mesh.dev/min-backoff "0s": want a duration above zero`}},
		{name: "backoffs upside down", ann: map[string]string{names.AnnotationMinBackoff: "2m", names.AnnotationMaxBackoff: "1m", names.AnnotationMaxFailures: "4"},
			want: some(FailureAccrual{MaxFailures: 4}),
			errs: []string{`annotation balancer.mesh.dev/min-backoff "2m": want at most balancer.mesh.dev/max-backoff "1m"`}},
		{name: "unknown", ann: map[string]string{"balancer.mesh.dev/max-failure": "4"},
			errs: []string{`annotation balancer.mesh.dev/max-failure "4": unknown annotation`}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			_, got, errs := parsePolicy(tc.ann, true)
			if got != tc.want {
				t.Errorf("failure accrual %+v, want %+v", got, tc.want)
			}
			if len(errs) != len(tc.errs) {
				t.Fatalf("errors %v, want %d", errs, len(tc.errs))
			}
			for i, err := range errs {
				if !strings.HasPrefix(err.Error(), tc.errs[i]) {
					t.Errorf("error %q, want it to start %q", err, tc.errs[i])
				}
			}
		})
	}
	// On a route, every balancer annotation is an error.
	_, got, errs := parsePolicy(map[string]string{names.AnnotationMaxFailures: "3"}, false)
	if got.ok || len(errs) != 1 || !strings.Contains(errs[0].Error(), "apply to Services only") {
		t.Errorf("a balancer annotation on a route: %+v, %v; want one error saying it belongs on the Service", got, errs)
	}
}

// FuzzParsePolicy checks that no annotation value panics the parser, that
// a value is either refused or gives what the API allows (the translator
// refuses the rest), and that a refusal names the annotation. Run it with
//
//	go test -run '^$' -fuzz FuzzParsePolicy -fuzztime 1m ./controller/route/
func FuzzParsePolicy(f *testing.F) {
	annotations := []string{names.AnnotationRetryHTTP, names.AnnotationRetryGRPC, names.AnnotationRetryLimit, names.AnnotationRetryTimeout,
		names.AnnotationTimeoutRequest, names.AnnotationTimeoutIdle, names.AnnotationFailureAccrual, names.AnnotationMaxFailures,
		names.AnnotationMinBackoff, names.AnnotationMaxBackoff}
	// Seeds: the documented forms, and the edges of each.
	for _, s := range []string{"5xx", "gateway-error", "503,504", "500-504", "100-599", "1xx,2XX", "unavailable,cancelled",
		"DEADLINE_EXCEEDED", "10", "0", "1h30m10s500ms", "-1s", "consecutive", "disabled", "", ",", "-", "500--504"} {
		f.Add(uint8(0), s)
	}
	f.Fuzz(func(t *testing.T, which uint8, value string) {
		name := annotations[int(which)%len(annotations)]
		p, accrual, errs := parsePolicy(map[string]string{name: value}, true)
		for _, err := range errs {
			if !strings.HasPrefix(err.Error(), "annotation "+name+" ") {
				t.Fatalf("error %q does not name %s", err, name)
			}
		}
		r := applied(p)
		if rt := r.Retry; rt != nil {
			for i, s := range rt.HTTP {
				if s.Min < 100 || s.Min > s.Max || s.Max > 599 || i > 0 && s.Min <= rt.HTTP[i-1].Max+1 {
					t.Fatalf("%s %q gave status ranges %v", name, value, rt.HTTP)
				}
			}
			for _, c := range rt.GRPC {
				if c == 0 || c > 16 {
					t.Fatalf("%s %q gave gRPC code %d", name, value, c)
				}
			}
			if rt.Limit > maxRetryLimit || rt.PerTryTimeout < 0 {
				t.Fatalf("%s %q gave %+v", name, value, rt)
			}
		}
		if r.Timeouts.Request < 0 || r.Timeouts.Response < 0 || r.Timeouts.Idle < 0 {
			t.Fatalf("%s %q gave timeouts %+v", name, value, r.Timeouts)
		}
		if a := accrual.v; a.MinBackoff < 0 || a.MaxBackoff < 0 || a.MaxFailures > maxMaxFailures {
			t.Fatalf("%s %q gave failure accrual %+v", name, value, a)
		}
	})
}
