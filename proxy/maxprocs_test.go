package proxy

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/spf13/pflag"
)

// mountinfo lines of a cgroup2 mount: root is the hierarchy's root the
// mount shows, at mount point at.
func cgroup2Mountinfo(root, at string) string {
	return "24 30 0:22 / /proc rw,nosuid - proc proc rw\n" +
		"35 24 0:30 " + root + " " + at + " rw,nosuid,nodev,noexec,relatime shared:9 - cgroup2 cgroup2 rw,nsdelegate\n"
}

// cgroupV1Mountinfo is a host with cgroup v1 only.
const cgroupV1Mountinfo = "36 24 0:31 / /sys/fs/cgroup/cpu,cpuacct rw,nosuid - cgroup cgroup rw,cpu,cpuacct\n"

func TestCgroupCPULimit(t *testing.T) {
	tests := []struct {
		name string
		// files are the root file system's, by path without the leading
		// slash.
		files     map[string]string
		wantLimit float64
		wantOK    bool
		wantErr   string
	}{
		{
			name: "container with a cgroup namespace",
			files: map[string]string{
				"proc/self/cgroup":          "0::/\n",
				"proc/self/mountinfo":       cgroup2Mountinfo("/", "/sys/fs/cgroup"),
				"sys/fs/cgroup/cpu.max":     "50000 100000\n",
				"sys/fs/cgroup/memory.max":  "67108864\n",
				"sys/fs/cgroup/cgroup.type": "domain\n",
			},
			wantLimit: 0.5, wantOK: true,
		},
		{
			name: "no limit",
			files: map[string]string{
				"proc/self/cgroup":      "0::/\n",
				"proc/self/mountinfo":   cgroup2Mountinfo("/", "/sys/fs/cgroup"),
				"sys/fs/cgroup/cpu.max": "max 100000\n",
			},
		},
		{
			name: "the pod's limit is lower than the container's",
			files: map[string]string{
				"proc/self/cgroup":                          "0::/kubepods/pod1/proxy\n",
				"proc/self/mountinfo":                       cgroup2Mountinfo("/", "/sys/fs/cgroup"),
				"sys/fs/cgroup/kubepods/pod1/proxy/cpu.max": "250000 100000\n",
				"sys/fs/cgroup/kubepods/pod1/cpu.max":       "150000 100000\n",
				"sys/fs/cgroup/kubepods/cpu.max":            "max 100000\n",
			},
			wantLimit: 1.5, wantOK: true,
		},
		{
			name: "only an ancestor sets a limit",
			files: map[string]string{
				"proc/self/cgroup":                          "0::/kubepods/pod1/proxy\n",
				"proc/self/mountinfo":                       cgroup2Mountinfo("/", "/sys/fs/cgroup"),
				"sys/fs/cgroup/kubepods/pod1/proxy/cpu.max": "max 100000\n",
				"sys/fs/cgroup/kubepods/cpu.max":            "400000 100000\n",
			},
			wantLimit: 4, wantOK: true,
		},
		{
			name: "a cgroup above the mount is not read",
			files: map[string]string{
				"proc/self/cgroup":             "0::/kubepods/pod1/proxy\n",
				"proc/self/mountinfo":          cgroup2Mountinfo("/kubepods/pod1", "/sys/fs/cgroup"),
				"sys/fs/cgroup/proxy/cpu.max":  "200000 100000\n",
				"sys/fs/cgroup/cpu.max":        "300000 100000\n",
				"sys/fs/cpu.max":               "10000 100000\n",
				"sys/fs/cgroup/other/cpu.max":  "10000 100000\n",
				"sys/fs/cgroup/proxy/cpu.stat": "usage_usec 0\n",
			},
			wantLimit: 2, wantOK: true,
		},
		{
			name: "hybrid host: cgroup2 at /sys/fs/cgroup/unified",
			files: map[string]string{
				"proc/self/cgroup":              "1:cpu,cpuacct:/\n0::/\n",
				"proc/self/mountinfo":           cgroupV1Mountinfo + cgroup2Mountinfo("/", "/sys/fs/cgroup/unified"),
				"sys/fs/cgroup/unified/cpu.max": "300000 100000\n",
			},
			wantLimit: 3, wantOK: true,
		},
		{
			name: "escaped mount point",
			files: map[string]string{
				"proc/self/cgroup":       "0::/\n",
				"proc/self/mountinfo":    cgroup2Mountinfo("/", `/sys/fs/cg\040v2`),
				"sys/fs/cg v2/cpu.max":   "100000 100000\n",
				"sys/fs/cgroup/cpu.max":  "10000 100000\n",
				"sys/fs/cg\\040v2/x.max": "1\n",
			},
			wantLimit: 1, wantOK: true,
		},
		{
			name: "cgroup v1 only",
			files: map[string]string{
				"proc/self/cgroup":    "2:cpu,cpuacct:/kubepods/pod1\n1:memory:/kubepods/pod1\n",
				"proc/self/mountinfo": cgroupV1Mountinfo,
			},
		},
		{
			name:  "no /proc",
			files: map[string]string{"etc/hostname": "pod\n"},
		},
		{
			name: "cgroup v2 listed but not mounted",
			files: map[string]string{
				"proc/self/cgroup":    "0::/\n",
				"proc/self/mountinfo": cgroupV1Mountinfo,
			},
		},
		{
			name: "cgroup outside the mounted hierarchy",
			files: map[string]string{
				"proc/self/cgroup":    "0::/kubepods/pod12\n",
				"proc/self/mountinfo": cgroup2Mountinfo("/kubepods/pod1", "/sys/fs/cgroup"),
			},
			wantErr: "outside the mounted cgroup2 hierarchy",
		},
		{
			name: "malformed cpu.max",
			files: map[string]string{
				"proc/self/cgroup":      "0::/\n",
				"proc/self/mountinfo":   cgroup2Mountinfo("/", "/sys/fs/cgroup"),
				"sys/fs/cgroup/cpu.max": "fast\n",
			},
			wantErr: `want "quota period"`,
		},
		{
			name: "zero period",
			files: map[string]string{
				"proc/self/cgroup":      "0::/\n",
				"proc/self/mountinfo":   cgroup2Mountinfo("/", "/sys/fs/cgroup"),
				"sys/fs/cgroup/cpu.max": "50000 0\n",
			},
			wantErr: "two positive numbers",
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			root := writeFiles(t, tc.files)
			limit, ok, err := cgroupCPULimit(os.DirFS(root))
			if tc.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
					t.Fatalf("cgroupCPULimit = %v, %v, %v; want an error saying %q", limit, ok, err, tc.wantErr)
				}
				return
			}
			if err != nil || ok != tc.wantOK || limit != tc.wantLimit {
				t.Errorf("cgroupCPULimit = %v, %v, %v; want %v, %v, nil", limit, ok, err, tc.wantLimit, tc.wantOK)
			}
		})
	}
}

// writeFiles creates files (path without leading slash to content) under
// a new directory and returns it.
func writeFiles(t testing.TB, files map[string]string) string {
	t.Helper()
	root := t.TempDir()
	for name, content := range files {
		p := filepath.Join(root, filepath.FromSlash(name))
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(p, []byte(content), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	return root
}

func TestChooseMaxProcs(t *testing.T) {
	tests := []struct {
		name    string
		in      maxProcsInput
		wantN   int
		wantSet bool
		wantWhy maxProcsReason
	}{
		{
			name:  "flag wins over everything",
			in:    maxProcsInput{flag: 3, envSet: true, limit: 1, hasLimit: true, current: 2, numCPU: 8},
			wantN: 3, wantSet: true, wantWhy: fromFlag,
		},
		{
			name:  "flag equal to the runtime's value",
			in:    maxProcsInput{flag: 2, current: 2, numCPU: 8},
			wantN: 2, wantSet: false, wantWhy: fromFlag,
		},
		{
			name:  "GOMAXPROCS variable is left alone",
			in:    maxProcsInput{envSet: true, limit: 1, hasLimit: true, current: 6, numCPU: 8},
			wantN: 6, wantSet: false, wantWhy: fromEnvironment,
		},
		{
			name:  "half a CPU: one, below the runtime's minimum of two",
			in:    maxProcsInput{limit: 0.5, hasLimit: true, current: 2, numCPU: 8},
			wantN: 1, wantSet: true, wantWhy: fromCgroup,
		},
		{
			name:  "one CPU",
			in:    maxProcsInput{limit: 1, hasLimit: true, current: 2, numCPU: 8},
			wantN: 1, wantSet: true, wantWhy: fromCgroup,
		},
		{
			name:  "a tiny limit still gets one",
			in:    maxProcsInput{limit: 0.01, hasLimit: true, current: 2, numCPU: 8},
			wantN: 1, wantSet: true, wantWhy: fromCgroup,
		},
		{
			name:  "2.5 CPUs: the runtime already rounded up to 3",
			in:    maxProcsInput{limit: 2.5, hasLimit: true, current: 3, numCPU: 8},
			wantN: 3, wantSet: false, wantWhy: fromCgroup,
		},
		{
			name:  "a limit above the machine",
			in:    maxProcsInput{limit: 16, hasLimit: true, current: 4, numCPU: 4},
			wantN: 4, wantSet: false, wantWhy: fromCgroup,
		},
		{
			name:  "the runtime saw a limit the cgroup v2 files did not show",
			in:    maxProcsInput{current: 2, numCPU: 8},
			wantN: 2, wantSet: false, wantWhy: fromGoRuntime,
		},
		{
			name:  "no limit anywhere",
			in:    maxProcsInput{current: 8, numCPU: 8},
			wantN: 1, wantSet: true, wantWhy: fromNoLimit,
		},
		{
			name:  "no limit on one CPU",
			in:    maxProcsInput{current: 1, numCPU: 1},
			wantN: 1, wantSet: false, wantWhy: fromNoLimit,
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			n, set, why := chooseMaxProcs(tc.in)
			if n != tc.wantN || set != tc.wantSet || why != tc.wantWhy {
				t.Errorf("chooseMaxProcs(%+v) = %d, %v, %q; want %d, %v, %q", tc.in, n, set, why, tc.wantN, tc.wantSet, tc.wantWhy)
			}
		})
	}
}

func TestMaxProcsFlag(t *testing.T) {
	tests := []struct {
		name    string
		args    []string
		want    int
		wantErr string
	}{
		{name: "default is automatic", want: 0},
		{name: "set", args: []string{"--max-procs=2"}, want: 2},
		{name: "negative", args: []string{"--max-procs=-1"}, want: -1, wantErr: "max-procs must not be negative"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			cfg := DefaultConfig()
			fs := pflag.NewFlagSet("mesh-proxy", pflag.ContinueOnError)
			cfg.AddFlags(fs)
			if err := fs.Parse(tc.args); err != nil {
				t.Fatal(err)
			}
			if cfg.MaxProcs != tc.want {
				t.Errorf("MaxProcs = %d, want %d", cfg.MaxProcs, tc.want)
			}
			err := cfg.Validate()
			if tc.wantErr == "" && err != nil || tc.wantErr != "" && (err == nil || !strings.Contains(err.Error(), tc.wantErr)) {
				t.Errorf("Validate = %v, want %q", err, tc.wantErr)
			}
		})
	}
}

func TestChooseGCPercent(t *testing.T) {
	if pct, set := chooseGCPercent(false); !set || pct != proxyGCPercent {
		t.Errorf("without GOGC: %d, %t; want %d, true", pct, set, proxyGCPercent)
	}
	if _, set := chooseGCPercent(true); set {
		t.Error("GOGC in the environment: the proxy set its own, want the environment's kept")
	}
	if proxyGCPercent <= 0 || proxyGCPercent >= 100 {
		t.Errorf("proxyGCPercent %d: want a heap goal below the runtime's default, and collection on", proxyGCPercent)
	}
}
