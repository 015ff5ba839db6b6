package main

import (
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
)

func TestParseBenchFlags(t *testing.T) {
	tests := []struct {
		name    string
		args    []string
		want    benchConfig
		wantErr string
	}{
		{
			name: "defaults",
			want: benchConfig{Proxy: "bin/mesh-proxy", Duration: 5 * time.Second, Warmup: 2 * time.Second, Rounds: 8, Loads: []loadName{http1, h2c}, Args: []string{}},
		},
		{
			name: "all set",
			args: []string{"--proxy", "/tmp/p", "--duration", "10s", "--warmup", "0s", "--rounds", "20", "--loads", "h2c", "--write", "docs/benchmarks.md"},
			want: benchConfig{Proxy: "/tmp/p", Duration: 10 * time.Second, Rounds: 20, Loads: []loadName{h2c}, Write: "docs/benchmarks.md",
				Args: []string{"--proxy", "/tmp/p", "--duration", "10s", "--warmup", "0s", "--rounds", "20", "--loads", "h2c", "--write", "docs/benchmarks.md"}},
		},
		{name: "part of a second", args: []string{"--duration", "1500ms"}, wantErr: "whole seconds"},
		{name: "no rounds", args: []string{"--rounds", "0"}, wantErr: "--rounds 0"},
		{name: "unknown load", args: []string{"--loads", "http3"}, wantErr: `unknown load "http3"`},
		{name: "load twice", args: []string{"--loads", "h2c,h2c"}, wantErr: "appears twice"},
		{name: "argument", args: []string{"now"}, wantErr: "unexpected arguments: now"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			got, err := parseBenchFlags(tc.args)
			if tc.wantErr != "" {
				var usage usageError
				if err == nil || !strings.Contains(err.Error(), tc.wantErr) || !errors.As(err, &usage) {
					t.Fatalf("parseBenchFlags(%q): %v, want a usage error with %q", tc.args, err, tc.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if tc.args == nil {
				tc.want.Args = nil
			}
			if diff := cmp.Diff(tc.want, got); diff != "" {
				t.Errorf("parseBenchFlags (-want +got):\n%s", diff)
			}
		})
	}
}
