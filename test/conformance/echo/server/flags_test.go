package server

import (
	"io"
	"reflect"
	"strings"
	"testing"
)

func TestParseFlags(t *testing.T) {
	tests := []struct {
		name string
		args []string
		env  map[string]string
		want Config
		err  string
	}{
		{
			name: "the mesh namespace's echo pods",
			args: []string{"--tcp=9090", "--port=8080", "--grpc=7070", "--port=8443", "--tls=8443"},
			want: Config{HTTPPorts: []int{8080, 8443}, GRPCPorts: []int{7070}, TCPPorts: []int{9090}, TLSPorts: []int{8443}},
		},
		{
			name: "no listener flags: the defaults",
			env:  map[string]string{"SERVICE_VERSION": "v3", "CLUSTER": "local"},
			want: Config{HTTPPorts: []int{8080}, GRPCPorts: []int{7070}, Version: "v3", Cluster: "local"},
		},
		{
			name: "one listener flag turns the defaults off",
			args: []string{"--grpc=7071", "--version=v1", "--crt=/c", "--key=/k"},
			want: Config{GRPCPorts: []int{7071}, Version: "v1", CertFile: "/c", KeyFile: "/k"},
		},
		{name: "not a port", args: []string{"--port=http"}, err: `"http" is not a port`},
		{name: "port out of range", args: []string{"--port=70000"}, err: "is not a port"},
		{name: "stray argument", args: []string{"--port=1", "serve"}, err: "unexpected arguments"},
		{name: "unknown flag", args: []string{"--istio-version=1"}, err: "not defined"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Setenv("SERVICE_VERSION", tc.env["SERVICE_VERSION"])
			t.Setenv("CLUSTER", tc.env["CLUSTER"])
			got, err := ParseFlags(tc.args, io.Discard)
			if tc.err != "" {
				if err == nil || !strings.Contains(err.Error(), tc.err) {
					t.Fatalf("err = %v, want one containing %q", err, tc.err)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if !reflect.DeepEqual(got, tc.want) {
				t.Errorf("(-want +got):\n-%+v\n+%+v", tc.want, got)
			}
		})
	}
}
