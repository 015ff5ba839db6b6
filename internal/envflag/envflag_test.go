package envflag

import (
	"testing"

	"github.com/spf13/pflag"
)

func TestApply(t *testing.T) {
	tests := []struct {
		name     string
		args     []string
		env      map[string]string
		wantAddr string
		wantPort int
		wantErr  bool
	}{
		{name: "defaults", wantAddr: "0.0.0.0:1", wantPort: 1},
		{name: "env sets", env: map[string]string{"P_ADMIN_ADDR": "127.0.0.1:9", "P_PORT": "7"}, wantAddr: "127.0.0.1:9", wantPort: 7},
		{name: "flag wins", args: []string{"--port=3"}, env: map[string]string{"P_PORT": "7"}, wantAddr: "0.0.0.0:1", wantPort: 3},
		{name: "bad value", env: map[string]string{"P_PORT": "seven"}, wantErr: true},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			fs := pflag.NewFlagSet("x", pflag.ContinueOnError)
			addr := fs.String("admin-addr", "0.0.0.0:1", "")
			port := fs.Int("port", 1, "")
			if err := fs.Parse(tc.args); err != nil {
				t.Fatal(err)
			}
			err := Apply(fs, "P_", func(k string) (string, bool) { v, ok := tc.env[k]; return v, ok })
			if (err != nil) != tc.wantErr {
				t.Fatalf("Apply error = %v, wantErr %v", err, tc.wantErr)
			}
			if err != nil {
				return
			}
			if *addr != tc.wantAddr || *port != tc.wantPort {
				t.Errorf("got addr=%q port=%d, want %q %d", *addr, *port, tc.wantAddr, tc.wantPort)
			}
		})
	}
}
