package cluster

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os/exec"
	"path/filepath"
	"strings"
	"time"
)

// healthClient checks health endpoints from inside the node namespace.
// Certificates are not verified: the question is only whether the process
// answers, and the controllers serve self-signed certificates.
func healthClient(p paths) *http.Client {
	return &http.Client{
		Timeout: 3 * time.Second,
		Transport: &http.Transport{
			DialContext:       DialInNetns(p.netns),
			TLSClientConfig:   &tls.Config{InsecureSkipVerify: true}, //nolint:gosec // liveness only
			DisableKeepAlives: true,
		},
	}
}

func checkHealth(ctx context.Context, client *http.Client, url string) error {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return err
	}
	resp, err := client.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(io.LimitReader(resp.Body, 512))
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("%s: %s: %s", url, resp.Status, strings.TrimSpace(string(body)))
	}
	return nil
}

// waitFor polls check until it succeeds, the timeout passes, or proc (if
// given) exits; the error then carries the last check error and the end of
// the component's log.
func waitFor(ctx context.Context, p paths, timeout time.Duration, proc *process, check func(context.Context) error) error {
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	var exited <-chan struct{}
	if proc != nil {
		exited = proc.exited
	}
	for {
		err := check(ctx)
		if err == nil {
			return nil
		}
		select {
		case <-exited:
			return proc.exitError(p)
		case <-ctx.Done():
			msg := fmt.Sprintf("not ready after %s: %v", timeout, err)
			if proc != nil {
				msg += fmt.Sprintf("\nlast lines of %s:\n%s", logFile(p, proc.comp.name), tail(logFile(p, proc.comp.name), 15))
			}
			return errors.New(msg)
		case <-time.After(200 * time.Millisecond):
		}
	}
}

// kubectl runs the cached kubectl against the cluster as its admin, with
// its discovery cache in the state dir instead of ~/.kube.
func kubectl(ctx context.Context, p paths, k8sBin string, args ...string) (string, error) {
	cmd := exec.CommandContext(ctx, filepath.Join(k8sBin, "kubectl"), append([]string{"--kubeconfig=" + p.kubeconfig, "--cache-dir=" + filepath.Join(p.state, "kube-cache")}, args...)...)
	out, err := cmd.CombinedOutput()
	if err != nil {
		return string(out), fmt.Errorf("kubectl %s: %w: %s", strings.Join(args, " "), err, strings.TrimSpace(string(out)))
	}
	return string(out), nil
}

// nodeReady checks the node's Ready condition.
func nodeReady(ctx context.Context, p paths, k8sBin string) error {
	out, err := kubectl(ctx, p, k8sBin, "get", "node", NodeName,
		"-o", `jsonpath={.status.conditions[?(@.type=="Ready")].status}`)
	if err != nil {
		return err
	}
	if strings.TrimSpace(out) != "True" {
		return fmt.Errorf("node %s Ready=%q", NodeName, strings.TrimSpace(out))
	}
	return nil
}
