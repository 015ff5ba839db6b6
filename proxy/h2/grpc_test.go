package h2

import (
	"context"
	"errors"
	"io"
	"net"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	testpb "google.golang.org/grpc/interop/grpc_testing"
	"google.golang.org/grpc/status"
)

// testService answers the interop suite's calls: echoes, a chosen status,
// a call that waits for its deadline, and a stream that tells when its
// client cancelled it.
type testService struct {
	testpb.UnimplementedTestServiceServer
	canceled chan struct{}
}

func (s *testService) UnaryCall(ctx context.Context, r *testpb.SimpleRequest) (*testpb.SimpleResponse, error) {
	if st := r.GetResponseStatus(); st != nil {
		return nil, status.Error(codes.Code(st.Code), st.Message)
	}
	if r.GetResponseSize() < 0 {
		<-ctx.Done() // waits for the client's deadline
		return nil, ctx.Err()
	}
	return &testpb.SimpleResponse{Payload: &testpb.Payload{Body: r.GetPayload().GetBody()}}, nil
}

func (s *testService) FullDuplexCall(stream testpb.TestService_FullDuplexCallServer) error {
	for {
		r, err := stream.Recv()
		if errors.Is(err, io.EOF) {
			return nil
		}
		if err != nil {
			if status.Code(err) == codes.Canceled {
				s.canceled <- struct{}{}
			}
			return err
		}
		if err := stream.Send(&testpb.StreamingOutputCallResponse{Payload: r.GetPayload()}); err != nil {
			return err
		}
	}
}

// startGRPC serves testService on loopback (gRPC servers speak h2c with
// prior knowledge) and returns its address.
func startGRPC(t testing.TB) (string, *testService) {
	t.Helper()
	svc := &testService{canceled: make(chan struct{}, 1)}
	srv := grpc.NewServer()
	testpb.RegisterTestServiceServer(srv, svc)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	go srv.Serve(ln)
	t.Cleanup(srv.Stop)
	return ln.Addr().String(), svc
}

func grpcClient(t testing.TB, addr string) testpb.TestServiceClient {
	t.Helper()
	cc, err := grpc.NewClient(addr, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cc.Close() })
	return testpb.NewTestServiceClient(cc)
}

func TestGRPC(t *testing.T) {
	backend, svc := startGRPC(t)
	p := startTestProxy(t, backend)
	client := grpcClient(t, p.addr)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()

	t.Run("unary", func(t *testing.T) {
		body := make([]byte, 300<<10) // past every window, both ways
		for i := range body {
			body[i] = byte(i)
		}
		res, err := client.UnaryCall(ctx, &testpb.SimpleRequest{Payload: &testpb.Payload{Body: body}})
		if err != nil {
			t.Fatal(err)
		}
		if string(res.GetPayload().GetBody()) != string(body) {
			t.Errorf("echo differs: %d bytes back of %d", len(res.GetPayload().GetBody()), len(body))
		}
	})
	t.Run("status", func(t *testing.T) {
		_, err := client.UnaryCall(ctx, &testpb.SimpleRequest{ResponseStatus: &testpb.EchoStatus{Code: int32(codes.NotFound), Message: "no such thing: ☃"}})
		if st := status.Convert(err); st.Code() != codes.NotFound || st.Message() != "no such thing: ☃" {
			t.Errorf("got %v, want NotFound with its message", err)
		}
	})
	t.Run("bidi stream", func(t *testing.T) {
		stream, err := client.FullDuplexCall(ctx)
		if err != nil {
			t.Fatal(err)
		}
		for i := range 100 {
			msg := []byte{byte(i), byte(i >> 8)}
			if err := stream.Send(&testpb.StreamingOutputCallRequest{Payload: &testpb.Payload{Body: msg}}); err != nil {
				t.Fatal(err)
			}
			res, err := stream.Recv()
			if err != nil || string(res.GetPayload().GetBody()) != string(msg) {
				t.Fatalf("message %d: %v, %v", i, res, err)
			}
		}
		stream.CloseSend()
		if _, err := stream.Recv(); !errors.Is(err, io.EOF) {
			t.Errorf("after the last message: %v, want EOF", err)
		}
	})
	t.Run("deadline", func(t *testing.T) {
		dctx, dcancel := context.WithTimeout(ctx, 200*time.Millisecond)
		defer dcancel()
		start := time.Now()
		_, err := client.UnaryCall(dctx, &testpb.SimpleRequest{ResponseSize: -1})
		if status.Code(err) != codes.DeadlineExceeded {
			t.Errorf("got %v, want DeadlineExceeded", err)
		}
		if took := time.Since(start); took > 2*time.Second {
			t.Errorf("took %v", took)
		}
	})
	t.Run("cancel reaches the server", func(t *testing.T) {
		sctx, scancel := context.WithCancel(ctx)
		stream, err := client.FullDuplexCall(sctx)
		if err != nil {
			t.Fatal(err)
		}
		stream.Send(&testpb.StreamingOutputCallRequest{Payload: &testpb.Payload{Body: []byte("x")}})
		if _, err := stream.Recv(); err != nil {
			t.Fatal(err)
		}
		scancel()
		select {
		case <-svc.canceled:
		case <-time.After(5 * time.Second):
			t.Fatal("the server never saw the cancellation")
		}
	})
}
