package inject

import (
	"encoding/json"
	"slices"
	"strconv"
	"strings"
	"testing"

	"github.com/spf13/pflag"
	corev1 "k8s.io/api/core/v1"

	"github.com/mesh-dev/mesh/internal/envflag"
	"github.com/mesh-dev/mesh/internal/names"
	"github.com/mesh-dev/mesh/proxy"
	"github.com/mesh-dev/mesh/proxy/iptables"
)

// FuzzAnnotations feeds arbitrary override annotations to Pod. Whatever
// they say, the pod must be injected (never blocked), every warning must
// name an annotation the pod has, and what the sidecar gets must be
// accepted by mesh-proxy's own flag parsers: a value the injector passes on
// but the proxy rejects would crash-loop the pod.
//
//	go test ./install/inject -run '^$' -fuzz FuzzAnnotations -fuzztime 1m
func FuzzAnnotations(f *testing.F) {
	// Arguments: opaque-ports, skip-inbound-ports, skip-outbound-ports,
	// skip-outbound-subnets, proxy-log-level, proxy-cpu-request,
	// proxy-memory-request, proxy-cpu-limit, proxy-memory-limit, one more
	// key (with the value "x") under config.mesh.dev/, and
	// default-inbound-policy (which only the controller reads; a bad one is
	// a warning).
	//
	// Everything valid, in canonical and odd spellings.
	f.Add("25,3306", "22", "443", "10.0.0.0/8", "debug", "100m", "64Mi", "1", "128Mi", "opaque-ports", "deny")
	f.Add(" 4000-4010 , 25 ", "1-65535", "", "fd00::/8, 10.0.0.1/8", "ERROR", "0.5", "1Gi", "2", "2Gi", "", " audit ")
	// Malformed ports: names, zero, reversed ranges, overflow, separators.
	f.Add("smtp", "0", "10-1", "", "info", "", "", "", "", "", "allow")
	f.Add("65536", "-1", "1--2", "", "", "", "", "", "", "", "all-unauthenticated,deny")
	f.Add("1;2", "1 2", ",,,", "", "", "", "", "", "", "", "Deny")
	// Malformed subnets and levels.
	f.Add("", "", "", "10.0.0.0", "trace", "", "", "", "", "", "\x00")
	f.Add("", "", "", "10.0.0.0/33,::/129", "DEBUG+2", "", "", "", "", "", "")
	// Quantities: negative, zero, fractional bytes, exponents, huge, NaN-ish.
	f.Add("", "", "", "", "", "-1", "100m", "0", "1e3", "", "")
	f.Add("", "", "", "", "", "1e308", "9999999999999999999999Ei", "1.5.5", "0.1", "", "")
	// Request above limit, annotated on both sides; then on one side only.
	f.Add("", "", "", "", "", "2", "1Gi", "1", "64Mi", "", "")
	f.Add("", "", "", "", "", "", "512Mi", "1m", "", "", "")
	// Unknown and misspelt keys, the policy's key with "x"; control
	// characters and UTF-8. Policies: valid, spaced, unknown, a list, the
	// wrong case, a NUL.
	f.Add("\x00", "\n", "ünïcødé", "", "warn", "", "", "", "", "proxy-memroy-limit", "")
	f.Add("", "", "", "", "", "", "", "", "", "default-inbound-policy", "")
	f.Add("", "", "", "", "", "", "", "", "", "é/~1", "cluster-authenticated")

	keys := []string{
		names.AnnotationOpaquePorts, names.AnnotationSkipInboundPorts, names.AnnotationSkipOutboundPorts,
		names.AnnotationSkipOutboundSubnets, names.AnnotationProxyLogLevel, names.AnnotationProxyCPURequest,
		names.AnnotationProxyMemoryRequest, names.AnnotationProxyCPULimit, names.AnnotationProxyMemoryLimit,
	}
	f.Fuzz(func(t *testing.T, opaque, skipIn, skipOut, subnets, level, cpuReq, memReq, cpuLim, memLim, extra, policy string) {
		ann := map[string]string{names.AnnotationInject: names.Enabled}
		for i, v := range []string{opaque, skipIn, skipOut, subnets, level, cpuReq, memReq, cpuLim, memLim} {
			if v != "" || i == 0 { // an empty opaque-ports means "none", worth fuzzing too
				ann[keys[i]] = v
			}
		}
		if extra != "" {
			ann[names.ConfigPrefix+extra] = "x"
		}
		if policy != "" {
			ann[names.AnnotationDefaultInboundPolicy] = policy
		}
		orig := newPod(ann)
		pod := orig.DeepCopy()
		res, err := Pod(pod, nil, testConfig)
		if err != nil || !res.Injected {
			t.Fatalf("Pod: %v, %+v", err, res)
		}
		if !slices.Equal(res.Warnings, messages(res.Details)) {
			t.Fatalf("Warnings %q and Details %+v disagree", res.Warnings, res.Details)
		}
		for _, d := range res.Details {
			_, ok := ann[d.Annotation]
			named := strings.Contains(d.Message, d.Annotation) || strings.Contains(d.Message, quote(d.Annotation))
			if !ok || !named {
				t.Errorf("warning %q is about %q, not an annotation of the pod", d.Message, d.Annotation)
			}
		}
		// The policy is warned about exactly when the controller would
		// ignore it, and stays on the pod for the controller to read.
		if v, ok := ann[names.AnnotationDefaultInboundPolicy]; ok {
			_, perr := names.ParseDefaultInboundPolicy(v)
			warned := slices.ContainsFunc(res.Details, func(w Warning) bool { return w.Annotation == names.AnnotationDefaultInboundPolicy })
			if warned != (perr != nil) {
				t.Errorf("policy %q: warned %v, parse error %v", v, warned, perr)
			}
			if pod.Annotations[names.AnnotationDefaultInboundPolicy] != v {
				t.Errorf("policy %q became %q on the pod", v, pod.Annotations[names.AnnotationDefaultInboundPolicy])
			}
		}
		checkProxyAccepts(t, pod)
		checkResources(t, pod.Spec.InitContainers[1].Resources)

		// The patch turns the submitted pod into the injected one.
		origJSON, _ := json.Marshal(orig)
		wantJSON, _ := json.Marshal(pod)
		patch, err := Patch(orig, pod)
		if err != nil {
			t.Fatal(err)
		}
		if diff := jsonDiff(t, wantJSON, applyPatch(t, origJSON, patch)); diff != "" {
			t.Errorf("patched pod (-want +got):\n%s", diff)
		}
		// And injecting again does nothing.
		if again, _ := Pod(pod, nil, testConfig); again.Skip != SkipAlreadyInjected {
			t.Errorf("second injection: %+v", again)
		}
	})
}

func messages(ws []Warning) []string {
	var out []string
	for _, w := range ws {
		out = append(out, w.Message)
	}
	return out
}

// checkProxyAccepts parses mesh-init's arguments with `mesh-proxy init`'s
// flags, and mesh-proxy's environment with the proxy's flags and envflag,
// as the binary does.
func checkProxyAccepts(t testing.TB, pod *corev1.Pod) {
	t.Helper()
	initC, proxyC := pod.Spec.InitContainers[0], pod.Spec.InitContainers[1]
	if initC.Name != names.InitContainerName || proxyC.Name != names.ProxyContainerName || initC.Args[0] != "init" {
		t.Fatalf("init containers %s, %s, args %q", initC.Name, proxyC.Name, initC.Args)
	}
	var ic iptables.Config
	fs := pflag.NewFlagSet("init", pflag.ContinueOnError)
	ic.AddFlags(fs)
	if err := fs.Parse(initC.Args[1:]); err != nil {
		t.Errorf("mesh-proxy init rejects %q: %v", initC.Args, err)
	}

	pc := proxy.DefaultConfig()
	fs = pflag.NewFlagSet("mesh-proxy", pflag.ContinueOnError)
	pc.AddFlags(fs)
	env := map[string]string{}
	for _, e := range proxyC.Env {
		env[e.Name] = e.Value
	}
	lookup := func(k string) (string, bool) { v, ok := env[k]; return v, ok }
	if err := envflag.Apply(fs, "MESH_PROXY_", lookup); err != nil {
		t.Errorf("mesh-proxy rejects its environment %q: %v", env, err)
	}
	if v, ok := env[envOpaquePorts]; ok && pc.OpaquePorts.String() != v {
		t.Errorf("opaque ports %q read back as %q", v, pc.OpaquePorts)
	}
	if v := env[envAccessLog]; string(pc.AccessLog) != v {
		t.Errorf("access log %q read back as %q", v, pc.AccessLog)
	}
	if v := env[envTracingCollector]; pc.TracingCollector != v {
		t.Errorf("tracing collector %q read back as %q", v, pc.TracingCollector)
	}
	if v, ok := env[envTracingSampleRate]; ok && strconv.FormatFloat(pc.TracingSampleRate, 'g', -1, 64) != v {
		t.Errorf("tracing sample rate %q read back as %v", v, pc.TracingSampleRate)
	}
	if err := pc.Validate(); err != nil {
		t.Errorf("mesh-proxy config: %v", err)
	}
}

// checkResources fails when a request is above its limit, which the API
// server would reject, blocking the pod.
func checkResources(t testing.TB, r corev1.ResourceRequirements) {
	t.Helper()
	for name, req := range r.Requests {
		if req.Sign() < 0 {
			t.Errorf("negative %s request %s", name, req.String())
		}
		if lim, ok := r.Limits[name]; ok && req.Cmp(lim) > 0 {
			t.Errorf("%s request %s above limit %s", name, req.String(), lim.String())
		}
	}
}
