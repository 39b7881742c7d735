package dashboard

import (
	"context"
	"fmt"
	"sort"
	"strings"
	"time"

	golivev1 "github.com/golive/golive/proto/golive/v1"
)

// snapshot is the page's data as of one refresh. It is never changed once
// published: a refresh makes a new one from the old.
type snapshot struct {
	at      time.Time
	err     string // why the last refresh could not read something ("" when all was read)
	status  *golivev1.StatusResponse
	agents  []*golivev1.Agent // by host id
	history []*golivev1.Rollout
	audit   *AuditTail
	fleet   fleet
	running []rolloutView
}

// fleet sums up the agents so that the page stays small at thousands.
type fleet struct {
	Total, Connected, Lost int
	// Token: connected agents holding the live approval's token, another
	// non-zero token, or none.
	TokenCurrent, TokenOther, TokenZero int
	// Dropped: no approval and no agent holds a token (after a STOP).
	// Holding: an approval and every connected agent holds its token.
	Dropped, Holding bool
	// Instances of services by health.
	Healthy, Unhealthy, NoData int
	Services                   []serviceSummary
	Problems                   []problem
	ProblemCount               int
}

type serviceSummary struct {
	Name     string
	Releases []count
	States   []count
}

type count struct {
	Name string
	N    int
}

type problem struct {
	Host, Why string
}

// refresh re-reads the parts c names into a copy of prev.
func (s *Server) refresh(ctx context.Context, prev *snapshot, c Change) *snapshot {
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	n := *prev
	n.at = s.cfg.Now()
	var errs []string
	if c&(ChangeApproval|ChangeRollouts|ChangeDNS|ChangeScaling) != 0 || n.status == nil {
		st, err := s.b.Status(ctx)
		if err != nil {
			errs = append(errs, "status: "+err.Error())
		} else {
			n.status = st
			n.running = nil
			for _, r := range st.Rollouts {
				n.running = append(n.running, viewRollout(r, 50))
			}
		}
	}
	if c&ChangeAgents != 0 || n.agents == nil {
		ags, err := s.b.Agents(ctx)
		if err != nil {
			errs = append(errs, "agents: "+err.Error())
		} else {
			sort.Slice(ags, func(i, j int) bool { return ags[i].HostId < ags[j].HostId })
			n.agents = ags
		}
	}
	if c&ChangeRollouts != 0 || n.history == nil {
		h, err := s.b.History(ctx, s.cfg.HistorySize)
		if err != nil {
			errs = append(errs, "history: "+err.Error())
		} else {
			n.history = h
		}
	}
	if c&ChangeAudit != 0 || n.audit == nil {
		a, err := s.b.Audit(ctx, s.cfg.AuditSize)
		if err != nil {
			errs = append(errs, "audit: "+err.Error())
		} else {
			n.audit = a
		}
	}
	n.err = strings.Join(errs, "; ")
	n.fleet = summarise(n.agents, n.approval(), s.cfg.Problems)
	return &n
}

func (n *snapshot) approval() *golivev1.Approval {
	if n.status == nil || n.status.Approval == nil {
		return &golivev1.Approval{}
	}
	return n.status.Approval
}

// summarise counts agents by state, token and health, releases per
// service, and lists the first max problem hosts.
func summarise(agents []*golivev1.Agent, ap *golivev1.Approval, maxProblems int) fleet {
	f := fleet{Total: len(agents)}
	type svc struct{ rel, st map[string]int }
	svcs := map[string]*svc{}
	addProblem := func(host, why string) {
		f.ProblemCount++
		if len(f.Problems) < maxProblems {
			f.Problems = append(f.Problems, problem{host, why})
		}
	}
	live := ap.GetActive() && ap.GetFencingToken() != 0
	for _, a := range agents {
		var why []string
		if a.State == "connected" {
			f.Connected++
			switch {
			case a.FencingToken == 0:
				f.TokenZero++
				if live {
					why = append(why, "does not hold the approval's token yet")
				}
			case live && a.FencingToken == ap.FencingToken:
				f.TokenCurrent++
			default:
				f.TokenOther++
				why = append(why, fmt.Sprintf("holds token %d", a.FencingToken))
			}
		} else {
			f.Lost++
			why = append(why, "lost")
		}
		for _, sv := range a.Services {
			s := svcs[sv.Name]
			if s == nil {
				s = &svc{rel: map[string]int{}, st: map[string]int{}}
				svcs[sv.Name] = s
			}
			s.rel[orNone(sv.CurrentRelease)]++
			s.st[orNone(sv.State)]++
			switch {
			case sv.Health == nil || sv.Health.Requests == 0:
				f.NoData++
			case sv.Health.Healthy:
				f.Healthy++
			default:
				f.Unhealthy++
				why = append(why, sv.Name+" unhealthy")
			}
			if sv.State == "failed" {
				why = append(why, sv.Name+" failed")
			}
		}
		if len(why) > 0 {
			addProblem(a.HostId, strings.Join(why, ", "))
		}
	}
	f.Dropped = !live && f.TokenCurrent+f.TokenOther == 0
	f.Holding = live && f.Connected > 0 && f.TokenCurrent == f.Connected
	names := make([]string, 0, len(svcs))
	for n := range svcs {
		names = append(names, n)
	}
	sort.Strings(names)
	for _, n := range names {
		f.Services = append(f.Services, serviceSummary{Name: n, Releases: counts(svcs[n].rel), States: counts(svcs[n].st)})
	}
	return f
}

func counts(m map[string]int) []count {
	out := make([]count, 0, len(m))
	for k, v := range m {
		out = append(out, count{k, v})
	}
	sort.Slice(out, func(i, j int) bool { return out[i].N > out[j].N || out[i].N == out[j].N && out[i].Name < out[j].Name })
	return out
}

func orNone(s string) string {
	if s == "" {
		return "none"
	}
	return s
}

// rolloutView is a rollout as the page draws it: its waves with their
// hosts' states counted, and at most maxHosts hosts listed per wave (those
// not done first).
type rolloutView struct {
	R     *golivev1.Rollout
	Waves []waveView
	Gate  *golivev1.GateStatus
}

type waveView struct {
	W      *golivev1.Wave
	Counts []count
	Hosts  []*golivev1.HostProgress
	More   int
}

func viewRollout(r *golivev1.Rollout, maxHosts int) rolloutView {
	v := rolloutView{R: r, Gate: r.Gate}
	byHost := map[string]*golivev1.HostProgress{}
	for _, h := range r.Hosts {
		byHost[h.HostId] = h
	}
	for _, w := range r.Waves {
		wv := waveView{W: w}
		st := map[string]int{}
		var notDone, done []*golivev1.HostProgress
		for _, h := range w.Hosts {
			hp := byHost[h]
			if hp == nil {
				hp = &golivev1.HostProgress{HostId: h, State: "pending"}
			}
			st[orNone(hp.State)]++
			if hp.State == "succeeded" || hp.State == "unchanged" {
				done = append(done, hp)
			} else {
				notDone = append(notDone, hp)
			}
		}
		wv.Counts = counts(st)
		all := append(notDone, done...)
		if maxHosts > 0 && len(all) > maxHosts {
			wv.More = len(all) - maxHosts
			all = all[:maxHosts]
		}
		wv.Hosts = all
		v.Waves = append(v.Waves, wv)
	}
	return v
}

// The snapshot as the templates read it.

func (n *snapshot) Approval() *golivev1.Approval { return n.approval() }
func (n *snapshot) Fleet() fleet                 { return n.fleet }
func (n *snapshot) Running() []rolloutView       { return n.running }
func (n *snapshot) History() []*golivev1.Rollout { return n.history }
func (n *snapshot) Audit() *AuditTail            { return n.audit }
func (n *snapshot) Err() string                  { return n.err }
func (n *snapshot) Status() *golivev1.StatusResponse {
	return n.status
}

// Scaling is the scaling panel's entries, per service and host.
func (n *snapshot) Scaling() []*golivev1.ScaleEntry {
	if n.status == nil {
		return nil
	}
	return n.status.Scaling
}

// DNS is the failover records of the DNS panel (none without --dns-config).
func (n *snapshot) DNS() []*golivev1.DnsRecord {
	if n.status == nil {
		return nil
	}
	var out []*golivev1.DnsRecord
	for _, r := range n.status.Dns {
		if r.Failover != nil {
			out = append(out, r)
		}
	}
	return out
}

// At is when the snapshot was read.
func (n *snapshot) At() string {
	if n.at.IsZero() {
		return "—"
	}
	return n.at.UTC().Format("15:04:05.000Z")
}

// Remaining is the approval's time left as of now, for the page without
// JavaScript (the script counts it down live).
func (n *snapshot) Remaining(now time.Time) string {
	a := n.approval()
	if !a.Active || a.ExpiresAt == nil {
		return ""
	}
	d := a.ExpiresAt.AsTime().Sub(now).Truncate(time.Second)
	if d <= 0 {
		return "expired"
	}
	return d.String() + " left"
}

// Rev is the tail newest first.
func (t *AuditTail) Rev() []*golivev1.AuditEntry {
	out := make([]*golivev1.AuditEntry, len(t.Entries))
	for i, e := range t.Entries {
		out[len(out)-1-i] = e
	}
	return out
}

// rolloutCtx is one rollout with the page it is drawn on (roles, CSRF).
type rolloutCtx struct {
	R *rolloutView
	P *pageData
}

func dict(r any, p *pageData) rolloutCtx {
	switch v := r.(type) {
	case rolloutView:
		return rolloutCtx{&v, p}
	case *rolloutView:
		return rolloutCtx{v, p}
	}
	return rolloutCtx{P: p}
}
