package main

import (
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
)

// wrkOutput is what wrk 4.1 (Debian 12) prints, cut before its rate.
const wrkOutput = `Running 1s test @ http://127.0.0.3:8080/a
  1 threads and 4 connections
  Thread Stats   Avg      Stdev     Max   +/- Stdev
    Latency   722.02us    1.84ms  15.65ms   91.85%
    Req/Sec    20.80k     4.18k   25.84k    70.00%
  20751 requests in 1.01s, 2.95MB read
`

func TestParseWrk(t *testing.T) {
	tests := []struct {
		name    string
		out     string
		want    clientResult
		wantErr string
	}{
		{
			name: "clean",
			out:  wrkOutput + "Requests/sec:  20607.65\nTransfer/sec:      2.93MB\n",
			want: clientResult{requests: 20751, rps: 20607.65},
		},
		{
			name: "errors",
			out: wrkOutput + "  Socket errors: connect 1, read 2, write 3, timeout 4\n" +
				"  Non-2xx or 3xx responses: 5\nRequests/sec:  20607.65\nTransfer/sec:      2.93MB\n",
			want: clientResult{requests: 20751, rps: 20607.65, errors: 15},
		},
		{name: "cut short", out: wrkOutput, wantErr: "without its rps"},
		{name: "nothing", out: "unable to connect to 127.0.1.1:8080 Connection refused\n", wantErr: "without its requests"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			got, err := parseWrk(tc.out)
			if tc.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
					t.Fatalf("parseWrk: %v, want an error with %q", err, tc.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if diff := cmp.Diff(tc.want, got, cmp.AllowUnexported(clientResult{})); diff != "" {
				t.Errorf("parseWrk (-want +got):\n%s", diff)
			}
		})
	}
}

// h2loadOutput is what h2load of nghttp2 1.52 prints, with the counts
// and rate left to fill in.
const h2loadOutput = `starting benchmark...
spawning thread #0: 2 total client(s). Timing-based test with 0s of warm-up time and 1s of main duration for measurements.
Warm-up started for thread #0.
Main benchmark duration is started for thread #0.
Application protocol: h2c
Main benchmark duration is over for thread #0. Stopping all clients.
Stopped all clients for thread #0

finished in 1.00s, %RATE% req/s, 1.23MB/s
requests: %DONE% total, 19031 started, %DONE% done, %OK% succeeded, %FAILED% failed, 0 errored, 0 timeout
status codes: %2XX% 2xx, 0 3xx, %4XX% 4xx, 0 5xx
traffic: 1.23MB (1293934) total, 891.89KB (913296) headers (space savings 51.02%), 37.16KB (38054) data
                     min         max         mean         sd        +/- sd
time for request:       64us     11.33ms       185us       374us    98.01%
`

// h2load fills h2loadOutput in: the rate, the requests done, succeeded
// and failed, and the answers with status 2xx and 4xx.
func h2load(rate, done, ok, failed, s2xx, s4xx string) string {
	return strings.NewReplacer("%RATE%", rate, "%DONE%", done, "%OK%", ok, "%FAILED%", failed,
		"%2XX%", s2xx, "%4XX%", s4xx).Replace(h2loadOutput)
}

func TestParseH2load(t *testing.T) {
	tests := []struct {
		name    string
		out     string
		want    clientResult
		wantErr string
	}{
		{
			name: "clean",
			out:  h2load("19027.00", "19027", "19027", "0", "19027", "0"),
			want: clientResult{requests: 19027, rps: 19027},
		},
		{
			// The status of a response that ended after the measured
			// time is counted, its request is not done.
			name: "a status after the end",
			out:  h2load("19027.00", "19027", "19027", "0", "19028", "0"),
			want: clientResult{requests: 19027, rps: 19027},
		},
		{
			// h2load counts a 421 as failed and as 4xx: one error each.
			name: "misrouted",
			out:  h2load("12040.00", "12040", "0", "12040", "0", "12040"),
			want: clientResult{requests: 12040, rps: 12040, errors: 12040},
		},
		{
			name: "broken streams",
			out:  h2load("100.00", "100", "97", "3", "97", "0"),
			want: clientResult{requests: 100, rps: 100, errors: 3},
		},
		{
			name:    "no status codes",
			out:     strings.Split(h2load("1", "1", "1", "0", "1", "0"), "status codes")[0],
			wantErr: "without its status codes line",
		},
		{
			name:    "not a number",
			out:     h2load("fast", "1", "1", "0", "1", "0"),
			wantErr: `h2load output "finished in 1.00s, fast req/s`,
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			got, err := parseH2load(tc.out)
			if tc.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
					t.Fatalf("parseH2load: %v, want an error with %q", err, tc.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if diff := cmp.Diff(tc.want, got, cmp.AllowUnexported(clientResult{})); diff != "" {
				t.Errorf("parseH2load (-want +got):\n%s", diff)
			}
		})
	}
}

// TestClientArgs checks that every load sends the run's request to the
// Service's cluster IP on its own port, for whole seconds.
func TestClientArgs(t *testing.T) {
	tg := targetOf(byHeader)
	tests := []struct {
		load loadName
		want string
	}{
		{http1, "wrk -t1 -c32 -d5s -H 'x-route: 99-9' http://127.0.1.3:8080/api/svc99/op9"},
		{h2c, "h2load -c16 -m10 -D5 -H 'x-route: 99-9' http://127.0.1.3:8082/api/svc99/op9"},
	}
	for _, tc := range tests {
		if got := shellJoin(clientArgs(tc.load, tg, 5*time.Second)); got != tc.want {
			t.Errorf("%s: %s, want %s", tc.load, got, tc.want)
		}
	}
}
