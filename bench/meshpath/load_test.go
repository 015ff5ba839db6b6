package main

import (
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
)

func TestPercentilesOf(t *testing.T) {
	ms := func(vs ...int) []time.Duration {
		out := make([]time.Duration, len(vs))
		for i, v := range vs {
			out[i] = time.Duration(v) * time.Millisecond
		}
		return out
	}
	thousand := make([]int, 1000)
	for i := range thousand {
		thousand[999-i] = i + 1 // 1..1000 ms, unsorted
	}
	tests := []struct {
		name string
		in   []time.Duration
		want percentiles
	}{
		{name: "none", in: nil, want: percentiles{}},
		{name: "one", in: ms(7), want: percentiles{P50: 7, P90: 7, P99: 7, P999: 7, Max: 7}},
		{name: "nearest rank of 1..1000", in: ms(thousand...), want: percentiles{P50: 500, P90: 900, P99: 990, P999: 999, Max: 1000}},
		{name: "one slow of four", in: ms(1, 100, 1, 1), want: percentiles{P50: 1, P90: 100, P99: 100, P999: 100, Max: 100}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			if diff := cmp.Diff(tc.want, percentilesOf(tc.in)); diff != "" {
				t.Errorf("percentilesOf (-want +got):\n%s", diff)
			}
		})
	}
}

// okServer answers every request with a 2-byte body, over HTTP/1.1.
func okServer(t *testing.T, h http.HandlerFunc) *httptest.Server {
	t.Helper()
	if h == nil {
		h = func(w http.ResponseWriter, _ *http.Request) { io.WriteString(w, "ok") }
	}
	srv := httptest.NewServer(h)
	t.Cleanup(srv.Close)
	return srv
}

func TestLoadSendsOnSchedule(t *testing.T) {
	srv := okServer(t, nil)
	res, err := runLoad(t.Context(), loadConfig{URL: srv.URL + "/", Rate: 1000, Duration: 500 * time.Millisecond, Conns: 4, Drain: 5 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	if res.Scheduled != 500 || res.Completed != 500 || res.Errors != 0 || res.Unfinished != 0 {
		t.Errorf("scheduled %d, completed %d, errors %d, unfinished %d; want 500 answered: %+v", res.Scheduled, res.Completed, res.Errors, res.Unfinished, res)
	}
	// The last request is due at 499 ms: the whole run takes the
	// schedule's length, not less (a closed loop would rush through).
	if res.Achieved < 800 || res.Achieved > 1010 {
		t.Errorf("achieved %.0f req/s, want about the 1000 asked for", res.Achieved)
	}
}

// TestLoadCorrectsCoordinatedOmission: the server stalls for 200 ms in the
// middle of a run at 1000 req/s over 4 connections. A closed-loop client
// would see 4 slow requests (those in flight) and send nothing meanwhile;
// the open-loop schedule keeps 200 requests due during the stall, and each
// is measured from its due time, so about 100 of them take over 100 ms.
func TestLoadCorrectsCoordinatedOmission(t *testing.T) {
	var (
		once    sync.Once
		stalled = make(chan struct{})
		resume  = make(chan struct{})
	)
	srv := okServer(t, func(w http.ResponseWriter, _ *http.Request) {
		once.Do(func() {
			time.AfterFunc(300*time.Millisecond, func() {
				close(stalled)
				time.AfterFunc(200*time.Millisecond, func() { close(resume) })
			})
		})
		select {
		case <-stalled:
			<-resume
		default:
		}
		io.WriteString(w, "ok")
	})
	res, err := runLoad(t.Context(), loadConfig{URL: srv.URL, Rate: 1000, Duration: time.Second, Conns: 4, Drain: 5 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	if res.Completed != 1000 || res.Errors != 0 {
		t.Fatalf("completed %d, errors %d (%s); want all 1000 answered", res.Completed, res.Errors, res.FirstError)
	}
	// p90 is the 100th slowest of 1000, p99 the 10th: with the stall's
	// 200 requests counted from their due times they are about 100 ms
	// and 190 ms; counted from when a connection was free (coordinated
	// omission) both would be well under a millisecond here.
	if res.Latency.P90 < 50 || res.Latency.P99 < 150 || res.Latency.Max < 180 {
		t.Errorf("latency %+v: the stall does not show in the requests it held up", res.Latency)
	}
	if res.StartLag.P99 < 100 {
		t.Errorf("start lag %+v: requests due during the stall waited for a connection, which should show", res.StartLag)
	}
}

// TestLoadCountsUnfinished: a server that stops answering leaves requests
// unfinished at the drain's end, measured up to it, and the run ends.
func TestLoadCountsUnfinished(t *testing.T) {
	release := make(chan struct{})
	srv := okServer(t, func(w http.ResponseWriter, _ *http.Request) { <-release })
	t.Cleanup(func() { close(release) }) // runs before srv.Close
	start := time.Now()
	res, err := runLoad(t.Context(), loadConfig{URL: srv.URL, Rate: 100, Duration: 200 * time.Millisecond, Conns: 2, Drain: 300 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	if took := time.Since(start); took > 3*time.Second {
		t.Errorf("the run took %v; the drain should have ended it after about 0.5s", took)
	}
	if res.Scheduled != 20 || res.Unfinished != 20 || res.Completed != 0 || res.Errors != 0 {
		t.Errorf("scheduled %d, unfinished %d, completed %d, errors %d; want 20 unfinished", res.Scheduled, res.Unfinished, res.Completed, res.Errors)
	}
	// The first request was due at 0 and unanswered when the drain ended
	// at 190 + 300 ms.
	if res.Latency.Max < 450 {
		t.Errorf("max latency %.0f ms, want the drain's end (about 490 ms)", res.Latency.Max)
	}
}

func TestLoadCountsErrors(t *testing.T) {
	srv := okServer(t, func(w http.ResponseWriter, _ *http.Request) { http.Error(w, "no", http.StatusInternalServerError) })
	res, err := runLoad(t.Context(), loadConfig{URL: srv.URL + "/x?y=1", Rate: 200, Duration: 100 * time.Millisecond, Conns: 2, Drain: time.Second})
	if err != nil {
		t.Fatal(err)
	}
	if res.Errors != 20 || res.Completed != 0 || !strings.Contains(res.FirstError, "500") {
		t.Errorf("errors %d, completed %d, first error %q; want 20 errors naming the 500", res.Errors, res.Completed, res.FirstError)
	}
}

func TestLoadRejectsBadConfig(t *testing.T) {
	for _, tc := range []struct {
		name string
		cfg  loadConfig
	}{
		{name: "https", cfg: loadConfig{URL: "https://127.0.0.1:1/", Rate: 1, Duration: time.Second, Conns: 1}},
		{name: "no port", cfg: loadConfig{URL: "http://127.0.0.1/", Rate: 1, Duration: time.Second, Conns: 1}},
		{name: "no rate", cfg: loadConfig{URL: "http://127.0.0.1:1/", Duration: time.Second, Conns: 1}},
		{name: "too many", cfg: loadConfig{URL: "http://127.0.0.1:1/", Rate: 100000, Duration: time.Hour, Conns: 1}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := runLoad(t.Context(), tc.cfg)
			var usage usageError
			if !errors.As(err, &usage) {
				t.Errorf("runLoad: %v, want a usage error", err)
			}
		})
	}
}
