package route

import (
	"errors"
	"fmt"
	"net/http"
	"regexp"
	"strings"
	"time"

	"google.golang.org/protobuf/types/known/durationpb"

	destinationv1 "github.com/mesh-dev/mesh/api/destination/v1"
)

// ErrInvalid marks a table that breaks the API's invariants: one the
// controller's validation should have refused. The discovery cache keeps
// the last good table when Compile fails with it.
var ErrInvalid = errors.New("invalid route table")

// unsupported is the answer of a rule, or a backend, with a filter this
// proxy does not know: docs/traffic.md 2.4 "Versions" asks for a 500
// rather than skipping a filter the user relies on, as the spec does for
// an unresolved ExtensionRef.
var unsupported = Fail{Status: http.StatusInternalServerError, Message: "filter not supported by this proxy"}

// Compile validates a RouteTable and compiles it into a Table. A nil
// table compiles to an empty one. Errors wrap ErrInvalid and name the
// rule at fault.
func Compile(pt *destinationv1.RouteTable) (*Table, error) {
	t := &Table{version: pt.GetVersion()}
	var err error
	if t.http, t.httpIndex, err = compileRules(pt.GetHttpRules()); err != nil {
		return nil, fmt.Errorf("route: http rule %w", err)
	}
	if t.grpc, t.grpcIndex, err = compileRules(pt.GetGrpcRules()); err != nil {
		return nil, fmt.Errorf("route: grpc rule %w", err)
	}
	if pr := pt.GetDefaultRule(); pr != nil {
		if t.def, err = compileDefault(pr); err != nil {
			return nil, fmt.Errorf("route: default rule: %w", err)
		}
	}
	if t.accrual, err = compileFailureAccrual(pt.GetFailureAccrual()); err != nil {
		return nil, fmt.Errorf("route: failure accrual: %w", err)
	}
	return t, nil
}

// compileRules compiles one list of rules and indexes their matches in
// the list's order. An error starts with the rule's position, for the
// caller's prefix.
func compileRules(in []*destinationv1.Rule) ([]*Rule, *index, error) {
	if len(in) == 0 {
		return nil, nil, nil
	}
	rules := make([]*Rule, 0, len(in))
	ix := newIndex()
	for i, pr := range in {
		r, err := compileRule(pr)
		if err == nil {
			err = ix.add(r, pr.GetMatches())
		}
		if err != nil {
			return nil, nil, fmt.Errorf("%d (%s %s/%s rule %s): %w", i, pr.GetRoute().GetKind(),
				pr.GetRoute().GetNamespace(), pr.GetRoute().GetName(), pr.GetRuleName(), err)
		}
		rules = append(rules, r)
	}
	ix.seal()
	return rules, ix, nil
}

func compileRule(pr *destinationv1.Rule) (*Rule, error) {
	r := &Rule{
		Route: RouteRef{Kind: pr.GetRoute().GetKind(), Namespace: pr.GetRoute().GetNamespace(), Name: pr.GetRoute().GetName()},
		Name:  pr.GetRuleName(),
	}
	var err error
	if r.RequestTimeout, err = timeout(pr.GetTimeouts().GetRequest()); err != nil {
		return nil, fmt.Errorf("timeouts.request: %w", err)
	}
	if r.BackendRequestTimeout, err = timeout(pr.GetTimeouts().GetBackendRequest()); err != nil {
		return nil, fmt.Errorf("timeouts.backend_request: %w", err)
	}
	if r.ResponseTimeout, err = timeout(pr.GetTimeouts().GetResponse()); err != nil {
		return nil, fmt.Errorf("timeouts.response: %w", err)
	}
	if r.IdleTimeout, err = timeout(pr.GetTimeouts().GetIdle()); err != nil {
		return nil, fmt.Errorf("timeouts.idle: %w", err)
	}
	if r.Retry, err = compileRetry(pr.GetRetry()); err != nil {
		return nil, fmt.Errorf("retry: %w", err)
	}
	if err := r.compileFilters(pr.GetFilters()); err != nil {
		return nil, err
	}
	for i, pb := range pr.GetBackends() {
		if pb.GetWeight() == 0 {
			continue // the API sends none; a zero weight takes no request anyway
		}
		b := Backend{Authority: pb.GetAuthority(), Weight: pb.GetWeight()}
		if err := b.compileFilters(pb.GetFilters()); err != nil {
			return nil, fmt.Errorf("backend %d: %w", i, err)
		}
		if b.Authority == "" && b.Fail == nil {
			return nil, fmt.Errorf("%w: backend %d has no authority", ErrInvalid, i)
		}
		r.Backends = append(r.Backends, b)
	}
	return r, nil
}

// timeout is a Timeouts field; absent is zero, none.
func timeout(d *durationpb.Duration) (time.Duration, error) {
	if d == nil {
		return 0, nil
	}
	if err := d.CheckValid(); err != nil {
		return 0, fmt.Errorf("%w: %v", ErrInvalid, err)
	}
	if d.AsDuration() < 0 {
		return 0, fmt.Errorf("%w: negative duration %v", ErrInvalid, d.AsDuration())
	}
	return d.AsDuration(), nil
}

// compileFilters sets the rule's filters. A filter kind that comes twice,
// or a redirect with a rewrite, cannot be honoured (the spec allows
// neither, so the controller refuses such routes): like an unknown kind,
// it makes the rule answer 500. The first Fail is the rule's answer.
func (r *Rule) compileFilters(fs []*destinationv1.Filter) error {
	fail := func(f Fail) {
		if r.Fail == nil {
			r.Fail = &f
		}
	}
	twice := func(kind string) {
		fail(Fail{Status: http.StatusInternalServerError, Message: "filter " + kind + " given twice, which this proxy does not support"})
	}
	for i, f := range fs {
		switch k := f.GetKind().(type) {
		case *destinationv1.Filter_RequestHeaders:
			m, bad, err := compileHeaderModifier(k.RequestHeaders)
			if err != nil {
				return fmt.Errorf("filter %d: request headers: %w", i, err)
			}
			if bad != nil {
				fail(*bad)
			}
			if r.RequestHeaders != nil {
				twice("request_headers")
			}
			r.RequestHeaders = m
		case *destinationv1.Filter_ResponseHeaders:
			m, bad, err := compileHeaderModifier(k.ResponseHeaders)
			if err != nil {
				return fmt.Errorf("filter %d: response headers: %w", i, err)
			}
			if bad != nil {
				fail(*bad)
			}
			if r.ResponseHeaders != nil {
				twice("response_headers")
			}
			r.ResponseHeaders = m
		case *destinationv1.Filter_Redirect:
			rd, err := compileRedirect(k.Redirect)
			if err != nil {
				return fmt.Errorf("filter %d: redirect: %w", i, err)
			}
			if r.Redirect != nil {
				twice("redirect")
			}
			r.Redirect = rd
		case *destinationv1.Filter_Rewrite:
			rw, err := compileRewrite(k.Rewrite)
			if err != nil {
				return fmt.Errorf("filter %d: rewrite: %w", i, err)
			}
			if r.Rewrite != nil {
				twice("rewrite")
			}
			r.Rewrite = rw
		case *destinationv1.Filter_Fault:
			ft, err := compileFault(k.Fault)
			if err != nil {
				return fmt.Errorf("filter %d: fault: %w", i, err)
			}
			if r.Fault != nil {
				twice("fault")
			}
			r.Fault = ft
		case *destinationv1.Filter_Fail:
			st := k.Fail.GetStatus()
			if st < 100 || st > 599 {
				return fmt.Errorf("%w: filter %d: fail status %d", ErrInvalid, i, st)
			}
			fail(Fail{Status: int(st), Message: k.Fail.GetMessage()})
		default:
			// A kind newer than this proxy: proto3 keeps it among the
			// unknown fields and the oneof is empty.
			fail(unsupported)
		}
	}
	if r.Redirect != nil && r.Rewrite != nil {
		fail(Fail{Status: http.StatusInternalServerError, Message: "redirect and rewrite filters in one rule, which this proxy does not support"})
	}
	return nil
}

// compileFilters sets a backendRef's filters: the request header filter,
// and Fail, the answer of an invalid backend. Other kinds are the spec's
// implementation-specific backendRef filters, which this proxy does not
// apply, so they fail the backend rather than be skipped.
func (b *Backend) compileFilters(fs []*destinationv1.Filter) error {
	fail := func(f Fail) {
		if b.Fail == nil {
			b.Fail = &f
		}
	}
	for i, f := range fs {
		switch k := f.GetKind().(type) {
		case *destinationv1.Filter_RequestHeaders:
			m, bad, err := compileHeaderModifier(k.RequestHeaders)
			if err != nil {
				return fmt.Errorf("filter %d: request headers: %w", i, err)
			}
			if bad != nil {
				fail(*bad)
			}
			if b.RequestHeaders != nil {
				fail(Fail{Status: http.StatusInternalServerError, Message: "backend filter request_headers given twice, which this proxy does not support"})
			}
			b.RequestHeaders = m
		case *destinationv1.Filter_Fail:
			st := k.Fail.GetStatus()
			if st < 100 || st > 599 {
				return fmt.Errorf("%w: filter %d: fail status %d", ErrInvalid, i, st)
			}
			fail(Fail{Status: int(st), Message: k.Fail.GetMessage()})
		case *destinationv1.Filter_ResponseHeaders, *destinationv1.Filter_Redirect, *destinationv1.Filter_Rewrite, *destinationv1.Filter_Fault:
			fail(Fail{Status: http.StatusInternalServerError, Message: "this proxy applies no " + filterKind(f) + " filter on a backendRef"})
		default:
			fail(unsupported)
		}
	}
	return nil
}

// filterKind names a filter's kind as the API does.
func filterKind(f *destinationv1.Filter) string {
	if k := f.ProtoReflect().WhichOneof(f.ProtoReflect().Descriptor().Oneofs().ByName("kind")); k != nil {
		return string(k.Name())
	}
	return "unknown"
}

// compileHeaderModifier lower-cases the names and keeps the first entry
// of each name in Set and in Add, as the spec's HTTPHeader says ("the
// first entry with an equivalent name MUST be considered"). Names must be
// field names (the CRD's pattern). A value that cannot be written as a
// field (RFC 9110 5.5: a CR or LF would split the head), which the CRD's
// standard channel lets through, gives bad: the answer of the rule or
// backend that holds the filter.
func compileHeaderModifier(pm *destinationv1.HeaderModifier) (m *HeaderModifier, bad *Fail, err error) {
	m = &HeaderModifier{}
	if m.Set, err = compileHeaders(pm.GetSet(), &bad); err != nil {
		return nil, nil, fmt.Errorf("set: %w", err)
	}
	if m.Add, err = compileHeaders(pm.GetAdd(), &bad); err != nil {
		return nil, nil, fmt.Errorf("add: %w", err)
	}
	for _, name := range pm.GetRemove() {
		if !isToken(name) {
			return nil, nil, fmt.Errorf("%w: remove: header name %q", ErrInvalid, name)
		}
		m.Remove = append(m.Remove, strings.ToLower(name))
	}
	return m, bad, nil
}

func compileHeaders(in []*destinationv1.Header, bad **Fail) ([]Header, error) {
	var out []Header
	for _, h := range in {
		if !isToken(h.GetName()) {
			return nil, fmt.Errorf("%w: header name %q", ErrInvalid, h.GetName())
		}
		name := strings.ToLower(h.GetName())
		if !isFieldValue(h.GetValue()) && *bad == nil {
			*bad = &Fail{Status: http.StatusInternalServerError, Message: "header filter: the value of " + name + " has a control character"}
		}
		if !containsHeader(out, name) {
			out = append(out, Header{Name: name, Value: h.GetValue()})
		}
	}
	return out, nil
}

func containsHeader(hs []Header, name string) bool {
	for _, h := range hs {
		if h.Name == name {
			return true
		}
	}
	return false
}

// redirectCodes are the status codes RequestRedirect allows
// (httproute_types.go, statusCode's enum).
var redirectCodes = map[int]bool{301: true, 302: true, 303: true, 307: true, 308: true}

func compileRedirect(pr *destinationv1.Redirect) (*Redirect, error) {
	rd := &Redirect{
		Scheme:     strings.ToLower(pr.GetScheme()),
		Hostname:   pr.GetHostname(),
		Port:       pr.GetPort(),
		StatusCode: int(pr.GetStatusCode()),
	}
	if rd.StatusCode == 0 {
		rd.StatusCode = http.StatusFound // the spec's default
	}
	if !redirectCodes[rd.StatusCode] {
		return nil, fmt.Errorf("%w: status code %d", ErrInvalid, rd.StatusCode)
	}
	if rd.Scheme != "" && !isScheme(rd.Scheme) {
		return nil, fmt.Errorf("%w: scheme %q", ErrInvalid, rd.Scheme)
	}
	if rd.Hostname != "" && !isHostname(rd.Hostname) {
		return nil, fmt.Errorf("%w: hostname %q", ErrInvalid, rd.Hostname)
	}
	if rd.Port > 65535 {
		return nil, fmt.Errorf("%w: port %d", ErrInvalid, rd.Port)
	}
	rd.Path = compilePathModifier(pr.GetPath())
	return rd, nil
}

func compileRewrite(pw *destinationv1.Rewrite) (*Rewrite, error) {
	w := &Rewrite{Hostname: pw.GetHostname()}
	if w.Hostname != "" && !isHostname(w.Hostname) {
		return nil, fmt.Errorf("%w: hostname %q", ErrInvalid, w.Hostname)
	}
	w.Path = compilePathModifier(pw.GetPath())
	return w, nil
}

// compilePathModifier makes a replacement a path: it goes into a request
// target or a Location as it is, and the CRD allows any string. A
// missing leading "/" is added and bytes that may not appear in a path
// are percent-encoded, so "a b?" becomes "/a%20b%3F".
func compilePathModifier(pp *destinationv1.PathModifier) *PathModifier {
	switch k := pp.GetReplace().(type) {
	case *destinationv1.PathModifier_Full:
		return &PathModifier{Full: asPath(k.Full)}
	case *destinationv1.PathModifier_Prefix:
		return &PathModifier{Prefix: asPath(k.Prefix), IsPrefix: true}
	}
	return nil
}

// asPath is s made an absolute path ("" stays "").
func asPath(s string) string {
	if s == "" || isPath(s) {
		return s
	}
	var b strings.Builder
	if s[0] != '/' {
		b.WriteByte('/')
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		switch {
		case isPathByte(c):
			b.WriteByte(c)
		case c == '%' && i+2 < len(s) && isHex(s[i+1]) && isHex(s[i+2]):
			b.WriteString(s[i : i+3])
			i += 2
		default:
			fmt.Fprintf(&b, "%%%02X", c)
		}
	}
	return b.String()
}

// compileRegex compiles expr (RE2) to match whole strings. expr is
// compiled alone first, so that wrapping it cannot change its meaning:
// an expression that does not parse alone (an unbalanced ")") could
// otherwise close the wrapping group early. The one construct that
// parses alone and not wrapped is a \Q quote left open to the end, which
// the second attempt closes.
func compileRegex(expr string) (*regexp.Regexp, error) {
	if _, err := regexp.Compile(expr); err != nil {
		return nil, fmt.Errorf("%w: %v", ErrInvalid, err)
	}
	re, err := regexp.Compile(`\A(?:` + expr + `)\z`)
	if err != nil {
		re, err = regexp.Compile(`\A(?:` + expr + `\E)\z`)
	}
	if err != nil {
		return nil, fmt.Errorf("%w: regex %q: %v", ErrInvalid, expr, err)
	}
	return re, nil
}

// isToken reports whether s is an RFC 9110 token, as field names are.
func isToken(s string) bool {
	if s == "" {
		return false
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		if !isAlnum(c) && !strings.ContainsRune("!#$%&'*+-.^_`|~", rune(c)) {
			return false
		}
	}
	return true
}

// isFieldValue reports whether s can be written as a field value: no
// control character but HTAB (RFC 9110 5.5), so no CR or LF to split a
// head with.
func isFieldValue(s string) bool {
	for i := 0; i < len(s); i++ {
		if c := s[i]; c < ' ' && c != '\t' || c == 0x7f {
			return false
		}
	}
	return true
}

// isScheme reports whether s is a URI scheme (RFC 3986 3.1).
func isScheme(s string) bool {
	for i := 0; i < len(s); i++ {
		c := s[i]
		switch {
		case c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z':
		case i > 0 && (c >= '0' && c <= '9' || c == '+' || c == '-' || c == '.'):
		default:
			return false
		}
	}
	return s != ""
}

// isHostname reports whether s is a DNS name or an IPv4 address: what
// the spec's PreciseHostname allows, in any case.
func isHostname(s string) bool {
	for i := 0; i < len(s); i++ {
		if c := s[i]; !isAlnum(c) && c != '-' && c != '.' {
			return false
		}
	}
	return s != ""
}

// isPath reports whether s is an absolute path of RFC 3986 path
// characters, percent-encoded or not: the CRD's pattern for path match
// values.
func isPath(s string) bool {
	if s == "" || s[0] != '/' {
		return false
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		switch {
		case isPathByte(c):
		case c == '%' && i+2 < len(s) && isHex(s[i+1]) && isHex(s[i+2]):
			i += 2
		default:
			return false
		}
	}
	return true
}

// isPathByte reports whether c stands for itself in a path: an RFC 3986
// pchar other than a percent-encoding, or "/".
func isPathByte(c byte) bool {
	return isAlnum(c) || strings.IndexByte("-/._~!$&'()*+,;=:@", c) >= 0
}

func isAlnum(c byte) bool {
	return c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9'
}

func isHex(c byte) bool {
	return c >= '0' && c <= '9' || c >= 'a' && c <= 'f' || c >= 'A' && c <= 'F'
}
