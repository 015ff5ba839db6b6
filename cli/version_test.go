package cli

import (
	"encoding/json"
	"strings"
	"testing"

	"github.com/mesh-dev/mesh/internal/version"
)

func TestVersion(t *testing.T) {
	unreachable := unreachableKubeconfig(t)
	tests := []struct {
		name string
		args []string
		want []string
	}{
		{name: "client only", args: []string{"version", "--client"}, want: []string{"Client version: " + version.Version + "\n"}},
		{
			name: "no kubeconfig",
			args: []string{"version"},
			want: []string{"Client version: " + version.Version, "Server version: unavailable (no cluster configured"},
		},
		{
			name: "cluster unreachable",
			args: []string{"version", "--kubeconfig", unreachable},
			want: []string{"Server version: unavailable (", "connection refused"},
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			out, _, err := run(t, "", tc.args...)
			if err != nil {
				t.Fatal(err)
			}
			for _, w := range tc.want {
				if !strings.Contains(out, w) {
					t.Errorf("output lacks %q:\n%s", w, out)
				}
			}
		})
	}
}

func TestVersionJSON(t *testing.T) {
	out, _, err := run(t, "", "version", "-o", "json")
	if err != nil {
		t.Fatal(err)
	}
	var got versionInfo
	if err := json.Unmarshal([]byte(out), &got); err != nil {
		t.Fatal(err)
	}
	if got.Client != version.Version || got.Server != "" || !strings.Contains(got.ServerUnavailable, "no cluster") {
		t.Errorf("%+v", got)
	}
	if _, _, err := run(t, "", "version", "-o", "xml"); err == nil {
		t.Error("no error for -o xml")
	}
}
