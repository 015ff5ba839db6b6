package h1

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"net/http"
	"time"

	"github.com/mesh-dev/mesh/proxy/balance"
	"github.com/mesh-dev/mesh/proxy/httpproxy"
	"github.com/mesh-dev/mesh/proxy/metrics"
)

// Requests that provably never reached an application are sent again,
// whatever their method (docs/traffic.md 3.5):
//
//   - No connection to the endpoint could be made, or not a byte of the
//     request went into the one made: another endpoint (exchange's loop).
//   - The endpoint's proxy could not reach its application: it answers a
//     peer proxy, and only one (a client that proved an identity over
//     mesh TLS), 503 with Mesh-Proxy-Not-Delivered: 1. The client proxy
//     believes it only from an endpoint whose identity its mesh TLS
//     proved, and sends the request to another endpoint if it still has
//     its body: none, still unread on its client's connection, or all of
//     it in a replay buffer of at most maxReplay. Both proxies drop the
//     field from every other response, so that neither an application nor
//     an unmeshed endpoint can make a request go twice.
//   - A pooled connection the endpoint had closed: a new connection to the
//     same endpoint, when not a byte went out, or when no byte of a
//     response came back to a request whose method is idempotent (RFC 9110
//     §9.2.2).

// notDeliveredField is the field of the proxy's own 503 that tells a
// peer proxy the request reached no application.
const notDeliveredField = "mesh-proxy-not-delivered"

// maxReplay bounds the request body kept for another attempt: past it, a
// request that was not delivered is answered, not sent again (a 1 MB POST
// is sent once).
const maxReplay = httpproxy.DefaultReplayLimit

// drainWait bounds how long a server proxy reads the body of a request it
// answers as not delivered.
const drainWait = time.Second

// maxDropped bounds the not-delivered answer a client proxy reads off to
// keep its connection: the proxy's own is a line of text.
const maxDropped = 4 << 10

// errNotDelivered is an endpoint's proxy saying that it could not reach
// its application: the balancer ejects the endpoint, as it does one that
// cannot be connected to.
var errNotDelivered error = notDelivered{}

type notDelivered struct{}

func (notDelivered) Error() string {
	return "its proxy could not reach its application: not delivered"
}

func (notDelivered) Is(target error) bool { return target == balance.ErrUnreachable }

// bodyPlace says where a request's body is, for another attempt.
type bodyPlace int

const (
	// bodyUnsent: none, or still unread on the client's connection.
	bodyUnsent bodyPlace = iota
	// bodyKept: read, and all of it in the exchange's replay.
	bodyKept
	// bodyLost: read, not all kept: the request cannot be sent again.
	bodyLost
)

// careful says whether a pooled connection must be checked before it
// carries the request: one that could not be sent again should it find
// the connection closed.
func (x *exchange) careful() bool {
	r := &x.cc.req
	return x.hadBody || !idempotent(methodString(r.get(r.method)))
}

// idempotent reports the methods RFC 9110 §9.2.2 lets a client send again
// after a connection failed, whether or not the server had the request.
func idempotent(method string) bool {
	switch method {
	case "GET", "HEAD", "OPTIONS", "TRACE", "PUT", "DELETE":
		return true
	}
	return false
}

// staleResend decides whether a request whose pooled connection failed,
// err, goes again on a new connection to the same endpoint: only one that
// streams no body and whose body, if any, is not lost, when not a byte of
// it went out or, for an idempotent method, none of a response came back
// (noResponse).
func (x *exchange) staleResend(body *bodySender, err error, noResponse bool) bool {
	if body != nil || x.place == bodyLost || x.informed || x.began() {
		return false
	}
	if !x.written {
		return true
	}
	r := &x.cc.req
	var we *writeError
	stale := errors.As(err, &we) || isReset(err) || errors.Is(err, errClosedFirst)
	return stale && noResponse && idempotent(methodString(r.get(r.method)))
}

// keep adds body bytes sent with the head to the replay, when recording;
// otherwise they are lost.
func (x *exchange) keep(b []byte) {
	if !x.recording {
		x.place = bodyLost
		return
	}
	x.replay.Add(b)
	x.place = bodyKept
	if x.replay.Capped() {
		x.place = bodyLost
	}
}

// finishBody waits for the body sender as finish does, and notes where the
// body is now.
func (x *exchange) finishBody(b *bodySender) bool {
	ok := b.finish()
	switch {
	case !b.over:
		x.place = bodyLost // still copying, into the replay too: dropReplay leaves it alone
	case b.err == errNotSent:
	case b.err == nil && x.recording && !x.replay.Capped():
		x.place = bodyKept
	default:
		x.place = bodyLost
	}
	return ok
}

// dropReplay gives the replay buffer back once the request is over,
// unless a body sender may still write into it.
func (x *exchange) dropReplay() {
	if x.replay != nil && (x.sender == nil || x.sender.over) {
		x.replay.Release()
	}
	x.replay = nil
}

// notDeliveredBy reports whether the response head just read is a peer
// proxy saying it could not reach its application: a 503 with the field,
// over a connection whose mesh TLS proved the endpoint's identity.
func (x *exchange) notDeliveredBy(u *upstream) bool {
	res := &x.cc.res
	if res.status != http.StatusServiceUnavailable || u.key.identity == "" || x.cc.p.cfg.MeshTLS == nil || x.informed {
		return false
	}
	v, ok := res.value(notDeliveredField)
	return ok && string(v) == "1"
}

// dropAnswer reads off a peer proxy's not-delivered answer when the
// request can go to another endpoint, its body being unsent or kept, and
// pools or closes u. It reports whether the request can go; if not, the
// answer goes to the client (without the field).
func (x *exchange) dropAnswer(u *upstream, body *bodySender) bool {
	if body != nil {
		x.finishBody(body)
	}
	if x.place == bodyLost {
		return false
	}
	x.readOffResponse(u, body, maxDropped)
	return true
}

// tellsPeer reports whether the proxy answers a request that reached no
// application with a not-delivered answer: only to a peer proxy, and when
// not a byte of the request went to the application.
func (x *exchange) tellsPeer() bool {
	return x.cc.peerProxy() && !x.written
}

// peerProxy reports whether the connection's client is a peer proxy:
// inbound, a client that proved its identity over mesh TLS.
func (cc *clientConn) peerProxy() bool {
	return cc.p.cfg.Direction == metrics.Inbound && cc.info.ClientID != ""
}

// tellNotDelivered answers a peer proxy's request that could not reach the
// application: 503 with the field, once its body is read off (drainBody).
func (x *exchange) tellNotDelivered(err error) bool {
	cc := x.cc
	cc.p.cfg.Log.Info("request not delivered", "direction", cc.p.cfg.Direction, "target", x.ep.Addr.String(),
		"authority", cc.authority(), "status", http.StatusServiceUnavailable, "err", err)
	cc.drainBody()
	return x.answer(local{code: http.StatusServiceUnavailable, what: "unreachable", notDelivered: true,
		msg: fmt.Sprintf("mesh-proxy: target %s unreachable, request not delivered: %v", x.ep.Addr, err)})
}

// A server proxy that closes a peer proxy's idle connection (shutting
// down, or idle too long) could meet a request the peer sent just then,
// which the close would reset: the peer could not tell whether it was
// delivered, and a POST would fail. So it first writes goodbyeAnswer,
// unasked: a not-delivered answer that stands for any request on the
// connection it will not serve; then it half-closes and reads off what
// comes for goodbyeLinger before it closes, so that the answer is read
// rather than reset. A peer with a request in flight reads the answer
// and sends it elsewhere; an idle one finds bytes waiting and drops the
// connection (upstream.alive). The connection is either served or told
// goodbye, never both: Shutdown takes an idle one only by swapping its
// idle flag, which the connection's goroutine swaps back once a request
// begins.

// goodbyeAnswer is the answer a peer proxy's idle connection gets before
// it closes.
const goodbyeAnswer = "HTTP/1.1 503 Service Unavailable\r\n" +
	"Content-Type: text/plain; charset=utf-8\r\nMesh-Proxy-Error: closing\r\n" +
	"Mesh-Proxy-Not-Delivered: 1\r\nContent-Length: 44\r\nConnection: close\r\n\r\n" +
	"mesh-proxy: closing, request not delivered\r\n"

// goodbyeLinger is how long a connection told goodbye stays open: for the
// answer to reach the peer, and what it sent meanwhile to arrive.
const goodbyeLinger = 500 * time.Millisecond

// farewell tells a peer proxy goodbye on an idle connection its goroutine
// ends, and reads off what comes for a while. Others get nothing.
func (cc *clientConn) farewell() {
	if !cc.peerProxy() {
		return
	}
	cc.c.SetWriteDeadline(time.Now().Add(goodbyeLinger))
	if _, err := io.WriteString(cc.c, goodbyeAnswer); err != nil {
		return
	}
	cc.tc.CloseWrite()
	cc.readOff(time.Now().Add(goodbyeLinger))
}

// goodbye is farewell for Shutdown, which took the connection while its
// goroutine waits in a read: that goroutine reads off what comes, until
// the connection closes.
func (cc *clientConn) goodbye() {
	cc.c.SetWriteDeadline(time.Now().Add(goodbyeLinger))
	if _, err := io.WriteString(cc.c, goodbyeAnswer); err == nil {
		if cw, ok := cc.c.(interface{ CloseWrite() error }); ok {
			cw.CloseWrite()
		}
	}
	time.AfterFunc(goodbyeLinger, func() { cc.c.Close() })
}

// readOff reads and drops what the client sends until it closes, or
// until.
func (cc *clientConn) readOff(until time.Time) {
	cc.tc.readBy(until)
	var buf [512]byte
	for {
		if _, err := cc.tc.Read(buf[:]); err != nil {
			return
		}
	}
}

// drainBody reads off the body of a request the proxy answers without
// sending it, up to maxReplay and for at most drainWait: a peer proxy that
// sent all of it then reads the answer on a connection it can use again,
// rather than one reset for the unread bytes. A body it cannot take is
// left, and the connection closes after the answer. An Expect:
// 100-continue body is never asked for.
func (cc *clientConn) drainBody() {
	r := &cc.req
	if r.body == noBody || r.expect || (r.body == lengthBody && r.length > maxReplay) {
		return
	}
	cc.tc.readBy(time.Now().Add(drainWait))
	defer cc.tc.readBy(time.Time{})
	var err error
	if r.body == lengthBody {
		_, err = cc.br.Discard(int(r.length))
	} else {
		sink := bufio.NewWriterSize(&capWriter{left: maxReplay}, 512)
		_, err = copyChunked(sink, cc.br, true)
		if err == nil {
			err = sink.Flush()
		}
	}
	if err == nil {
		r.body = noBody
	}
}

// capWriter discards what is written to it, failing past left bytes.
type capWriter struct{ left int }

var errTooLong = errors.New("body longer than the proxy reads off")

func (w *capWriter) Write(b []byte) (int, error) {
	if len(b) > w.left {
		return 0, errTooLong
	}
	w.left -= len(b)
	return len(b), nil
}
