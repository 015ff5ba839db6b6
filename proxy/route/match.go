package route

import (
	"fmt"
	"net/url"
	"regexp"
	"strings"

	destinationv1 "github.com/mesh-dev/mesh/api/destination/v1"
)

// Matching (docs/traffic.md 3.1). Every Match of a list of rules becomes
// a candidate, numbered in the controller's order. The index files each
// candidate under the one part of the path that can hold it: exact paths
// in a map, prefixes in a trie of path elements, and the rest (regular
// expressions, no path match) in a list every request tries. A request
// gathers the candidate lists its path reaches (one per trie node on the
// way down, at most one exact, the rest), each in the controller's
// order, and evaluates them merged in that order: the first candidate
// that holds is the first the controller's order would have found, and
// candidates for other paths are never looked at.

// Match returns the rule req matches, the first in the controller's
// order whose match holds. A gRPC request (grpc true) is matched against
// the table's gRPC rules when it has any, else against its HTTP rules;
// other requests against its HTTP rules only. A table with neither HTTP
// nor gRPC rules gives every request its Default rule. false: no rule
// matches (nil or empty tables match nothing).
func (t *Table) Match(req Request, grpc bool) (Match, bool) {
	if t == nil {
		return Match{}, false
	}
	ix := t.httpIndex
	if grpc && t.grpcIndex != nil {
		ix = t.grpcIndex
	}
	if ix == nil {
		if t.def != nil && t.httpIndex == nil && t.grpcIndex == nil {
			return Match{Rule: t.def}, true
		}
		return Match{}, false
	}
	c := ix.match(req)
	if c == nil {
		return Match{}, false
	}
	return Match{Rule: c.rule, Prefix: c.prefix}, true
}

// candidate is one compiled Match of a rule.
type candidate struct {
	order int // in the controller's order, across all matches of the list
	rule  *Rule
	// prefix is the PathPrefix value as given, for Match.Prefix.
	prefix string
	// pathRE is a RegularExpression path match. Exact and prefix path
	// matches hold by where the index keeps the candidate.
	pathRE  *regexp.Regexp
	method  string
	grpc    *grpcMatch // nil: any service and method
	headers []valueMatch
	query   []valueMatch
}

// valueMatch is a header or query parameter match.
type valueMatch struct {
	name  string
	exact string
	re    *regexp.Regexp // nil: exact
}

func (m *valueMatch) holds(v string) bool {
	if m.re != nil {
		return m.re.MatchString(v)
	}
	return v == m.exact
}

// grpcMatch is a GRPCRoute method match: empty service or method (nil
// expression) matches any.
type grpcMatch struct {
	service, method     string
	serviceRE, methodRE *regexp.Regexp
}

func (g *grpcMatch) holds(path string) bool {
	service, method, ok := grpcMethod(path)
	if !ok {
		return false
	}
	switch {
	case g.serviceRE != nil && !g.serviceRE.MatchString(service),
		g.methodRE != nil && !g.methodRE.MatchString(method),
		g.service != "" && service != g.service,
		g.method != "" && method != g.method:
		return false
	}
	return true
}

// grpcMethod splits a gRPC request's path, "/package.Service/Method".
func grpcMethod(path string) (service, method string, ok bool) {
	if path == "" || path[0] != '/' {
		return "", "", false
	}
	service, method, ok = strings.Cut(path[1:], "/")
	if !ok || strings.IndexByte(method, '/') >= 0 {
		return "", "", false
	}
	return service, method, true
}

// holds evaluates what the index did not already: everything but exact
// and prefix paths, and the header named checked when a run found c by
// it. path and query are the request's, split.
func (c *candidate) holds(req Request, path, query, checked string) bool {
	if c.method != "" && req.Method() != c.method {
		return false
	}
	if c.grpc != nil && !c.grpc.holds(path) {
		return false
	}
	if c.pathRE != nil && !c.pathRE.MatchString(path) {
		return false
	}
	for i := range c.headers {
		if c.headers[i].name == checked {
			continue
		}
		v, ok := req.Header(c.headers[i].name)
		if !ok || !c.headers[i].holds(v) {
			return false
		}
	}
	for i := range c.query {
		v, ok := queryValue(query, c.query[i].name)
		if !ok || !c.query[i].holds(v) {
			return false
		}
	}
	return true
}

// queryValue returns the first value of the query parameter name, with
// the form encoding undone ("a+b%21" is "a b!"), as Envoy and Linkerd
// compare them. It allocates only for an encoded name or value.
func queryValue(query, name string) (string, bool) {
	for query != "" {
		var pair string
		pair, query, _ = strings.Cut(query, "&")
		k, v, _ := strings.Cut(pair, "=")
		if unescapeQuery(k) == name {
			return unescapeQuery(v), true
		}
	}
	return "", false
}

// unescapeQuery is s decoded, or s itself when it is not valid encoding.
func unescapeQuery(s string) string {
	if !strings.ContainsAny(s, "%+") {
		return s
	}
	u, err := url.QueryUnescape(s)
	if err != nil {
		return s
	}
	return u
}

// index holds the candidates of one list of rules by path.
type index struct {
	next  int // the order of the next candidate added
	exact map[string]*list
	// root is the trie of prefixes by path element: the prefix "/" at
	// the root, "/a/b" at root.children["a"].children["b"].
	root  trieNode
	other list
}

type trieNode struct {
	list
	children map[string]*trieNode
}

// list is the candidates filed under one path (or under none), in the
// controller's order. Rules told apart by a header alone (x-canary: 1,
// x-tenant: a ... z on one path) would make a request try every one of
// them, each asking the request for the header again: seal cuts the list
// into steps, where a long enough stretch of candidates that each need one
// header to equal a value becomes a run, a map from value to the run's
// candidates that need it. A request then looks the header up once per
// run and tries only the candidates its value could satisfy.
type list struct {
	cands []*candidate
	steps []step
}

// step is a stretch of a list: its candidates as they are, or a run.
type step struct {
	cands []*candidate
	run   *headerRun
}

// headerRun is a stretch of candidates that each have an exact match on
// the header name (their first exact header match), by that value.
type headerRun struct {
	name    string
	byValue map[string][]*candidate
}

// minRun is the shortest stretch made a run: below it, comparing values
// in turn costs less than the map.
const minRun = 4

func (l *list) add(c *candidate) { l.cands = append(l.cands, c) }

// seal cuts the list into steps; the list is not added to after.
func (l *list) seal() {
	l.steps = nil
	plain := 0 // where the stretch of candidates not in a run starts
	for i := 0; i < len(l.cands); {
		name, ok := runHeader(l.cands[i])
		j := i + 1
		for ok && j < len(l.cands) {
			if n, ok := runHeader(l.cands[j]); !ok || n != name {
				break
			}
			j++
		}
		if !ok || j-i < minRun {
			i = j
			continue
		}
		if plain < i {
			l.steps = append(l.steps, step{cands: l.cands[plain:i]})
		}
		run := &headerRun{name: name, byValue: map[string][]*candidate{}}
		for _, c := range l.cands[i:j] {
			v := c.exactHeader(name)
			run.byValue[v] = append(run.byValue[v], c)
		}
		l.steps = append(l.steps, step{run: run})
		i, plain = j, j
	}
	if plain < len(l.cands) {
		l.steps = append(l.steps, step{cands: l.cands[plain:]})
	}
}

// runHeader is the name of c's first exact header match, the header a run
// would file it under.
func runHeader(c *candidate) (string, bool) {
	for i := range c.headers {
		if c.headers[i].re == nil {
			return c.headers[i].name, true
		}
	}
	return "", false
}

// exactHeader is the value c's first match on the header name must equal.
func (c *candidate) exactHeader(name string) string {
	for i := range c.headers {
		if c.headers[i].name == name {
			return c.headers[i].exact
		}
	}
	return ""
}

func newIndex() *index {
	return &index{exact: map[string]*list{}}
}

// add compiles and files the matches of r, after those added before.
func (ix *index) add(r *Rule, ms []*destinationv1.Match) error {
	for i, pm := range ms {
		c, err := compileMatch(pm)
		if err != nil {
			return fmt.Errorf("match %d: %w", i, err)
		}
		c.rule, c.order = r, ix.next
		ix.next++
		switch p := pm.GetPath().(type) {
		case *destinationv1.Match_Exact:
			ix.addExact(p.Exact, c)
		case *destinationv1.Match_Prefix:
			c.prefix = p.Prefix
			ix.addPrefix(strings.TrimSuffix(p.Prefix, "/"), c)
		default:
			ix.addOther(c)
		}
	}
	return nil
}

func (ix *index) addExact(path string, c *candidate) {
	l := ix.exact[path]
	if l == nil {
		l = &list{}
		ix.exact[path] = l
	}
	l.add(c)
}

// addPrefix files c under prefix, whose trailing "/" is gone ("/" is "").
func (ix *index) addPrefix(prefix string, c *candidate) {
	n := &ix.root
	if prefix != "" {
		for _, elem := range strings.Split(prefix[1:], "/") {
			child := n.children[elem]
			if child == nil {
				child = &trieNode{}
				if n.children == nil {
					n.children = map[string]*trieNode{}
				}
				n.children[elem] = child
			}
			n = child
		}
	}
	n.add(c)
}

// addOther files a candidate without an exact or prefix path. A gRPC
// method match with an exact service is as good as a path match: it
// holds only on "/service/method", or on "/service/..." for any method,
// so it goes where that path or prefix would; holds checks the rest.
func (ix *index) addOther(c *candidate) {
	switch g := c.grpc; {
	case c.pathRE != nil || g == nil || g.service == "":
		ix.other.add(c)
	case g.method != "":
		ix.addExact("/"+g.service+"/"+g.method, c)
	default:
		ix.addPrefix("/"+g.service, c)
	}
}

// seal cuts every list of the index into steps, once all are added.
func (ix *index) seal() {
	for _, l := range ix.exact {
		l.seal()
	}
	ix.root.sealAll()
	ix.other.seal()
}

func (n *trieNode) sealAll() {
	n.seal()
	for _, c := range n.children {
		c.sealAll()
	}
}

// maxLists is how many candidate lists a request gathers without
// allocating: an exact list, the others, and prefix lists down to a
// depth of maxLists-2 path elements.
const maxLists = 16

// cursor walks one list for a request: sub is what is left of the step
// being walked (for a run, the candidates the request's header value
// satisfies, checked the header's name), steps the steps after it.
type cursor struct {
	sub     []*candidate
	checked string
	steps   []step
}

// head is the cursor's next candidate, nil at the end of its list. A run
// is looked up when it comes to the head, and not before: a request that
// matches earlier never asks for its header.
func (cu *cursor) head(req Request) *candidate {
	for len(cu.sub) == 0 {
		if len(cu.steps) == 0 {
			return nil
		}
		s := cu.steps[0]
		cu.steps = cu.steps[1:]
		cu.sub, cu.checked = s.cands, ""
		if s.run != nil {
			if v, ok := req.Header(s.run.name); ok {
				cu.sub, cu.checked = s.run.byValue[v], s.run.name
			}
		}
	}
	return cu.sub[0]
}

// match returns the first candidate that holds for req, nil for none.
func (ix *index) match(req Request) *candidate {
	path, query, _ := strings.Cut(req.Path(), "?")
	var buf [maxLists]cursor
	cursors := buf[:0]
	gather := func(l *list) {
		if len(l.steps) > 0 {
			cursors = append(cursors, cursor{steps: l.steps})
		}
	}
	if l := ix.exact[path]; l != nil {
		gather(l)
	}
	n := &ix.root
	gather(&n.list)
	if path != "" && path[0] == '/' {
		for rest, more := path[1:], true; more && n.children != nil; {
			var elem string
			elem, rest, more = strings.Cut(rest, "/")
			if n = n.children[elem]; n == nil {
				break
			}
			gather(&n.list)
		}
	}
	gather(&ix.other)
	for {
		var best *cursor
		var bestC *candidate
		for i := range cursors {
			if c := cursors[i].head(req); c != nil && (bestC == nil || c.order < bestC.order) {
				best, bestC = &cursors[i], c
			}
		}
		if best == nil {
			return nil
		}
		best.sub = best.sub[1:]
		if bestC.holds(req, path, query, best.checked) {
			return bestC
		}
	}
}

// compileMatch compiles pm but for the rule, the order and the prefix,
// which add sets.
func compileMatch(pm *destinationv1.Match) (*candidate, error) {
	c := &candidate{method: pm.GetMethod()}
	switch p := pm.GetPath().(type) {
	case *destinationv1.Match_Exact:
		if !isPath(p.Exact) {
			return nil, fmt.Errorf("%w: exact path %q", ErrInvalid, p.Exact)
		}
	case *destinationv1.Match_Prefix:
		if !isPath(p.Prefix) {
			return nil, fmt.Errorf("%w: path prefix %q", ErrInvalid, p.Prefix)
		}
	case *destinationv1.Match_Regex:
		re, err := compileRegex(p.Regex)
		if err != nil {
			return nil, fmt.Errorf("path: %w", err)
		}
		c.pathRE = re
	}
	if c.method != "" && !isToken(c.method) {
		return nil, fmt.Errorf("%w: method %q", ErrInvalid, c.method)
	}
	var err error
	if c.headers, err = compileValueMatches(pm.GetHeaders(), strings.ToLower); err != nil {
		return nil, fmt.Errorf("header: %w", err)
	}
	if c.query, err = compileValueMatches(pm.GetQuery(), nil); err != nil {
		return nil, fmt.Errorf("query parameter: %w", err)
	}
	if c.grpc, err = compileGRPCMatch(pm); err != nil {
		return nil, fmt.Errorf("grpc method: %w", err)
	}
	return c, nil
}

// compileValueMatches compiles header or query matches; canon, when set,
// makes names compare as equal. Only the first match of a name counts
// (the spec's HTTPHeaderMatch and HTTPQueryParamMatch: "Subsequent
// entries with an equivalent ... name MUST be ignored").
func compileValueMatches(in []*destinationv1.HeaderMatch, canon func(string) string) ([]valueMatch, error) {
	var out []valueMatch
	for _, hm := range in {
		name := hm.GetName()
		if canon != nil {
			name = canon(name)
		}
		if name == "" {
			return nil, fmt.Errorf("%w: empty name", ErrInvalid)
		}
		if containsName(out, name) {
			continue
		}
		vm := valueMatch{name: name}
		switch v := hm.GetValue().(type) {
		case *destinationv1.HeaderMatch_Exact:
			vm.exact = v.Exact
		case *destinationv1.HeaderMatch_Regex:
			re, err := compileRegex(v.Regex)
			if err != nil {
				return nil, fmt.Errorf("%s: %w", name, err)
			}
			vm.re = re
		default:
			return nil, fmt.Errorf("%w: %s: no value to match", ErrInvalid, name)
		}
		out = append(out, vm)
	}
	return out, nil
}

func containsName(ms []valueMatch, name string) bool {
	for _, m := range ms {
		if m.name == name {
			return true
		}
	}
	return false
}

// compileGRPCMatch compiles the GRPCRoute method match of pm; nil when it
// matches any method.
func compileGRPCMatch(pm *destinationv1.Match) (*grpcMatch, error) {
	service, method := pm.GetGrpcService(), pm.GetGrpcMethod()
	if service == "" && method == "" {
		return nil, nil
	}
	g := &grpcMatch{}
	if !pm.GetGrpcRegex() {
		g.service, g.method = service, method
		return g, nil
	}
	var err error
	if service != "" {
		if g.serviceRE, err = compileRegex(service); err != nil {
			return nil, fmt.Errorf("service: %w", err)
		}
	}
	if method != "" {
		if g.methodRE, err = compileRegex(method); err != nil {
			return nil, fmt.Errorf("method: %w", err)
		}
	}
	return g, nil
}
