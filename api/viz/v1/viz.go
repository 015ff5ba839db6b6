// Package vizv1 is the viz API: what mesh-viz, the live-stats Deployment,
// answers, and what `mesh viz` and the dashboard read. It is JSON over HTTP
// (not gRPC) because a browser reads it directly; these types are the
// contract, shared by the server and the CLI.
//
// Every request is a GET. Errors are answered with a 4xx or 5xx status and
// an Error body. Durations in query parameters use Go's syntax ("1m",
// "30s"); resources use kubectl's ("deploy/web", "deployment/web",
// "po/web-1", "svc/web", "ns/shop").
package vizv1

import "time"

// Port is the viz API's port on mesh-viz, on the pod's loopback only.
// `mesh viz` reaches it with a port-forward, so the cluster's RBAC on
// pods/portforward in the control plane's namespace is what guards it.
const Port = 8085

// Paths of the API.
const (
	// PathStat answers a StatList. Query: kind (deploy|pod|svc|ns,
	// required), namespace ("" with kind=ns: every namespace), name
	// (optional: one resource), from or to (optional, at most one of
	// them, KIND/NAME in the same namespace: from a deploy or pod, to a
	// deploy or svc; proxies label outbound traffic by workload and
	// service, not by pod), window (default 1m, at most the retention).
	PathStat = "/api/v1/stat"
	// PathEdges answers an EdgeList. Query: namespace ("" for all), window.
	PathEdges = "/api/v1/edges"
	// PathRoutes answers a RouteList: the requests a resource's pods
	// sent, per route rule they matched and Service they went to, as
	// their own proxies counted them (the route_* labels,
	// docs/metrics.md): the client's view, as Linkerd's `linkerd viz
	// routes` shows it. Query: kind (deploy|pod|ns, also sts, ds, job and
	// rs; required; not svc, which sends nothing: ask for its clients),
	// namespace ("": every namespace), name (optional: one resource),
	// window (default 1m, at most the retention).
	PathRoutes = "/api/v1/routes"
	// PathSeries answers a Series for one resource. Query: kind,
	// namespace, name (all required), window (default 10m), step
	// (default 10s, at least the scrape interval).
	PathSeries = "/api/v1/series"
	// PathTap is the path of tap's query on mesh-viz's TapHandler, which
	// only the tap API (tap.mesh.dev, through the Kubernetes API server and
	// a SubjectAccessReview) calls; the viz API on Port does not serve it.
	// It streams TapEvents as newline-delimited JSON, one object per
	// line, until the client goes away. Query: namespace, resource
	// (KIND/NAME, required; kinds deploy, pod, ns), and the optional
	// filters method, authority, path (a prefix), and max_rps (events per
	// second per proxy, default 100). A failure after the stream started
	// is sent as a last TapEvent of type "error".
	PathTap = "/api/v1/tap"
)

// Error is the body of every failed answer.
type Error struct {
	Error string `json:"error"`
}

// Resource names a Kubernetes object a row is about. Kind is lower case
// and singular: "deployment", "statefulset", "daemonset", "job", "pod",
// "service", "namespace".
type Resource struct {
	Kind      string `json:"kind"`
	Namespace string `json:"namespace,omitempty"`
	Name      string `json:"name"`
}

// Stats are the traffic figures of one row over a window. Pointers are nil
// when there is nothing to compute them from (no request in the window).
//
// Without from/to, a workload's or pod's stats are its inbound traffic as
// its own proxies saw it, a service's the outbound traffic of every meshed
// client to it, a namespace's the inbound traffic of its pods. With from
// (to), they are the outbound traffic of the from (the row's) pods to the
// row (the to resource).
type Stats struct {
	// Requests is the number of responses in the window; Successes those
	// classified as success (not 5xx, gRPC status OK).
	Requests  uint64 `json:"requests"`
	Successes uint64 `json:"successes"`
	// SuccessRate is Successes/Requests, from 0 to 1.
	SuccessRate *float64 `json:"successRate"`
	// RPS is Requests per second of the window.
	RPS float64 `json:"rps"`
	// Latency percentiles in milliseconds, interpolated in the proxies'
	// histogram buckets.
	LatencyP50 *float64 `json:"latencyP50Ms"`
	LatencyP95 *float64 `json:"latencyP95Ms"`
	LatencyP99 *float64 `json:"latencyP99Ms"`
	// TCPConnections is the number of connections open at the last scrape.
	TCPConnections uint64 `json:"tcpConnections"`
	// ReadBytesPerSec and WriteBytesPerSec are the bytes the proxies read
	// from and wrote to their clients per second over closed connections.
	ReadBytesPerSec  float64 `json:"readBytesPerSec"`
	WriteBytesPerSec float64 `json:"writeBytesPerSec"`
	// TotalRequests is the sum of mesh_proxy_http_responses_total over the
	// same series as the proxies exported it at their last scrape: the
	// number a Prometheus scraping the same proxies would sum to.
	TotalRequests uint64 `json:"totalRequests"`
	// Denied is the number of inbound HTTP requests plus TCP connections
	// the row's proxies refused by authorization policy in the window
	// (decision="deny" of mesh_proxy_inbound_http_authz_total, counted
	// per request, and of mesh_proxy_inbound_tcp_authz_total, per
	// connection; an audit policy's would-be denials are not counted),
	// and DeniedPerSec that per second of the window. Both are absent
	// (nil) where the figures are not the inbound traffic of the row's own
	// pods, which alone count denials: for services, with from or to, and
	// in edges and routes, as the proxies count denials per pod, not per
	// client workload or authority.
	Denied       *uint64  `json:"denied,omitempty"`
	DeniedPerSec *float64 `json:"deniedPerSec,omitempty"`
}

// StatRow is one resource of a StatList.
type StatRow struct {
	Resource Resource `json:"resource"`
	// MeshedPods of TotalPods run a mesh proxy (for a service: its
	// endpoints' pods).
	MeshedPods int `json:"meshedPods"`
	TotalPods  int `json:"totalPods"`
	Stats
	// Identities are the SPIFFE IDs of the row's meshed pods.
	Identities []string `json:"identities,omitempty"`
}

// StatList answers PathStat.
type StatList struct {
	// Window is the window the stats cover, as asked, and Collected the
	// time of the newest scrape they include.
	Window    string    `json:"window"`
	Collected time.Time `json:"collected"`
	Rows      []StatRow `json:"rows"`
}

// Edge is traffic from one workload to another, from the client proxies'
// outbound series. Src is always meshed; Dst may not be (DstID "").
type Edge struct {
	Src Resource `json:"src"`
	Dst Resource `json:"dst"`
	// SrcID is the SPIFFE ID of the client's pods; DstID the one the
	// server proved over mesh TLS, "" in plain text.
	SrcID string `json:"srcId"`
	DstID string `json:"dstId"`
	// MTLS is true when every request of the edge in the window went over
	// mesh TLS.
	MTLS bool `json:"mtls"`
	Stats
}

// EdgeList answers PathEdges.
type EdgeList struct {
	Window    string    `json:"window"`
	Collected time.Time `json:"collected"`
	Edges     []Edge    `json:"edges"`
}

// Kinds of Route.Route: the Gateway API's HTTPRoute and GRPCRoute, lower
// case like every Resource kind.
const (
	KindHTTPRoute = "httproute"
	KindGRPCRoute = "grpcroute"
)

// Route is the traffic of one route rule that a resource's pods sent
// requests through, to one Service, as their own proxies counted it. Its
// Stats are HTTP figures only: TCP series carry no route (docs/metrics.md),
// so TCPConnections and the byte rates are 0.
type Route struct {
	// Resource is the workload, pod or namespace of the pods.
	Resource Resource `json:"resource"`
	// Route is the HTTPRoute or GRPCRoute the requests matched (Kind
	// KindHTTPRoute or KindGRPCRoute); nil for those that matched none,
	// which `mesh viz routes` shows as [default]: sent to a Service with
	// no route, or with only its own retry and timeout policy. A proxy
	// keeps 100 values of each route label; later ones are counted under
	// "other", in Kind, Namespace and Name alike when its label sets
	// overflowed.
	Route *Resource `json:"route,omitempty"`
	// Rule is the rule's name (spec.rules[].name, else its index, "0"):
	// "" when Route is nil.
	Rule string `json:"rule,omitempty"`
	// Parent is the Service (Kind "service") the requests were sent to,
	// the route's parent, which viz finds from its Service cache: the
	// Service of a Service's own rule, else the one whose cluster IP the
	// requests' target was, else, without a route, the one their
	// endpoint serves, else the one their authority names in the
	// cluster's DNS (requests the proxy answered itself name no
	// target). nil when none is known: an address outside the mesh's
	// Services, or labels the proxy folded into "other".
	Parent *Resource `json:"parent,omitempty"`
	Stats
}

// RouteList answers PathRoutes, ordered by resource, parent, route (nil
// last) and rule. A route without a request in the window is left out.
type RouteList struct {
	Window    string    `json:"window"`
	Collected time.Time `json:"collected"`
	Routes    []Route   `json:"routes"`
}

// Point is one step of a Series: the stats of the step ending at Time.
type Point struct {
	Time time.Time `json:"time"`
	Stats
}

// Series answers PathSeries: oldest point first, one per step.
type Series struct {
	Resource Resource `json:"resource"`
	Step     string   `json:"step"`
	Points   []Point  `json:"points"`
}

// TapEvent is one request or response seen by a proxy. A request and its
// response share ID.
type TapEvent struct {
	// Type is "request", "response" or "error" (then only Error is set).
	Type  string `json:"type"`
	Error string `json:"error,omitempty"`

	ID   string    `json:"id"`
	Time time.Time `json:"time"`
	// Pod is the pod whose proxy saw the event, in Namespace; Direction
	// "inbound" or "outbound" as that proxy saw it.
	Namespace string `json:"namespace"`
	Pod       string `json:"pod"`
	Direction string `json:"direction"`
	// Src and Dst are ip:port of the client and the server.
	Src string `json:"src"`
	Dst string `json:"dst"`
	// DstWorkload is KIND/NAME of the server, when the proxy knows it
	// (outbound to a meshed destination).
	DstWorkload string `json:"dstWorkload,omitempty"`
	// ClientID and ServerID are SPIFFE IDs proven over mesh TLS, "" when
	// the hop was plain text.
	ClientID string `json:"clientId,omitempty"`
	ServerID string `json:"serverId,omitempty"`

	Method    string `json:"method"`
	Scheme    string `json:"scheme,omitempty"`
	Authority string `json:"authority"`
	Path      string `json:"path"`
	// TraceID is the W3C trace ID (32 hex digits) of the request's trace
	// when the proxy sampled it, so its spans are in the tracing backend
	// (Jaeger's /trace/<TraceID>); "" otherwise.
	TraceID string `json:"traceId,omitempty"`

	// Response only: HTTP status, gRPC status when the response carried
	// one, time from the request to the response headers, and whether
	// the proxy counted it a success.
	Status     int      `json:"status,omitempty"`
	GRPCStatus *int     `json:"grpcStatus,omitempty"`
	LatencyMs  *float64 `json:"latencyMs,omitempty"`
	Success    *bool    `json:"success,omitempty"`
}
