// Package route is the proxy's side of the Gateway API routes (GAMMA): it
// compiles the RouteTable the controller streams for a Service port
// (api/destination/v1, docs/traffic.md 2.4) into a matcher, and is the
// only place that knows match semantics. The HTTP paths (proxy/h1,
// proxy/h2) ask a Table for the rule of each request, then apply the
// rule's filters to the heads they write, and pick one of its backends.
//
// The controller sends rules already in the spec's precedence order, so
// the first rule whose match holds wins; compiling only makes the lookup
// cheap. A Table is immutable once compiled: the discovery cache swaps
// the whole table when a new one arrives.
package route

import (
	"time"
)

// Request is what a rule matches on, implemented by each HTTP path over
// the head it already parsed, so that matching copies nothing.
type Request interface {
	// Method is the request method, "GET".
	Method() string
	// Path is the request target's path and query as the client sent
	// them: "/a/b?x=1". For HTTP/2, :path.
	Path() string
	// Header returns the value of the header field name (lower case),
	// the values of repeated fields joined with ", ", and whether it is
	// present at all.
	Header(name string) (string, bool)
}

// Table is one compiled RouteTable. It is immutable, and safe for
// concurrent use.
type Table struct {
	version uint64
	http    []*Rule
	grpc    []*Rule
	// httpIndex and grpcIndex find the matches of http and grpc that a
	// path can hold (match.go); nil when the list is empty.
	httpIndex, grpcIndex *index
	// def is the Service's own rule, which Match gives every request of a
	// table without http and grpc rules; nil: none.
	def     *Rule
	accrual FailureAccrual
}

// Version is the controller's version of the table, for logs and the
// admin pages.
func (t *Table) Version() uint64 { return t.version }

// Empty reports whether the table has no rule at all, not even a default
// one: the Service has no route and no retry or timeout policy, and
// requests go to it as if there were no table. An empty table may still
// carry a FailureAccrual.
func (t *Table) Empty() bool {
	return t == nil || len(t.http) == 0 && len(t.grpc) == 0 && t.def == nil
}

// Default is the Service's own rule: its retry and timeout policy, with
// one backend of empty Authority (the target's own endpoints). Match
// returns it for every request of a table with no http and no grpc
// rules; a table with rules has it too, for the admin pages, but a
// request no rule matches still gets no match. nil: the Service has no
// such policy (and for a nil table).
func (t *Table) Default() *Rule {
	if t == nil {
		return nil
	}
	return t.def
}

// FailureAccrual is how the balancer of the Service's endpoints ejects
// failing ones; the zero value (and a nil table's) keeps the balancer's
// defaults.
func (t *Table) FailureAccrual() FailureAccrual {
	if t == nil {
		return FailureAccrual{}
	}
	return t.accrual
}

// HTTPRules and GRPCRules are the table's rules in the controller's
// order, for the admin pages; callers must not modify them.
func (t *Table) HTTPRules() []*Rule { return t.http }

// GRPCRules: see HTTPRules.
func (t *Table) GRPCRules() []*Rule { return t.grpc }

// Match is the rule a request matched.
type Match struct {
	Rule *Rule
	// Prefix is the path prefix the rule's match held on, as the table
	// gave it ("/v2" or "/v2/"), which ReplacePrefixMatch replaces; ""
	// for other matches, which Location and Apply take as the root, like
	// "/".
	Prefix string
}

// RouteRef names the HTTPRoute or GRPCRoute a rule came from.
type RouteRef struct {
	Kind      string // "HTTPRoute" or "GRPCRoute"
	Namespace string
	Name      string
}

// Rule is one compiled rule: what to do with a request it matched.
type Rule struct {
	Route RouteRef
	// Name is spec.rules[].name, or the rule's index ("3").
	Name string

	// RequestHeaders and ResponseHeaders modify the heads going to the
	// backend and coming back to the client; nil when the rule has none.
	RequestHeaders  *HeaderModifier
	ResponseHeaders *HeaderModifier
	// Redirect, when set, answers every request of the rule itself.
	Redirect *Redirect
	// Rewrite changes the request before it is forwarded.
	Rewrite *Rewrite
	// Fail, when set, answers every request of the rule with its status:
	// an unresolved filter (the spec's 500), or one this proxy does not
	// know or cannot apply as given. It comes before Redirect.
	Fail *Fail
	// Fault, when set, is the HTTPFault the rule names (docs/traffic.md
	// 3.7): the HTTP paths call Fault.Draw for each request the rule
	// takes, after Fail and before everything else.
	Fault *Fault

	// RequestTimeout bounds the whole exchange from the request's
	// arrival, retries included (timeouts.request, else
	// timeout.mesh.dev/request); BackendRequestTimeout one attempt
	// (timeouts.backendRequest). Zero means none.
	RequestTimeout, BackendRequestTimeout time.Duration
	// ResponseTimeout bounds the wait for the response head from the end
	// of the request body (timeout.mesh.dev/response); IdleTimeout ends
	// an exchange that moved no byte either way for that long
	// (timeout.mesh.dev/idle). Zero means none. docs/traffic.md 3.3.
	ResponseTimeout, IdleTimeout time.Duration
	// Retry says which failed attempts are tried again; nil: none but
	// those that provably reached no application (docs/traffic.md 3.5).
	Retry *RetryPolicy

	// Backends are the rule's weighted backends, with weights above 0;
	// none (and no Redirect or Fail) makes the rule answer 500.
	Backends []Backend
}

// Backend is one weighted backendRef: a Service port, resolved by the
// discovery cache like any authority.
type Backend struct {
	// Authority is "name.namespace.svc.<cluster domain>:port"; it may be
	// empty when Fail is set.
	Authority string
	Weight    uint32
	// RequestHeaders are the backendRef's own request header filter,
	// applied after the rule's; nil when it has none.
	RequestHeaders *HeaderModifier
	// Fail, when set, answers every request this backend takes: an
	// invalid backendRef (a Service that does not exist) keeps its
	// weight and gets the spec's 500, and so does one with a filter this
	// proxy does not apply.
	Fail *Fail
}

// HeaderModifier is a RequestHeaderModifier or ResponseHeaderModifier:
// Set replaces every field of a name, Add appends one, Remove deletes
// every field of a name. Names are lower case. Apply applies it.
type HeaderModifier struct {
	Set    []Header
	Add    []Header
	Remove []string
}

// Header is one header field; Name is lower case.
type Header struct {
	Name, Value string
}

// Redirect is a RequestRedirect filter; empty fields keep the request's.
type Redirect struct {
	Scheme   string
	Hostname string
	Port     uint32
	// Path replaces the whole path (FullPath) or the matched prefix
	// (PrefixPath); nil keeps the request's path.
	Path       *PathModifier
	StatusCode int
}

// Rewrite is a URLRewrite filter; empty fields keep the request's.
type Rewrite struct {
	Hostname string
	Path     *PathModifier
}

// PathModifier is a ReplaceFullPath (Full set) or ReplacePrefixMatch
// (Prefix set, possibly "/" or "").
type PathModifier struct {
	Full     string
	Prefix   string
	IsPrefix bool
}

// Fail is a local answer for a rule the controller could not resolve.
type Fail struct {
	Status  int
	Message string
}

// HeaderEditor edits one head's header fields; each HTTP path implements
// it over its own representation. Names are lower case; the edits apply
// to every field of the name whatever its case on the wire.
type HeaderEditor interface {
	Set(name, value string) // replaces every field of name with one
	Add(name, value string) // appends one field
	Del(name string)        // removes every field of name
}
