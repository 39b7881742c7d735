// Package dashboard is the controller's live web dashboard: one page that
// shows the automation approval, every agent, running rollouts, history
// and the audit tail, kept current with server-sent events, and the STOP
// button that revokes the approval.
//
// It owns no state. It reads the controller through Reader, acts through
// Actor and learns of changes through Feed: three small interfaces the
// controller implements (internal/controller/dashboard.go). One refresh loop
// per Server re-reads what a change touched (coalesced, at most a few times
// a second) into an immutable snapshot; every open page renders its
// sections from the latest snapshot and receives only the sections whose
// HTML changed:
//
//	etcd --watch--> Feed --Change bits--> refresh loop --snapshot--> SSE per page
//	                                          ^ Reader                  | render sections
//	browser --POST (CSRF token, Origin)--> Actor (audited as the caller)
//
// Invariants:
//   - nothing is shown to an unauthenticated request: a verified operator
//     certificate (mutual TLS), or a session cookie opened with a signed
//     single-use link (`golive-controller dashboard login`), or, without
//     TLS, a loopback request with a loopback Host (dev mode, with a banner);
//   - every action is a POST with the caller's CSRF token and an Origin
//     equal to the dashboard's own; roles are the API's (viewer sees,
//     approver authorizes, deployer pauses and aborts), and anyone with a
//     role may STOP;
//   - without JavaScript the page is complete and refreshes itself.
package dashboard

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"net"
	"net/http"
	"sync"
	"time"

	"github.com/hashicorp/go-hclog"

	"github.com/golive/golive/internal/pki"
	golivev1 "github.com/golive/golive/proto/golive/v1"
)

// Reader is what the page shows, read from the controller.
type Reader interface {
	// Status is the approval, the leader, this replica and the running
	// rollouts (agent counts are not needed: Agents gives them).
	Status(ctx context.Context) (*golivev1.StatusResponse, error)
	// Agents is every known agent.
	Agents(ctx context.Context) ([]*golivev1.Agent, error)
	// History is the newest limit rollouts, newest first.
	History(ctx context.Context, limit int) ([]*golivev1.Rollout, error)
	// Rollout is one rollout.
	Rollout(ctx context.Context, id string) (*golivev1.Rollout, error)
	// Audit is the newest limit audit entries and the whole chain's verdict.
	Audit(ctx context.Context, limit int) (*AuditTail, error)
}

// AuditTail is the end of the audit log and what `audit verify` says of
// the whole chain.
type AuditTail struct {
	Entries  []*golivev1.AuditEntry // oldest first
	HeadSeq  uint64
	HeadHash string
	// BrokenAt is the first broken link's sequence number (0: intact).
	BrokenAt uint64
	Why      string
}

// Caller is who acts from the dashboard: the identity the audit log names.
type Caller struct {
	Name  string
	Roles []pki.Role
	// Source is where the request came from, for the audit log.
	Source string
}

// Actor carries out the page's actions as the caller, through the
// controller's own handlers (and so their audit entries).
type Actor interface {
	Revoke(ctx context.Context, c Caller, reason string) (*golivev1.RevokeResponse, error)
	Authorize(ctx context.Context, c Caller, phrase string, ttl time.Duration, reason string) (*golivev1.Approval, error)
	Pause(ctx context.Context, c Caller, id, reason string) error
	Abort(ctx context.Context, c Caller, id, reason string) error
	// Refused records an authenticated caller's attempt at an action its
	// roles do not allow.
	Refused(ctx context.Context, c Caller, action, why string)
}

// Change says what changed; the refresh loop re-reads only that.
type Change uint8

// The parts of the page a change touches.
const (
	ChangeApproval Change = 1 << iota // approval, leader
	ChangeAgents
	ChangeRollouts
	ChangeAudit
	ChangeDNS     // DNS failover records
	ChangeScaling // scaling records (scaling/<service>/<host>)
	ChangeAll     = ChangeApproval | ChangeAgents | ChangeRollouts | ChangeAudit | ChangeDNS | ChangeScaling
)

// Feed reports changes.
type Feed interface {
	// Watch blocks until ctx ends, calling changed (quickly: it must not
	// block) on every change; after a lost watch it reports ChangeAll.
	Watch(ctx context.Context, changed func(Change)) error
}

// Backend is the controller as the dashboard sees it.
type Backend interface {
	Reader
	Actor
	Feed
}

// Config is what a Server needs.
type Config struct {
	Log     hclog.Logger
	Backend Backend
	// Key signs login links, session cookies and CSRF tokens (32 bytes;
	// LoadKey keeps one in the controller's data directory).
	Key []byte
	// TLS, when set, serves HTTPS: a browser may present an operator
	// certificate, or sign in with a link. Without it the dashboard is in
	// dev mode: loopback only, every loopback caller has every role.
	TLS *tls.Config
	// DevIdentity names dev mode's caller in the audit log.
	DevIdentity string
	// Replica is shown in the header.
	Replica string
	// LinkTTL bounds login links (default and maximum 15m); SessionTTL is
	// how long the session a link opens lasts (default 8h).
	LinkTTL, SessionTTL time.Duration
	// PageSize is agents per page (default 100); Problems is how many
	// problem hosts the summary lists (default 20); HistorySize how many
	// past rollouts (default 20); AuditSize how many audit entries (default 20).
	PageSize, Problems, HistorySize, AuditSize int
	// MinInterval is the shortest time between two refreshes (default
	// 100ms); a refresh that took longer stretches it to twice its time so
	// that a large fleet does not keep the controller busy.
	MinInterval time.Duration
	// Now is the clock (tests).
	Now func() time.Time
}

func (c *Config) defaults() {
	if c.LinkTTL <= 0 || c.LinkTTL > 15*time.Minute {
		c.LinkTTL = 15 * time.Minute
	}
	if c.SessionTTL <= 0 {
		c.SessionTTL = 8 * time.Hour
	}
	if c.PageSize <= 0 {
		c.PageSize = 100
	}
	if c.Problems <= 0 {
		c.Problems = 20
	}
	if c.HistorySize <= 0 {
		c.HistorySize = 20
	}
	if c.AuditSize <= 0 {
		c.AuditSize = 20
	}
	if c.MinInterval <= 0 {
		c.MinInterval = 100 * time.Millisecond
	}
	if c.Now == nil {
		c.Now = time.Now
	}
	if c.DevIdentity == "" {
		c.DevIdentity = "dashboard-dev"
	}
	if c.Log == nil {
		c.Log = hclog.NewNullLogger()
	}
}

// Server is the dashboard: an http.Handler and its refresh loop.
type Server struct {
	cfg    Config
	log    hclog.Logger
	b      Backend
	signer *signer
	mux    *http.ServeMux

	mu      sync.Mutex
	snap    *snapshot
	updated chan struct{} // closed and replaced with each new snapshot
	pending Change
	kick    chan struct{}
}

// New returns a dashboard; Serve runs it.
func New(cfg Config) (*Server, error) {
	cfg.defaults()
	if cfg.Backend == nil {
		return nil, errors.New("dashboard: no backend")
	}
	if len(cfg.Key) < 32 {
		return nil, errors.New("dashboard: the signing key must have at least 32 bytes")
	}
	s := &Server{cfg: cfg, log: cfg.Log, b: cfg.Backend, signer: newSigner(cfg.Key, cfg.Now),
		updated: make(chan struct{}), kick: make(chan struct{}, 1), pending: ChangeAll,
		snap: &snapshot{err: "loading…"}}
	s.routes()
	return s, nil
}

// DevMode reports whether the dashboard serves without TLS.
func (s *Server) DevMode() bool { return s.cfg.TLS == nil }

// Link signs a login link's token for an identity; the page at
// /login?t=TOKEN opens a session with it once.
func (s *Server) Link(name string, roles []pki.Role, ttl time.Duration) (token string, expires time.Time, err error) {
	if ttl <= 0 || ttl > s.cfg.LinkTTL {
		ttl = s.cfg.LinkTTL
	}
	if name == "" || len(roles) == 0 {
		return "", time.Time{}, errors.New("a dashboard link needs an identity with a role")
	}
	expires = s.cfg.Now().Add(ttl)
	token, err = s.signer.sign(kindLink, claims{Sub: name, Roles: roles, Exp: expires.Unix()})
	return token, expires, err
}

// SessionTTL is how long a session opened with a link lasts.
func (s *Server) SessionTTL() time.Duration { return s.cfg.SessionTTL }

// ServeHTTP serves the dashboard.
func (s *Server) ServeHTTP(w http.ResponseWriter, r *http.Request) { s.mux.ServeHTTP(w, r) }

// Serve serves on lis until ctx ends, then shuts down: open event streams
// end, the refresh loop and the feed stop, and Serve returns once they have.
func (s *Server) Serve(ctx context.Context, lis net.Listener) error {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	srv := &http.Server{
		Handler: s, ReadHeaderTimeout: 10 * time.Second, IdleTimeout: 2 * time.Minute, TLSConfig: s.cfg.TLS,
		BaseContext: func(net.Listener) context.Context { return ctx },
		ErrorLog:    s.log.StandardLogger(&hclog.StandardLoggerOptions{ForceLevel: hclog.Debug}),
	}
	var wg sync.WaitGroup
	wg.Add(2)
	go func() {
		defer wg.Done()
		for ctx.Err() == nil {
			if err := s.b.Watch(ctx, s.Changed); err != nil && ctx.Err() == nil {
				s.log.Warn("dashboard feed", "error", err)
				s.Changed(ChangeAll)
				select {
				case <-ctx.Done():
				case <-time.After(time.Second):
				}
			}
		}
	}()
	go func() { defer wg.Done(); s.refreshLoop(ctx) }()
	errc := make(chan error, 1)
	go func() {
		var err error
		if s.cfg.TLS != nil {
			err = srv.ServeTLS(lis, "", "")
		} else {
			err = srv.Serve(lis)
		}
		if errors.Is(err, http.ErrServerClosed) {
			err = nil
		}
		errc <- err
	}()
	var err error
	select {
	case <-ctx.Done():
	case err = <-errc:
		err = fmt.Errorf("dashboard serve: %w", err)
	}
	cancel() // ends event streams (their requests' context is ctx)
	shut, c2 := context.WithTimeout(context.Background(), 5*time.Second)
	srv.Shutdown(shut)
	c2()
	if err == nil {
		<-errc
	}
	wg.Wait()
	return err
}

// Changed marks parts of the page stale; the refresh loop re-reads them.
func (s *Server) Changed(c Change) {
	s.mu.Lock()
	s.pending |= c
	s.mu.Unlock()
	select {
	case s.kick <- struct{}{}:
	default:
	}
}

// refreshLoop re-reads what changed, at most once per interval, and
// publishes a new snapshot.
func (s *Server) refreshLoop(ctx context.Context) {
	s.kickSelf()
	for {
		select {
		case <-ctx.Done():
			return
		case <-s.kick:
		}
		s.mu.Lock()
		c := s.pending
		s.pending = 0
		prev := s.snap
		s.mu.Unlock()
		if c == 0 {
			continue
		}
		start := time.Now()
		next := s.refresh(ctx, prev, c)
		took := time.Since(start)
		s.mu.Lock()
		s.snap = next
		close(s.updated)
		s.updated = make(chan struct{})
		s.mu.Unlock()
		wait := max(s.cfg.MinInterval, 2*took)
		if next.err != "" {
			// Read again soon, not at once: the page says it is stale.
			s.Changed(c)
			wait = max(wait, time.Second)
		}
		t := time.NewTimer(wait)
		select {
		case <-ctx.Done():
			t.Stop()
			return
		case <-t.C:
		}
	}
}

func (s *Server) kickSelf() {
	select {
	case s.kick <- struct{}{}:
	default:
	}
}

// current returns the latest snapshot and a channel closed when a newer one
// is published.
func (s *Server) current() (*snapshot, <-chan struct{}) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.snap, s.updated
}
