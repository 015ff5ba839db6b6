package cli

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"slices"
	"strings"
	"sync"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/mesh-dev/mesh/install/manifests"
	"github.com/mesh-dev/mesh/internal/names"
	"github.com/mesh-dev/mesh/internal/version"
)

// `mesh check --proxy` asks every running meshed pod's proxy, through one
// port-forward each (the endpoints it needs answer on loopback only; see
// mesh diagnostics), for /ready, /identity and /policy, and checks what
// they say. The pods are asked once, by the first of these checks; the
// others read what it found.

// Bounds of the proxy scan: proxyScanConcurrency pods at a time, each
// within proxyScanTimeout, so a large cluster or a hung proxy makes the
// check slower, not endless.
const (
	proxyScanConcurrency = 4
	proxyScanTimeout     = 15 * time.Second
	// certRenewBefore: a certificate closer than this to its end should
	// have been renewed (the proxy renews at 70% of its lifetime, hours
	// before).
	certRenewBefore = time.Hour
)

// proxyOpener opens a reader of a pod's admin endpoints and returns it
// with what closes it.
type proxyOpener func(ctx context.Context, k *kube, pod *corev1.Pod) (adminReader, func(), error)

// openForward opens a port-forward to the pod's admin port, read by a
// forwardReader.
func openForward(ctx context.Context, k *kube, pod *corev1.Pod) (adminReader, func(), error) {
	f, err := portForward(ctx, k.rest, pod.Namespace, pod.Name, names.AdminPort)
	if err != nil {
		return nil, nil, err
	}
	return forwardReader{f: f}, f.Close, nil
}

// forwardReader reads admin endpoints through one open port-forward. It
// lands on the pod's loopback, where the proxy serves every endpoint.
type forwardReader struct{ f *forward }

func (r forwardReader) Public(ctx context.Context, pod *corev1.Pod, path string) (int, []byte, error) {
	return r.Local(ctx, pod, path)
}

func (r forwardReader) Local(ctx context.Context, pod *corev1.Pod, path string) (int, []byte, error) {
	ctx, cancel := context.WithTimeout(ctx, adminTimeout)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, r.f.URL+"/"+path, nil)
	if err != nil {
		return 0, nil, err
	}
	tr := &http.Transport{DisableKeepAlives: true}
	defer tr.CloseIdleConnections()
	res, err := (&http.Client{Transport: tr}).Do(req)
	if err != nil {
		if last := r.f.LastError(); last != nil {
			err = last
		}
		return 0, nil, fmt.Errorf("pod %s/%s: cannot reach its proxy on port %d: %v", pod.Namespace, pod.Name, names.AdminPort, err)
	}
	defer res.Body.Close()
	body, err := io.ReadAll(io.LimitReader(res.Body, maxAdminAnswer))
	return res.StatusCode, body, err
}

// proxyState is what one proxy said.
type proxyState struct {
	pod *corev1.Pod
	// err: the proxy could not be asked at all.
	err error
	// ready is nil when /ready answered 200, else why not.
	ready error
	// identity, or identityErr when it could not be read.
	identity    diagIdentity
	identityErr error
	// received: the proxy holds an inbound policy; policyErr when /policy
	// could not be read (errNoPolicyEndpoint: it serves none).
	received  bool
	revision  string
	policyErr error
}

// proxyScan asks each proxy once and keeps what they said.
type proxyScan struct {
	namespace string // "" for all namespaces
	open      proxyOpener

	once   sync.Once
	states []proxyState
	err    error
}

// proxyCheckList returns the checks of `mesh check --proxy`, for the
// proxies of namespace ns ("" for all).
func proxyCheckList(ns string, open proxyOpener) []check {
	s := &proxyScan{namespace: ns, open: open}
	const cat = "proxies"
	return []check{
		{category: cat, name: "proxies run the CLI's and control plane's version", run: s.checkVersions},
		{category: cat, name: "proxies answer on their admin port", run: s.checkReachable},
		{category: cat, name: "proxy certificates are valid", run: s.checkCertificates},
		{category: cat, name: "proxies hold an inbound policy", run: s.checkPolicies},
		{category: cat, name: "proxies are ready (reach the controller)", run: s.checkReady},
	}
}

// pods lists the meshed pods of the scan, running or not.
func (s *proxyScan) pods(ctx context.Context, c *checker) ([]corev1.Pod, error) {
	list, err := c.k.client.CoreV1().Pods(s.namespace).List(ctx, metav1.ListOptions{LabelSelector: names.LabelControlPlaneNamespace + "=" + c.ns})
	if err != nil {
		return nil, err
	}
	pods := slices.DeleteFunc(list.Items, func(p corev1.Pod) bool {
		return p.DeletionTimestamp != nil || p.Status.Phase == corev1.PodSucceeded || p.Status.Phase == corev1.PodFailed
	})
	slices.SortFunc(pods, func(a, b corev1.Pod) int { return strings.Compare(a.Namespace+"/"+a.Name, b.Namespace+"/"+b.Name) })
	return pods, nil
}

// scan asks every running meshed pod's proxy, once.
func (s *proxyScan) scan(ctx context.Context, c *checker) ([]proxyState, error) {
	s.once.Do(func() {
		pods, err := s.pods(ctx, c)
		if err != nil {
			s.err = err
			return
		}
		pods = slices.DeleteFunc(pods, func(p corev1.Pod) bool { return diagnosable(&p) != nil })
		s.states = make([]proxyState, len(pods))
		sem := make(chan struct{}, proxyScanConcurrency)
		var wg sync.WaitGroup
		for i := range pods {
			s.states[i].pod = &pods[i]
			select {
			case sem <- struct{}{}:
			case <-ctx.Done():
				s.states[i].err = ctx.Err()
				continue
			}
			wg.Go(func() {
				defer func() { <-sem }()
				s.states[i] = askProxy(ctx, c.k, &pods[i], s.open)
			})
		}
		wg.Wait()
	})
	return s.states, s.err
}

// askProxy reads /ready, /identity and /policy of one proxy.
func askProxy(ctx context.Context, k *kube, pod *corev1.Pod, open proxyOpener) proxyState {
	ctx, cancel := context.WithTimeout(ctx, proxyScanTimeout)
	defer cancel()
	st := proxyState{pod: pod}
	r, closeFn, err := open(ctx, k, pod)
	if err != nil {
		st.err = err
		return st
	}
	defer closeFn()
	code, body, err := r.Public(ctx, pod, readyPath)
	switch {
	case err != nil:
		st.err = err
		return st
	case code != http.StatusOK:
		st.ready = errors.New(firstLine(strings.TrimSpace(string(body))))
	}
	st.identity, st.identityErr = readDiagIdentity(ctx, pod, r)
	body, err = readLocal(ctx, pod, r, policyPath)
	if err != nil {
		st.policyErr = err
		return st
	}
	var a struct {
		Received bool `json:"received"`
		Policy   *struct {
			Revision string `json:"revision"`
		} `json:"policy"`
	}
	if err := json.Unmarshal(body, &a); err != nil {
		st.policyErr = fmt.Errorf("pod %s/%s: the proxy's answer to GET /%s is not its JSON: %w", pod.Namespace, pod.Name, policyPath, err)
		return st
	}
	st.received = a.Received && a.Policy != nil
	if st.received {
		st.revision = a.Policy.Revision
	}
	return st
}

func podRef(p *corev1.Pod) string { return p.Namespace + "/" + p.Name }

func (s *proxyScan) checkVersions(ctx context.Context, c *checker) (string, error) {
	pods, err := s.pods(ctx, c)
	if err != nil {
		return "", err
	}
	if len(pods) == 0 {
		return "no meshed pods", nil
	}
	want := c.controlVersion
	if want == "" {
		want = version.Version
	}
	var skewed []string
	for _, p := range pods {
		if v := p.Annotations[names.AnnotationProxyVersion]; v != want {
			skewed = append(skewed, fmt.Sprintf("%s (%s)", podRef(&p), dash(v)))
		}
	}
	var notes []string
	if c.controlVersion != "" && c.controlVersion != version.Version {
		notes = append(notes, fmt.Sprintf("the control plane runs %s and this CLI is %s: use the CLI of the control plane's version, or upgrade the control plane (mesh install)",
			c.controlVersion, version.Version))
	}
	if len(skewed) > 0 {
		notes = append(notes, fmt.Sprintf("%d of %d meshed pods run another proxy version than %s: %s; restart their workloads to inject the current proxy: kubectl -n NAMESPACE rollout restart deployment NAME",
			len(skewed), len(pods), want, summarize(skewed, 5)))
	}
	if len(notes) > 0 {
		return "", warnf("%s", strings.Join(notes, "\n"))
	}
	return fmt.Sprintf("%s, %d %s", want, len(pods), plural(len(pods), "pod", "pods")), nil
}

func (s *proxyScan) checkReachable(ctx context.Context, c *checker) (string, error) {
	states, err := s.scan(ctx, c)
	if err != nil {
		return "", err
	}
	if len(states) == 0 {
		return "no running meshed pods", nil
	}
	var failed []string
	for _, st := range states {
		if st.err != nil {
			failed = append(failed, st.err.Error())
		}
	}
	if len(failed) > 0 {
		first := states[slices.IndexFunc(states, func(st proxyState) bool { return st.err != nil })].pod
		return "", fmt.Errorf("%d of %d proxies could not be asked:\n%s\nsee the proxy's log: kubectl -n %s logs %s -c %s; a port-forward needs create on pods/portforward",
			len(failed), len(states), strings.Join(failed[:min(len(failed), 5)], "\n"), first.Namespace, first.Name, names.ProxyContainerName)
	}
	return fmt.Sprintf("%d %s", len(states), plural(len(states), "pod", "pods")), nil
}

func (s *proxyScan) checkCertificates(ctx context.Context, c *checker) (string, error) {
	states, err := s.scan(ctx, c)
	if err != nil {
		return "", err
	}
	var invalid, expiring, unreadable []string
	var earliest time.Time
	n := 0
	for _, st := range states {
		switch {
		case st.err != nil:
			continue // the reachability check names it
		case errors.Is(st.identityErr, errNoIdentity):
			unreadable = append(unreadable, podRef(st.pod)+" (runs without an identity: its traffic is not mTLS)")
			continue
		case st.identityErr != nil:
			unreadable = append(unreadable, st.identityErr.Error())
			continue
		}
		n++
		id := st.identity
		switch {
		case c.now.Before(id.NotBefore) || !c.now.Before(id.NotAfter):
			invalid = append(invalid, fmt.Sprintf("%s (%s)", podRef(st.pod), timeLeft(id.NotBefore, id.NotAfter, c.now)))
		case id.NotAfter.Sub(c.now) < certRenewBefore:
			expiring = append(expiring, fmt.Sprintf("%s (expires %s)", podRef(st.pod), timeLeft(id.NotBefore, id.NotAfter, c.now)))
		}
		if earliest.IsZero() || id.NotAfter.Before(earliest) {
			earliest = id.NotAfter
		}
	}
	identityLogs := fmt.Sprintf("the proxy renews it from the controller's identity service: see kubectl -n %s logs deployment/%s and the proxy's log",
		c.ns, manifests.ControllerName)
	if len(invalid) > 0 {
		return "", fmt.Errorf("%d %s a certificate that is not valid now: %s; peers refuse their mTLS. %s; a clock far off on the node shows the same way",
			len(invalid), plural(len(invalid), "proxy holds", "proxies hold"), summarize(invalid, 5), identityLogs)
	}
	var notes []string
	if len(expiring) > 0 {
		notes = append(notes, fmt.Sprintf("%d %s a certificate that expires within %s and was not renewed: %s; %s",
			len(expiring), plural(len(expiring), "proxy holds", "proxies hold"), shortDuration(certRenewBefore), summarize(expiring, 5), identityLogs))
	}
	if len(unreadable) > 0 {
		notes = append(notes, fmt.Sprintf("cannot tell for %d %s: %s", len(unreadable), plural(len(unreadable), "proxy", "proxies"), summarize(unreadable, 3)))
	}
	if len(notes) > 0 {
		return "", warnf("%s", strings.Join(notes, "\n"))
	}
	if n == 0 {
		return "no running meshed pods", nil
	}
	return fmt.Sprintf("%d %s, the first to expire %s", n, plural(n, "certificate", "certificates"), timeLeft(time.Time{}, earliest, c.now)), nil
}

func (s *proxyScan) checkPolicies(ctx context.Context, c *checker) (string, error) {
	states, err := s.scan(ctx, c)
	if err != nil {
		return "", err
	}
	var missing, old, unreadable []string
	revisions := map[string]bool{}
	n := 0
	for _, st := range states {
		switch {
		case st.err != nil:
			continue
		case errors.Is(st.policyErr, errNoPolicyEndpoint):
			old = append(old, podRef(st.pod))
		case st.policyErr != nil:
			unreadable = append(unreadable, st.policyErr.Error())
		case !st.received:
			missing = append(missing, podRef(st.pod))
		default:
			n++
			revisions[st.revision] = true
		}
	}
	if len(missing) > 0 {
		return "", fmt.Errorf("%d %s no inbound policy from the controller: %s; until they do they refuse inbound connections. See the controller's log (kubectl -n %s logs deployment/%s) and that the pods reach service %s/%s port %d",
			len(missing), plural(len(missing), "proxy has", "proxies have"), summarize(missing, 5), c.ns, manifests.ControllerName, c.ns, manifests.ControllerName, controllerGRPCPort)
	}
	var notes []string
	if len(old) > 0 {
		notes = append(notes, fmt.Sprintf("%d %s no /policy (no controller address or pod name, or a proxy older than mesh diagnostics): %s; restart them to get the current proxy",
			len(old), plural(len(old), "proxy serves", "proxies serve"), summarize(old, 5)))
	}
	if len(unreadable) > 0 {
		notes = append(notes, fmt.Sprintf("cannot tell for %d %s: %s", len(unreadable), plural(len(unreadable), "proxy", "proxies"), summarize(unreadable, 3)))
	}
	if len(notes) > 0 {
		return "", warnf("%s", strings.Join(notes, "\n"))
	}
	if n == 0 {
		return "no running meshed pods", nil
	}
	return fmt.Sprintf("%d %s, %d %s", n, plural(n, "proxy", "proxies"), len(revisions), plural(len(revisions), "revision", "revisions")), nil
}

func (s *proxyScan) checkReady(ctx context.Context, c *checker) (string, error) {
	states, err := s.scan(ctx, c)
	if err != nil {
		return "", err
	}
	var notReady []string
	n := 0
	for _, st := range states {
		switch {
		case st.err != nil:
			continue
		case st.ready != nil:
			notReady = append(notReady, fmt.Sprintf("%s (%v)", podRef(st.pod), st.ready))
		default:
			n++
		}
	}
	if len(notReady) > 0 {
		return "", fmt.Errorf("%d %s not ready: %s\na proxy is ready once it serves, holds a certificate and an inbound policy, all from the controller: see its log (kubectl -n NAMESPACE logs POD -c %s), the controller's (kubectl -n %s logs deployment/%s), and that the pod reaches service %s/%s",
			len(notReady), plural(len(notReady), "proxy is", "proxies are"), summarize(notReady, 5), names.ProxyContainerName, c.ns, manifests.ControllerName, c.ns, manifests.ControllerName)
	}
	if n == 0 {
		return "no running meshed pods", nil
	}
	return fmt.Sprintf("%d %s", n, plural(n, "proxy", "proxies")), nil
}
