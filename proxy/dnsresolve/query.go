package dnsresolve

import (
	"context"
	"fmt"
	"math"
	"net/netip"
	"slices"
	"strings"
	"time"

	"github.com/miekg/dns"
)

// maxCNAMEs bounds how far a CNAME chain is followed, which also stops
// loops.
const maxCNAMEs = 16

// query asks the servers for the records of one type at fqdn. The servers
// are tried in order, and the list is gone through Attempts times, like the
// libc resolver; a server that fails or answers SERVFAIL or REFUSED passes
// the question on to the next.
func (r *Resolver) query(ctx context.Context, fqdn string, qtype uint16) result {
	m := new(dns.Msg)
	m.SetQuestion(fqdn, qtype) // also sets RD: servers recurse for us
	m.SetEdns0(r.udp.UDPSize, false)

	last := result{err: &Error{Name: fqdn, Query: fqdn, Rcode: NoResponse, Err: ErrServerMisbehaving}}
	for range r.cfg.attempts {
		for _, server := range r.cfg.servers {
			if err := ctx.Err(); err != nil {
				return result{err: &Error{Name: fqdn, Query: fqdn, Server: server, Rcode: NoResponse, Err: err}}
			}
			resp, err := r.exchange(ctx, m, server)
			if err != nil {
				last = result{err: &Error{Name: fqdn, Query: fqdn, Server: server, Rcode: NoResponse, Err: err}}
				continue
			}
			last = answer(resp, fqdn, qtype, server)
			if last.err == nil || resp.Rcode == dns.RcodeSuccess || resp.Rcode == dns.RcodeNameError {
				return last
			}
		}
	}
	return last
}

// exchange sends m to server over UDP and, if the answer is truncated,
// again over TCP (RFC 1035 §4.2.1, RFC 7766 §5).
func (r *Resolver) exchange(ctx context.Context, m *dns.Msg, server string) (*dns.Msg, error) {
	resp, err := exchangeOver(ctx, r.udp, m, server)
	// A truncated answer may also fail to parse; the TC bit still counts.
	if resp != nil && resp.Truncated {
		resp, err = exchangeOver(ctx, r.tcp, m, server)
		if err != nil {
			return nil, fmt.Errorf("over TCP after a truncated UDP answer: %w", err)
		}
	}
	if err != nil {
		return nil, err
	}
	// The client matched the message ID; the question must match too
	// (RFC 5452 §9.1), or this is an answer to something else.
	if len(resp.Question) != 1 || resp.Question[0].Qtype != m.Question[0].Qtype ||
		!strings.EqualFold(resp.Question[0].Name, m.Question[0].Name) {
		return nil, fmt.Errorf("%w: answer does not match the question", ErrServerMisbehaving)
	}
	return resp, nil
}

// exchangeOver does one query on a new connection. The client honours a
// deadline on ctx but not its cancellation, so cancellation expires the
// connection's deadline to unblock the read.
func exchangeOver(ctx context.Context, c *dns.Client, m *dns.Msg, server string) (*dns.Msg, error) {
	conn, err := c.DialContext(ctx, server)
	if err != nil {
		return nil, err
	}
	defer conn.Close()
	stop := context.AfterFunc(ctx, func() { _ = conn.SetDeadline(time.Now()) })
	defer stop()
	resp, _, err := c.ExchangeWithConnContext(ctx, m, conn)
	if ctxErr := ctx.Err(); ctxErr != nil {
		return nil, ctxErr
	}
	return resp, err
}

// answer interprets a response to the question (fqdn, qtype) from server.
func answer(resp *dns.Msg, fqdn string, qtype uint16, server string) result {
	fail := func(err error) result {
		return result{err: &Error{Name: fqdn, Query: fqdn, Server: server, Rcode: resp.Rcode, Err: err}}
	}
	switch resp.Rcode {
	case dns.RcodeSuccess:
		addrs, ttl := chase(resp.Answer, fqdn, qtype)
		if len(addrs) == 0 {
			// NODATA: the name exists without records of this type
			// (RFC 2308 §2.2); negative caching applies as to NXDOMAIN.
			res := fail(ErrNotFound)
			res.ttl = negativeTTL(resp)
			return res
		}
		return result{addrs: addrs, ttl: ttl}
	case dns.RcodeNameError:
		res := fail(ErrNotFound)
		res.ttl = negativeTTL(resp)
		return res
	default:
		return fail(ErrServerMisbehaving)
	}
}

// chase follows the CNAME chain from fqdn within the answer section (RFC
// 1034 §3.6.2) and returns the addresses of type qtype at its end, with the
// smallest TTL along the chain. Records not on the chain are ignored: a
// server has no say over names it was not asked about.
func chase(rrs []dns.RR, fqdn string, qtype uint16) ([]netip.Addr, time.Duration) {
	name := fqdn
	ttl := uint32(math.MaxUint32)
	for range maxCNAMEs {
		next := ""
		for _, rr := range rrs {
			if c, ok := rr.(*dns.CNAME); ok && strings.EqualFold(c.Hdr.Name, name) {
				next, ttl = c.Target, min(ttl, c.Hdr.Ttl)
				break
			}
		}
		if next == "" {
			break
		}
		name = next
	}
	var addrs []netip.Addr
	for _, rr := range rrs {
		if rr.Header().Rrtype != qtype || !strings.EqualFold(rr.Header().Name, name) {
			continue
		}
		if addr, ok := rrAddr(rr); ok && !slices.Contains(addrs, addr) {
			addrs = append(addrs, addr)
			ttl = min(ttl, rr.Header().Ttl)
		}
	}
	return addrs, time.Duration(ttl) * time.Second
}

func rrAddr(rr dns.RR) (netip.Addr, bool) {
	switch rr := rr.(type) {
	case *dns.A:
		return netip.AddrFromSlice(rr.A.To4())
	case *dns.AAAA:
		return netip.AddrFromSlice(rr.AAAA.To16())
	}
	return netip.Addr{}, false
}

// negativeTTL is how long a negative answer may be cached: the smaller of
// the SOA record's own TTL and its MINIMUM field (RFC 2308 §5). Without an
// SOA the answer should not be cached at all; zero makes the caller hold it
// for MinTTL only, which still damps a burst of lookups.
func negativeTTL(resp *dns.Msg) time.Duration {
	for _, rr := range resp.Ns {
		if soa, ok := rr.(*dns.SOA); ok {
			return time.Duration(min(soa.Hdr.Ttl, soa.Minttl)) * time.Second
		}
	}
	return 0
}
