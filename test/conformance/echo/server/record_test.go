package server

import (
	"strings"
	"testing"

	"sigs.k8s.io/gateway-api/conformance/utils/echo"
)

// FuzzRecord feeds what a client chooses (Host, URL, a header) into an
// answer and checks that the suite's parser still reads the app's own
// fields, and that the answer has no blank line, which would split it in
// two for the batch parser. Run with
//
//	go test -fuzz FuzzRecord ./echo/server
func FuzzRecord(f *testing.F) {
	// Seeds: plain values, text that reads as fields, line breaks.
	f.Add("echo", "/", "X-Header-Set", "v1")
	f.Add("Hostname=evil", "/?Method=evil&StatusCode=1", "Version", "ServicePort=1")
	f.Add("a\nHostname=evil", "/\r\n\r\nStatusCode=500", "X\n", "\n\nHostname=evil")
	s := &Server{cfg: Config{Hostname: "echo-v1-abc-def", Version: "v1"}}
	f.Fuzz(func(t *testing.T, host, uri, name, value string) {
		rec := s.record(8080)
		rec.add("Method", "GET")
		rec.add("Host", host)
		rec.add("URL", uri)
		rec.headers("RequestHeader", map[string][]string{name: {value}})
		out := rec.String()
		if strings.Contains(out, "\n\n") {
			t.Fatalf("blank line in the answer:\n%s", out)
		}
		got := echo.ParseResponse(out)
		if got.Hostname != "echo-v1-abc-def" || got.Code != "200" || got.Version != "v1" || got.Port != "8080" || got.Method != "GET" {
			t.Fatalf("parsed %+v from\n%s", got, out)
		}
		// The value the client chose comes back, line breaks made spaces.
		want := strings.NewReplacer("\r", " ", "\n", " ").Replace(uri)
		if got.URL != want && !strings.Contains(host, "URL=") {
			t.Fatalf("URL %q, want %q\n%s", got.URL, want, out)
		}
	})
}
