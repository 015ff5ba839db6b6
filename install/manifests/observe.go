package manifests

import (
	"errors"
	"strconv"

	"github.com/mesh-dev/mesh/install/inject"
	"github.com/mesh-dev/mesh/internal/names"
)

// Jaeger, deployed by `mesh install --with-jaeger` in the control-plane
// namespace: that namespace is never injected, so the proxies' spans about
// their own traffic never loop through a proxy of Jaeger's; it holds the
// restricted Pod Security Standard Jaeger's pod meets; and uninstall
// deletes it with the namespace.
const (
	// JaegerName names its Deployment and Service.
	JaegerName = "mesh-jaeger"
	// JaegerImageName and JaegerVersion make its image reference,
	// <registry>/jaeger:1.75.0, the one `make images` builds from
	// github.com/jaegertracing/jaeger v1.75.0 cmd/jaeger (Jaeger v2) with
	// its all-in-one configuration (install/image: JaegerName,
	// JaegerVersion): spans in memory, OTLP on 4317 (gRPC) and 4318
	// (HTTP), the query API and UI on 16686, health on 13133.
	JaegerImageName = "jaeger"
	JaegerVersion   = "1.75.0"
	// JaegerOTLPPort receives spans over OTLP/gRPC; JaegerQueryPort serves
	// the query API (/api/traces) and the UI.
	JaegerOTLPPort  = 4317
	JaegerQueryPort = 16686
)

// ProxyDefaults are the install's defaults for every injected proxy
// (`mesh install --proxy-log-level`, --proxy-cpu-request ...), written as
// config.mesh.dev/* annotations on the control-plane namespace, where the
// injector reads them; a namespace's or a pod's annotation of the same
// name wins. "" leaves the built-in default.
type ProxyDefaults struct {
	// LogLevel is debug, info, warn or error.
	LogLevel string
	// CPURequest, CPULimit, MemoryRequest and MemoryLimit are Kubernetes
	// quantities, like 100m or 64Mi.
	CPURequest, CPULimit, MemoryRequest, MemoryLimit string
}

// Tracing is where injected proxies send their spans.
type Tracing struct {
	// Collector is the OTLP/gRPC host:port every proxy exports to unless
	// its namespace or pod says otherwise; "" means none, or Jaeger's
	// with Jaeger set.
	Collector string
	// SampleRate is the share, 0 to 1, of requests arriving without a
	// sampling decision that proxies trace; "" leaves the proxy's default.
	SampleRate string
	// Jaeger deploys Jaeger in the control-plane namespace.
	Jaeger bool
}

// JaegerImage is Jaeger's image reference.
func (v Values) JaegerImage() string { return v.Registry + "/" + JaegerImageName + ":" + JaegerVersion }

// JaegerCollectorAddr is the OTLP/gRPC address of the Jaeger of a control
// plane in namespace ns: absolute, like names.DefaultDestinationAddr, so it
// resolves the same from every namespace.
func JaegerCollectorAddr(ns string) string {
	return JaegerName + "." + ns + ".svc.cluster.local.:" + strconv.Itoa(JaegerOTLPPort)
}

// ProxyAnnotations are the install's proxy defaults as the annotations of
// the control-plane namespace: what ProxyDefaults and Tracing set, the
// collector being Jaeger's when it is deployed and no other is given.
func (v Values) ProxyAnnotations() map[string]string {
	out := map[string]string{}
	set := func(key, value string) {
		if value != "" {
			out[key] = value
		}
	}
	set(names.AnnotationProxyLogLevel, v.Proxy.LogLevel)
	set(names.AnnotationProxyCPURequest, v.Proxy.CPURequest)
	set(names.AnnotationProxyCPULimit, v.Proxy.CPULimit)
	set(names.AnnotationProxyMemoryRequest, v.Proxy.MemoryRequest)
	set(names.AnnotationProxyMemoryLimit, v.Proxy.MemoryLimit)
	collector := v.Tracing.Collector
	if collector == "" && v.Tracing.Jaeger {
		collector = JaegerCollectorAddr(v.Namespace)
	}
	set(names.AnnotationTracingCollector, collector)
	set(names.AnnotationTracingSampleRate, v.Tracing.SampleRate)
	return out
}

// validateProxyDefaults reports the proxy defaults the injector would
// ignore: it reads them with the same parsers, and a value it ignores
// would be a warning on every pod.
func (v Values) validateProxyDefaults() error {
	var errs []error
	for _, w := range inject.CheckDefaults(v.ProxyAnnotations(), v.Namespace, true) {
		errs = append(errs, errors.New(w.Message))
	}
	return errors.Join(errs...)
}
