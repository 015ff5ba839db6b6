package viz

import (
	"cmp"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"slices"
	"strings"
	"time"

	vizv1 "github.com/mesh-dev/mesh/api/viz/v1"
)

// Defaults of the query parameters (api/viz/v1).
const (
	defaultStatWindow   = time.Minute
	defaultSeriesWindow = 10 * time.Minute
	defaultSeriesStep   = 10 * time.Second
)

// httpError is an answer other than 200, with what to tell the client.
type httpError struct {
	status int
	msg    string
}

func (e *httpError) Error() string { return e.msg }

func badRequest(format string, args ...any) error {
	return &httpError{status: http.StatusBadRequest, msg: fmt.Sprintf(format, args...)}
}

func notFound(format string, args ...any) error {
	return &httpError{status: http.StatusNotFound, msg: fmt.Sprintf(format, args...)}
}

// Handler returns the viz API: the paths of api/viz/v1 but tap, GET
// only, every answer JSON. It checks no caller: it is served on loopback,
// which only a port-forward reaches, and so only a user the cluster's
// RBAC lets port-forward to mesh-viz.
//
// Tap is not among them: it shows the requests themselves, so a user
// needs a right on the namespace tapped, which only the tap API (package
// controller/tapapi, behind the Kubernetes API server) checks before it
// calls TapHandler.
func (v *Viz) Handler() http.Handler {
	mux := http.NewServeMux()
	mux.Handle(vizv1.PathStat, v.handle(v.serveStat))
	mux.Handle(vizv1.PathEdges, v.handle(v.serveEdges))
	mux.Handle(vizv1.PathRoutes, v.handle(v.serveRoutes))
	mux.Handle(vizv1.PathSeries, v.handle(v.serveSeries))
	mux.Handle(vizv1.PathTap, v.handle(func(http.ResponseWriter, *http.Request) error {
		return notFound("tap is not served here: mesh viz tap reaches it through the Kubernetes API (group tap.mesh.dev), which checks your right to tap the namespace")
	}))
	mux.Handle("/", v.handle(func(_ http.ResponseWriter, r *http.Request) error {
		return notFound("no such path %q: the viz API serves %s, %s, %s and %s",
			r.URL.Path, vizv1.PathStat, vizv1.PathEdges, vizv1.PathRoutes, vizv1.PathSeries)
	}))
	return mux
}

// TapHandler answers one tap request, whatever its path: the query of
// api/viz/v1's PathTap (namespace, resource, method, authority, path,
// max_rps), GET only, streamed as newline-delimited JSON TapEvents until
// the client goes away. It checks no caller: the tap API serves it only
// to users the cluster's RBAC allows to tap the resource asked for.
func (v *Viz) TapHandler() http.Handler { return v.handle(v.serveTap) }

// handle answers GET requests with h once the caches have synced, and
// turns h's error into an Error answer.
func (v *Viz) handle(h func(http.ResponseWriter, *http.Request) error) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		var err error
		switch {
		case r.Method != http.MethodGet:
			w.Header().Set("Allow", "GET")
			err = &httpError{status: http.StatusMethodNotAllowed, msg: "the viz API answers GET only"}
		case !v.ready.Load():
			err = &httpError{status: http.StatusServiceUnavailable, msg: errNotSynced.Error()}
		default:
			err = h(w, r)
		}
		if err == nil {
			return
		}
		he, ok := errors.AsType[*httpError](err)
		if !ok {
			v.cfg.Log.Error("viz: request failed", "path", r.URL.Path, "err", err)
			he = &httpError{status: http.StatusInternalServerError, msg: err.Error()}
		}
		writeJSON(w, he.status, vizv1.Error{Error: he.msg})
	})
}

func writeJSON(w http.ResponseWriter, status int, body any) {
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Cache-Control", "no-store")
	w.WriteHeader(status)
	json.NewEncoder(w).Encode(body)
}

// query returns r's query parameters, refusing names outside allowed and
// repeated ones.
func query(r *http.Request, allowed ...string) (url.Values, error) {
	q, err := url.ParseQuery(r.URL.RawQuery)
	if err != nil {
		return nil, badRequest("bad query: %v", err)
	}
	for name, vals := range q {
		if !slices.Contains(allowed, name) {
			return nil, badRequest("unknown parameter %q: %s takes %s", name, r.URL.Path, strings.Join(allowed, ", "))
		}
		if len(vals) > 1 {
			return nil, badRequest("parameter %q given %d times", name, len(vals))
		}
	}
	return q, nil
}

// duration parses q's name as a Go duration, def when absent, and checks
// that it lies in [lo, hi].
func duration(q url.Values, name string, def, lo, hi time.Duration) (time.Duration, error) {
	s := q.Get(name)
	if s == "" {
		return def, nil
	}
	d, err := time.ParseDuration(s)
	if err != nil {
		return 0, badRequest("%s %q: not a duration, use Go's syntax like 30s or 5m", name, s)
	}
	if d < lo || d > hi {
		return 0, badRequest("%s %s: must be between %s and %s", name, s, formatDuration(lo), formatDuration(hi))
	}
	return d, nil
}

// formatDuration writes d like a person would: 1m, not 1m0s.
func formatDuration(d time.Duration) string {
	s := d.String()
	if strings.HasSuffix(s, "m0s") {
		s = strings.TrimSuffix(s, "0s")
	}
	if strings.HasSuffix(s, "h0m") {
		s = strings.TrimSuffix(s, "0m")
	}
	return s
}

// namespaceParam returns q's namespace, checked.
func namespaceParam(q url.Values) (string, error) {
	ns := q.Get("namespace")
	if ns == "" {
		return "", nil
	}
	if err := checkNamespace(ns); err != nil {
		return "", badRequest("namespace: %v", err)
	}
	return ns, nil
}

// target is what stat and routes ask about: the resources of Kind in
// Namespace ("": every namespace), the one called Name if Name is not "",
// over Window (WindowText as asked, or the default).
type target struct {
	Kind, Namespace, Name string
	Window                time.Duration
	WindowText            string
}

// parseTarget reads q's kind (required), namespace, name and window.
func (v *Viz) parseTarget(q url.Values) (target, error) {
	var (
		t   target
		err error
	)
	if q.Get("kind") == "" {
		return t, badRequest("kind is required: %s", kindsHelp)
	}
	if t.Kind, err = parseKind(q.Get("kind")); err != nil {
		return t, badRequest("kind: %v", err)
	}
	if t.Namespace, err = namespaceParam(q); err != nil {
		return t, err
	}
	if t.Name = q.Get("name"); t.Name != "" {
		if err := checkName(t.Name); err != nil {
			return t, badRequest("name: %v", err)
		}
	}
	if t.Window, err = duration(q, "window", defaultStatWindow, v.cfg.Interval, v.cfg.Retention); err != nil {
		return t, err
	}
	t.WindowText = cmp.Or(q.Get("window"), formatDuration(defaultStatWindow))
	return t, nil
}

// targetRows returns the rows of t, and answers 404 when t names a
// resource the cache does not know.
func (v *Viz) targetRows(t target) ([]row, error) {
	rows, err := v.rows(t.Kind, t.Namespace, t.Name)
	if err != nil {
		return nil, err
	}
	if t.Name != "" && len(rows) == 0 {
		return nil, notFound("%s/%s not found%s", t.Kind, t.Name, inNamespace(t.Namespace))
	}
	return rows, nil
}

// statParams are the parsed parameters of a stat request.
type statParams struct {
	target
	From, To *rowKey // at most one
}

func (v *Viz) parseStat(r *http.Request) (statParams, error) {
	q, err := query(r, "kind", "namespace", "name", "from", "to", "window")
	if err != nil {
		return statParams{}, err
	}
	var p statParams
	if p.target, err = v.parseTarget(q); err != nil {
		return p, err
	}
	if err := v.parseFromTo(q, &p); err != nil {
		return p, err
	}
	return p, nil
}

// parseFromTo sets p's From or To and checks that they fit p's kind.
func (v *Viz) parseFromTo(q url.Values, p *statParams) error {
	from, to := q.Get("from"), q.Get("to")
	switch {
	case from == "" && to == "":
		return nil
	case from != "" && to != "":
		return badRequest("from and to: give at most one of them")
	case p.Namespace == "":
		return badRequest("from and to need a namespace: they name a resource in it")
	}
	param, s := "from", from
	if to != "" {
		param, s = "to", to
	}
	ref, err := parseRef(s)
	if err != nil {
		return badRequest("%s: %v", param, err)
	}
	k := &rowKey{Namespace: p.Namespace, Kind: ref.Kind, Name: ref.Name}
	// Proxies label their outbound traffic with the destination's
	// workload and service, never its pod.
	if param == "from" {
		if !isWorkload(ref.Kind) && ref.Kind != kindPod {
			return badRequest("from %s: traffic comes from a deploy or a pod", s)
		}
		if !isWorkload(p.Kind) && p.Kind != kindService {
			return badRequest("kind %s with from: traffic from %s is known by the deploy or svc it goes to, not by %s", p.Kind, s, p.Kind)
		}
		p.From = k
	} else {
		if !isWorkload(ref.Kind) && ref.Kind != kindService {
			return badRequest("to %s: traffic is known by the deploy or svc it goes to", s)
		}
		if !isWorkload(p.Kind) && p.Kind != kindPod {
			return badRequest("kind %s with to: traffic to %s comes from a deploy or pod", p.Kind, s)
		}
		p.To = k
	}
	return v.checkExists(*k)
}

// checkExists answers 404 when the cache does not know k.
func (v *Viz) checkExists(k rowKey) error {
	rows, err := v.rows(k.Kind, k.Namespace, k.Name)
	if err != nil {
		return err
	}
	if len(rows) == 0 {
		return notFound("%s/%s not found in namespace %s", k.Kind, k.Name, k.Namespace)
	}
	return nil
}

func (v *Viz) serveStat(w http.ResponseWriter, r *http.Request) error {
	p, err := v.parseStat(r)
	if err != nil {
		return err
	}
	rows, err := v.targetRows(p.target)
	if err != nil {
		return err
	}
	acc := make([]accum, len(rows))
	g := grouping{Kind: p.Kind, From: p.From, To: p.To}
	win := v.store.sum(p.Window, v.cfg.Interval, acc, g.rowFunc(rowIndex(rows)))
	list := vizv1.StatList{Window: p.WindowText, Collected: win.To, Rows: make([]vizv1.StatRow, len(rows))}
	for i, row := range rows {
		list.Rows[i] = v.statRow(row)
		if g.ownInbound() {
			list.Rows[i].Stats = acc[i].inboundStats(win.Secs)
		} else {
			list.Rows[i].Stats = acc[i].stats(win.Secs)
		}
	}
	writeJSON(w, http.StatusOK, list)
	return nil
}

func inNamespace(ns string) string {
	if ns == "" {
		return ""
	}
	return " in namespace " + ns
}

func (v *Viz) serveSeries(w http.ResponseWriter, r *http.Request) error {
	q, err := query(r, "kind", "namespace", "name", "window", "step")
	if err != nil {
		return err
	}
	if q.Get("kind") == "" || q.Get("name") == "" {
		return badRequest("kind and name are required (and namespace, but for kind ns)")
	}
	kind, err := parseKind(q.Get("kind"))
	if err != nil {
		return badRequest("kind: %v", err)
	}
	ns, err := namespaceParam(q)
	if err != nil {
		return err
	}
	if ns == "" && kind != kindNamespace {
		return badRequest("namespace is required for kind %s", q.Get("kind"))
	}
	name := q.Get("name")
	window, err := duration(q, "window", defaultSeriesWindow, v.cfg.Interval, v.cfg.Retention)
	if err != nil {
		return err
	}
	step, err := duration(q, "step", defaultSeriesStep, v.cfg.Interval, window)
	if err != nil {
		return err
	}
	// A step holds whole scrape rounds, or its rates would jitter.
	step = (step + v.cfg.Interval - 1) / v.cfg.Interval * v.cfg.Interval
	rows, err := v.rows(kind, ns, name)
	if err != nil {
		return err
	}
	if len(rows) == 0 {
		return notFound("%s/%s not found%s", kind, name, inNamespace(ns))
	}
	g := grouping{Kind: kind}
	match := g.rowFunc(rowIndex(rows[:1]))
	points := v.store.series(window, step, v.cfg.Interval, func(k *seriesKey) bool { return match(k) == 0 })
	out := vizv1.Series{Resource: rows[0].resource(), Step: formatDuration(step), Points: make([]vizv1.Point, len(points))}
	for i := range points {
		p := &points[i]
		out.Points[i] = vizv1.Point{Time: p.End, Stats: p.acc.stats(p.Secs)}
		if g.ownInbound() {
			out.Points[i].Stats = p.acc.inboundStats(p.Secs)
		}
	}
	writeJSON(w, http.StatusOK, out)
	return nil
}
