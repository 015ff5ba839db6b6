package viz

// A proxy's /metrics is parsed as it streams in, one line at a time, and
// only the samples of the families a scrape uses (the metric* names in
// scrape.go) are parsed in full; every other line is recognised by its
// metric name and dropped without an allocation. expfmt's TextParser,
// used before, built every family of the exposition in memory (the Go
// runtime's, the process', protocol detections, requests...) and held
// them all until the end: 80 % of viz's CPU went to families it threw
// away, and its memory grew with the body.
//
// github.com/prometheus/prometheus/model/textparse streams too, but it is
// the Prometheus server's module: its go.mod requires some 250 modules
// (cloud SDKs, OpenTelemetry, Kubernetes) that ours would be resolved
// against at every upgrade, the package brings gogo/protobuf and
// grafana/regexp for formats a proxy does not serve, and it tokenizes
// every label of every line anyway. The classic text format is small
// (https://prometheus.io/docs/instrumenting/exposition_formats/), so this
// file reads it itself.
//
// For the lines it keeps it follows expfmt's TextParser, so that the store
// gets what it got before: the same label sets, sums, histograms, and the
// same refusals (a malformed line, an unterminated last line, a negative
// bucket count, a duplicate label). Lines of other families are checked
// only to start with a metric name, and a metric name written quoted (the
// UTF-8 names of text format 1.0) is not one of ours, which are plain.

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"io"
	"math"
	"slices"
	"strconv"
	"unicode/utf8"
)

const (
	// maxLineBytes bounds one line of an exposition, newline included. A
	// proxy's longest, a response counter whose every label is as long as
	// the proxy lets it be (a 259-byte authority, escaped, identities and
	// workloads of Kubernetes' longest names), is about 2 KiB.
	maxLineBytes = 16 << 10
	// maxKeptBytes bounds what one scrape keeps while it reads: the label
	// values of its label sets and histograms, keptPerSet for each, and 16
	// bytes per histogram bucket. A proxy at its series bound
	// (docs/metrics.md: some 500 label sets and 250 histograms of 20
	// buckets) keeps 0.4 MiB with a cluster's usual names
	// (testdata/proxy-metrics-bound.txt.gz), so only an exposition that is
	// not a proxy's reaches it. With Concurrency scrapes at a time, it
	// bounds the scrapes' memory whatever the pods serve.
	maxKeptBytes = 1 << 20
	// keptPerSet is what a label set or a histogram costs besides its
	// label values: its map entries, structs and slice headers.
	keptPerSet = 256
	// maxBuckets bounds the buckets of one histogram, +Inf included. A
	// proxy's have 20 (docs/metrics.md); the store keeps each distinct
	// set of bounds it is given.
	maxBuckets = 64
)

// Errors of a parse that the scrape counts apart from malformed input.
var (
	errLineTooLong    = fmt.Errorf("a line over %d KiB, longer than any of a mesh proxy's", maxLineBytes>>10)
	errTooManySeries  = fmt.Errorf("more label sets than a mesh proxy exports (over %d MiB of them)", maxKeptBytes>>20)
	errTooManyBuckets = fmt.Errorf("a histogram of more than %d buckets, more than a mesh proxy's", maxBuckets)
)

// syntaxError is a line that is not the Prometheus text format.
type syntaxError struct {
	line int
	msg  string
}

func (e *syntaxError) Error() string { return fmt.Sprintf("line %d: %s", e.line, e.msg) }

// family names a metric family a scrape reads.
type family int8

const (
	famNone family = iota
	famResponses
	famLatency
	famTCPOpen
	famTCPClose
	famTCPConns
	famReadBytes
	famWriteBytes
	famStartTime
	famHTTPAuthz
	famTCPAuthz
	numFamilies
)

var families = map[string]family{
	metricResponses:  famResponses,
	metricLatency:    famLatency,
	metricTCPOpen:    famTCPOpen,
	metricTCPClose:   famTCPClose,
	metricTCPConns:   famTCPConns,
	metricReadBytes:  famReadBytes,
	metricWriteBytes: famWriteBytes,
	metricStartTime:  famStartTime,
	metricHTTPAuthz:  famHTTPAuthz,
	metricTCPAuthz:   famTCPAuthz,
}

// sampleKind tells the lines of a histogram apart.
type sampleKind int8

const (
	samplePlain sampleKind = iota // the family's own name, or _bucket
	sampleSum                     // _sum
	sampleCount                   // _count
)

// metricType is a family's # TYPE.
type metricType int8

const (
	typeUnset metricType = iota
	typeScalar
	typeHistogram
	typeSummary
)

// typeOf returns the metricType of a # TYPE value, as expfmt reads it:
// any case, and OpenMetrics' gaugehistogram.
func typeOf(b []byte) (metricType, bool) {
	for _, t := range []struct {
		name string
		typ  metricType
	}{
		{"counter", typeScalar}, {"gauge", typeScalar}, {"untyped", typeScalar},
		{"histogram", typeHistogram}, {"gauge_histogram", typeHistogram}, {"gaugehistogram", typeHistogram},
		{"summary", typeSummary},
	} {
		if bytes.EqualFold(b, []byte(t.name)) {
			return t.typ, true
		}
	}
	return typeUnset, false
}

// label names a label a scrape reads; the first setLabels are those of a
// label set, in the order of the labels struct's fields.
type label int8

const (
	lDirection label = iota
	lAuthority
	lTargetAddr
	lDstNamespace
	lDstWorkload
	lDstService
	lClientID
	lServerID
	lRouteKind
	lRouteNamespace
	lRouteName
	lRouteRule
	lClassification
	lDecision
	lLE
	numLabels
	setLabels = lRouteRule + 1
)

var labelNames = map[string]label{
	"direction": lDirection, "authority": lAuthority, "target_addr": lTargetAddr,
	"dst_namespace": lDstNamespace, "dst_workload": lDstWorkload, "dst_service": lDstService,
	"client_id": lClientID, "server_id": lServerID,
	"route_kind": lRouteKind, "route_namespace": lRouteNamespace, "route_name": lRouteName, "route_rule": lRouteRule,
	"classification": lClassification, "decision": lDecision, "le": lLE,
}

// keySep separates label values in map keys; it is never in valid UTF-8,
// which every value is checked to be, so keys are unambiguous.
const keySep = 0xff

// authzKey is the key of authzLabels: inbound, every other label empty.
var authzKey = append([]byte(inbound), bytes.Repeat([]byte{keySep}, int(setLabels))...)

// span is a label name or value unescaped into parser.scratch.
type span struct{ from, to int }

type labelPair struct{ name, value span }

// histogramSet gathers the lines of one histogram: those of the latency
// family with the same labels but le.
type histogramSet struct {
	set   labels
	h     histogram // buckets as read
	count float64   // from _count; 0 without one
}

// parser reads one exposition. It is used once, from one goroutine.
type parser struct {
	r    *bufio.Reader
	line int // the line being read, from 1

	types   [numFamilies]metricType
	sampled [numFamilies]bool // a sample line of the family was read

	// The labels of the line being read: unescaped into scratch, named by
	// pairs, and those a scrape reads in known, with a bit per label in has
	// when it is there (its value may be empty).
	scratch []byte
	pairs   []labelPair
	known   [numLabels][]byte
	has     uint16 // numLabels bits
	key     []byte // a map key being built

	start    float64
	startSet bool
	series   map[labels]*counters
	byKey    map[string]*counters // series by their label values, keySep-joined
	hists    map[string]*histogramSet
	order    []*histogramSet // hists in the order of their first line
	kept     int             // bytes charged against maxKeptBytes
}

// parseMetrics reads a proxy's exposition from r and returns its process
// start time (0 when not exported) and its counters per label set, as
// docs/metrics.md describes the series. It returns r's error as it is
// (wrapped), a *syntaxError for input that is not the text format, and
// errLineTooLong, errTooManySeries or errTooManyBuckets (wrapped) for
// input larger than a proxy's.
func parseMetrics(r io.Reader) (float64, map[labels]*counters, error) {
	return newParser(r).parse()
}

func newParser(r io.Reader) *parser {
	return &parser{
		r:      bufio.NewReaderSize(r, maxLineBytes),
		series: map[labels]*counters{},
		byKey:  map[string]*counters{},
		hists:  map[string]*histogramSet{},
	}
}

func (p *parser) parse() (float64, map[labels]*counters, error) {
	if err := p.read(); err != nil {
		return 0, nil, err
	}
	p.finish()
	return p.start, p.series, nil
}

func (p *parser) read() error {
	for {
		line, err := p.r.ReadSlice('\n')
		p.line++
		switch {
		case err == nil:
			line = line[:len(line)-1]
		case errors.Is(err, bufio.ErrBufferFull):
			return fmt.Errorf("line %d: %w", p.line, errLineTooLong)
		case errors.Is(err, io.EOF):
			if len(trimBlank(line)) > 0 {
				// expfmt refuses it too: a body cut mid-line is not taken
				// for a whole one.
				return p.syntax("the last line has no newline")
			}
			return nil
		default:
			return fmt.Errorf("line %d: %w", p.line, err)
		}
		if err := p.parseLine(line); err != nil {
			return err
		}
	}
}

func (p *parser) parseLine(b []byte) error {
	b = trimBlank(b)
	if len(b) == 0 {
		return nil
	}
	switch b[0] {
	case '#':
		return p.comment(b[1:])
	case '{', '"':
		return nil // a quoted name
	}
	n := metricNameLen(b)
	if n == 0 {
		return p.syntax("a line starts with %q, not a metric name", firstRune(b))
	}
	name, rest := b[:n], b[n:]
	if len(rest) == 0 || rest[0] != '{' && !isBlank(rest[0]) {
		return p.syntax("no value after metric name %q", name)
	}
	fam, kind := p.family(name)
	if fam == famNone {
		return nil
	}
	return p.sample(fam, kind, rest)
}

// family returns the family a sample named name belongs to, famNone for
// one a scrape does not read. The _bucket, _sum and _count lines belong
// to the latency family once its TYPE says it is a histogram, as in
// expfmt; before that they are families of their own.
func (p *parser) family(name []byte) (family, sampleKind) {
	if f, ok := families[string(name)]; ok {
		return f, samplePlain
	}
	suffix, ok := bytes.CutPrefix(name, []byte(metricLatency))
	if !ok || p.types[famLatency] != typeHistogram {
		return famNone, samplePlain
	}
	switch string(suffix) {
	case "_bucket":
		return famLatency, samplePlain
	case "_sum":
		return famLatency, sampleSum
	case "_count":
		return famLatency, sampleCount
	}
	return famNone, samplePlain
}

// comment reads a # line: a TYPE of a family a scrape reads is checked
// and kept; HELP and the rest carry nothing a scrape uses.
func (p *parser) comment(b []byte) error {
	keyword, b := token(trimBlank(b))
	if string(keyword) != "TYPE" {
		return nil
	}
	b = trimBlank(b)
	n := metricNameLen(b)
	fam, ok := families[string(b[:n])]
	if !ok || n == len(b) || !isBlank(b[n]) {
		return nil
	}
	word := bytes.TrimRight(trimBlank(b[n:]), " \t")
	if len(word) == 0 {
		return nil
	}
	typ, ok := typeOf(word)
	switch {
	case !ok:
		return p.syntax("unknown metric type %q", word)
	case p.types[fam] != typeUnset:
		return p.syntax("a second TYPE line for %s", b[:n])
	case p.sampled[fam]:
		return p.syntax("the TYPE of %s after its samples", b[:n])
	case fam != famLatency && typ != typeScalar:
		return p.syntax("%s is of type %s; a mesh proxy exports a counter or gauge", b[:n], word)
	}
	p.types[fam] = typ
	return nil
}

// sample reads the labels, value and timestamp that follow a kept
// family's metric name, and adds the value where it belongs.
func (p *parser) sample(fam family, kind sampleKind, rest []byte) error {
	p.sampled[fam] = true
	rest, err := p.readLabels(trimBlank(rest))
	if err != nil {
		return err
	}
	v, err := p.readValue(rest)
	if err != nil {
		return err
	}
	if fam == famLatency {
		if p.types[famLatency] != typeHistogram {
			return nil // not a histogram: expfmt's reading had none
		}
		return p.histogramSample(kind, v)
	}
	v = positive(v)
	switch fam {
	case famStartTime:
		if !p.startSet {
			p.start, p.startSet = v, true
		}
		return nil
	case famHTTPAuthz, famTCPAuthz:
		// Denials are summed into one label set per pod, whatever their
		// server, authorization and client (the package doc, Denials).
		if string(p.known[lDecision]) != decisionDeny {
			return nil
		}
		c, err := p.labelSet(authzKey, true)
		if err != nil {
			return err
		}
		c.Denied += v
		return nil
	}
	c, err := p.labelSet(p.setKey(), false)
	if err != nil {
		return err
	}
	switch fam {
	case famResponses:
		c.Responses += v
		if string(p.known[lClassification]) == "success" {
			c.Successes += v
		}
	case famTCPOpen:
		c.TCPOpen += v
	case famTCPClose:
		c.TCPClose += v
	case famTCPConns:
		c.OpenConns += v
	case famReadBytes:
		c.ReadBytes += v
	case famWriteBytes:
		c.WriteBytes += v
	}
	return nil
}

// readLabels reads the label set at the start of b, if any, into p.pairs
// and p.known, and returns what follows it.
func (p *parser) readLabels(b []byte) ([]byte, error) {
	p.scratch, p.pairs, p.known, p.has = p.scratch[:0], p.pairs[:0], [numLabels][]byte{}, 0
	if len(b) == 0 || b[0] != '{' {
		return b, nil
	}
	b = b[1:]
	for {
		b = trimBlank(b)
		if len(b) == 0 {
			return nil, p.syntax("a label set with no closing brace")
		}
		if b[0] == '}' {
			break
		}
		var pair labelPair
		var err error
		if pair.name, b, err = p.labelName(b); err != nil {
			return nil, err
		}
		if b = trimBlank(b); len(b) == 0 || b[0] != '=' {
			return nil, p.syntax("no '=' after label name %q", p.text(pair.name))
		}
		if b = trimBlank(b[1:]); len(b) == 0 || b[0] != '"' {
			return nil, p.syntax("label %q has no quoted value", p.text(pair.name))
		}
		if pair.value, b, err = p.quoted(b[1:]); err != nil {
			return nil, err
		}
		if !utf8.Valid(p.text(pair.value)) {
			return nil, p.syntax("label %q has a value that is not UTF-8", p.text(pair.name))
		}
		p.pairs = append(p.pairs, pair)
		if b = trimBlank(b); len(b) > 0 && b[0] == ',' {
			b = b[1:]
		} else if len(b) == 0 || b[0] != '}' {
			return nil, p.syntax("label %q is followed by neither ',' nor '}'", p.text(pair.name))
		}
	}
	for _, pair := range p.pairs {
		name := p.text(pair.name)
		if string(name) == "__name__" {
			return nil, p.syntax("label name __name__ is reserved")
		}
		l, ok := labelNames[string(name)]
		if !ok {
			continue
		}
		if p.has&(1<<l) != 0 {
			return nil, p.syntax("duplicate label %q", name)
		}
		p.has |= 1 << l
		p.known[l] = p.text(pair.value)
	}
	return trimBlank(b[1:]), nil
}

// labelName reads a label name, plain or quoted, into p.scratch.
func (p *parser) labelName(b []byte) (span, []byte, error) {
	if b[0] == '"' {
		name, rest, err := p.quoted(b[1:])
		if err == nil && !utf8.Valid(p.text(name)) {
			err = p.syntax("a label name that is not UTF-8")
		}
		return name, rest, err
	}
	n := labelNameLen(b)
	if n == 0 {
		return span{}, nil, p.syntax("%q where a label name should be", firstRune(b))
	}
	from := len(p.scratch)
	p.scratch = append(p.scratch, b[:n]...)
	return span{from, len(p.scratch)}, b[n:], nil
}

// quoted unescapes into p.scratch the quoted string whose opening quote
// is just before b, and returns what follows its closing quote. The
// escapes are those of the text format: \\, \" and \n.
func (p *parser) quoted(b []byte) (span, []byte, error) {
	from := len(p.scratch)
	for {
		i := bytes.IndexAny(b, `"\`)
		if i < 0 || b[i] == '\\' && i+1 == len(b) {
			return span{}, nil, p.syntax("a quoted string with no closing quote")
		}
		p.scratch = append(p.scratch, b[:i]...)
		if b[i] == '"' {
			return span{from, len(p.scratch)}, b[i+1:], nil
		}
		switch b[i+1] {
		case '\\', '"':
			p.scratch = append(p.scratch, b[i+1])
		case 'n':
			p.scratch = append(p.scratch, '\n')
		default:
			return span{}, nil, p.syntax("invalid escape sequence \\%c", b[i+1])
		}
		b = b[i+2:]
	}
}

func (p *parser) text(s span) []byte { return p.scratch[s.from:s.to] }

// readValue reads a sample's value and its optional timestamp, which must
// end the line; the timestamp is checked and dropped, as a scrape's time
// is the round's.
func (p *parser) readValue(b []byte) (float64, error) {
	tok, b := token(b)
	v, err := parseFloat(tok)
	if err != nil {
		return 0, p.syntax("value %q is not a number", tok)
	}
	if len(b) == 0 {
		return v, nil
	}
	tok, b = token(trimBlank(b))
	if _, err := strconv.ParseInt(string(tok), 10, 64); err != nil {
		return 0, p.syntax("timestamp %q is not an integer", tok)
	}
	if len(b) > 0 {
		return 0, p.syntax("%q after the timestamp", b)
	}
	return v, nil
}

// parseFloat reads a value as expfmt does: Go's syntax, NaN and Inf
// included, but without hexadecimal exponents or underscores.
func parseFloat(b []byte) (float64, error) {
	if bytes.ContainsAny(b, "pP_") {
		return 0, strconv.ErrSyntax
	}
	return strconv.ParseFloat(string(b), 64)
}

// positive returns v, or 0 for NaN, infinities and values below zero,
// which no series a scrape reads can hold.
func positive(v float64) float64 {
	if !(v > 0) || math.IsInf(v, 1) {
		return 0
	}
	return v
}

// setKey returns the key of the line's label set in p.byKey.
func (p *parser) setKey() []byte {
	p.key = p.key[:0]
	for _, v := range p.known[:setLabels] {
		p.key = append(append(p.key, v...), keySep)
	}
	return p.key
}

// labelSet returns the counters of the label set whose key is key,
// creating them if they are new: authzLabels for authz, else the line's.
func (p *parser) labelSet(key []byte, authz bool) (*counters, error) {
	if c := p.byKey[string(key)]; c != nil {
		return c, nil
	}
	if err := p.charge(len(key) + keptPerSet); err != nil {
		return nil, err
	}
	set := authzLabels
	if !authz {
		set = p.lineSet()
	}
	c := &counters{}
	p.series[set] = c
	p.byKey[string(key)] = c
	return c, nil
}

// lineSet returns the label set of the line.
func (p *parser) lineSet() labels {
	k := &p.known
	return labels{
		Direction: string(k[lDirection]), Authority: string(k[lAuthority]), TargetAddr: string(k[lTargetAddr]),
		DstNamespace: string(k[lDstNamespace]), DstWorkload: string(k[lDstWorkload]), DstService: string(k[lDstService]),
		ClientID: string(k[lClientID]), ServerID: string(k[lServerID]),
		RouteKind: string(k[lRouteKind]), RouteNamespace: string(k[lRouteNamespace]),
		RouteName: string(k[lRouteName]), RouteRule: string(k[lRouteRule]),
	}
}

// histogramSample adds a line of the latency histogram to the histogram
// of its labels, all of them but le, as expfmt groups them: a bucket (a
// _bucket line, or a plain one with an le) or the _count; a _sum, or a
// plain line without le, only makes the histogram exist.
func (p *parser) histogramSample(kind sampleKind, v float64) error {
	le := math.NaN()
	if p.has&(1<<lLE) != 0 {
		var err error
		if le, err = parseFloat(p.known[lLE]); err != nil {
			return p.syntax("le %q is not a number", p.known[lLE])
		}
	}
	key, err := p.histogramKey()
	if err != nil {
		return err
	}
	hs := p.hists[string(key)]
	if hs == nil {
		if err := p.charge(len(key) + keptPerSet); err != nil {
			return err
		}
		hs = &histogramSet{set: p.lineSet()}
		p.hists[string(key)] = hs
		p.order = append(p.order, hs)
	}
	switch {
	case kind == sampleSum:
	case v < 0 && (kind == sampleCount || !math.IsNaN(le)):
		return p.syntax("a negative count in histogram %s", metricLatency)
	case kind == sampleCount:
		hs.count = v
	case !math.IsNaN(le):
		if len(hs.h.Bounds) == maxBuckets {
			return fmt.Errorf("line %d: %w", p.line, errTooManyBuckets)
		}
		if err := p.charge(16); err != nil {
			return err
		}
		hs.h.Bounds = append(hs.h.Bounds, le)
		hs.h.Counts = append(hs.h.Counts, v)
	}
	return nil
}

// histogramKey returns the key of the line's histogram: every label but
// le, sorted by name, each name and value followed by keySep. A name
// twice is refused, as it would make two label sets one.
func (p *parser) histogramKey() ([]byte, error) {
	slices.SortFunc(p.pairs, func(a, b labelPair) int { return bytes.Compare(p.text(a.name), p.text(b.name)) })
	p.key = p.key[:0]
	for i, pair := range p.pairs {
		name := p.text(pair.name)
		if i > 0 && bytes.Equal(name, p.text(p.pairs[i-1].name)) {
			return nil, p.syntax("duplicate label %q", name)
		}
		if string(name) == "le" {
			continue
		}
		p.key = append(append(append(append(p.key, name...), keySep), p.text(pair.value)...), keySep)
	}
	return p.key, nil
}

// finish gives each label set the latency of its histogram, when usable.
// Histograms whose labels differ only in labels a label set does not
// have are one label set's, and the last one read wins, as before.
func (p *parser) finish() {
	for _, hs := range p.order {
		h, ok := hs.histogram()
		if !ok {
			continue
		}
		c := p.series[hs.set]
		if c == nil {
			c = &counters{}
			p.series[hs.set] = c
		}
		c.Latency = h
	}
}

// histogram returns the buckets read, ending with +Inf (added from the
// _count when the exposition left it out), and false when they are not a
// usable cumulative histogram.
func (hs *histogramSet) histogram() (histogram, bool) {
	h := hs.h
	for _, c := range h.Counts {
		if !(c >= 0) {
			return histogram{}, false
		}
	}
	if !slices.IsSorted(h.Bounds) {
		return histogram{}, false
	}
	if n := len(h.Bounds); n == 0 || !math.IsInf(h.Bounds[n-1], 1) {
		h.Bounds = append(h.Bounds, math.Inf(1))
		h.Counts = append(h.Counts, hs.count)
	}
	// Cumulative counts never go down; a histogram that does is broken.
	for i := 1; i < len(h.Counts); i++ {
		if h.Counts[i] < h.Counts[i-1] {
			return histogram{}, false
		}
	}
	return h, true
}

// charge counts n more bytes kept, and fails past maxKeptBytes.
func (p *parser) charge(n int) error {
	if p.kept += n; p.kept > maxKeptBytes {
		return fmt.Errorf("line %d: %w", p.line, errTooManySeries)
	}
	return nil
}

func (p *parser) syntax(format string, args ...any) error {
	return &syntaxError{line: p.line, msg: fmt.Sprintf(format, args...)}
}

func isBlank(c byte) bool { return c == ' ' || c == '\t' }

// trimBlank drops the spaces and tabs b starts with.
func trimBlank(b []byte) []byte {
	for len(b) > 0 && isBlank(b[0]) {
		b = b[1:]
	}
	return b
}

// token splits b at its first space or tab.
func token(b []byte) (tok, rest []byte) {
	i := bytes.IndexAny(b, " \t")
	if i < 0 {
		return b, nil
	}
	return b[:i], b[i:]
}

// metricNameLen returns the length of the plain metric name b starts
// with: [a-zA-Z_:][a-zA-Z0-9_:]*.
func metricNameLen(b []byte) int {
	for i, c := range b {
		if !(c == '_' || c == ':' || 'a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' || i > 0 && '0' <= c && c <= '9') {
			return i
		}
	}
	return len(b)
}

// labelNameLen returns the length of the plain label name b starts with:
// [a-zA-Z_][a-zA-Z0-9_]*.
func labelNameLen(b []byte) int {
	for i, c := range b {
		if !(c == '_' || 'a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' || i > 0 && '0' <= c && c <= '9') {
			return i
		}
	}
	return len(b)
}

// firstRune returns the character b starts with, for an error.
func firstRune(b []byte) rune {
	r, _ := utf8.DecodeRune(b)
	return r
}
