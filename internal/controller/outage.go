package controller

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"sync"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"

	"github.com/golive/golive/internal/approval"
	golivev1 "github.com/golive/golive/proto/golive/v1"
)

// While etcd has no quorum a replica still answers: reads from the last
// answer it gave to the same question, marked stale (metadata
// StaleMetadataKey: its age in seconds, and EtcdMetadataKey: why); writes
// fail at once with that reason instead of at the client's deadline; a
// revoke is recorded on local disk and halts automation on this replica
// (approval.Brake), and is written to etcd when it answers again.

// StaleMetadataKey and EtcdMetadataKey mark an answer from the replica's
// last known state.
const (
	StaleMetadataKey = "golive-stale-seconds"
	EtcdMetadataKey  = "golive-etcd"
)

// readOnly are the RPCs answered from the last known state during an
// outage; every other one but Revoke fails fast.
var readOnly = map[string]bool{
	"Status": true, "GetApproval": true, "ListAgents": true, "ListAudit": true,
	"GetRollout": true, "ListRollouts": true, "ListBackups": true,
}

// etcdReadTimeout bounds a read RPC's own etcd calls before it falls back
// to the last known answer.
const etcdReadTimeout = 2 * time.Second

type lastAnswers struct {
	mu sync.Mutex
	m  map[string]answer
}

type answer struct {
	resp any
	at   time.Time
}

func answerKey(method string, req any) string {
	b, _ := proto.MarshalOptions{Deterministic: true}.Marshal(req.(proto.Message))
	return method + "\x00" + string(b)
}

func (s *Server) etcdDownError(since time.Time) error {
	return status.Errorf(codes.Unavailable, "etcd has no quorum (since %s, %s ago): the controller cannot record changes now; "+
		"automation is halted on every agent. Reads answer from the replica's last known state; `golive-controller revoke` still works",
		since.UTC().Format(time.RFC3339), time.Since(since).Round(time.Second))
}

// outage is the unary interceptor that keeps the replica answering while
// etcd has no quorum.
func (s *Server) outage(ctx context.Context, req any, info *grpc.UnaryServerInfo, handler grpc.UnaryHandler) (any, error) {
	method := info.FullMethod[strings.LastIndex(info.FullMethod, "/")+1:]
	if !strings.HasPrefix(info.FullMethod, "/golive.v1.ControlService/") || method == "Revoke" {
		return handler(ctx, req)
	}
	down := s.approvals.EtcdDown()
	if !readOnly[method] {
		if !down.IsZero() {
			return nil, s.etcdDownError(down)
		}
		return handler(ctx, req)
	}
	key := answerKey(method, req)
	if down.IsZero() {
		rctx, cancel := context.WithTimeout(ctx, etcdReadTimeout)
		resp, err := handler(rctx, req)
		cancel()
		if err == nil {
			s.answers.mu.Lock()
			if s.answers.m == nil {
				s.answers.m = map[string]answer{}
			}
			s.answers.m[key] = answer{resp: resp, at: time.Now()}
			s.answers.mu.Unlock()
			return resp, nil
		}
		if ctx.Err() != nil || !etcdTrouble(err) {
			return nil, err
		}
		down = time.Now()
	}
	s.answers.mu.Lock()
	last, ok := s.answers.m[key]
	s.answers.mu.Unlock()
	if !ok {
		return nil, s.etcdDownError(down)
	}
	grpc.SetHeader(ctx, metadata.Pairs(StaleMetadataKey, strconv.Itoa(int(time.Since(last.at).Seconds())),
		EtcdMetadataKey, fmt.Sprintf("no quorum since %s", down.UTC().Format(time.RFC3339))))
	return last.resp, nil
}

func etcdTrouble(err error) bool {
	if errors.Is(err, context.DeadlineExceeded) {
		return true
	}
	c := status.Code(err)
	return c == codes.Unavailable || c == codes.DeadlineExceeded
}

// revokeDuringOutage records a revoke etcd could not take (see
// approval.Brake) and pushes it to this replica's agents.
func (s *Server) revokeDuringOutage(actor, src, reason string) (*golivev1.RevokeResponse, error) {
	tok := s.lastToken.Load()
	err := s.approvals.RevokeLocal(tok, actor, src, reason)
	s.hub.Broadcast(&golivev1.ApprovalUpdate{Revision: s.hub.CurrentApproval().Revision, Reason: "lost"})
	s.log.Warn("automation revoked while etcd has no quorum: refused here, to be written to etcd when it recovers", "actor", actor, "fencing_token", tok)
	if err != nil && !errors.Is(err, approval.ErrDeferred) {
		return nil, err
	}
	return &golivev1.RevokeResponse{Revoked: true, FencingToken: tok, Deferred: true, Note: approval.ErrDeferred.Error()}, nil
}

// flushBrake writes the revokes taken during an outage to etcd as soon as
// it answers, then tells the agents.
func (s *Server) flushBrake(ctx context.Context) {
	t := time.NewTicker(500 * time.Millisecond)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		if !s.approvals.HasPending() {
			continue
		}
		fctx, cancel := context.WithTimeout(ctx, 2*time.Second)
		revoked, err := s.approvals.Flush(fctx)
		cancel()
		for _, tok := range revoked {
			s.log.Info("revoke taken during the etcd outage written to etcd", "fencing_token", tok)
			s.hub.Broadcast(&golivev1.ApprovalUpdate{Revision: s.hub.CurrentApproval().Revision + 1, Reason: "revoked"})
		}
		if err != nil && ctx.Err() == nil {
			s.metrics.EtcdErrors.WithLabelValues("brake_flush").Inc()
		}
	}
}
