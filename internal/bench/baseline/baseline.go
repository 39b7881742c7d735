// Package baseline is the naive fan-out server the fanout benchmark runs
// beside the controller: the simplest correct grpc-go program that speaks
// enough of golive's protocol for the benchmark's simulated agents. Default
// server options, one plain bidi stream per agent (its handler goroutine
// receives), and a broadcast that marshals the update and Sends it on every
// stream in turn, under the stream's mutex. No etcd, no admission, no
// records: what the controller's hub is worth is measured against this.
//
// It is started as `golive-bench serve` with the controller's serve flags
// (those it does not need are accepted and ignored), so the benchmark runs
// and measures it exactly as it does the controller.
package baseline

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"os"
	"os/signal"
	"sync"
	"syscall"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/health"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/durationpb"
	"google.golang.org/protobuf/types/known/timestamppb"

	golivev1 "github.com/golive/golive/proto/golive/v1"
)

// Main runs the server until SIGTERM or SIGINT; args are serve's flags.
func Main(args []string, stderr io.Writer) int {
	fs := flag.NewFlagSet("golive-bench serve", flag.ContinueOnError)
	fs.SetOutput(stderr)
	listen := fs.String("listen", "127.0.0.1:7400", "gRPC listen address")
	ca := fs.String("tls-ca", "", "CA of the agents' and operators' certificates")
	cert := fs.String("tls-cert", "", "server certificate")
	key := fs.String("tls-key", "", "server key")
	for _, ignored := range []string{"metrics-addr", "data-dir", "embedded-etcd-client", "embedded-etcd-peer", "heartbeat-interval", "pprof-addr", "dashboard-addr"} {
		fs.String(ignored, "", "accepted for the controller's command line; ignored")
	}
	if err := fs.Parse(args); err != nil {
		return 2
	}
	var opts []grpc.ServerOption
	if *cert != "" {
		tc, err := serverTLS(*ca, *cert, *key)
		if err != nil {
			fmt.Fprintf(stderr, "baseline: %v\n", err)
			return 1
		}
		opts = append(opts, grpc.Creds(credentials.NewTLS(tc)))
	}
	lis, err := net.Listen("tcp", *listen)
	if err != nil {
		fmt.Fprintf(stderr, "baseline: %v\n", err)
		return 1
	}
	s := &server{streams: map[*stream]struct{}{}, cur: &golivev1.ApprovalUpdate{Reason: "sync"}}
	gs := grpc.NewServer(opts...)
	golivev1.RegisterAgentServiceServer(gs, s)
	golivev1.RegisterControlServiceServer(gs, &control{s: s})
	hs := health.NewServer()
	hs.SetServingStatus("golive.v1.AgentService", healthpb.HealthCheckResponse_SERVING)
	healthpb.RegisterHealthServer(gs, hs)

	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, os.Interrupt)
	defer stop()
	done := make(chan error, 1)
	go func() { done <- gs.Serve(lis) }()
	fmt.Fprintf(stderr, "baseline serving on %s\n", lis.Addr())
	select {
	case <-ctx.Done():
		gs.Stop()
		<-done
		return 0
	case err := <-done:
		if err != nil && !errors.Is(err, grpc.ErrServerStopped) {
			fmt.Fprintf(stderr, "baseline: %v\n", err)
			return 1
		}
		return 0
	}
}

func serverTLS(caFile, certFile, keyFile string) (*tls.Config, error) {
	pair, err := tls.LoadX509KeyPair(certFile, keyFile)
	if err != nil {
		return nil, err
	}
	pem, err := os.ReadFile(caFile)
	if err != nil {
		return nil, err
	}
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(pem) {
		return nil, fmt.Errorf("%s: no CA certificate", caFile)
	}
	return &tls.Config{Certificates: []tls.Certificate{pair}, ClientCAs: pool, ClientAuth: tls.RequireAndVerifyClientCert, MinVersion: tls.VersionTLS13}, nil
}

type stream struct {
	mu sync.Mutex
	st grpc.BidiStreamingServer[golivev1.ConnectRequest, golivev1.ConnectResponse]
}

type server struct {
	golivev1.UnimplementedAgentServiceServer
	mu      sync.Mutex
	streams map[*stream]struct{}
	cur     *golivev1.ApprovalUpdate
	token   int64
}

// Connect answers Hello with Welcome, then receives (and ignores)
// heartbeats and acks until the stream ends.
func (s *server) Connect(st grpc.BidiStreamingServer[golivev1.ConnectRequest, golivev1.ConnectResponse]) error {
	m, err := st.Recv()
	if err != nil {
		return err
	}
	if m.GetHello() == nil {
		return status.Error(codes.InvalidArgument, "first message must be Hello")
	}
	c := &stream{st: st}
	s.mu.Lock()
	s.streams[c] = struct{}{}
	cur := s.cur
	c.mu.Lock()
	s.mu.Unlock()
	err = st.Send(&golivev1.ConnectResponse{Payload: &golivev1.ConnectResponse_Welcome{Welcome: &golivev1.Welcome{
		ControllerId: "baseline", HeartbeatInterval: durationpb.New(5 * time.Second), Approval: cur}}})
	c.mu.Unlock()
	defer func() {
		s.mu.Lock()
		delete(s.streams, c)
		s.mu.Unlock()
	}()
	if err != nil {
		return err
	}
	for {
		if _, err := st.Recv(); err != nil {
			return nil
		}
	}
}

// broadcast sends u to every stream, one after the other.
func (s *server) broadcast(u *golivev1.ApprovalUpdate) {
	s.mu.Lock()
	s.cur = u
	list := make([]*stream, 0, len(s.streams))
	for c := range s.streams {
		list = append(list, c)
	}
	s.mu.Unlock()
	m := &golivev1.ConnectResponse{Payload: &golivev1.ConnectResponse_Approval{Approval: u}}
	for _, c := range list {
		c.mu.Lock()
		c.st.Send(m)
		c.mu.Unlock()
	}
}

type control struct {
	golivev1.UnimplementedControlServiceServer
	s *server
}

func (c *control) Authorize(_ context.Context, r *golivev1.AuthorizeRequest) (*golivev1.AuthorizeResponse, error) {
	c.s.mu.Lock()
	c.s.token++
	tok := c.s.token
	c.s.mu.Unlock()
	exp := time.Now().Add(r.GetTtl().AsDuration())
	c.s.broadcast(&golivev1.ApprovalUpdate{FencingToken: tok, Active: true, ExpiresAt: timestamppb.New(exp), Revision: tok, Reason: "granted"})
	return &golivev1.AuthorizeResponse{Approval: &golivev1.Approval{Active: true, FencingToken: tok}}, nil
}

func (c *control) Revoke(context.Context, *golivev1.RevokeRequest) (*golivev1.RevokeResponse, error) {
	c.s.mu.Lock()
	tok := c.s.token
	c.s.mu.Unlock()
	c.s.broadcast(&golivev1.ApprovalUpdate{Revision: tok, Reason: "revoked"})
	return &golivev1.RevokeResponse{Revoked: true, FencingToken: tok}, nil
}
