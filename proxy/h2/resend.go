package h2

import (
	"net/http"
	"time"

	"golang.org/x/net/http2"

	"github.com/mesh-dev/mesh/proxy/balance"
	"github.com/mesh-dev/mesh/proxy/metrics"
)

// Requests that provably never reached an application are sent again,
// whatever their method (docs/traffic.md 3.5):
//
//   - No connection to the endpoint could be made: another endpoint
//     (stream.route).
//   - The endpoint's proxy could not reach its application: it refuses a
//     peer proxy's stream, and only a peer's (a client that proved an
//     identity over mesh TLS), with RST_STREAM REFUSED_STREAM, which RFC
//     9113 §8.7 defines as closed before any processing. A client proxy
//     that gets it from an endpoint whose identity its mesh TLS proved
//     sends the request to another endpoint, its body, if any went out,
//     from a replay buffer of at most httpproxy.DefaultReplayLimit; a body
//     past it is not kept, and the request is answered. A server proxy refusing streams
//     past its concurrency limit says REFUSED_STREAM too: another endpoint
//     is as good for those, as the balancer picks.
//   - Any other target's REFUSED_STREAM, and a GOAWAY below the stream's
//     ID: another connection to the same endpoint (stream.detach).

// notDeliveredField is the field with which a server proxy tells an
// HTTP/1 peer proxy that a request reached no application (proxy/h1); no
// response over HTTP/2 carries it on.
const notDeliveredField = "mesh-proxy-not-delivered"

// errNotDelivered is an endpoint's proxy that refused a stream for want of
// its application: the balancer ejects the endpoint, as it does one that
// cannot be connected to.
var errNotDelivered error = notDelivered{}

type notDelivered struct{}

func (notDelivered) Error() string {
	return "its proxy refused the stream (REFUSED_STREAM): not delivered"
}

func (notDelivered) Is(target error) bool { return target == balance.ErrUnreachable }

// resendable reports whether the request can be sent again: no response
// began, and whatever of its body went out is kept. Called with s.mu held.
func (s *stream) resendable() bool {
	return !s.resBegan && (!s.req.sentData || (s.req.rec != nil && !s.req.rec.Capped()))
}

// takeOff takes the stream off its target connection, its body kept ready
// for the next. Called with s.mu held.
func (s *stream) takeOff() {
	h := &s.req
	if h.dst != nil {
		h.dst.unblock(h)
	}
	s.uc.forget(s)
	s.uc, s.upID = nil, 0
	h.dst, h.dstID, h.window = nil, 0, 0
	h.done = false
	h.rewind()
}

// elsewhere sends the request of a stream that a proven peer proxy
// refused to another endpoint, or answers it (503, gRPC UNAVAILABLE) when
// it cannot go: its body is not all kept, or its attempts are spent.
// Called with s.mu held.
func (s *stream) elsewhere(fl *flusher) {
	if s.x.ep.Report != nil {
		s.x.ep.Report(0, errNotDelivered) // ejects it (balance.ErrUnreachable) before the next pick
		s.x.ep.Report = nil
	}
	if !s.resendable() {
		s.uc.forget(s) // reset by the peer: nothing more to tell it
		s.uc = nil
		s.connectFailed(fl, errNotDelivered)
		s.close()
		return
	}
	s.takeOff()
	s.route(fl, errNotDelivered)
}

// tellsPeer reports whether a request that reached no application is
// refused rather than answered: only inbound, from a client that proved
// its identity over mesh TLS (a peer proxy, which sends it elsewhere).
func (s *stream) tellsPeer() bool {
	sc := s.sc
	return sc.p.cfg.Direction == metrics.Inbound && sc.info.ClientID != ""
}

// refuseUndelivered resets a peer proxy's stream with REFUSED_STREAM: the
// application could not be reached, and nothing of the request went to
// it. It is counted as the 503 the peer answers if it cannot send it
// elsewhere. Called with s.mu held.
func (s *stream) refuseUndelivered(fl *flusher, err error) {
	cfg, x := &s.sc.p.cfg, &s.x
	cfg.Log.Info("request not delivered", "direction", cfg.Direction, "target", x.ep.Addr.String(),
		"authority", s.authority, "status", http.StatusServiceUnavailable, "err", err)
	x.status, x.after = http.StatusServiceUnavailable, time.Since(x.start)
	s.countRequest()
	if x.tapped == nil {
		s.publishTap()
	}
	s.resetBoth(fl, http2.ErrCodeRefusedStream, 0, true, false)
}

// keepSent keeps DATA that went to dst, while recording. Called with s.mu
// held.
func (h *half) keepSent(b []byte) {
	if h.rec != nil {
		h.rec.Add(b)
	}
}

// creditFor is what sending n bytes from the queue's head earns the
// source: nothing for those sent before, which earned it then.
func (h *half) creditFor(n int) int32 {
	again := min(n, h.resent)
	h.resent -= again
	return int32(n - again)
}

// rewind puts the DATA that went to the last target back at the head of
// the queue, for the next, and starts a new record. Called with s.mu held.
func (h *half) rewind() {
	h.sentData = false
	if h.rec == nil {
		return
	}
	if sent := h.rec.Bytes(); len(sent) > 0 {
		q := make([]byte, 0, len(sent)+h.queued())
		q = append(append(q, sent...), h.q[h.qoff:]...)
		h.releaseQueue()
		h.q, h.qoff = q, 0
		h.resent += len(sent)
	}
	h.rec.Reset()
}
