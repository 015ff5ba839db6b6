package h2

import (
	"encoding/xml"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"testing"
)

// TestH2spec runs the h2spec conformance suite against a Go h2c server,
// directly and through the forwarder, on loopback: every case that passes
// against the server alone must pass through the proxy. (The root
// integration suite runs it through both proxies of a mesh; this is the
// quick loop for the forwarder alone.) Skipped without h2spec, and in
// -short mode.
func TestH2spec(t *testing.T) {
	if testing.Short() {
		t.Skip("h2spec takes a while")
	}
	bin, err := exec.LookPath("h2spec")
	if err != nil {
		t.Skip("h2spec not installed")
	}
	backend := startBackend(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Write([]byte("ok"))
	}))
	p := startTestProxy(t, backend)
	run := func(name, addr string) map[string]bool {
		host, port, _ := net.SplitHostPort(addr)
		report := filepath.Join(t.TempDir(), name+".xml")
		// h2spec exits non-zero when a case fails; the report says which.
		exec.Command(bin, "-h", host, "-p", port, "-j", report, "-o", "2").Run()
		return readReport(t, report)
	}
	direct := run("direct", backend)
	proxied := run("proxied", p.addr)
	if len(direct) < 100 || len(proxied) != len(direct) {
		t.Fatalf("h2spec ran %d cases directly, %d through the proxy", len(direct), len(proxied))
	}
	var worse []string
	for c, ok := range proxied {
		if !ok && direct[c] {
			worse = append(worse, c)
		}
	}
	if len(worse) > 0 {
		// A few cases race the target's answer against the client's next
		// frame (8.1.2.6: the target may answer before the DATA that
		// breaks the content-length arrives), directly as through the
		// proxy; a failure the proxy causes repeats.
		again := run("again", p.addr)
		worse = slices.DeleteFunc(worse, func(c string) bool { return again[c] })
	}
	slices.Sort(worse)
	for _, c := range worse {
		t.Errorf("fails only through the proxy, twice: %s", c)
	}
}

// readReport reads h2spec's JUnit report: case -> passed.
func readReport(t testing.TB, path string) map[string]bool {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatalf("h2spec wrote no report: %v", err)
	}
	var doc struct {
		Suites []struct {
			Name  string `xml:"name,attr"`
			Cases []struct {
				Name    string    `xml:"classname,attr"`
				Failure *struct{} `xml:"failure"`
				Error   *struct{} `xml:"error"`
			} `xml:"testcase"`
		} `xml:"testsuite"`
	}
	if err := xml.Unmarshal(b, &doc); err != nil {
		t.Fatalf("parsing %s: %v", path, err)
	}
	cases := map[string]bool{}
	for _, s := range doc.Suites {
		for _, c := range s.Cases {
			cases[s.Name+": "+c.Name] = c.Failure == nil && c.Error == nil
		}
	}
	return cases
}
