// Package promsd owns golive's Prometheus HTTP service discovery: the
// handler of GET /v1/prometheus/sd, which answers in the http_sd_configs
// format (a JSON list of {"targets": [...], "labels": {...}}) so that the
// user's Prometheus scrapes every agent and every managed service golive
// knows of, labelled with what it runs.
//
// The controller implements Inventory (it knows the connected agents and
// what each reported); this package only shapes the answer:
//
//	agent     target <agent metrics address>, labels host, golive_target="agent"
//	service   target <service metrics address>, labels host, service,
//	          release, slot (when blue-green), golive_target="service", and
//	          __metrics_path__ when the path is not /metrics
//
// # Invariants
//
//   - The answer is deterministic: groups sorted by host, then kind,
//     service, slot; the same inventory always gives the same bytes, so
//     Prometheus sees no churn.
//   - An entry that cannot be scraped (no address, an address that is not
//     host:port, a metrics path that is not an absolute path) is left out
//     and logged, never sent for Prometheus to refuse the whole answer.
//   - If the inventory cannot be read, the handler answers 503, never an
//     empty list: Prometheus keeps the targets it had, where an empty list
//     would drop every target (and its alerts' series) at once.
package promsd

import (
	"cmp"
	"context"
	"encoding/json"
	"fmt"
	"net"
	"net/http"
	"slices"
	"strings"
	"time"

	"github.com/hashicorp/go-hclog"
)

// Path is where the controller's HTTP mux serves the handler.
const Path = "/v1/prometheus/sd"

// DefaultMetricsPath is the path Prometheus scrapes unless told otherwise.
const DefaultMetricsPath = "/metrics"

// The labels of a target group. Prometheus adds instance (the target) and
// job (the scrape config's job_name).
const (
	LabelHost    = "host"
	LabelService = "service"
	LabelRelease = "release"
	LabelSlot    = "slot"
	// LabelTarget is "agent" or "service": what the target is.
	LabelTarget = "golive_target"
	// LabelMetricsPath is Prometheus's own label for the scrape path.
	LabelMetricsPath = "__metrics_path__"
)

// Inventory is what the controller knows of its fleet.
type Inventory interface {
	// PrometheusTargets lists every agent known, with the services it
	// runs. An error makes the handler answer 503.
	PrometheusTargets(ctx context.Context) ([]Agent, error)
}

// Agent is one host's agent.
type Agent struct {
	HostID string
	// MetricsAddress is the agent's --metrics-addr, host:port, "" when it
	// serves no metrics (then only its services are listed).
	MetricsAddress string
	Services       []Service
}

// Service is one managed service on a host, or one slot of a blue-green
// service (one entry per slot that runs).
type Service struct {
	Name    string
	Release string
	// Slot is "blue" or "green" for a blue-green service, "" otherwise.
	Slot string
	// MetricsAddress is host:port of the service's metrics endpoint, ""
	// when it has none (the service is then not listed).
	MetricsAddress string
	// MetricsPath is the agent config's metrics_path, "" for /metrics.
	MetricsPath string
}

// TargetGroup is one entry of the http_sd_configs answer.
type TargetGroup struct {
	Targets []string          `json:"targets"`
	Labels  map[string]string `json:"labels"`
}

// Groups turns an inventory into target groups: one per agent and one per
// service (slot), sorted. It returns, apart, why each left-out entry was
// left out.
func Groups(agents []Agent) (groups []TargetGroup, skipped []string) {
	type keyed struct {
		key   []string
		group TargetGroup
	}
	var all []keyed
	seen := map[string]bool{}
	add := func(key []string, what, addr string, labels map[string]string) {
		id := addr + "\x00" + labels[LabelMetricsPath]
		if seen[id] {
			skipped = append(skipped, fmt.Sprintf("%s: target %s%s is listed twice; kept the first", what, addr, labels[LabelMetricsPath]))
			return
		}
		seen[id] = true
		all = append(all, keyed{key, TargetGroup{Targets: []string{addr}, Labels: labels}})
	}
	sorted := slices.Clone(agents)
	slices.SortStableFunc(sorted, func(a, b Agent) int { return cmp.Compare(a.HostID, b.HostID) })
	for _, a := range sorted {
		if a.HostID == "" {
			skipped = append(skipped, "an agent without a host id")
			continue
		}
		if a.MetricsAddress != "" {
			if err := checkAddress(a.MetricsAddress); err != nil {
				skipped = append(skipped, fmt.Sprintf("host %s: agent metrics address: %v", a.HostID, err))
			} else {
				add([]string{a.HostID, "0agent"}, "host "+a.HostID+": agent", a.MetricsAddress, map[string]string{LabelHost: a.HostID, LabelTarget: "agent"})
			}
		}
		services := slices.Clone(a.Services)
		slices.SortStableFunc(services, func(x, y Service) int {
			return cmp.Or(cmp.Compare(x.Name, y.Name), cmp.Compare(x.Slot, y.Slot))
		})
		for _, s := range services {
			what := fmt.Sprintf("host %s: service %q", a.HostID, s.Name)
			if s.Slot != "" {
				what += fmt.Sprintf(" slot %s", s.Slot)
			}
			if s.MetricsAddress == "" {
				continue // no metrics endpoint: nothing to scrape, nothing wrong
			}
			if s.Name == "" {
				skipped = append(skipped, fmt.Sprintf("host %s: a service without a name", a.HostID))
				continue
			}
			if err := checkAddress(s.MetricsAddress); err != nil {
				skipped = append(skipped, fmt.Sprintf("%s: metrics address: %v", what, err))
				continue
			}
			labels := map[string]string{LabelHost: a.HostID, LabelService: s.Name, LabelTarget: "service"}
			if s.Release != "" {
				labels[LabelRelease] = s.Release
			}
			if s.Slot != "" {
				labels[LabelSlot] = s.Slot
			}
			if p := s.MetricsPath; p != "" && p != DefaultMetricsPath {
				if err := checkPath(p); err != nil {
					skipped = append(skipped, fmt.Sprintf("%s: metrics path: %v", what, err))
					continue
				}
				labels[LabelMetricsPath] = p
			}
			add([]string{a.HostID, "1service", s.Name, s.Slot}, what, s.MetricsAddress, labels)
		}
	}
	slices.SortStableFunc(all, func(x, y keyed) int { return slices.Compare(x.key, y.key) })
	groups = make([]TargetGroup, len(all))
	for i, k := range all {
		groups[i] = k.group
	}
	return groups, skipped
}

func checkAddress(addr string) error {
	host, port, err := net.SplitHostPort(addr)
	if err != nil {
		return fmt.Errorf("%q is not host:port: %w", addr, err)
	}
	if host == "" || port == "" || strings.ContainsAny(addr, "/ ") {
		return fmt.Errorf("%q is not host:port", addr)
	}
	return nil
}

func checkPath(p string) error {
	if !strings.HasPrefix(p, "/") || strings.ContainsAny(p, "?# \t\r\n") {
		return fmt.Errorf("%q is not an absolute path without query or fragment", p)
	}
	return nil
}

// timeout bounds reading the inventory for one request.
const timeout = 10 * time.Second

// Handler serves Path.
type Handler struct {
	inv Inventory
	log hclog.Logger
}

// NewHandler returns the handler of Path over inv. logger gets the entries
// left out (with every answer that leaves them out) and inventory errors.
func NewHandler(inv Inventory, logger hclog.Logger) *Handler {
	if logger == nil {
		logger = hclog.NewNullLogger()
	}
	return &Handler{inv: inv, log: logger.Named("promsd")}
}

func (h *Handler) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if r.Method != http.MethodGet && r.Method != http.MethodHead {
		w.Header().Set("Allow", "GET, HEAD")
		http.Error(w, "method not allowed: use GET", http.StatusMethodNotAllowed)
		return
	}
	ctx, cancel := context.WithTimeout(r.Context(), timeout)
	defer cancel()
	agents, err := h.inv.PrometheusTargets(ctx)
	if err != nil {
		h.log.Warn("cannot list targets for Prometheus", "error", err)
		http.Error(w, "golive cannot list its targets now; Prometheus keeps the last ones and retries", http.StatusServiceUnavailable)
		return
	}
	groups, skipped := Groups(agents)
	for _, s := range skipped {
		h.log.Warn("target left out of Prometheus service discovery", "reason", s)
	}
	body, err := json.Marshal(groups)
	if err != nil {
		h.log.Error("encode targets", "error", err)
		http.Error(w, "cannot encode targets", http.StatusInternalServerError)
		return
	}
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Cache-Control", "no-store")
	_, _ = w.Write(body)
	_, _ = w.Write([]byte("\n"))
}
