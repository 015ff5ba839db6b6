package cli

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
)

func TestCheckWithoutCluster(t *testing.T) {
	unreachable := unreachableKubeconfig(t)
	tests := []struct {
		name string
		args []string
		want []checkResult
	}{
		{
			name: "no kubeconfig",
			args: []string{"check", "-o", "json"},
			want: []checkResult{{Category: "kubernetes-api", Name: "kubeconfig loads", Status: statusFail}},
		},
		{
			name: "API server down",
			args: []string{"check", "--pre", "-o", "json", "--kubeconfig", unreachable},
			want: []checkResult{
				{Category: "kubernetes-api", Name: "kubeconfig loads", Status: statusOK},
				{Category: "kubernetes-api", Name: "can reach the Kubernetes API", Status: statusFail},
			},
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			out, _, err := run(t, "", tc.args...)
			if !errors.Is(err, errChecksFailed) {
				t.Fatalf("err = %v, want errChecksFailed (a non-zero exit)", err)
			}
			var report checkReport
			if err := json.Unmarshal([]byte(out), &report); err != nil {
				t.Fatalf("not JSON: %v\n%s", err, out)
			}
			if report.Success || report.Skipped == "" {
				t.Errorf("success %v, skipped %q: want a failure that skips the rest", report.Success, report.Skipped)
			}
			var got []checkResult
			for _, r := range report.Checks {
				if r.Status == statusFail && r.Hint == "" {
					t.Errorf("%q failed without a hint", r.Name)
				}
				got = append(got, checkResult{Category: r.Category, Name: r.Name, Status: r.Status})
			}
			if diff := cmp.Diff(tc.want, got); diff != "" {
				t.Errorf("checks (-want +got):\n%s", diff)
			}
		})
	}
}

func TestRunChecksAndPrint(t *testing.T) {
	ok := func(detail string) func(context.Context, *checker) (string, error) {
		return func(context.Context, *checker) (string, error) { return detail, nil }
	}
	fail := func(msg string) func(context.Context, *checker) (string, error) {
		return func(context.Context, *checker) (string, error) { return "", errors.New(msg) }
	}
	warn := func(msg string) func(context.Context, *checker) (string, error) {
		return func(context.Context, *checker) (string, error) { return "", warnf("%s", msg) }
	}
	checks := []check{
		{category: "a", name: "first", run: ok("v1")},
		{category: "a", name: "second", run: warn("expires soon\nrotate it")},
		{category: "b", name: "third", run: fail("broken: fix it")},
		{category: "b", name: "fatal", fatal: true, run: fail("cannot go on")},
		{category: "c", name: "never run", run: ok("")},
	}
	report := runChecks(context.Background(), NewOptions(nil, nil, nil), checks)
	var b bytes.Buffer
	printChecks(&b, report)
	want := `a
-
√ first (v1)
‼ second
    expires soon
    rotate it

b
-
× third
    broken: fix it
× fatal
    cannot go on

Skipped the remaining checks: the 1 checks after "fatal" need it to pass.

Status check results are ×: 2 failed, 1 warning
`
	if diff := cmp.Diff(want, b.String()); diff != "" {
		t.Errorf("output (-want +got):\n%s", diff)
	}
	if report.Success {
		t.Error("report.Success with failures")
	}
}

func TestCheckOutputFlag(t *testing.T) {
	_, _, err := run(t, "", "check", "-o", "yaml")
	if err == nil || !strings.Contains(err.Error(), "want one of") {
		t.Fatalf("err = %v", err)
	}
}
