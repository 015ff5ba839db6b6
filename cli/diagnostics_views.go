package cli

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"maps"
	"math"
	"slices"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"

	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"
	corev1 "k8s.io/api/core/v1"

	"github.com/mesh-dev/mesh/identity/pki"
)

// What each `mesh diagnostics` subcommand reads and how it prints it. The
// JSON of endpoints and policy is the proxy's own, passed through: the
// proxy owns those shapes (proxy/route.go destinationView, proxy/authz
// View); the types here hold only what the tables show.

// errPrivateKey: an admin answer carried a private key. The proxy never
// sends one; if a proxy ever did, printing it would leak it into a
// terminal's scrollback and a CI log.
var errPrivateKey = errors.New("the proxy's answer holds a private key; refusing to print it (this is a bug of the proxy: report it)")

// refuseKeys returns errPrivateKey when body holds a PEM private key.
func refuseKeys(body []byte) error {
	if bytes.Contains(body, []byte("PRIVATE KEY")) {
		return errPrivateKey
	}
	return nil
}

// writePassThrough prints a JSON answer of the proxy as indented JSON or
// as YAML.
func writePassThrough(w io.Writer, body []byte, format string) error {
	if !json.Valid(body) {
		return fmt.Errorf("the proxy's answer is not JSON: %s", firstLine(string(body)))
	}
	return writeStructured(w, json.RawMessage(body), format)
}

// ---- proxy-metrics

// metricsReport is `mesh diagnostics proxy-metrics -o json|yaml`.
type metricsReport struct {
	Namespace string         `json:"namespace"`
	Pod       string         `json:"pod"`
	Families  []metricFamily `json:"families"`
}

// metricFamily is one metric name, sorted by name.
type metricFamily struct {
	Name    string         `json:"name"`
	Type    string         `json:"type"`
	Help    string         `json:"help,omitempty"`
	Metrics []metricSample `json:"metrics"`
}

// metricSample is one series. Counters, gauges and untyped metrics have a
// Value; histograms a Count, Sum and Buckets; summaries a Count, Sum and
// Quantiles.
type metricSample struct {
	Labels    map[string]string `json:"labels,omitempty"`
	Value     *promFloat        `json:"value,omitempty"`
	Count     *uint64           `json:"count,omitempty"`
	Sum       *promFloat        `json:"sum,omitempty"`
	Buckets   []metricBucket    `json:"buckets,omitempty"`
	Quantiles []metricQuantile  `json:"quantiles,omitempty"`
}

// metricBucket is a histogram bucket: Count observations at most LE.
type metricBucket struct {
	LE    promFloat `json:"le"`
	Count uint64    `json:"count"`
}

type metricQuantile struct {
	Quantile promFloat `json:"quantile"`
	Value    promFloat `json:"value"`
}

// promFloat is a sample value: a JSON number when finite, and "+Inf",
// "-Inf" or "NaN" otherwise, which JSON numbers cannot be (a histogram's
// last bucket is le="+Inf").
type promFloat float64

func (f promFloat) MarshalJSON() ([]byte, error) {
	v := float64(f)
	if math.IsInf(v, 0) || math.IsNaN(v) {
		return json.Marshal(strconv.FormatFloat(v, 'g', -1, 64))
	}
	return json.Marshal(v)
}

func pf(v float64) *promFloat { f := promFloat(v); return &f }

func runProxyMetrics(ctx context.Context, e *diagEnv, pod *corev1.Pod, r adminReader, format string) error {
	_, body, err := r.Public(ctx, pod, metricsPath)
	if err != nil {
		return err
	}
	if format == "text" {
		_, err := e.o.Out.Write(body)
		return err
	}
	families, err := parseMetrics(body)
	if err != nil {
		return fmt.Errorf("pod %s/%s: %w", pod.Namespace, pod.Name, err)
	}
	return writeStructured(e.o.Out, metricsReport{Namespace: pod.Namespace, Pod: pod.Name, Families: families}, format)
}

// parseMetrics reads a Prometheus text exposition into families sorted by
// name, each series' labels as a map.
func parseMetrics(body []byte) ([]metricFamily, error) {
	parser := expfmt.NewTextParser(model.UTF8Validation)
	parsed, err := parser.TextToMetricFamilies(bytes.NewReader(body))
	if err != nil {
		return nil, fmt.Errorf("the proxy's metrics do not parse: %w", err)
	}
	out := make([]metricFamily, 0, len(parsed))
	for _, name := range slices.Sorted(maps.Keys(parsed)) {
		mf := parsed[name]
		f := metricFamily{Name: name, Type: strings.ToLower(mf.GetType().String()), Help: mf.GetHelp(), Metrics: []metricSample{}}
		for _, m := range mf.GetMetric() {
			f.Metrics = append(f.Metrics, metricSampleOf(mf.GetType(), m))
		}
		out = append(out, f)
	}
	return out, nil
}

func metricSampleOf(t dto.MetricType, m *dto.Metric) metricSample {
	var s metricSample
	if len(m.GetLabel()) > 0 {
		s.Labels = map[string]string{}
		for _, l := range m.GetLabel() {
			s.Labels[l.GetName()] = l.GetValue()
		}
	}
	switch t {
	case dto.MetricType_COUNTER:
		s.Value = pf(m.GetCounter().GetValue())
	case dto.MetricType_GAUGE:
		s.Value = pf(m.GetGauge().GetValue())
	case dto.MetricType_HISTOGRAM:
		h := m.GetHistogram()
		n := h.GetSampleCount()
		s.Count, s.Sum = &n, pf(h.GetSampleSum())
		for _, b := range h.GetBucket() {
			s.Buckets = append(s.Buckets, metricBucket{LE: promFloat(b.GetUpperBound()), Count: b.GetCumulativeCount()})
		}
	case dto.MetricType_SUMMARY:
		sm := m.GetSummary()
		n := sm.GetSampleCount()
		s.Count, s.Sum = &n, pf(sm.GetSampleSum())
		for _, q := range sm.GetQuantile() {
			s.Quantiles = append(s.Quantiles, metricQuantile{Quantile: promFloat(q.GetQuantile()), Value: promFloat(q.GetValue())})
		}
	default:
		s.Value = pf(m.GetUntyped().GetValue())
	}
	return s
}

// ---- endpoints

// endpointsReport is `mesh diagnostics endpoints -o json|yaml`: the
// proxy's GET /destinations as it is, with the pod it came from.
type endpointsReport struct {
	Namespace    string          `json:"namespace"`
	Pod          string          `json:"pod"`
	Destinations json.RawMessage `json:"destinations"`
}

// destinationRow is what the endpoints table shows of a destination of
// GET /destinations.
type destinationRow struct {
	Authority string `json:"authority"`
	NotFound  bool   `json:"not_found"`
	Endpoints []struct {
		Addr     string  `json:"addr"`
		Identity string  `json:"identity"`
		Zone     string  `json:"zone"`
		RTTms    float64 `json:"rtt_estimate_ms"`
		Pending  int64   `json:"pending"`
		Failures int     `json:"consecutive_failures"`
		Ejected  bool    `json:"ejected"`
		Draining bool    `json:"draining"`
	} `json:"endpoints"`
}

func runEndpoints(ctx context.Context, e *diagEnv, pod *corev1.Pod, r adminReader, format string) error {
	body, err := readLocal(ctx, pod, r, destinationsPath)
	if err != nil {
		return err
	}
	if format != "table" {
		if !json.Valid(body) {
			return fmt.Errorf("pod %s/%s: the proxy's answer to GET /%s is not JSON: %s", pod.Namespace, pod.Name, destinationsPath, firstLine(string(body)))
		}
		return writeStructured(e.o.Out, endpointsReport{Namespace: pod.Namespace, Pod: pod.Name, Destinations: body}, format)
	}
	var dsts []destinationRow
	if err := json.Unmarshal(body, &dsts); err != nil {
		return fmt.Errorf("pod %s/%s: the proxy's answer to GET /%s is not its JSON: %w", pod.Namespace, pod.Name, destinationsPath, err)
	}
	if len(dsts) == 0 {
		fmt.Fprintf(e.o.Out, "The proxy of pod %s/%s has asked about no destination yet: it asks when the application first connects to one.\n", pod.Namespace, pod.Name)
		return nil
	}
	tw := tabwriter.NewWriter(e.o.Out, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "AUTHORITY\tENDPOINT\tIDENTITY\tZONE\tRTT\tPENDING\tFAILURES\tSTATE")
	for _, d := range dsts {
		switch {
		case d.NotFound:
			fmt.Fprintf(tw, "%s\t-\t-\t-\t-\t-\t-\tnot in service discovery: forwarded as addressed\n", d.Authority)
		case len(d.Endpoints) == 0:
			fmt.Fprintf(tw, "%s\t-\t-\t-\t-\t-\t-\tno endpoints\n", d.Authority)
		}
		for _, ep := range d.Endpoints {
			state := "ok"
			switch {
			case ep.Ejected:
				state = "ejected"
			case ep.Draining:
				state = "draining"
			}
			fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%d\t%d\t%s\n", d.Authority, ep.Addr, dash(ep.Identity), dash(ep.Zone),
				strconv.FormatFloat(ep.RTTms, 'f', 1, 64)+"ms", ep.Pending, ep.Failures, state)
		}
	}
	return tw.Flush()
}

// dash is s, or "-" for nothing.
func dash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}

// ---- policy

// policyAnswer is what the policy table shows of GET /policy.
type policyAnswer struct {
	Received   bool       `json:"received"`
	ReceivedAt *time.Time `json:"received_at"`
	Policy     *struct {
		Revision              string              `json:"revision"`
		DefaultPolicy         string              `json:"default_policy"`
		Audit                 bool                `json:"audit"`
		DefaultAuthorizations []policyAuthzAnswer `json:"default_authorizations"`
		Servers               []struct {
			Port           uint16              `json:"port"`
			Name           string              `json:"name"`
			Protocol       string              `json:"protocol"`
			Authorizations []policyAuthzAnswer `json:"authorizations"`
			RateLimit      *struct {
				Name        string `json:"name"`
				TotalRPS    uint32 `json:"total_rps"`
				IdentityRPS uint32 `json:"identity_rps"`
				Overrides   []struct {
					RPS        uint32   `json:"rps"`
					Identities []string `json:"identities"`
				} `json:"overrides"`
			} `json:"rate_limit"`
			Routes *struct {
				Unusable bool `json:"unusable"`
				Routes   []struct {
					Kind           string              `json:"kind"`
					Name           string              `json:"name"`
					Authorizations []policyAuthzAnswer `json:"authorizations"`
				} `json:"routes"`
			} `json:"routes"`
		} `json:"servers"`
		Probes []struct {
			Port uint16 `json:"port"`
			Path string `json:"path"`
		} `json:"probes"`
	} `json:"policy"`
}

type policyAuthzAnswer struct {
	Name     string `json:"name"`
	Required []struct {
		Networks []struct {
			CIDR   string   `json:"cidr"`
			Except []string `json:"except"`
		} `json:"networks"`
		Identities []string `json:"identities"`
	} `json:"required"`
}

// describe says whom the authorization lets in.
func (a policyAuthzAnswer) describe() string {
	if len(a.Required) == 0 {
		return "every client"
	}
	var parts []string
	for _, r := range a.Required {
		switch {
		case len(r.Identities) > 0:
			parts = append(parts, "identity "+strings.Join(r.Identities, " or "))
		case len(r.Networks) > 0:
			var nets []string
			for _, n := range r.Networks {
				s := n.CIDR
				if len(n.Except) > 0 {
					s += " except " + strings.Join(n.Except, ", ")
				}
				nets = append(nets, s)
			}
			parts = append(parts, "from "+strings.Join(nets, " or "))
		default:
			parts = append(parts, "nothing (an authentication the proxy could not use)")
		}
	}
	return strings.Join(parts, " and ")
}

func runPolicy(ctx context.Context, e *diagEnv, pod *corev1.Pod, r adminReader, format string) error {
	body, err := readLocal(ctx, pod, r, policyPath)
	if err != nil {
		return err
	}
	if format != "table" {
		return writePassThrough(e.o.Out, body, format)
	}
	var a policyAnswer
	if err := json.Unmarshal(body, &a); err != nil {
		return fmt.Errorf("pod %s/%s: the proxy's answer to GET /%s is not its JSON: %w", pod.Namespace, pod.Name, policyPath, err)
	}
	w := e.o.Out
	if !a.Received || a.Policy == nil {
		fmt.Fprintf(w, "The proxy of pod %s/%s has received no inbound policy from the controller yet: it refuses inbound connections\n"+
			"once its grace period ends. Run mesh check --proxy, and see its log: kubectl -n %s logs %s -c mesh-proxy\n",
			pod.Namespace, pod.Name, pod.Namespace, pod.Name)
		return nil
	}
	p := a.Policy
	audit := ""
	if p.Audit {
		audit = " (audit: denials are only logged)"
	}
	received := ""
	if a.ReceivedAt != nil {
		received = "; received " + a.ReceivedAt.UTC().Format(time.RFC3339)
	}
	fmt.Fprintf(w, "Revision %s%s; default policy %s%s\n\n", dash(p.Revision), received, dash(p.DefaultPolicy), audit)
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "PORT\tSERVER\tPROTOCOL\tAUTHORIZATION\tALLOWS")
	authzRows := func(port, server, protocol string, as []policyAuthzAnswer) {
		if len(as) == 0 {
			fmt.Fprintf(tw, "%s\t%s\t%s\t-\tno client\n", port, server, protocol)
		}
		for _, az := range as {
			fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\n", port, server, protocol, az.Name, az.describe())
		}
	}
	for _, s := range p.Servers {
		authzRows(strconv.Itoa(int(s.Port)), s.Name, s.Protocol, s.Authorizations)
	}
	authzRows("*", "default:"+p.DefaultPolicy, "detect", p.DefaultAuthorizations)
	tw.Flush()

	var routes, limits [][]string
	for _, s := range p.Servers {
		port := strconv.Itoa(int(s.Port))
		if rl := s.RateLimit; rl != nil {
			row := []string{port, s.Name, rl.Name, rate(rl.TotalRPS), rate(rl.IdentityRPS)}
			var ov []string
			for _, o := range rl.Overrides {
				ov = append(ov, fmt.Sprintf("%s: %s", strings.Join(o.Identities, ", "), rate(o.RPS)))
			}
			limits = append(limits, append(row, dash(strings.Join(ov, "; "))))
		}
		if rs := s.Routes; rs != nil {
			for _, rt := range rs.Routes {
				var names []string
				for _, az := range rt.Authorizations {
					names = append(names, az.Name)
				}
				state := "in use"
				if rs.Unusable {
					state = "unusable: every request gets 404 (see the proxy's log)"
				}
				routes = append(routes, []string{port, s.Name, rt.Kind + "/" + rt.Name, dash(strings.Join(names, ", ")), state})
			}
		}
	}
	writeRows(w, []string{"PORT", "SERVER", "ROUTE", "AUTHORIZATIONS", "STATE"}, routes)
	writeRows(w, []string{"PORT", "SERVER", "RATE LIMIT", "TOTAL", "PER IDENTITY", "OVERRIDES"}, limits)
	if len(p.Probes) > 0 {
		var probes []string
		for _, pr := range p.Probes {
			probes = append(probes, fmt.Sprintf("%d%s", pr.Port, pr.Path))
		}
		fmt.Fprintf(w, "\nKubelet probes always allowed: %s\n", strings.Join(probes, ", "))
	}
	return nil
}

// rate formats a rate limit; zero is none.
func rate(rps uint32) string {
	if rps == 0 {
		return "-"
	}
	return fmt.Sprintf("%d/s", rps)
}

// writeRows writes a blank line and a table, when there are rows.
func writeRows(w io.Writer, header []string, rows [][]string) {
	if len(rows) == 0 {
		return
	}
	fmt.Fprintln(w)
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, strings.Join(header, "\t"))
	for _, r := range rows {
		fmt.Fprintln(tw, strings.Join(r, "\t"))
	}
	tw.Flush()
}

// ---- identity

// diagIdentity is `mesh diagnostics identity -o json|yaml`: the proxy's
// certificate chain as parsed here from its PEM, and the trust anchors it
// reports.
type diagIdentity struct {
	Namespace    string        `json:"namespace"`
	Pod          string        `json:"pod"`
	SPIFFEID     string        `json:"spiffe_id"`
	NotBefore    time.Time     `json:"not_before"`
	NotAfter     time.Time     `json:"not_after"`
	Chain        []certSummary `json:"chain"`
	TrustAnchors []trustAnchor `json:"trust_anchors"`
}

// certSummary is one certificate of the chain, leaf first.
type certSummary struct {
	Subject   string    `json:"subject"`
	Issuer    string    `json:"issuer"`
	Serial    string    `json:"serial"`
	URIs      []string  `json:"uri_sans,omitempty"`
	DNSNames  []string  `json:"dns_sans,omitempty"`
	NotBefore time.Time `json:"not_before"`
	NotAfter  time.Time `json:"not_after"`
	IsCA      bool      `json:"is_ca"`
	SHA256    string    `json:"sha256"`
}

// readDiagIdentity reads and parses the pod's /identity.
func readDiagIdentity(ctx context.Context, pod *corev1.Pod, r adminReader) (diagIdentity, error) {
	body, err := readLocal(ctx, pod, r, identityPath)
	if err != nil {
		return diagIdentity{}, err
	}
	return parseDiagIdentity(pod, body)
}

func parseDiagIdentity(pod *corev1.Pod, body []byte) (diagIdentity, error) {
	ref := pod.Namespace + "/" + pod.Name
	if err := refuseKeys(body); err != nil {
		return diagIdentity{}, fmt.Errorf("pod %s: %w", ref, err)
	}
	id, err := parseIdentity(body)
	if err != nil {
		return diagIdentity{}, fmt.Errorf("pod %s: %w", ref, err)
	}
	chain, err := pki.ParseCerts([]byte(id.ChainPEM))
	if err != nil {
		return diagIdentity{}, fmt.Errorf("pod %s: %w: %w", ref, errBadChain, err)
	}
	out := diagIdentity{Namespace: pod.Namespace, Pod: pod.Name, SPIFFEID: id.SPIFFEID, NotBefore: id.NotBefore, NotAfter: id.NotAfter,
		Chain: []certSummary{}, TrustAnchors: id.TrustAnchors}
	if out.TrustAnchors == nil {
		out.TrustAnchors = []trustAnchor{}
	}
	for _, c := range chain {
		sum := sha256.Sum256(c.Raw)
		cs := certSummary{Subject: c.Subject.String(), Issuer: c.Issuer.String(), Serial: c.SerialNumber.Text(16),
			DNSNames: c.DNSNames, NotBefore: c.NotBefore.UTC(), NotAfter: c.NotAfter.UTC(), IsCA: c.IsCA, SHA256: hex.EncodeToString(sum[:])}
		for _, u := range c.URIs {
			cs.URIs = append(cs.URIs, u.String())
		}
		out.Chain = append(out.Chain, cs)
	}
	return out, nil
}

func runDiagIdentity(ctx context.Context, e *diagEnv, pod *corev1.Pod, r adminReader, format string) error {
	id, err := readDiagIdentity(ctx, pod, r)
	if err != nil {
		return err
	}
	if format != "table" {
		return writeStructured(e.o.Out, id, format)
	}
	w := e.o.Out
	now := e.o.now()
	fmt.Fprintf(w, "SPIFFE ID   %s\nVALID       %s to %s (expires %s)\n\n", id.SPIFFEID,
		id.NotBefore.Format(time.RFC3339), id.NotAfter.Format(time.RFC3339), timeLeft(id.NotBefore, id.NotAfter, now))
	var rows [][]string
	for i, c := range id.Chain {
		sans := slices.Concat(c.URIs, c.DNSNames)
		rows = append(rows, []string{strconv.Itoa(i), dash(c.Subject), c.Issuer, dash(strings.Join(sans, ", ")),
			c.NotAfter.Format(time.RFC3339), strconv.FormatBool(c.IsCA)})
	}
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "CHAIN\tSUBJECT\tISSUER\tSANS\tNOT AFTER\tCA")
	for _, r := range rows {
		fmt.Fprintln(tw, strings.Join(r, "\t"))
	}
	tw.Flush()
	var anchors [][]string
	for _, a := range id.TrustAnchors {
		anchors = append(anchors, []string{a.Subject, a.NotAfter.UTC().Format(time.RFC3339), a.SHA256})
	}
	writeRows(w, []string{"TRUST ANCHOR", "NOT AFTER", "SHA256"}, anchors)
	return nil
}
