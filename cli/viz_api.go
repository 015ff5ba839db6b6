package cli

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strconv"
	"strings"

	vizv1 "github.com/mesh-dev/mesh/api/viz/v1"
)

// The client of the viz API (api/viz/v1): functions over an HTTP client
// and the API's base URL, which is a port-forward to mesh-viz or,
// in tests, a stand-in.

// Limits on what the API may send, so a confused server cannot make the
// CLI hold gigabytes.
const (
	maxAnswerBytes = 64 << 20
	maxTapLine     = 1 << 20
)

// errTapEnded is returned when mesh-viz ends a tap stream the user did
// not stop.
var errTapEnded = errors.New("viz: mesh-viz ended the tap stream (did it restart? run the command again)")

// vizAPIError is an error answer of the viz API.
type vizAPIError struct {
	// Status is the HTTP status, Message the Error body's (or, when the
	// body is not one, what the answer says).
	Status  int
	Message string
}

func (e *vizAPIError) Error() string {
	return fmt.Sprintf("viz: %s (HTTP %d)", e.Message, e.Status)
}

// statQuery is the query of PathStat. Empty fields are left out.
type statQuery struct {
	Kind, Namespace, Name string
	From, To              string
	Window                string
}

func (q statQuery) values() url.Values {
	return queryValues("kind", q.Kind, "namespace", q.Namespace, "name", q.Name,
		"from", q.From, "to", q.To, "window", q.Window)
}

// tapQuery is a tap: Resource (KIND/NAME, kind deploy, pod or ns) in
// Namespace, which name the tap API's path, and the filters. Empty fields
// are left out; MaxRPS 0 leaves the server's default.
type tapQuery struct {
	Namespace, Resource     string
	Method, Authority, Path string
	MaxRPS                  float64
}

// values is the tap API's query: the filters only, as the resource is in
// the path.
func (q tapQuery) values() url.Values {
	v := queryValues("method", q.Method, "authority", q.Authority, "path", q.Path)
	if q.MaxRPS > 0 {
		v.Set("max_rps", strconv.FormatFloat(q.MaxRPS, 'g', -1, 64))
	}
	return v
}

// queryValues builds a query of key, value pairs, without the empty ones.
func queryValues(kv ...string) url.Values {
	v := url.Values{}
	for i := 0; i+1 < len(kv); i += 2 {
		if kv[i+1] != "" {
			v.Set(kv[i], kv[i+1])
		}
	}
	return v
}

// fetchStat asks PathStat.
func fetchStat(ctx context.Context, c *http.Client, base string, q statQuery) (*vizv1.StatList, error) {
	var list vizv1.StatList
	if err := getJSON(ctx, c, base, vizv1.PathStat, q.values(), &list); err != nil {
		return nil, err
	}
	return &list, nil
}

// fetchEdges asks PathEdges; namespace "" means every namespace.
func fetchEdges(ctx context.Context, c *http.Client, base, namespace, window string) (*vizv1.EdgeList, error) {
	var list vizv1.EdgeList
	q := queryValues("namespace", namespace, "window", window)
	if err := getJSON(ctx, c, base, vizv1.PathEdges, q, &list); err != nil {
		return nil, err
	}
	return &list, nil
}

// streamTap reads the stream of the tap API (tap.mesh.dev, through the
// Kubernetes API server at base with the user's client c: see
// tapConnect), calling fn with each event and the line it came in, until
// ctx ends (then it returns ctx's error), the stream ends (errTapEnded),
// or fn fails.
func streamTap(ctx context.Context, c *http.Client, base string, q tapQuery, fn func(line []byte, ev *vizv1.TapEvent) error) error {
	resp, err := openTap(ctx, c, base, q)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	sc := bufio.NewScanner(resp.Body)
	sc.Buffer(make([]byte, 0, 64<<10), maxTapLine)
	for n := 1; sc.Scan(); n++ {
		line := bytes.TrimSpace(sc.Bytes())
		if len(line) == 0 {
			continue
		}
		var ev vizv1.TapEvent
		if err := json.Unmarshal(line, &ev); err != nil {
			return fmt.Errorf("viz: tap: line %d of the stream is not a TapEvent: %w", n, err)
		}
		if err := fn(line, &ev); err != nil {
			return err
		}
	}
	if ctx.Err() != nil {
		return ctx.Err()
	}
	if err := sc.Err(); err != nil {
		return fmt.Errorf("viz: tap: reading the stream: %w", err)
	}
	return errTapEnded
}

// getJSON asks path with query q and decodes the answer into v.
func getJSON(ctx context.Context, c *http.Client, base, path string, q url.Values, v any) error {
	resp, err := vizGet(ctx, c, base, path, q)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	if err := json.NewDecoder(io.LimitReader(resp.Body, maxAnswerBytes)).Decode(v); err != nil {
		if ctx.Err() != nil {
			return ctx.Err()
		}
		return fmt.Errorf("viz: GET %s: the answer is not the viz API's JSON: %w", path, err)
	}
	return nil
}

// vizGet sends GET path?q and returns the response when it is 200 OK;
// other answers become a *vizAPIError.
func vizGet(ctx context.Context, c *http.Client, base, path string, q url.Values) (*http.Response, error) {
	u := strings.TrimSuffix(base, "/") + path
	if len(q) > 0 {
		u += "?" + q.Encode()
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, u, nil)
	if err != nil {
		return nil, fmt.Errorf("viz: %w", err)
	}
	req.Header.Set("Accept", "application/json")
	resp, err := c.Do(req)
	if err != nil {
		if ctx.Err() != nil {
			return nil, ctx.Err()
		}
		return nil, fmt.Errorf("viz: GET %s: %w", path, err)
	}
	if resp.StatusCode != http.StatusOK {
		defer resp.Body.Close()
		return nil, answerError(resp, path)
	}
	return resp, nil
}

// answerError reads a failed answer: the Error body the API sends, or
// what a server that is not the viz API (an older mesh-viz) said.
func answerError(resp *http.Response, path string) error {
	body, _ := io.ReadAll(io.LimitReader(resp.Body, 64<<10))
	var e vizv1.Error
	if json.Unmarshal(body, &e) == nil && e.Error != "" {
		return &vizAPIError{Status: resp.StatusCode, Message: e.Error}
	}
	msg := firstLine(strings.TrimSpace(string(body)))
	if msg == "" {
		msg = http.StatusText(resp.StatusCode)
	}
	if resp.StatusCode == http.StatusNotFound {
		msg = fmt.Sprintf("mesh-viz does not serve %s (%s): is it older than this mesh binary? run mesh check", path, msg)
	}
	return &vizAPIError{Status: resp.StatusCode, Message: msg}
}
