package controller_test

import (
	"bytes"
	"context"
	"fmt"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/hashicorp/go-hclog"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/encoding"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/golive/golive/internal/controller"
	"github.com/golive/golive/internal/testenv"
	golivev1 "github.com/golive/golive/proto/golive/v1"
)

// rawCodec sends []byte messages as they are, so the controller decodes
// the fuzzer's bytes itself, and decodes replies as ConnectResponse.
type rawCodec struct{}

func (rawCodec) Marshal(v any) ([]byte, error) {
	if b, ok := v.([]byte); ok {
		return b, nil
	}
	return proto.Marshal(v.(proto.Message))
}
func (rawCodec) Unmarshal(data []byte, v any) error { return proto.Unmarshal(data, v.(proto.Message)) }
func (rawCodec) Name() string                       { return "proto" }

var _ encoding.Codec = rawCodec{}

type syncBuf struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuf) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuf) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// streamSeeds are valid messages of every type and some garbage; the same
// inputs are committed under testdata/fuzz/FuzzAgentStream.
func streamSeeds() [][]byte {
	now := timestamppb.New(time.Date(2026, 11, 30, 22, 0, 0, 0, time.UTC))
	svc := []*golivev1.ServiceState{{Name: "app", CurrentRelease: "v1", PreviousRelease: "v0", SwapMode: "restart", State: "running"}}
	msgs := []*golivev1.ConnectRequest{
		{Payload: &golivev1.ConnectRequest_Hello{Hello: &golivev1.Hello{HostId: "fuzz-second-hello", Services: svc}}},
		{Payload: &golivev1.ConnectRequest_Heartbeat{Heartbeat: &golivev1.Heartbeat{Services: svc, FencingToken: 3, SentAt: now}}},
		{Payload: &golivev1.ConnectRequest_ApprovalAck{ApprovalAck: &golivev1.ApprovalAck{FencingToken: 3, Revision: 9}}},
		{Payload: &golivev1.ConnectRequest_CommandAck{CommandAck: &golivev1.CommandAck{CommandId: "c-1", Accepted: true}}},
		{Payload: &golivev1.ConnectRequest_CommandAck{CommandAck: &golivev1.CommandAck{CommandId: "../../x", Reason: "\x00\u2028"}}},
		{Payload: &golivev1.ConnectRequest_CommandProgress{CommandProgress: &golivev1.CommandProgress{CommandId: "c-1", Service: "app", Stage: "fetch", At: now}}},
		{Payload: &golivev1.ConnectRequest_CommandResult{CommandResult: &golivev1.CommandResult{CommandId: "c-1", Service: "app",
			Outcome: golivev1.CommandOutcome_COMMAND_OUTCOME_SUCCEEDED, Release: "v2", PreviousRelease: "v1", FinishedAt: now,
			BackupJson: `{"id":"b1","service":"app","path":"/b","size":1,"sha256":"00"}`}}},
		{Payload: &golivev1.ConnectRequest_CommandResult{CommandResult: &golivev1.CommandResult{CommandId: "/golive/agents/x", Service: "../app",
			Outcome: 99, Error: "boom"}}},
		{},
	}
	var out [][]byte
	for _, m := range msgs {
		b, err := proto.Marshal(m)
		if err != nil {
			panic(err)
		}
		out = append(out, b)
	}
	return append(out, []byte("\xff\xff\xff\xff"), []byte("\x0a\xff\xff\xff\xff\x0f"), []byte("garbage"), []byte("\x32\x05\x0a\x03"),
		[]byte("\x22\x03\x0a\x01\xff")) // a CommandAck whose id is not UTF-8
}

// FuzzAgentStream connects to a real controller (embedded etcd) as an agent
// and sends the fuzzer's bytes, undecoded, as a stream message: after a
// valid Hello (the per-message handling of a connected agent) or, when
// first is set, in place of it. Whatever the bytes, the controller must not
// panic and must still answer Status and ListAgents afterwards.
func FuzzAgentStream(f *testing.F) {
	for _, s := range streamSeeds() {
		f.Add(s, false)
		f.Add(s, true)
	}
	// The controller logs to a buffer: a fuzz target may not log through f.
	var logs syncBuf
	cfg := testenv.ControllerConfig(f)
	cfg.RateLimit = 0 // every input makes two control calls
	ready := make(chan *controller.Server, 1)
	cfg.Ready = func(s *controller.Server) { ready <- s }
	cctx, stop := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() {
		done <- controller.Run(cctx, cfg, hclog.New(&hclog.LoggerOptions{Name: "controller", Level: hclog.Info, Output: &logs}))
	}()
	var c *controller.Server
	select {
	case c = <-ready:
	case err := <-done:
		f.Fatalf("controller did not start: %v\n%s", err, logs.String())
	}
	f.Cleanup(func() {
		stop()
		if err := <-done; err != nil {
			f.Errorf("controller exited: %v", err)
		}
		if f.Failed() {
			f.Logf("controller log:\n%s", logs.String())
		}
	})
	conn, err := grpc.NewClient(c.GRPCAddr(), grpc.WithTransportCredentials(insecure.NewCredentials()),
		grpc.WithDefaultCallOptions(grpc.ForceCodec(rawCodec{})))
	if err != nil {
		f.Fatal(err)
	}
	f.Cleanup(func() { conn.Close() })
	ctl, actx := testenv.Control(f, c.GRPCAddr(), "fuzz")
	desc := &grpc.StreamDesc{StreamName: "Connect", ServerStreams: true, ClientStreams: true}
	var n atomic.Int64
	// hello opens an agent stream with a valid Hello and waits for Welcome.
	hello := func(ctx context.Context) (grpc.ClientStream, error) {
		stream, err := conn.NewStream(ctx, desc, "/golive.v1.AgentService/Connect")
		if err != nil {
			return nil, err
		}
		b, _ := proto.Marshal(&golivev1.ConnectRequest{Payload: &golivev1.ConnectRequest_Hello{Hello: &golivev1.Hello{
			HostId: fmt.Sprintf("fuzz-%d", n.Add(1)), InstanceId: "fuzz"}}})
		if err := stream.SendMsg(b); err != nil {
			return nil, err
		}
		var welcome golivev1.ConnectResponse
		if err := stream.RecvMsg(&welcome); err != nil {
			return nil, err
		}
		if welcome.GetWelcome() == nil {
			return nil, fmt.Errorf("first answer %v, want Welcome", &welcome)
		}
		return stream, nil
	}
	testenv.WaitFor(f, 30*time.Second, "controller accepting agents", func() bool {
		ctx, cancel := context.WithCancel(context.Background())
		defer cancel()
		_, err := hello(ctx)
		return err == nil
	})
	f.Fuzz(func(t *testing.T, msg []byte, first bool) {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		var stream grpc.ClientStream
		var err error
		if first {
			stream, err = conn.NewStream(ctx, desc, "/golive.v1.AgentService/Connect")
		} else {
			stream, err = hello(ctx)
		}
		if err != nil {
			t.Fatalf("open an agent stream: %v", err)
		}
		stream.SendMsg(msg)
		stream.CloseSend()
		// The controller handles the message, then sees the end of the
		// stream and closes it: drain until then.
		for {
			var r golivev1.ConnectResponse
			if err := stream.RecvMsg(&r); err != nil {
				break
			}
		}
		if _, err := ctl.Status(actx, &golivev1.StatusRequest{}); err != nil {
			t.Fatalf("Status after %x: %v", msg, err)
		}
		if _, err := ctl.ListAgents(actx, &golivev1.ListAgentsRequest{}); err != nil {
			t.Fatalf("ListAgents after %x: %v", msg, err)
		}
	})
}
