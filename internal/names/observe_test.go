package names

import (
	"errors"
	"net"
	"strings"
	"testing"
)

func TestParseAccessLog(t *testing.T) {
	tests := []struct {
		in, want string
		wantErr  bool
	}{
		{in: "apache", want: AccessLogApache},
		{in: "json", want: AccessLogJSON},
		{in: " JSON\n", want: AccessLogJSON},
		{in: "", wantErr: true},
		{in: "on", wantErr: true},
		{in: "true", wantErr: true},
		{in: "apache,json", wantErr: true},
	}
	for _, tc := range tests {
		t.Run(tc.in, func(t *testing.T) {
			got, err := ParseAccessLog(tc.in)
			if tc.wantErr {
				if !errors.Is(err, ErrAccessLog) || !strings.Contains(err.Error(), "want apache or json") {
					t.Fatalf("ParseAccessLog(%q) = %q, %v; want ErrAccessLog naming both formats", tc.in, got, err)
				}
				return
			}
			if err != nil || got != tc.want {
				t.Fatalf("ParseAccessLog(%q) = %q, %v; want %q", tc.in, got, err, tc.want)
			}
		})
	}
}

func TestParseTracingCollector(t *testing.T) {
	tests := []struct {
		in, want string
		wantErr  string // in the error; "" for none
	}{
		{in: "jaeger.mesh-system.svc.cluster.local.:4317", want: "jaeger.mesh-system.svc.cluster.local.:4317"},
		{in: " otel:4317 ", want: "otel:4317"},
		{in: "10.0.0.7:4317", want: "10.0.0.7:4317"},
		{in: "[fd00::7]:4317", want: "[fd00::7]:4317"},
		{in: "", wantErr: "want host:port"},
		{in: "jaeger", wantErr: "want host:port"},
		{in: "http://jaeger:4317", wantErr: "want host:port"},
		{in: ":4317", wantErr: "DNS name or IP address"},
		{in: "jaeger:otlp", wantErr: "not a number from 1 to 65535"},
		{in: "jaeger:0", wantErr: "not a number from 1 to 65535"},
		{in: "jaeger:65536", wantErr: "not a number from 1 to 65535"},
		{in: "user@jaeger:4317", wantErr: "DNS name or IP address"},
	}
	for _, tc := range tests {
		t.Run(tc.in, func(t *testing.T) {
			got, err := ParseTracingCollector(tc.in)
			if tc.wantErr != "" {
				if !errors.Is(err, ErrTracingCollector) || !strings.Contains(err.Error(), tc.wantErr) {
					t.Fatalf("ParseTracingCollector(%q) = %q, %v; want ErrTracingCollector saying %q", tc.in, got, err, tc.wantErr)
				}
				return
			}
			if err != nil || got != tc.want {
				t.Fatalf("ParseTracingCollector(%q) = %q, %v; want %q", tc.in, got, err, tc.want)
			}
		})
	}
}

func TestParseTracingSampleRate(t *testing.T) {
	tests := []struct {
		in      string
		want    float64
		wantErr bool
	}{
		{in: "0", want: 0},
		{in: "1", want: 1},
		{in: " 0.01 ", want: 0.01},
		{in: "1e-3", want: 0.001},
		{in: "", wantErr: true},
		{in: "-0.1", wantErr: true},
		{in: "1.5", wantErr: true},
		{in: "NaN", wantErr: true},
		{in: "10%", wantErr: true},
	}
	for _, tc := range tests {
		t.Run(tc.in, func(t *testing.T) {
			got, err := ParseTracingSampleRate(tc.in)
			if tc.wantErr {
				if !errors.Is(err, ErrTracingSampleRate) {
					t.Fatalf("ParseTracingSampleRate(%q) = %v, %v; want ErrTracingSampleRate", tc.in, got, err)
				}
				return
			}
			if err != nil || got != tc.want {
				t.Fatalf("ParseTracingSampleRate(%q) = %v, %v; want %v", tc.in, got, err, tc.want)
			}
		})
	}
}

// FuzzObserveAnnotations: whatever a pod's annotations say, each parse
// accepts what the proxy can use or returns its own error.
func FuzzObserveAnnotations(f *testing.F) {
	f.Add("json")
	f.Add("jaeger.mesh-system.svc.cluster.local.:4317")
	f.Add("[::1]:4317")
	f.Add("0.5")
	f.Add("1e400") // beyond float64: +Inf
	f.Add("\xff:1")
	f.Fuzz(func(t *testing.T, s string) {
		if got, err := ParseAccessLog(s); err == nil && got != AccessLogApache && got != AccessLogJSON {
			t.Fatalf("ParseAccessLog(%q) = %q", s, got)
		} else if err != nil && !errors.Is(err, ErrAccessLog) {
			t.Fatalf("ParseAccessLog(%q): %v does not wrap ErrAccessLog", s, err)
		}
		if got, err := ParseTracingCollector(s); err == nil {
			if _, port, serr := net.SplitHostPort(got); serr != nil || port == "" {
				t.Fatalf("ParseTracingCollector(%q) = %q, which is not host:port", s, got)
			}
		} else if !errors.Is(err, ErrTracingCollector) {
			t.Fatalf("ParseTracingCollector(%q): %v does not wrap ErrTracingCollector", s, err)
		}
		if got, err := ParseTracingSampleRate(s); err == nil && !(got >= 0 && got <= 1) {
			t.Fatalf("ParseTracingSampleRate(%q) = %v", s, got)
		} else if err != nil && !errors.Is(err, ErrTracingSampleRate) {
			t.Fatalf("ParseTracingSampleRate(%q): %v does not wrap ErrTracingSampleRate", s, err)
		}
	})
}
