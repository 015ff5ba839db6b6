// Package dnsresolve resolves host names outside the cluster with a stub
// resolver that honours DNS TTLs, which the standard library resolver does
// not expose.
//
// Resolver.LookupHost asks for A and AAAA records in parallel, over UDP with a
// TCP retry when the answer is truncated (RFC 1035 §4.2.1), expands relative
// names with the search list the way the libc resolver does (resolv.conf
// ndots), follows CNAME chains within the answer, and caches every answer for
// the smallest TTL along its chain, clamped to [MinTTL, MaxTTL]. Names that do
// not exist are cached for the SOA minimum of the negative answer (RFC 2308
// §5), capped at NegativeTTL. Concurrent lookups of one name share one query.
//
// Builder plugs the same Resolver into gRPC as a name resolver, so that a
// client dialling "meshdns:///mesh-controller.mesh-system.svc.cluster.local.:8086"
// follows the controller's pod addresses as they change:
//
//	res, err := dnsresolve.New(dnsresolve.Config{})
//	...
//	b := dnsresolve.NewBuilder(ctx, res, dnsresolve.BuilderConfig{})
//	conn, err := grpc.NewClient("meshdns:///"+addr, grpc.WithResolvers(b), ...)
//
// The built resolver re-resolves when the TTL of the last answer expires, and
// when gRPC asks it to (ResolveNow, after a connection failure), no more often
// than BuilderConfig.MinResolveInterval. A failed lookup is reported with
// ReportError and the last good addresses stay in use.
package dnsresolve
