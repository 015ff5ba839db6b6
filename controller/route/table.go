// Package route indexes the Gateway API routes (HTTPRoute, GRPCRoute)
// attached to Services under the GAMMA profile (GEP-1294, GEP-1426),
// resolves them into ordered route tables per Service port and client
// namespace, and computes the status a real implementation writes on them
// (docs/traffic.md section 2). It knows nothing of gRPC or protobuf: the
// destination server translates its tables (STYLE.md).
package route

import (
	"time"

	"k8s.io/apimachinery/pkg/types"
)

// Kinds of routes, as RouteRef.Kind spells them; KindService names the
// Service itself in a table's Default rule.
const (
	KindHTTPRoute = "HTTPRoute"
	KindGRPCRoute = "GRPCRoute"
	KindService   = "Service"
)

// ControllerName is the controllerName of the status entries mesh writes
// (docs/traffic.md 2.3).
const ControllerName = "mesh.dev/mesh-controller"

// ServicePort names a parent: one port of one Service.
type ServicePort struct {
	Service types.NamespacedName
	Port    int32
}

// RouteRef names a route object.
type RouteRef struct {
	Kind      string
	Namespace string
	Name      string
}

// Table is the routing of one Service port as seen from one client
// namespace. Rules are in precedence order: the first whose match holds
// wins. At most one of HTTP and GRPC is non-empty (GEP-1426: a GRPCRoute
// on a port refuses the HTTPRoutes on it). A Table is immutable once
// published.
type Table struct {
	Parent ServicePort
	HTTP   []Rule
	GRPC   []Rule
	// Default is the Service itself with the policy of its retry and
	// timeout annotations: what every request gets when HTTP and GRPC are
	// empty. It has no match, filter or backend (the Service's own
	// endpoints). nil when the Service has no such annotation.
	Default *Rule
	// FailureAccrual is what the Service's balancer annotations set; nil
	// for none.
	FailureAccrual *FailureAccrual
}

// Rule is one match of one route rule: the index splits each rule into
// one Rule per match so that the precedence the spec defines between
// matches holds across the whole table.
type Rule struct {
	Route RouteRef
	// Name is spec.rules[].name, or the rule's index in decimal.
	Name     string
	Match    Match
	Filters  []Filter
	Backends []Backend // weight > 0 only; none and no answering filter: 500
	Timeouts Timeouts
	// Retry is the policy of the retry annotations of the route, else of
	// the Service; nil when neither has any.
	Retry *Retry
}

// PathType is how Match.Path compares.
type PathType int

// Path match types; the zero value matches every path.
const (
	PathAny PathType = iota
	PathExact
	PathPrefix
	PathRegex
)

// Match is one request match; every field that is set must hold.
type Match struct {
	PathType PathType
	Path     string
	Method   string // "" for any
	Headers  []ValueMatch
	Query    []ValueMatch
	// GRPCService and GRPCMethod are a GRPCRoute's method match; ""
	// matches any. GRPCRegex makes both regular expressions.
	GRPCService string
	GRPCMethod  string
	GRPCRegex   bool
}

// ValueMatch is a header or query parameter match.
type ValueMatch struct {
	Name  string // lower case for headers; as written for query parameters
	Value string
	Regex bool
}

// FilterKind tells which field of a Filter is set.
type FilterKind int

// Filter kinds.
const (
	FilterRequestHeaders FilterKind = iota + 1
	FilterResponseHeaders
	FilterRedirect
	FilterRewrite
	// FilterFail answers locally with Fail's status: what an unresolved
	// ExtensionRef or an unresolvable backend turns into, as the spec asks
	// (httproute_types.go: such a filter "MUST NOT be skipped").
	FilterFail
	// FilterFault injects the HTTPFault an ExtensionRef filter names.
	FilterFault
)

// Filter is one filter of a rule or of a backend.
type Filter struct {
	Kind     FilterKind
	Headers  HeaderModifier // FilterRequestHeaders, FilterResponseHeaders
	Redirect Redirect       // FilterRedirect
	Rewrite  Rewrite        // FilterRewrite
	Fail     Fail           // FilterFail
	Fault    Fault          // FilterFault
}

// HeaderModifier is RequestHeaderModifier or ResponseHeaderModifier.
type HeaderModifier struct {
	Set, Add []Header
	Remove   []string
}

// Header is a header name and value.
type Header struct{ Name, Value string }

// PathModifierType is how a redirect or rewrite changes the path.
type PathModifierType int

// Path modifiers; the zero value keeps the path.
const (
	PathKeep PathModifierType = iota
	PathReplaceFull
	PathReplacePrefix
)

// PathModifier replaces the full path or the prefix that matched.
type PathModifier struct {
	Type  PathModifierType
	Value string
}

// Redirect is RequestRedirect; empty fields keep the request's.
type Redirect struct {
	Scheme     string
	Hostname   string
	Path       PathModifier
	Port       int32
	StatusCode int // 302 when the route does not say
}

// Rewrite is URLRewrite; empty fields keep the request's.
type Rewrite struct {
	Hostname string
	Path     PathModifier
}

// Fault is an HTTPFault of policy.mesh.dev as the proxies apply it
// (docs/traffic.md 3.7): each part nil when the HTTPFault has none.
type Fault struct {
	Abort *FaultAbort
	Delay *FaultDelay
}

// FaultAbort answers PerMillion of the requests with Status (200-599).
type FaultAbort struct {
	PerMillion uint32
	Status     int
}

// FaultDelay holds PerMillion of the requests for Duration.
type FaultDelay struct {
	PerMillion uint32
	Duration   time.Duration
}

// Fail is a local answer.
type Fail struct {
	Status  int
	Message string
}

// Backend is one weighted backend Service port. Filters are the
// backendRef's; an unresolvable backend keeps its weight and carries a
// Fail filter (the spec: requests it would take get 500).
type Backend struct {
	Service ServicePort
	Weight  uint32
	Filters []Filter
}

// Timeouts are a rule's timeouts; zero means none. Request is the rule's
// timeouts.request, else timeout.mesh.dev/request of the route, else of
// the Service; BackendRequest the rule's timeouts.backendRequest;
// Response and Idle are timeout.mesh.dev/response and idle, of the route
// else of the Service.
type Timeouts struct {
	Request        time.Duration
	BackendRequest time.Duration
	Response       time.Duration
	Idle           time.Duration
}

// Retry is a rule's retry policy (docs/traffic.md 3.4).
type Retry struct {
	// HTTP are the statuses retried, sorted, not overlapping.
	HTTP []StatusRange
	// GRPC are the gRPC status codes retried, sorted.
	GRPC []uint32
	// Limit is how many retries may follow the first attempt.
	Limit uint32
	// PerTryTimeout bounds each attempt; zero: none.
	PerTryTimeout time.Duration
	// MaxBodyBytes is the largest request body that is replayed.
	MaxBodyBytes uint32
	Budget       RetryBudget
}

// StatusRange is the HTTP statuses from Min to Max, both included.
type StatusRange struct{ Min, Max uint32 }

// RetryBudget bounds retries: Ratio tokens per original request plus
// MinPerSecond a second, each lasting TTL; a retry takes one.
type RetryBudget struct {
	Ratio        float64
	MinPerSecond uint32
	TTL          time.Duration
}

// FailureAccrual is how the balancer of a Service's endpoints ejects
// failing ones; zero fields keep the proxy's defaults.
type FailureAccrual struct {
	Disabled               bool
	MaxFailures            uint32
	MinBackoff, MaxBackoff time.Duration
}
