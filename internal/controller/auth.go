package controller

import (
	"context"
	"fmt"
	"github.com/golive/golive/internal/controller/apierr"
	"net"
	"strings"
	"sync"
	"time"

	"golang.org/x/time/rate"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/peer"
	"google.golang.org/grpc/status"

	"github.com/golive/golive/internal/audit"
	"github.com/golive/golive/internal/pki"
	golivev1 "github.com/golive/golive/proto/golive/v1"
)

// Who may call what. With mutual TLS every call carries a certificate
// identity: agents may only open their stream; operators need a role.
// Without TLS (loopback dev mode) every caller may do everything and names
// itself with the golive-actor metadata.
var methodRoles = map[string][]pki.Role{
	golivev1.ControlService_Authorize_FullMethodName: {pki.RoleApprover},
	// Anyone may pull the brake.
	golivev1.ControlService_Revoke_FullMethodName:        {pki.RoleApprover, pki.RoleDeployer},
	golivev1.ControlService_Deploy_FullMethodName:        {pki.RoleDeployer},
	golivev1.ControlService_Rollback_FullMethodName:      {pki.RoleDeployer},
	golivev1.ControlService_PauseRollout_FullMethodName:  {pki.RoleDeployer},
	golivev1.ControlService_ResumeRollout_FullMethodName: {pki.RoleDeployer},
	golivev1.ControlService_AbortRollout_FullMethodName:  {pki.RoleDeployer},
	golivev1.ControlService_ForgetAgent_FullMethodName:   {pki.RoleDeployer},
	golivev1.ControlService_DnsSet_FullMethodName:        {pki.RoleDeployer},
	golivev1.ControlService_DnsFailover_FullMethodName:   {pki.RoleDeployer},
	golivev1.ControlService_ScaleSet_FullMethodName:      {pki.RoleDeployer},
}

// readRoles may call every method not in methodRoles (reads, preflight).
var readRoles = []pki.Role{pki.RoleViewer, pki.RoleDeployer, pki.RoleApprover}

// brakeMethods are never rate limited: a stop must always get through.
var brakeMethods = map[string]bool{
	golivev1.ControlService_Revoke_FullMethodName:       true,
	golivev1.ControlService_PauseRollout_FullMethodName: true,
	golivev1.ControlService_AbortRollout_FullMethodName: true,
	golivev1.ControlService_DnsFailover_FullMethodName:  true,
}

// twoPersonMethods start or continue automation under an approval: with the
// two-person rule, not by the identity that granted it.
var twoPersonMethods = map[string]bool{
	golivev1.ControlService_Deploy_FullMethodName:        true,
	golivev1.ControlService_ResumeRollout_FullMethodName: true,
	golivev1.ControlService_DnsSet_FullMethodName:        true,
}

// isLoopback reports whether a listen address only binds loopback.
func isLoopback(addr string) bool {
	host, _, err := net.SplitHostPort(addr)
	if err != nil {
		return false
	}
	if host == "localhost" {
		return true
	}
	ip := net.ParseIP(host)
	return ip != nil && ip.IsLoopback()
}

// authz checks calls and names their actor.
type authz struct {
	tls       bool
	twoPerson bool
	s         *Server
	limits    *limiter
}

// identity returns the caller's identity: the certificate's with TLS, else
// the self-declared actor.
func (a *authz) identity(ctx context.Context) (pki.Identity, error) {
	if a.tls {
		id, err := pki.FromContext(ctx)
		if err != nil {
			return pki.Identity{}, status.Error(codes.Unauthenticated, err.Error())
		}
		return id, nil
	}
	actor, _ := actorAndSource(ctx)
	return pki.Identity{Name: actor, Roles: readRoles}, nil
}

// check authorizes a call to method and returns the context the handler
// runs with: with TLS its golive-actor metadata is the certificate identity,
// whatever the client sent.
func (a *authz) check(ctx context.Context, method string) (context.Context, error) {
	if method == golivev1.AgentService_Connect_FullMethodName {
		if !a.tls {
			return ctx, nil
		}
		id, err := a.identity(ctx)
		if err != nil {
			return nil, err
		}
		if !id.Agent {
			return nil, status.Errorf(codes.PermissionDenied, "%s is not an agent certificate", id.Name)
		}
		return ctx, nil
	}
	if !strings.HasPrefix(method, "/golive.v1.ControlService/") {
		return ctx, nil // health checks, reflection
	}
	id, err := a.identity(ctx)
	if err != nil {
		return nil, err
	}
	if a.tls {
		if id.Agent {
			return nil, status.Errorf(codes.PermissionDenied, "agent %s may not call %s", id.Name, method)
		}
		need, ok := methodRoles[method]
		if !ok {
			need = readRoles
		}
		allowed := false
		for _, r := range need {
			allowed = allowed || id.Has(r)
		}
		if !allowed {
			return nil, status.Errorf(codes.PermissionDenied, "%s needs role %s for %s", id.Name, joinRoles(need), method[strings.LastIndex(method, "/")+1:])
		}
		md, _ := metadata.FromIncomingContext(ctx)
		md = md.Copy()
		md.Set(ActorMetadataKey, id.Name)
		ctx = metadata.NewIncomingContext(ctx, md)
	}
	if !brakeMethods[method] && a.limits != nil {
		key := id.Name
		if !a.tls {
			if p, ok := peer.FromContext(ctx); ok {
				key += "@" + hostOf(p.Addr.String())
			}
		}
		if !a.limits.allow(key) {
			a.s.metrics.RateLimited.Inc()
			return nil, status.Errorf(codes.ResourceExhausted, "rate limit: %s makes more than %g control calls per second; retry shortly", id.Name, float64(a.limits.r))
		}
	}
	if a.twoPerson && twoPersonMethods[method] {
		ap, _, err := a.s.approvals.Current(ctx)
		if err != nil {
			return nil, apierr.ToStatus(err)
		}
		actor, _ := actorAndSource(ctx)
		if ap.Token != 0 && ap.Active(time.Now()) && ap.GrantedBy == actor {
			return nil, status.Errorf(codes.PermissionDenied, "two-person rule: %s authorized this approval and may not also start automation under it; another deployer must", actor)
		}
	}
	return ctx, nil
}

func joinRoles(rs []pki.Role) string {
	s := make([]string, len(rs))
	for i, r := range rs {
		s[i] = string(r)
	}
	return strings.Join(s, " or ")
}

func hostOf(addr string) string {
	h, _, err := net.SplitHostPort(addr)
	if err != nil {
		return addr
	}
	return h
}

func (a *authz) unary(ctx context.Context, req any, info *grpc.UnaryServerInfo, handler grpc.UnaryHandler) (any, error) {
	hctx, err := a.check(ctx, info.FullMethod)
	if err != nil {
		a.auditRefusal(ctx, info.FullMethod, err)
		return nil, err
	}
	resp, err := handler(hctx, req)
	if err != nil {
		a.auditRefusal(hctx, info.FullMethod, err)
	}
	return resp, err
}

// auditRefusal records an authenticated identity's attempt at a control
// action its certificate does not allow (missing role, the two-person rule):
// who tried what, from where, and why it was refused. Other refusals (no
// approval, bad input, rate limit) write nothing at all, by design: without
// an identity to attribute them to, recording them would only let anyone
// fill etcd.
func (a *authz) auditRefusal(ctx context.Context, method string, err error) {
	if _, mutating := methodRoles[method]; !mutating || !a.tls || status.Code(err) != codes.PermissionDenied {
		return
	}
	_, src := actorAndSource(ctx)
	id, ierr := pki.FromContext(ctx)
	if ierr != nil {
		return
	}
	actor := id.String()
	name := method[strings.LastIndex(method, "/")+1:]
	entry := audit.Entry{Actor: actor, Action: strings.ToLower(name), Outcome: "refused", Reason: status.Convert(err).Message(), Source: src}
	actx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 5*time.Second)
	defer cancel()
	if _, _, aerr := a.s.audit.Append(actx, entry, nil, nil); aerr != nil {
		a.s.log.Warn("cannot audit a refused action", "actor", actor, "action", entry.Action, "error", aerr)
	}
}

func (a *authz) stream(srv any, ss grpc.ServerStream, info *grpc.StreamServerInfo, handler grpc.StreamHandler) error {
	ctx, err := a.check(ss.Context(), info.FullMethod)
	if err != nil {
		return err
	}
	return handler(srv, &ctxStream{ServerStream: ss, ctx: ctx})
}

type ctxStream struct {
	grpc.ServerStream
	ctx context.Context
}

func (s *ctxStream) Context() context.Context { return s.ctx }

// limiter is a token bucket per identity. Idle buckets are forgotten.
type limiter struct {
	r     rate.Limit
	burst int
	mu    sync.Mutex
	m     map[string]*bucket
}

type bucket struct {
	l    *rate.Limiter
	seen time.Time
}

func newLimiter(perSecond float64, burst int) *limiter {
	if perSecond <= 0 {
		return nil
	}
	if burst < 1 {
		burst = 1
	}
	return &limiter{r: rate.Limit(perSecond), burst: burst, m: map[string]*bucket{}}
}

func (l *limiter) allow(key string) bool {
	now := time.Now()
	l.mu.Lock()
	defer l.mu.Unlock()
	b, ok := l.m[key]
	if !ok {
		if len(l.m) > 10000 {
			for k, v := range l.m {
				if now.Sub(v.seen) > time.Minute {
					delete(l.m, k)
				}
			}
		}
		b = &bucket{l: rate.NewLimiter(l.r, l.burst)}
		l.m[key] = b
	}
	b.seen = now
	return b.l.AllowN(now, 1)
}

// tlsRequiredError explains why a non-loopback listener needs TLS.
func tlsRequiredError(listen string) error {
	return fmt.Errorf("--listen %s is not a loopback address: refusing to serve without mutual TLS (set --tls-ca, --tls-cert and --tls-key; `golive-controller pki init` makes them), or listen on 127.0.0.1 for a local trial", listen)
}

// pacedListener accepts at most a steady rate of new connections (with a
// burst), so that a reconnect storm of thousands of agents is handshaken in
// order instead of all at once, each handshake starving the others of CPU.
type pacedListener struct {
	net.Listener
	l *rate.Limiter
}

func pace(lis net.Listener, perSecond float64, burst int) net.Listener {
	if perSecond <= 0 {
		return lis
	}
	return &pacedListener{Listener: lis, l: rate.NewLimiter(rate.Limit(perSecond), max(burst, 1))}
}

func (p *pacedListener) Accept() (net.Conn, error) {
	c, err := p.Listener.Accept()
	if err != nil {
		return nil, err
	}
	if d := p.l.Reserve().Delay(); d > 0 {
		time.Sleep(d)
	}
	return c, nil
}
