package h2

import (
	"context"
	"errors"
	"io"
	"net"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"sync"
	"time"

	"golang.org/x/net/http/httpguts"
	"golang.org/x/net/http2"
	"golang.org/x/net/http2/hpack"
)

// An older client proxy carried its application's HTTP/1.1 requests to
// this one over HTTP/2, each marked with httpproxy.OrigProtoHeader; its
// server application may speak nothing but HTTP/1.1, so such a request
// goes on as HTTP/1.1 again, the mark removed. It is a compatibility path,
// taken by a request only from a proven peer: a goroutine per request and
// net/http's Transport are fine here.

// h1Transport sends the marked requests.
type h1Transport struct {
	tr *http.Transport
}

func (p *Proxy) h1Transport() *h1Transport {
	p.h1once.Do(func() {
		d := &net.Dialer{Timeout: p.cfg.ConnectTimeout, KeepAlive: 30 * time.Second}
		p.h1 = &h1Transport{tr: &http.Transport{
			DialContext:           d.DialContext,
			MaxIdleConnsPerHost:   64,
			IdleConnTimeout:       p.cfg.IdleTimeout,
			ResponseHeaderTimeout: p.cfg.ResponseTimeout,
			DisableCompression:    true, // the client decides about compression
			Proxy:                 nil,
		}}
	})
	return p.h1
}

// serveHTTP1 forwards the stream's request as HTTP/1.1 and relays the
// response back on the stream.
func (s *stream) serveHTTP1() {
	s.mu.Lock()
	s.req.cond = sync.NewCond(&s.mu)
	s.res.cond = s.req.cond
	if s.sc.info.Authz != nil {
		if why := s.authorize(); why != nil {
			s.refuse(nil, why)
			s.mu.Unlock()
			return
		}
	}
	ep, err := s.pick(false)
	if err != nil {
		s.noEndpoint(nil, err)
		s.mu.Unlock()
		return
	}
	s.x.ep, s.x.key = ep, s.routeKey(ep)
	s.noteTried(ep.Addr)
	s.publishTap()
	req := s.http1Request(ep.Addr.String())
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	s.cancel = cancel // a client's reset ends the request
	s.mu.Unlock()

	res, err := s.sc.p.h1Transport().tr.RoundTrip(req.WithContext(ctx))
	s.mu.Lock()
	defer s.mu.Unlock()
	defer s.requestOver()
	if err != nil {
		var oe *net.OpError
		switch {
		case s.closed:
		case errors.As(err, &oe) && oe.Op == "dial":
			s.connectFailed(nil, err) // not a byte of it was written
		default:
			s.failed(nil, err)
		}
		return
	}
	defer res.Body.Close()
	if !s.closed {
		s.relayHTTP1(res, req.Method == http.MethodHead)
	}
}

// relayHTTP1 passes an HTTP/1.1 response on to the stream, its body no
// faster than the client takes it. Called with s.mu held, which it lets
// go while it reads.
func (s *stream) relayHTTP1(res *http.Response, head bool) {
	s.resBegan = true
	s.x.status, s.x.after = res.StatusCode, time.Since(s.x.start)
	s.countRequest()
	fields := []hpack.HeaderField{{Name: ":status", Value: strconv.Itoa(res.StatusCode)}}
	fields = appendHeader(fields, res.Header)
	end := head || res.ContentLength == 0 && len(res.Trailer) == 0
	s.sc.lock()
	s.sc.headersLocked(s.id, end, fields, nil)
	s.sc.unlock(nil)
	if end {
		s.res.end = true
		s.res.finished()
		return
	}
	buf := make([]byte, 16<<10)
	for !s.closed {
		s.mu.Unlock()
		n, err := res.Body.Read(buf)
		s.mu.Lock()
		for !s.closed && s.res.queued() >= streamWindow {
			s.res.cond.Wait() // the client reads slower than the application writes
		}
		switch {
		case s.closed:
			return
		case err != nil && !errors.Is(err, io.EOF):
			s.broken(nil, err)
			return
		case err != nil:
			if len(res.Trailer) > 0 {
				s.res.trailers = appendHeader(nil, res.Trailer)
				s.noteGRPCStatusHeader(res.Trailer)
			}
			s.res.push(nil, buf[:n], true)
			return
		}
		s.res.push(nil, buf[:n], false)
	}
}

// requestOver ends the request side once the response is over: a body
// the client still sends is the client's to stop (RST_STREAM NO_ERROR).
// Called with s.mu held.
func (s *stream) requestOver() {
	if s.closed {
		return
	}
	if !s.req.end && s.res.done {
		s.sc.writeRST(nil, s.id, http2.ErrCodeNo)
	}
	s.req.abandon()
	s.closeIfDone()
}

// http1Request is the stream's request as net/http sends it. Called with
// s.mu held.
func (s *stream) http1Request(addr string) *http.Request {
	h := http.Header{}
	for _, f := range s.fields {
		if !f.IsPseudo() && f.Name != "mesh-orig-proto" && f.Name != "host" {
			h.Add(f.Name, f.Value)
		}
	}
	path := s.path
	req := &http.Request{
		Method: s.method, Proto: "HTTP/1.1", ProtoMajor: 1, ProtoMinor: 1,
		Header: h, Host: s.authority, ContentLength: s.declLen, RequestURI: "",
	}
	u, err := url.ParseRequestURI(path)
	if err != nil {
		u = &url.URL{Opaque: path} // sent as the client wrote it
	}
	u.Scheme, u.Host = "http", addr
	req.URL = u
	if s.req.end && s.req.queued() == 0 {
		req.Body, req.ContentLength = http.NoBody, 0
	} else {
		req.Body = &streamBody{s: s}
		if s.declLen < 0 {
			req.ContentLength = -1
		}
	}
	return req
}

// appendHeader appends h's fields, names in lower case, but those HTTP/2
// forbids.
func appendHeader(fields []hpack.HeaderField, h http.Header) []hpack.HeaderField {
	for name, vs := range h {
		lower := strings.ToLower(name)
		if !keepResponseField(lower) || !httpguts.ValidHeaderFieldName(name) {
			continue
		}
		for _, v := range vs {
			fields = append(fields, hpack.HeaderField{Name: lower, Value: v})
		}
	}
	return fields
}

func (s *stream) noteGRPCStatusHeader(h http.Header) {
	if v := h.Get("Grpc-Status"); v != "" {
		n, err := strconv.Atoi(v)
		if err != nil || n < 0 {
			n = 2
		}
		s.grpcStatus = n
	}
}

// streamBody reads a stream's request body from its queue, crediting the
// client for what it takes.
type streamBody struct {
	s *stream
}

func (b *streamBody) Read(p []byte) (int, error) {
	s := b.s
	s.mu.Lock()
	defer s.mu.Unlock()
	h := &s.req
	for h.queued() == 0 && !h.end && !s.closed {
		h.cond.Wait()
	}
	if h.queued() == 0 {
		if s.closed && !h.end {
			return 0, errors.New("the client reset the stream")
		}
		return 0, io.EOF
	}
	n := copy(p, h.q[h.qoff:])
	h.qoff += n
	h.credit += int32(n)
	if h.queued() == 0 {
		h.releaseQueue()
	}
	h.giveCredit(nil)
	return n, nil
}

func (b *streamBody) Close() error { return nil }
