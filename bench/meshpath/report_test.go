package main

import (
	"strings"
	"testing"
)

func TestVerdict(t *testing.T) {
	res := result{rows: []row{
		{rate: 0, path: direct, rps: 20000, pairCores: -1, pairUS: -1},
		{rate: 0, path: meshPair, rps: 4000, pairCores: 1.2, pairUS: 300, peakClient: 21 << 20, peakServer: 18 << 20},
		{rate: 0, path: nginxPair, rps: 8000, pairCores: 1.2, pairUS: 150, peakClient: 12 << 20, peakServer: 12 << 20},
		{rate: 1000, path: direct, rps: 1000, p50: 0.2, p99: 0.5, p999: 1.0},
		{rate: 1000, path: meshPair, rps: 1000, p50: 0.5, p99: 1.0, p999: 2.0},
		{rate: 1000, path: nginxPair, rps: 1000, p50: 0.6, p99: 0.9, p999: 3.0},
		{rate: 5000, path: direct, rps: 5000, p50: 0.2, p99: 0.5, p999: 1.0},
		{rate: 5000, path: meshPair, rps: 3000, unfinished: 40, p50: 900, p99: 2000, p999: 2100},
		{rate: 5000, path: nginxPair, rps: 5000, p50: 0.6, p99: 0.9, p999: 3.0},
	}}
	got := res.verdict()
	for _, want := range []string{
		"the mesh pair did 0.50 of the nginx pair's (goal >= 1.0: not met), at 2.00x its CPU per request (300 against 150 µs)",
		"At 1000 RPS, latency added over direct, mesh pair against nginx pair: p50 +0.300 against +0.400 ms, p99 +0.500 against +0.400 ms, p99.9 +1.000 against +2.000 ms (goal: no more than the nginx pair's: not met at p99).",
		"At 5000 RPS", "not met at p50, p99", "The mesh row fell behind the schedule (3000 of 5000 req/s answered, 40 unfinished)",
		"client side 21.0 MB, server side 18.0 MB (goal < 20 MB: not met)",
	} {
		if !strings.Contains(got, want) {
			t.Errorf("verdict lacks %q:\n%s", want, got)
		}
	}
	if strings.Contains(got, "The nginx pair row fell behind") || strings.Contains(got, "The direct row fell behind") {
		t.Errorf("verdict calls a row that kept up saturated:\n%s", got)
	}
}

func TestSaturated(t *testing.T) {
	for _, tc := range []struct {
		r    row
		want bool
	}{
		{row{rate: 0, rps: 10}, false}, // wrk rows have no schedule
		{row{rate: 1000, rps: 999}, false},
		{row{rate: 1000, rps: 940}, true},
		{row{rate: 1000, rps: 1000, unfinished: 1}, true},
	} {
		if got := tc.r.saturated(); got != tc.want {
			t.Errorf("%+v: saturated %v, want %v", tc.r, got, tc.want)
		}
	}
}

func TestNoisy(t *testing.T) {
	res := result{rows: []row{{rate: 0, path: direct, othCores: 0.1}, {rate: 1000, path: meshPair, othCores: 0.6}}}
	if got, want := res.noisy(), "1000 RPS mesh (0.60)"; got != want {
		t.Errorf("noisy = %q, want %q", got, want)
	}
}
