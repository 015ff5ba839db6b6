package main

import (
	"net/netip"
	"strings"
	"testing"
	"time"
)

func TestRender(t *testing.T) {
	tests := []struct {
		name, conf, want, wantErr string
	}{
		{name: "values", conf: "listen @IP@:@PORT@; # @IP@", want: "listen 10.0.0.1:80; # 10.0.0.1"},
		{name: "none", conf: "return 200 ok;", want: "return 200 ok;"},
		{name: "unknown", conf: "x @NOPE@", wantErr: "no value for @NOPE@"},
		{name: "unmatched", conf: "x @IP", wantErr: "unmatched @"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			got, err := render(tc.conf, map[string]string{"IP": "10.0.0.1", "PORT": "80"})
			if tc.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
					t.Fatalf("render: %q, %v; want an error with %q", got, err, tc.wantErr)
				}
				return
			}
			if err != nil || got != tc.want {
				t.Errorf("render = %q, %v; want %q", got, err, tc.want)
			}
		})
	}
}

// TestConfsRender: every placeholder of the shipped nginx configurations
// has a value, and each says what the comparison rests on.
func TestConfsRender(t *testing.T) {
	values := confValues("/run/dir", netip.MustParseAddr("10.252.0.3"), "server.bench.svc.cluster.local")
	for name, tc := range map[string]struct {
		conf string
		want []string
	}{
		"app":         {appConf, []string{"worker_processes 1;", "listen 8080;", "listen 8081;"}},
		"pair client": {pairClientConf, []string{"worker_processes 2;", "listen 127.0.0.1:8090;", "server 10.252.0.3:8443;", "proxy_ssl_protocols TLSv1.3;", "proxy_ssl_verify on;", "proxy_ssl_certificate /run/dir/client.crt;", "proxy_ssl_name server.bench.svc.cluster.local;", "keepalive 256;"}},
		"pair server": {pairServerConf, []string{"worker_processes 2;", "listen 10.252.0.3:8443 ssl;", "ssl_protocols TLSv1.3;", "ssl_verify_client on;", "server 10.252.0.3:8080;", "keepalive 256;"}},
	} {
		got, err := render(tc.conf, values)
		if err != nil {
			t.Errorf("%s: %v", name, err)
			continue
		}
		for _, w := range tc.want {
			if !strings.Contains(got, w) {
				t.Errorf("%s: no %q in\n%s", name, w, got)
			}
		}
	}
}

func TestParseBenchFlags(t *testing.T) {
	tests := []struct {
		name    string
		args    []string
		check   func(benchConfig) bool
		wantErr string
	}{
		{name: "defaults", check: func(c benchConfig) bool {
			return c.Duration == 10*time.Second && c.RateDuration == 20*time.Second && len(c.Rates) == 2 && c.Conns == 32
		}},
		{name: "rates", args: []string{"--rates", "500,2000", "--write", "docs/benchmarks.md"}, check: func(c benchConfig) bool {
			return c.Rates[0] == 500 && c.Rates[1] == 2000 && c.Write == "docs/benchmarks.md"
		}},
		{name: "fractional seconds", args: []string{"--duration", "1500ms"}, wantErr: "whole seconds"},
		{name: "same rate twice", args: []string{"--rates", "1000,1000"}, wantErr: "appears twice"},
		{name: "no rate", args: []string{"--rates", "0"}, wantErr: "1 to 100000"},
		{name: "stray", args: []string{"extra"}, wantErr: "unexpected arguments"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			cfg, err := parseBenchFlags(tc.args)
			if tc.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
					t.Fatalf("parseBenchFlags: %v, want an error with %q", err, tc.wantErr)
				}
				return
			}
			if err != nil || !tc.check(cfg) {
				t.Errorf("parseBenchFlags(%q) = %+v, %v", tc.args, cfg, err)
			}
		})
	}
}
