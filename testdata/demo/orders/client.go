package orders

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"

	"github.com/mesh-dev/mesh/testdata/demo/tracectx"
)

// ErrUnavailable wraps every failure to get an answer from the orders
// service, as opposed to a *StatusError, which is an answer.
var ErrUnavailable = errors.New("orders unavailable")

// StatusError is an answer other than 201 Created.
type StatusError struct {
	Code    int    // HTTP status
	Message string // the "error" of the JSON body, or the body itself
}

func (e *StatusError) Error() string {
	return fmt.Sprintf("orders answered %d: %s", e.Code, e.Message)
}

// Client places orders over h2c (HTTP/2 with prior knowledge). Safe for
// concurrent use; all requests share one HTTP/2 connection.
type Client struct {
	url string
	hc  *http.Client
}

// NewClient returns a client of the orders service at addr ("host:port").
// Close it when done.
func NewClient(addr string) *Client {
	t := &http.Transport{Protocols: new(http.Protocols)}
	t.Protocols.SetUnencryptedHTTP2(true) // and not HTTP1: prior knowledge
	return &Client{url: "http://" + addr + "/orders", hc: &http.Client{Transport: t}}
}

// Close closes the idle connections.
func (c *Client) Close() { c.hc.CloseIdleConnections() }

// Create places o. Errors are a *StatusError when the service answered
// otherwise than 201, and wrap ErrUnavailable when it could not be reached.
func (c *Client) Create(ctx context.Context, o Order) (Receipt, error) {
	body, err := json.Marshal(o)
	if err != nil {
		return Receipt{}, err
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, c.url, bytes.NewReader(body))
	if err != nil {
		return Receipt{}, err
	}
	req.Header.Set("Content-Type", "application/json")
	tracectx.Forward(ctx, req) // the web request's trace goes on through orders
	resp, err := c.hc.Do(req)
	if err != nil {
		return Receipt{}, fmt.Errorf("%w: %w", ErrUnavailable, err)
	}
	defer resp.Body.Close()
	data, err := io.ReadAll(io.LimitReader(resp.Body, maxBody))
	if err != nil {
		return Receipt{}, fmt.Errorf("%w: read answer: %w", ErrUnavailable, err)
	}
	if resp.StatusCode != http.StatusCreated {
		var e struct{ Error string }
		if json.Unmarshal(data, &e) != nil || e.Error == "" {
			e.Error = string(bytes.TrimSpace(data))
		}
		return Receipt{}, &StatusError{Code: resp.StatusCode, Message: e.Error}
	}
	var r Receipt
	if err := json.Unmarshal(data, &r); err != nil {
		return Receipt{}, fmt.Errorf("%w: malformed receipt: %w", ErrUnavailable, err)
	}
	return r, nil
}
