package main

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"strconv"

	"github.com/spf13/pflag"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	destinationv1 "github.com/mesh-dev/mesh/api/destination/v1"
)

// The controller subcommand is the lab's control plane: a destination
// service in plain text (the proxy runs without an identity, as with no
// identity service) that answers from the lab's layout alone, with no
// Kubernetes behind it. What it serves is what mesh-controller would for
// the same cluster, and the proxy side under measure is the real one:
// the discovery cache, route compilation and matching, the balancers.
// controller/destination's own tests and bench/destination cover the
// controller.

// destinationLayout is what the fake destination service answers.
type destinationLayout struct {
	// endpoints are the endpoint address of each authority Get knows;
	// any other is NOT_FOUND, as an address no Service or pod has.
	endpoints map[string]string
	// tables are the route table of each authority Routes knows; any
	// other is NOT_FOUND, as for an authority that is not a Service port.
	tables map[string]*destinationv1.RouteTable
}

// labLayout is the destination service's view of the lab: each Service of
// targets at its cluster IP on both ports, with its table; the app and
// decoy Services the tables' rules name, by DNS name. Every Service's
// endpoint is the lab's nginx on the same port, but for the decoy's,
// which answers 421 on decoyPort(port).
func labLayout() destinationLayout {
	l := destinationLayout{endpoints: map[string]string{}, tables: map[string]*destinationv1.RouteTable{}}
	for _, port := range []int{h1Port, h2Port} {
		app := net.JoinHostPort(appIP, strconv.Itoa(port))
		for _, t := range targets {
			a := t.authority(port)
			l.endpoints[a] = app
			l.tables[a] = buildTable(t.kind, t.service, port)
		}
		l.endpoints[serviceAuthority(appService, port)] = app
		l.endpoints[serviceAuthority(decoyService, port)] = net.JoinHostPort(appIP, strconv.Itoa(decoyPort(port)))
	}
	return l
}

// fakeDestination serves a destinationLayout. Each stream sends its one
// answer and stays open until the proxy ends it: nothing in the lab
// changes during a run.
type fakeDestination struct {
	destinationv1.UnimplementedDestinationServer
	layout destinationLayout
}

func (f *fakeDestination) Get(req *destinationv1.GetDestinationRequest, stream grpc.ServerStreamingServer[destinationv1.Update]) error {
	addr, ok := f.layout.endpoints[req.GetAuthority()]
	if !ok {
		return status.Errorf(codes.NotFound, "%s is not a destination of the lab", req.GetAuthority())
	}
	u := &destinationv1.Update{Kind: &destinationv1.Update_Add{Add: &destinationv1.AddSet{
		Endpoints: []*destinationv1.Endpoint{{Address: addr, Weight: 10000}},
	}}}
	if err := stream.Send(u); err != nil {
		return err
	}
	<-stream.Context().Done()
	return nil
}

func (f *fakeDestination) Routes(req *destinationv1.GetDestinationRequest, stream grpc.ServerStreamingServer[destinationv1.RouteTable]) error {
	t, ok := f.layout.tables[req.GetAuthority()]
	if !ok {
		return status.Errorf(codes.NotFound, "%s is not a Service port of the lab", req.GetAuthority())
	}
	if err := stream.Send(t); err != nil {
		return err
	}
	<-stream.Context().Done()
	return nil
}

// controllerMain is the controller subcommand: it serves on --addr until
// it is stopped, and prints "ready" on stdout once it listens.
func controllerMain(ctx context.Context, args []string) error {
	addr := controllerAddr
	fs := pflag.NewFlagSet("routes controller", pflag.ContinueOnError)
	fs.StringVar(&addr, "addr", addr, "address to serve the destination service on")
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, pflag.ErrHelp) {
			return err
		}
		return usageError{err}
	}
	var lc net.ListenConfig
	ln, err := lc.Listen(ctx, "tcp", addr)
	if err != nil {
		return fmt.Errorf("destination listener: %w", err)
	}
	srv := grpc.NewServer()
	destinationv1.RegisterDestinationServer(srv, &fakeDestination{layout: labLayout()})
	stop := context.AfterFunc(ctx, srv.Stop)
	defer stop()
	fmt.Fprintln(os.Stdout, "ready")
	if err := srv.Serve(ln); err != nil {
		return fmt.Errorf("serving on %s: %w", ln.Addr(), err)
	}
	return nil
}
