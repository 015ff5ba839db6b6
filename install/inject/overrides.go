package inject

import (
	"errors"
	"fmt"
	"maps"
	"net/netip"
	"slices"
	"strconv"
	"strings"
	"time"
	"unicode/utf8"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/resource"

	"github.com/mesh-dev/mesh/internal/names"

	// ports is the grammar mesh-proxy itself reads from --opaque-ports and
	// from `mesh-proxy init --skip-*-ports`; sharing it means the injector
	// never accepts a value that would crash-loop the proxy. It is a leaf
	// package of the standard library only, made for these annotations.
	"github.com/mesh-dev/mesh/internal/ports"
)

// overrides are a pod's config.mesh.dev/* annotations, validated, with the
// defaults in place of anything missing or malformed.
type overrides struct {
	opaquePorts  *ports.Set // nil: the proxy's own default list
	skipInbound  ports.Set
	skipOutbound ports.Set
	skipSubnets  []netip.Prefix
	logLevel     string
	resources    corev1.ResourceRequirements // of mesh-proxy
	limits       map[string]string           // mesh-proxy env name to value; nil: the proxy's defaults
	// The observability settings (names.AnnotationAccessLog and the
	// tracing ones); "" leaves the proxy's default, off.
	accessLog         string
	tracingCollector  string
	tracingSampleRate string
}

// limitParser carries a limit annotation to mesh-proxy's env as it is,
// once check accepts it.
func limitParser(env, accepted string, check func(string) error) parser {
	return parser{accepted, func(o *overrides, _ map[quantityKey]resource.Quantity, v string) error {
		if err := check(v); err != nil {
			return err
		}
		limits := maps.Clone(o.limits) // o may be restored on a later error
		if limits == nil {
			limits = map[string]string{}
		}
		limits[env] = strings.TrimSpace(v)
		o.limits = limits
		return nil
	}}
}

func checkCount(v string) error {
	n, err := strconv.Atoi(strings.TrimSpace(v))
	if err == nil && n < 0 {
		err = errors.New("negative")
	}
	return err
}

func checkBool(v string) error {
	_, err := strconv.ParseBool(strings.TrimSpace(v))
	return err
}

func checkDuration(v string) error {
	d, err := time.ParseDuration(strings.TrimSpace(v))
	if err == nil && d < 0 {
		err = errors.New("negative")
	}
	return err
}

// quantityKey is which of the four resource annotations a value came from.
type quantityKey struct {
	name  corev1.ResourceName
	limit bool
}

// parser reads one annotation's value into o; accepted says in words what
// it takes, for the warning when it fails.
type parser struct {
	accepted string
	parse    func(o *overrides, q map[quantityKey]resource.Quantity, value string) error
}

const (
	portsAccepted     = "ports and ranges separated by commas, like 25,3306,4000-4010"
	logLevelsAccepted = "debug, info, warn or error"
	cpuAccepted       = "a positive CPU quantity, like 100m or 1"
	memoryAccepted    = "a positive whole number of bytes, like 64Mi or 1Gi"
)

var parsers = map[string]parser{
	names.AnnotationOpaquePorts: {portsAccepted, func(o *overrides, _ map[quantityKey]resource.Quantity, v string) error {
		s, err := ports.Parse(v)
		o.opaquePorts = &s
		return err
	}},
	names.AnnotationSkipInboundPorts: {portsAccepted, func(o *overrides, _ map[quantityKey]resource.Quantity, v string) error {
		var err error
		o.skipInbound, err = ports.Parse(v)
		return err
	}},
	names.AnnotationSkipOutboundPorts: {portsAccepted, func(o *overrides, _ map[quantityKey]resource.Quantity, v string) error {
		var err error
		o.skipOutbound, err = ports.Parse(v)
		return err
	}},
	names.AnnotationSkipOutboundSubnets: {"CIDRs separated by commas, like 10.0.0.0/8,fd00::/8", func(o *overrides, _ map[quantityKey]resource.Quantity, v string) error {
		var err error
		o.skipSubnets, err = parseSubnets(v)
		return err
	}},
	names.AnnotationProxyLogLevel: {logLevelsAccepted, func(o *overrides, _ map[quantityKey]resource.Quantity, v string) error {
		level, ok := parseLogLevel(v)
		if !ok {
			return errors.New("unknown level")
		}
		o.logLevel = level
		return nil
	}},
	names.AnnotationDefaultInboundPolicy: {names.DefaultInboundPoliciesAccepted(), func(_ *overrides, _ map[quantityKey]resource.Quantity, v string) error {
		// Nothing to carry: the controller reads the annotation itself.
		_, err := names.ParseDefaultInboundPolicy(v)
		if err != nil {
			return errors.New("unknown policy")
		}
		return nil
	}},
	names.AnnotationAccessLog: {"apache or json", func(o *overrides, _ map[quantityKey]resource.Quantity, v string) error {
		f, err := names.ParseAccessLog(v)
		if err != nil {
			return errors.New("unknown format")
		}
		o.accessLog = f
		return nil
	}},
	names.AnnotationTracingCollector: {"the host:port of an OTLP/gRPC collector, like jaeger.mesh-system.svc.cluster.local:4317", func(o *overrides, _ map[quantityKey]resource.Quantity, v string) error {
		addr, err := names.ParseTracingCollector(v)
		if err != nil {
			return errors.New("not host:port")
		}
		o.tracingCollector = addr
		return nil
	}},
	names.AnnotationTracingSampleRate: {"a number from 0 to 1, like 0.01", func(o *overrides, _ map[quantityKey]resource.Quantity, v string) error {
		rate, err := names.ParseTracingSampleRate(v)
		if err != nil {
			return errors.New("not a rate")
		}
		o.tracingSampleRate = strconv.FormatFloat(rate, 'g', -1, 64)
		return nil
	}},
	names.AnnotationProxyCPURequest:    quantityParser(quantityKey{corev1.ResourceCPU, false}),
	names.AnnotationProxyCPULimit:      quantityParser(quantityKey{corev1.ResourceCPU, true}),
	names.AnnotationProxyMemoryRequest: quantityParser(quantityKey{corev1.ResourceMemory, false}),
	names.AnnotationProxyMemoryLimit:   quantityParser(quantityKey{corev1.ResourceMemory, true}),

	names.AnnotationProxyMaxConnections: limitParser("MESH_PROXY_MAX_CONNECTIONS",
		"a whole number of connections per side, 0 for unlimited", checkCount),
	names.AnnotationProxyMaxConnsPerHost: limitParser("MESH_PROXY_MAX_CONNS_PER_HOST",
		"a whole number of connections, 0 for unlimited", checkCount),
	names.AnnotationProxyOpaqueIdleTimeout: limitParser("MESH_PROXY_OPAQUE_IDLE_TIMEOUT",
		"a duration like 30m or 2h, 0 for none", checkDuration),
	names.AnnotationProxyHTTP1BodyIdleTimeout: limitParser("MESH_PROXY_HTTP1_BODY_IDLE_TIMEOUT",
		"a duration like 30s or 10m, 0 for none", checkDuration),
	names.AnnotationProxyMaxProcs: limitParser(envMaxProcs,
		"a whole number of threads, 0 for the proxy's CPU limit rounded up (1 without one)", checkCount),
	names.AnnotationProxyAdminProfiling: limitParser("MESH_PROXY_ADMIN_PROFILING",
		"true or false", checkBool),
}

// ConfigAnnotations returns the config.mesh.dev/* annotations this version
// understands, sorted.
func ConfigAnnotations() []string {
	return slices.Sorted(maps.Keys(parsers))
}

// defaultAnnotations are the overrides a namespace may set for its pods,
// and the install for every pod (Config.Defaults): the pod's own value
// wins over its namespace's, which wins over the install's. They are
// those that only tell the proxy how to run. The others stay per pod:
// the controller reads opaque-ports from the pod itself, and a port or
// subnet skipped for a whole namespace is rarely what was meant.
var defaultAnnotations = []string{
	names.AnnotationAccessLog,
	names.AnnotationProxyCPULimit,
	names.AnnotationProxyCPURequest,
	names.AnnotationProxyLogLevel,
	names.AnnotationProxyMemoryLimit,
	names.AnnotationProxyMemoryRequest,
	names.AnnotationTracingCollector,
	names.AnnotationTracingSampleRate,
}

// DefaultAnnotations returns the config.mesh.dev/* annotations a
// namespace may set as its pods' defaults, and `mesh install` as every
// pod's, sorted.
func DefaultAnnotations() []string { return slices.Clone(defaultAnnotations) }

// scope is where a layer of annotations comes from.
type scope int

const (
	scopePod scope = iota
	scopeNamespace
	scopeInstall
)

// layer is one set of annotations parseOverrides reads: the install's
// defaults, the namespace's, the pod's, applied in that order.
type layer struct {
	scope       scope
	annotations map[string]string
	// whose names the owner in warnings ("" for the pod) and fallback
	// what applies instead of a value it ignores.
	whose, fallback string
}

func podLayers(meta map[string]string, ns *corev1.Namespace, cfg Config) []layer {
	return []layer{
		{scope: scopeInstall, annotations: cfg.Defaults,
			whose:    " in the install's defaults (namespace " + cfg.ControlPlaneNamespace + ")",
			fallback: "the built-in default"},
		{scope: scopeNamespace, annotations: ns.Annotations, whose: " on namespace " + ns.Name, fallback: "the install's default"},
		{scope: scopePod, annotations: meta, fallback: "the default"},
	}
}

// takes reports whether a layer of scope s reads key.
func (s scope) takes(key string) bool {
	switch s {
	case scopeInstall:
		return slices.Contains(defaultAnnotations, key)
	case scopeNamespace:
		// The controller reads a namespace's default inbound policy; the
		// injector checks it, so pod creation is where a mistake is heard.
		return slices.Contains(defaultAnnotations, key) || key == names.AnnotationDefaultInboundPolicy
	}
	return true
}

// parseOverrides reads the config.mesh.dev/* annotations of layers, the
// least specific first, warning in res about each one it cannot use: a
// value it ignores leaves the one of the layer below. Keys are read in
// sorted order, and the pod's warnings come before its namespace's and
// the install's, so warnings come out the same every time.
func parseOverrides(layers []layer, cfg Config, res *Result) overrides {
	o := overrides{logLevel: cfg.ProxyLogLevel}
	resources := cfg.ProxyResources
	warned := make([]Result, len(layers))
	for i, l := range layers {
		lres := &warned[i]
		quantities := map[quantityKey]resource.Quantity{}
		for _, key := range slices.Sorted(maps.Keys(l.annotations)) {
			if !strings.HasPrefix(key, names.ConfigPrefix) {
				continue
			}
			value := l.annotations[key]
			p, known := parsers[key]
			switch {
			case !known:
				lres.warn(key, "annotation %s%s is unknown and ignored; %s", quote(key), l.whose, suggest(key))
			case !l.scope.takes(key):
				lres.warn(key, "annotation %s%s is ignored: it is read on pods only; a namespace, and the install, may set %s",
					key, l.whose, strings.Join(trimPrefix(defaultAnnotations), ", "))
			default:
				saved := o
				if err := p.parse(&o, quantities, value); err != nil {
					o = saved
					lres.warn(key, "annotation %s=%s%s is ignored and %s used: %v; want %s", key, quote(value), l.whose, l.fallback, err, p.accepted)
				}
			}
		}
		resources = proxyResources(resources, quantities, l, lres)
	}
	for _, w := range slices.Backward(warned) {
		for _, d := range w.Details {
			res.warn(d.Annotation, "%s", d.Message)
		}
	}
	o.resources = resources
	return o
}

// CheckDefaults returns what the injector would warn about in
// annotations set on namespace (the control-plane namespace when
// install), as its pods' defaults or, for install, every pod's: for
// `mesh check` and `mesh install` to say before any pod is created.
func CheckDefaults(annotations map[string]string, namespace string, install bool) []Warning {
	l := layer{scope: scopeNamespace, annotations: annotations, whose: " on namespace " + namespace, fallback: "the install's default"}
	if install {
		l = layer{scope: scopeInstall, annotations: annotations,
			whose: " in the install's defaults (namespace " + namespace + ")", fallback: "the built-in default"}
	}
	var res Result
	parseOverrides([]layer{l}, Config{}.withDefaults(), &res)
	return res.Details
}

func trimPrefix(keys []string) []string {
	out := make([]string, len(keys))
	for i, k := range keys {
		out[i] = strings.TrimPrefix(k, names.ConfigPrefix)
	}
	return out
}

func quantityParser(k quantityKey) parser {
	accepted := cpuAccepted
	if k.name == corev1.ResourceMemory {
		accepted = memoryAccepted
	}
	return parser{accepted, func(_ *overrides, q map[quantityKey]resource.Quantity, v string) error {
		quantity, err := resource.ParseQuantity(strings.TrimSpace(v))
		if err != nil {
			return errors.New("not a quantity")
		}
		if quantity.Sign() <= 0 {
			return errors.New("not positive")
		}
		if k.name == corev1.ResourceMemory && quantity.MilliValue()%1000 != 0 {
			return errors.New("a fraction of a byte")
		}
		q[k] = quantity
		return nil
	}}
}

// proxyResources puts the quantities of layer l over the defaults, which
// are the built-in ones with the layers below l's already applied. A
// default gives way to a value of l it conflicts with (a request of 128Mi
// raises the default limit of 64Mi), as Kubernetes defaults a missing
// request to its limit; two values of l that conflict are both ignored.
func proxyResources(defaults corev1.ResourceRequirements, q map[quantityKey]resource.Quantity, l layer, res *Result) corev1.ResourceRequirements {
	r := *defaults.DeepCopy()
	set := func(l *corev1.ResourceList, name corev1.ResourceName, v resource.Quantity) {
		if *l == nil {
			*l = corev1.ResourceList{}
		}
		(*l)[name] = v
	}
	for _, name := range []corev1.ResourceName{corev1.ResourceCPU, corev1.ResourceMemory} {
		req, hasReq := q[quantityKey{name, false}]
		lim, hasLim := q[quantityKey{name, true}]
		if hasReq && hasLim && req.Cmp(lim) > 0 {
			reqKey, limKey := resourceAnnotation(name, false), resourceAnnotation(name, true)
			res.warn(reqKey, "annotations %s=%s and %s=%s%s are ignored and the defaults used: the request is above the limit",
				reqKey, quote(req.String()), limKey, quote(lim.String()), l.whose)
			continue
		}
		if hasReq {
			set(&r.Requests, name, req)
			if def, ok := r.Limits[name]; ok && !hasLim && req.Cmp(def) > 0 {
				r.Limits[name] = req
			}
		}
		if hasLim {
			set(&r.Limits, name, lim)
			if def, ok := r.Requests[name]; ok && !hasReq && def.Cmp(lim) > 0 {
				r.Requests[name] = lim
			}
		}
	}
	return r
}

func resourceAnnotation(name corev1.ResourceName, limit bool) string {
	kind := "request"
	if limit {
		kind = "limit"
	}
	return fmt.Sprintf("%sproxy-%s-%s", names.ConfigPrefix, name, kind)
}

// parseSubnets reads "10.0.0.0/8, fd00::/8" as `mesh-proxy init
// --skip-outbound-subnets` does.
func parseSubnets(s string) ([]netip.Prefix, error) {
	var out []netip.Prefix
	for _, f := range strings.Split(s, ",") {
		if f = strings.TrimSpace(f); f == "" {
			continue
		}
		p, err := netip.ParsePrefix(f)
		if err != nil {
			return nil, fmt.Errorf("subnet %s: %w", quote(f), err)
		}
		out = append(out, p.Masked())
	}
	return out, nil
}

func parseLogLevel(s string) (string, bool) {
	switch l := strings.ToLower(strings.TrimSpace(s)); l {
	case "debug", "info", "warn", "error":
		return l, true
	}
	return "", false
}

// suggest names the known key closest to a misspelt one, or lists them all.
func suggest(key string) string {
	best, bestDist := "", 4 // more edits than this is not a typo
	for _, k := range ConfigAnnotations() {
		if d := editDistance(key, k); d < bestDist {
			best, bestDist = k, d
		}
	}
	if best != "" {
		return "did you mean " + best + "?"
	}
	known := ConfigAnnotations()
	for i, k := range known {
		known[i] = strings.TrimPrefix(k, names.ConfigPrefix)
	}
	return "known: " + strings.Join(known, ", ")
}

// editDistance is the Levenshtein distance of a and b, in bytes.
func editDistance(a, b string) int {
	prev, cur := make([]int, len(b)+1), make([]int, len(b)+1)
	for j := range prev {
		prev[j] = j
	}
	for i := 1; i <= len(a); i++ {
		cur[0] = i
		for j := 1; j <= len(b); j++ {
			cost := 1
			if a[i-1] == b[j-1] {
				cost = 0
			}
			cur[j] = min(prev[j]+1, cur[j-1]+1, prev[j-1]+cost)
		}
		prev, cur = cur, prev
	}
	return prev[len(b)]
}

// quote quotes a value for a warning, cut to a length kubectl shows whole:
// the value is the user's and can be as long as an annotation may be.
func quote(s string) string {
	const max = 64
	if utf8.RuneCountInString(s) <= max {
		return strconv.Quote(s)
	}
	r := []rune(s)
	return strconv.Quote(string(r[:max])) + "..."
}
