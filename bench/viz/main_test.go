package main

import (
	"context"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"go.uber.org/goleak"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}

func TestParseFlags(t *testing.T) {
	for _, tc := range []struct {
		name    string
		args    []string
		wantErr bool
		check   func(config) bool
	}{
		{name: "defaults", check: func(c config) bool {
			return c.Pods == 200 && c.Duration == 5*time.Minute && c.Interval == 5*time.Second
		}},
		{name: "small", args: []string{"--pods", "20", "--duration", "1m"}, check: func(c config) bool { return c.Pods == 20 && c.Duration == time.Minute }},
		{name: "no pods", args: []string{"--pods", "0"}, wantErr: true},
		{name: "interval under the scrape timeout", args: []string{"--interval", "1s"}, wantErr: true},
		{name: "duration under two intervals", args: []string{"--duration", "9s"}, wantErr: true},
		{name: "stray argument", args: []string{"now"}, wantErr: true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c, err := parseFlags(tc.args)
			if (err != nil) != tc.wantErr {
				t.Fatalf("parseFlags(%q) error %v, want error: %v", tc.args, err, tc.wantErr)
			}
			if err == nil && !tc.check(c) {
				t.Errorf("parseFlags(%q) = %+v", tc.args, c)
			}
		})
	}
}

func TestTextMetrics(t *testing.T) {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		io.WriteString(w, `# HELP x y
# TYPE prometheus_tsdb_head_samples_appended_total counter
prometheus_tsdb_head_samples_appended_total{type="float"} 10
prometheus_tsdb_head_samples_appended_total{type="histogram", note="a } b"} 5
mesh_controller_viz_series 260
go_memstats_heap_inuse_bytes 1.5e+07 1700000000000
`)
	}))
	defer srv.Close()
	got, err := textMetrics(context.Background(), srv.Client(), srv.URL)
	if err != nil {
		t.Fatal(err)
	}
	for name, want := range map[string]float64{
		"prometheus_tsdb_head_samples_appended_total": 15,
		"mesh_controller_viz_series":                  260,
		"go_memstats_heap_inuse_bytes":                1.5e7,
	} {
		if got[name] != want {
			t.Errorf("%s = %v, want %v", name, got[name], want)
		}
	}
}

func TestAgreement(t *testing.T) {
	for _, tc := range []struct {
		name      string
		viz, prom map[string]float64
		wantSame  int
		wantOK    bool
	}{
		{name: "same", viz: map[string]float64{"a": 3, "b": 4}, prom: map[string]float64{"a": 3, "b": 4}, wantSame: 2, wantOK: true},
		{name: "one differs", viz: map[string]float64{"a": 3, "b": 4}, prom: map[string]float64{"a": 3, "b": 5}, wantSame: 1},
		{name: "one missing in viz", viz: map[string]float64{"a": 3}, prom: map[string]float64{"a": 3, "b": 5}, wantSame: 1},
		{name: "nothing", wantSame: 0},
	} {
		t.Run(tc.name, func(t *testing.T) {
			a := newAgreement("x", "q", tc.viz, tc.prom)
			if a.same != tc.wantSame || a.ok() != tc.wantOK {
				t.Errorf("same %d ok %v, want %d %v", a.same, a.ok(), tc.wantSame, tc.wantOK)
			}
		})
	}
}

func TestUpdateMarkdown(t *testing.T) {
	block := blockBegin + ": new -->\nnew\n" + blockEnd
	for _, tc := range []struct {
		name, doc, want string
		wantErr         bool
	}{
		{name: "replaces the block", doc: "# B\n\n" + blockBegin + " -->\nold\n" + blockEnd + "\n\n## Next\n",
			want: "# B\n\n" + block + "\n\n## Next\n"},
		{name: "appends a section", doc: "# B\n\ntext\n", want: "# B\n\ntext\n\n" + heading + "\n\n" + block + "\n"},
		{name: "markers out of order", doc: blockEnd + "\n" + blockBegin + "\n", wantErr: true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			path := filepath.Join(t.TempDir(), "benchmarks.md")
			if err := os.WriteFile(path, []byte(tc.doc), 0o644); err != nil {
				t.Fatal(err)
			}
			err := updateMarkdown(path, block)
			if (err != nil) != tc.wantErr {
				t.Fatalf("error %v, want error: %v", err, tc.wantErr)
			}
			got, _ := os.ReadFile(path)
			if !tc.wantErr && string(got) != tc.want {
				t.Errorf("got\n%s\nwant\n%s", got, tc.want)
			}
			if tc.wantErr && string(got) != tc.doc {
				t.Errorf("the file changed on error")
			}
		})
	}
}

func TestHuman(t *testing.T) {
	for d, want := range map[time.Duration]string{5 * time.Minute: "5m", 90 * time.Second: "1m30s", 10 * time.Second: "10s", time.Hour: "1h"} {
		if got := human(d); got != want {
			t.Errorf("human(%v) = %s, want %s", d, got, want)
		}
	}
	if !strings.Contains(ratio(10, 4), "2.5") || ratio(1, 0) != "-" {
		t.Errorf("ratio(10, 4) = %s, ratio(1, 0) = %s", ratio(10, 4), ratio(1, 0))
	}
}
