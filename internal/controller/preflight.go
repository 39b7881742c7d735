package controller

import (
	"context"
	"errors"
	"fmt"
	"sort"
	"strings"

	"github.com/golive/golive/internal/audit"
	"github.com/golive/golive/internal/controller/apierr"
	"github.com/golive/golive/internal/controller/executor"
	"github.com/golive/golive/internal/preflight"
	"github.com/golive/golive/internal/rollout"
	golivev1 "github.com/golive/golive/proto/golive/v1"
)

// preflightHosts picks the hosts of a Preflight RPC: the named ones (each
// must be known and run the service; a lost one is reported, not asked), or
// the connected hosts running the service that match the selector. The
// second list holds the named hosts whose agent is not connected.
func (s *Server) preflightHosts(ctx context.Context, req *golivev1.PreflightRequest) (ask, lost []string, err error) {
	if len(req.Hosts) > 0 && len(req.Selector) > 0 {
		return nil, nil, fmt.Errorf("%w: use --host or --selector, not both", apierr.ErrInvalid)
	}
	agents, err := s.hub.Agents(ctx)
	if err != nil {
		return nil, nil, err
	}
	selected, err := rollout.SelectHosts(planHosts(agents), req.Service, req.Hosts, req.Selector)
	switch {
	case errors.Is(err, rollout.ErrUnknownHost), errors.Is(err, rollout.ErrNoHosts):
		return nil, nil, fmt.Errorf("%w: %v", apierr.ErrNotFound, err)
	case err != nil:
		return nil, nil, fmt.Errorf("%w: %v", apierr.ErrInvalid, err)
	}
	for _, h := range selected {
		switch {
		case !h.Lost:
			ask = append(ask, h.ID)
		case len(req.Hosts) > 0:
			lost = append(lost, h.ID) // named: reported as not connected
		}
	}
	if len(ask) == 0 && len(lost) == 0 {
		what := fmt.Sprintf("no connected host runs service %q", req.Service)
		if len(req.Selector) > 0 {
			what += " with labels " + rollout.FormatSelector(req.Selector)
		}
		return nil, nil, fmt.Errorf("%w: %s (see `golive-controller agents`)", apierr.ErrNotFound, what)
	}
	sort.Strings(ask)
	sort.Strings(lost)
	return ask, lost, nil
}

// Preflight runs the pre-live checks of a service on its hosts. Checking
// only reads, so no approval is needed; every run is audited.
func (c *control) Preflight(ctx context.Context, req *golivev1.PreflightRequest) (*golivev1.PreflightResponse, error) {
	actor, src := actorAndSource(ctx)
	if err := validName("service", req.Service); err != nil {
		return nil, apierr.ToStatus(err)
	}
	if req.Release != "" {
		if err := validName("release", req.Release); err != nil {
			return nil, apierr.ToStatus(err)
		}
	}
	if err := preflight.ValidateSkips(req.SkipChecks); err != nil {
		return nil, apierr.ToStatus(fmt.Errorf("%w: --skip-check: %v", apierr.ErrInvalid, err))
	}
	timeout := req.Timeout.AsDuration()
	switch {
	case req.Timeout == nil || timeout <= 0:
		timeout = executor.DefaultPreflightTimeout
	case timeout > executor.MaxPreflightTimeout:
		return nil, apierr.ToStatus(fmt.Errorf("%w: --timeout %s is longer than %s", apierr.ErrInvalid, timeout, executor.MaxPreflightTimeout))
	}
	ask, lost, err := c.s.preflightHosts(ctx, req)
	if err != nil {
		return nil, apierr.ToStatus(err)
	}
	checked, err := executor.FanOutPreflight(ctx, c.s.store, c.s.log, executor.PreflightSpec{Service: req.Service, Release: req.Release, ArtifactURL: req.ArtifactUrl,
		Hosts: ask, Skip: req.SkipChecks, Timeout: timeout, Controller: c.s.preflightChecks()}, c.s.sweepLate)
	if err != nil {
		return nil, apierr.ToStatus(err)
	}
	for _, h := range lost {
		checked = append(checked, &golivev1.HostChecks{HostId: h, Error: "agent is not connected (lost): bring it back, or leave it out of --host"})
	}
	sort.Slice(checked, func(i, j int) bool { return checked[i].HostId < checked[j].HostId })
	resp := &golivev1.PreflightResponse{Service: req.Service, Release: req.Release, Hosts: checked, Ok: executor.PreflightOK(checked)}
	outcome := "ok"
	if !resp.Ok {
		outcome = "failed"
	}
	var hosts []string
	for _, h := range checked {
		hosts = append(hosts, h.HostId)
	}
	detail := fmt.Sprintf("service=%s release=%s hosts=%s", req.Service, orNone(req.Release), strings.Join(hosts, ","))
	if len(req.SkipChecks) > 0 {
		detail += " skip_checks=" + strings.Join(req.SkipChecks, ",")
	}
	if f := executor.PreflightFailures(checked); len(f) > 0 {
		detail += " failures=" + fmt.Sprint(len(f))
	}
	if _, _, err := c.s.audit.Append(ctx, audit.Entry{Actor: actor, Action: "preflight", Outcome: outcome, Source: src, Detail: detail}, nil, nil); err != nil {
		c.s.log.Warn("preflight: cannot audit", "error", err)
		return nil, apierr.ToStatus(fmt.Errorf("record the preflight in the audit log: %w", err))
	}
	c.s.log.Info("preflight", "actor", actor, "service", req.Service, "release", req.Release, "ok", resp.Ok, "hosts", hosts)
	return resp, nil
}

// sweepLate deletes, in the background, the late answers of an RPC's
// preflight; Run waits for it on shutdown.
func (s *Server) sweepLate(late []string, rev int64) {
	s.bg.Add(1)
	go func() {
		defer s.bg.Done()
		executor.SweepLateResults(s.bgCtx, s.store, late, rev)
	}()
}

// DefaultPreflightTimeout bounds a preflight run when the request names none.
const DefaultPreflightTimeout = executor.DefaultPreflightTimeout

// preflightChecks are the checks the controller runs itself (nil: none).
func (s *Server) preflightChecks() executor.ControllerChecks {
	if s.dns == nil {
		return nil
	}
	return s.dns
}
