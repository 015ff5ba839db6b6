package server

import (
	"context"
	"net"
	"strconv"
	"strings"

	"google.golang.org/grpc"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/peer"
	"google.golang.org/protobuf/types/known/wrapperspb"
)

// EchoMethod is the one gRPC method of the echo app. It takes a
// StringValue (ignored) and answers a StringValue holding the same
// key=value lines an HTTP answer has. Well-known wrapper types keep the app
// free of generated code; nothing in the suite's mesh tests names a gRPC
// service (grpcroute-weight.yaml matches every method).
const EchoMethod = "/mesh.conformance.echo.Echo/Echo"

var serviceDesc = grpc.ServiceDesc{
	ServiceName: "mesh.conformance.echo.Echo",
	HandlerType: (*any)(nil),
	Methods: []grpc.MethodDesc{{
		MethodName: "Echo",
		Handler: func(srv any, ctx context.Context, dec func(any) error, _ grpc.UnaryServerInterceptor) (any, error) {
			in := new(wrapperspb.StringValue)
			if err := dec(in); err != nil {
				return nil, err
			}
			return srv.(*echoService).echo(ctx), nil
		},
	}},
	Metadata: "mesh/conformance/echo.proto",
}

type echoService struct {
	s    *Server
	port int
}

func (e *echoService) echo(ctx context.Context) *wrapperspb.StringValue {
	rec := e.s.record(e.port)
	md, _ := metadata.FromIncomingContext(ctx)
	host := ""
	if a := md.Get(":authority"); len(a) > 0 {
		host = a[0]
	}
	rec.add("Method", "POST")
	rec.add("Proto", "GRPC")
	if p, ok := peer.FromContext(ctx); ok && p.Addr != nil {
		if ip, _, err := net.SplitHostPort(p.Addr.String()); err == nil {
			rec.add("IP", ip)
		}
	}
	rec.add("Host", host)
	rec.add("URL", EchoMethod)
	hdr := map[string][]string{}
	for k, v := range md {
		// Pseudo-headers are reported above, as HTTP's are.
		if !strings.HasPrefix(k, ":") {
			hdr[k] = v
		}
	}
	rec.headers("RequestHeader", hdr)
	return wrapperspb.String(rec.String())
}

// GRPCStatusCode is what a client reports as StatusCode for a gRPC answer
// of code c: 200 for OK, which the suite maps expected gRPC OK to
// (utils/echo/pod.go compareRequest), and the gRPC code number otherwise,
// so an expected non-OK gRPC code compares as itself.
func GRPCStatusCode(c uint32) string {
	if c == 0 {
		return "200"
	}
	return strconv.FormatUint(uint64(c), 10)
}
