package main

import (
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
)

// wrkOutput is what wrk 4.1 (Debian 12) prints with --latency.
const wrkOutput = `Running 10s test @ http://10.252.0.3:8080/
  1 threads and 32 connections
  Thread Stats   Avg      Stdev     Max   +/- Stdev
    Latency     1.40ms    2.07ms  48.52ms   94.21%
    Req/Sec     5.88k   391.38     6.53k    71.00%
  Latency Distribution
     50%  298.00us
     75%    1.20ms
     90%    2.35ms
     99%    1.02s
  58769 requests in 10.05s, 8.97MB read
`

func TestFromWrk(t *testing.T) {
	tests := []struct {
		name    string
		out     string
		want    row
		wantErr string
	}{
		{
			name: "clean",
			out:  wrkOutput + "Requests/sec:   5850.12\nTransfer/sec:      0.89MB\n",
			want: row{rps: 5850.12, requests: 58769, p50: 0.298, p99: 1020, max: 48.52, p999: -1, lagP99: -1},
		},
		{
			name: "errors",
			out: wrkOutput + "  Socket errors: connect 1, read 2, write 3, timeout 4\n" +
				"  Non-2xx or 3xx responses: 5\nRequests/sec:   5850.12\nTransfer/sec:      0.89MB\n",
			want: row{rps: 5850.12, requests: 58769, p50: 0.298, p99: 1020, max: 48.52, p999: -1, lagP99: -1, errors: 15},
		},
		{name: "cut short", out: wrkOutput, wantErr: "without its rps"},
		{name: "no unit", out: strings.Replace(wrkOutput, "298.00us", "298.00", 1), wantErr: "has no unit"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			var got row
			err := got.fromWrk(tc.out)
			if tc.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
					t.Fatalf("fromWrk: %v, want an error with %q", err, tc.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if diff := cmp.Diff(tc.want, got, cmp.AllowUnexported(row{})); diff != "" {
				t.Errorf("fromWrk (-want +got):\n%s", diff)
			}
		})
	}
}

func TestWrkMillis(t *testing.T) {
	for in, want := range map[string]float64{"298.00us": 0.298, "1.71ms": 1.71, "1.02s": 1020, "2.00m": 120000} {
		got, err := wrkMillis(in)
		if err != nil || got != want {
			t.Errorf("wrkMillis(%q) = %v, %v; want %v", in, got, err, want)
		}
	}
}
