package controller

import (
	"context"
	"net"
	"strconv"

	"github.com/golive/golive/internal/promsd"
)

// PrometheusTargets lists every agent's /metrics and every managed
// service's metrics endpoint for Prometheus's HTTP service discovery
// (promsd.Inventory). An agent listening on a wildcard address is reached
// at the address its stream comes from; a service's metrics are on its
// agent's host, at the serving instance's port.
func (s *Server) PrometheusTargets(ctx context.Context) ([]promsd.Agent, error) {
	agents, err := s.hub.Agents(ctx)
	if err != nil {
		return nil, err
	}
	var out []promsd.Agent
	for _, a := range agents {
		if a.State != "connected" {
			continue
		}
		host := reachableHost(a.MetricsAddress, a.Address)
		pa := promsd.Agent{HostID: a.HostId}
		if _, port, err := net.SplitHostPort(a.MetricsAddress); err == nil && host != "" {
			pa.MetricsAddress = net.JoinHostPort(host, port)
		}
		for _, sv := range a.Services {
			ps := promsd.Service{Name: sv.Name, Release: sv.CurrentRelease, Slot: sv.ActiveSlot}
			if sv.MetricsPort > 0 && host != "" {
				ps.MetricsAddress = net.JoinHostPort(host, strconv.Itoa(int(sv.MetricsPort)))
				ps.MetricsPath = sv.MetricsPath
			}
			pa.Services = append(pa.Services, ps)
		}
		out = append(out, pa)
	}
	return out, nil
}

// reachableHost is listen's host, or the stream's peer host when listen
// is a wildcard (0.0.0.0, ::) or empty.
func reachableHost(listen, peer string) string {
	if h, _, err := net.SplitHostPort(listen); err == nil {
		if ip := net.ParseIP(h); h != "" && (ip == nil || !ip.IsUnspecified()) {
			return h
		}
	}
	if h, _, err := net.SplitHostPort(peer); err == nil {
		return h
	}
	return ""
}
