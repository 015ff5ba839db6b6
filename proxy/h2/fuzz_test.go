package h2

import (
	"bytes"
	"fmt"
	"io"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
)

// seen is what one exchange looked like at both ends: the response as the
// client saw it, with the request as the target saw it in its X-Seen
// field.
type seen struct {
	Status    int
	ResHeader http.Header
	ResBody   string
	Trailer   http.Header
	Err       string
}

// FuzzForward is a differential test: random request and response shapes
// (method, path, header fields, bodies, status, trailers) go to a Go h2c
// target directly and through the forwarder; the target must see the same
// request and the client the same response, or both must fail.
//
//	go test -run '^$' -fuzz FuzzForward -fuzztime 60s ./proxy/h2/
func FuzzForward(f *testing.F) {
	// Seeds: a GET, a POST with a body and trailers, a HEAD, an empty 204,
	// odd header values, a large body.
	f.Add("GET", "/", "x-a", "1", []byte(nil), 200, "x-r", "v", []byte("ok"), false)
	f.Add("POST", "/up?x=1&y=%20", "content-type", "application/json", []byte(`{"a":1}`), 201, "x-r", "v", []byte("created"), true)
	f.Add("HEAD", "/h", "accept", "*/*", []byte(nil), 200, "content-length", "10", []byte(nil), false)
	f.Add("DELETE", "/d", "x-empty", "", []byte(nil), 204, "x-r", "", []byte(nil), false)
	f.Add("PUT", "/big", "x-b", "a, b;c=\"d\"", bytes.Repeat([]byte("z"), 300<<10), 500, "x-e", "boom", bytes.Repeat([]byte("y"), 200<<10), true)
	f.Fuzz(func(t *testing.T, method, path, reqName, reqValue string, reqBody []byte, status int, resName, resValue string, resBody []byte, trailers bool) {
		if status < 200 || status > 599 || !strings.HasPrefix(path, "/") {
			t.Skip()
		}
		handler := func(w http.ResponseWriter, r *http.Request) {
			body, _ := io.ReadAll(r.Body)
			hdr := r.Header.Clone()
			w.Header().Set("X-Seen", fmt.Sprintf("%q %q %q %q %q", r.Method, r.URL.RequestURI(), r.Host, body, headerLine(hdr)))
			if resName != "" {
				w.Header().Add(resName, resValue)
			}
			if trailers {
				w.Header().Set("Trailer", "X-Trailer")
			}
			w.WriteHeader(status)
			w.Write(resBody)
			if trailers {
				w.Header().Set("X-Trailer", strconv.Itoa(len(resBody)))
			}
		}
		backend := startBackend(t, http.HandlerFunc(handler))
		p := startTestProxy(t, backend)
		client := h2cClient(t)
		do := func(addr string) seen {
			req, err := http.NewRequest(method, "http://"+addr+path, bytes.NewReader(reqBody))
			if err != nil {
				return seen{Err: "bad request"}
			}
			req.Host = "svc.test"
			if reqName != "" {
				req.Header.Add(reqName, reqValue)
			}
			res, err := client.Do(req)
			if err != nil {
				return seen{Err: "failed"}
			}
			defer res.Body.Close()
			body, err := io.ReadAll(res.Body)
			if err != nil {
				return seen{Err: "body failed"}
			}
			h := res.Header.Clone()
			h.Del("Date")
			return seen{Status: res.StatusCode, ResHeader: h, ResBody: string(body), Trailer: res.Trailer}
		}
		direct := do(backend)
		proxied := do(p.addr)
		if direct.Err == "bad request" {
			t.Skip()
		}
		if diff := cmp.Diff(direct, proxied); diff != "" {
			t.Errorf("through the proxy differs (-direct +proxied):\n%s", diff)
		}
	})
}

// headerLine renders h in a stable order.
func headerLine(h http.Header) string {
	keys := make([]string, 0, len(h))
	for k := range h {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	var b strings.Builder
	for _, k := range keys {
		fmt.Fprintf(&b, "%s=%q;", k, h[k])
	}
	return b.String()
}
