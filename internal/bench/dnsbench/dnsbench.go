// Package dnsbench benchmarks golive's DNS failover and updates against
// real authoritative servers on loopback:
//
//   - failover: the time from the primary pool going bad to the zone's
//     authoritative server answering the secondary pool's addresses
//     (the leader's decision after `threshold` consecutive bad checks, the
//     TSIG-signed UPDATE and its confirmation by query), under a live
//     approval, a few repetitions;
//   - updates: the latency of 200 confirmed updates (UPDATE sent -> the
//     server answers the new data) per server kind, p50/p99/max.
//
// Run starts BIND (named; and Knot, knotd, for the updates when installed)
// with dnstest.Launch in a temporary directory, and the real controller
// binary with --dns-config (checks every Interval, Threshold bad checks,
// --heartbeat-interval Heartbeat). The pools' hosts are simulated agents
// in this process speaking the real agent protocol (Hello, then a
// heartbeat every Heartbeat with the service's health window, as a real
// agent sends it): "bad" is the moment they start reporting their service's
// probe failing. A real agent's own probe adds its probe interval times its
// failure count before that moment; that part is the agent's configuration
// and is not measured here.
//
//	bad at T0 --heartbeat--> controller: check 1, 2, 3 bad --> decision
//	  --UPDATE (TSIG)--> named --confirm by query--> recorded
//	bench polls named (plain UDP query every 5 ms) --> answers green at T1
//
// Each repetition turns the pool bad at a random phase of the check
// interval. Between repetitions an operator's `dns failover --to blue` (no approval
// needed) moves the record back and the pool is healthy again.
package dnsbench

import (
	"context"
	"fmt"
	"io"
	"math/rand/v2"
	"os"
	"path/filepath"
	"slices"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/miekg/dns"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/metadata"
	"google.golang.org/protobuf/types/known/durationpb"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/golive/golive/internal/bench/benchkit"
	"github.com/golive/golive/internal/dnsupdate"
	"github.com/golive/golive/internal/dnsupdate/dnstest"
	golivev1 "github.com/golive/golive/proto/golive/v1"
)

const (
	recordName = "www.example.test."
	pollEvery  = 5 * time.Millisecond
)

var (
	blueHosts  = []string{"web-1", "web-2"}
	greenHosts = []string{"dr-1"}
	blueAddrs  = dnstest.InitialRecords // what the zone serves at start
	greenAddrs = []string{"198.51.100.10"}
)

// Options configure one run.
type Options struct {
	ControllerBin string
	// Reps is the number of failovers measured (default 5).
	Reps int
	// Updates per server kind (default 200).
	Updates int
	// Interval and Threshold of the failover's checks (default 1s, 3);
	// Heartbeat is the controller's --heartbeat-interval (default 1s).
	Interval  time.Duration
	Threshold int
	Heartbeat time.Duration
	Log       io.Writer
}

func (o *Options) defaults() {
	if o.Reps <= 0 {
		o.Reps = 5
	}
	if o.Updates <= 0 {
		o.Updates = 200
	}
	if o.Interval <= 0 {
		o.Interval = time.Second
	}
	if o.Threshold <= 0 {
		o.Threshold = 3
	}
	if o.Heartbeat <= 0 {
		o.Heartbeat = time.Second
	}
	if o.Log == nil {
		o.Log = io.Discard
	}
}

// Failover is one measured failover.
type Failover struct {
	// Total is bad -> the authoritative server answers the secondary.
	Total time.Duration
	// Decision is bad -> the leader decided (the update was sent).
	Decision time.Duration
	// Update is the update and its confirmation (the controller's figure).
	Update time.Duration
	// Checks is the bad-check streak the switch was decided on.
	Checks string
}

// Updates is one server kind's update latencies.
type Updates struct {
	Kind    dnstest.Kind
	Version string
	Lat     dnsupdate.Latencies
	Err     error
}

// Result is a run's figures.
type Result struct {
	Opts      Options
	Server    string // the failover's server (kind and version)
	Failovers []Failover
	Updates   []Updates
}

// Run runs both parts; a part that fails returns what was measured so far
// with the error.
func Run(ctx context.Context, o Options) (Result, error) {
	o.defaults()
	res := Result{Opts: o}
	dir, err := os.MkdirTemp("", "golive-dnsbench-")
	if err != nil {
		return res, err
	}
	defer os.RemoveAll(dir)
	ferr := runFailovers(ctx, o, filepath.Join(dir, "failover"), &res)
	for _, kind := range dnstest.Kinds {
		if ctx.Err() != nil {
			break
		}
		res.Updates = append(res.Updates, measureUpdates(ctx, o, kind, filepath.Join(dir, "updates-"+string(kind))))
	}
	return res, ferr
}

func measureUpdates(ctx context.Context, o Options, kind dnstest.Kind, dir string) Updates {
	u := Updates{Kind: kind}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		u.Err = err
		return u
	}
	s, err := dnstest.Launch(kind, dir)
	if err != nil {
		u.Err = err
		return u
	}
	defer s.Stop()
	u.Version = serverVersion(s)
	c, err := dnsupdate.New(s.ZoneConfig(dnstest.KeyGolive), dnsupdate.Options{})
	if err != nil {
		u.Err = err
		return u
	}
	fmt.Fprintf(o.Log, "dnsbench: %d confirmed updates against %s\n", o.Updates, kind)
	u.Lat, u.Err = dnsupdate.Measure(ctx, c, "bench.example.test.", "A", o.Updates)
	return u
}

// serverVersion asks the server for version.bind (CH TXT); "" if it does
// not say.
func serverVersion(s *dnstest.Server) string {
	m := new(dns.Msg)
	m.SetQuestion("version.bind.", dns.TypeTXT)
	m.Question[0].Qclass = dns.ClassCHAOS
	r, _, err := (&dns.Client{Timeout: time.Second}).Exchange(m, s.Addr)
	if err != nil || len(r.Answer) == 0 {
		return ""
	}
	if t, ok := r.Answer[0].(*dns.TXT); ok && len(t.Txt) > 0 {
		return t.Txt[0]
	}
	return ""
}

// served is what the server answers for the record (plain UDP query).
func served(ctx context.Context, c *dns.Client, addr string) ([]string, error) {
	m := new(dns.Msg)
	m.SetQuestion(recordName, dns.TypeA)
	r, _, err := c.ExchangeContext(ctx, m, addr)
	if err != nil {
		return nil, err
	}
	var out []string
	for _, rr := range r.Answer {
		if a, ok := rr.(*dns.A); ok {
			out = append(out, a.A.String())
		}
	}
	sort.Strings(out)
	return out, nil
}

func dnsConfig(s *dnstest.Server, dir string, o Options) (string, error) {
	if err := os.WriteFile(filepath.Join(dir, "golive.key"), []byte(s.Secrets[dnstest.KeyGolive]+"\n"), 0o600); err != nil {
		return "", err
	}
	src := fmt.Sprintf(`zone "example.test" {
  server   = %q
  key_name = "golive"
  key_file = "golive.key"
  timeout  = "2s"
}
pool "blue" {
  hosts     = [%s]
  addresses = [%s]
}
pool "green" {
  hosts     = [%s]
  addresses = [%s]
}
failover %q {
  zone      = "example.test"
  type      = "A"
  ttl       = "30s"
  primary   = blue
  secondary = green
  check {
    interval  = %q
    threshold = %d
  }
  failback  = "manual"
}
`, s.Addr, quoted(blueHosts), quoted(blueAddrs), quoted(greenHosts), quoted(greenAddrs), strings.TrimSuffix(recordName, "."), o.Interval.String(), o.Threshold)
	path := filepath.Join(dir, "dns.hcl")
	return path, os.WriteFile(path, []byte(src), 0o600)
}

func quoted(v []string) string {
	q := make([]string, len(v))
	for i, s := range v {
		q[i] = fmt.Sprintf("%q", s)
	}
	return strings.Join(q, ", ")
}

func runFailovers(ctx context.Context, o Options, dir string, res *Result) error {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return err
	}
	s, err := dnstest.Launch(dnstest.BIND, filepath.Join(dir))
	if err != nil {
		return fmt.Errorf("start named: %w", err)
	}
	defer s.Stop()
	res.Server = "bind " + serverVersion(s)
	conf, err := dnsConfig(s, dir, o)
	if err != nil {
		return err
	}
	ctlDir := filepath.Join(dir, "controller")
	if err := os.MkdirAll(ctlDir, 0o755); err != nil {
		return err
	}
	ctl, err := benchkit.StartController(benchkit.ControllerSpec{Bin: o.ControllerBin, Dir: ctlDir,
		Args: []string{"--dns-config", conf, "--heartbeat-interval", o.Heartbeat.String()}})
	if err != nil {
		return err
	}
	defer ctl.Stop(10 * time.Second)
	if err := ctl.WaitReady(ctx, 60*time.Second); err != nil {
		return fmt.Errorf("controller: %w\n%s", err, ctl.LogTail(20))
	}
	conn, err := grpc.NewClient("passthrough:///"+ctl.GRPCAddr, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		return err
	}
	defer conn.Close()
	cctx := metadata.AppendToOutgoingContext(ctx, "golive-actor", "bench")
	api := golivev1.NewControlServiceClient(conn)

	actx, cancelAgents := context.WithCancel(ctx)
	var wg sync.WaitGroup
	defer func() { cancelAgents(); wg.Wait() }()
	agents := map[string]*simAgent{}
	for _, h := range slices.Concat(blueHosts, greenHosts) {
		a := &simAgent{host: h, every: o.Heartbeat}
		a.healthy.Store(true)
		agents[h] = a
		wg.Add(1)
		go func() { defer wg.Done(); a.loop(actx, conn) }()
	}
	setBlue := func(ok bool) {
		for _, h := range blueHosts {
			agents[h].healthy.Store(ok)
		}
	}
	if _, err := api.Authorize(cctx, &golivev1.AuthorizeRequest{Phrase: "start automation now", Ttl: durationpb.New(time.Hour),
		Reason: "dns failover benchmark"}); err != nil {
		return fmt.Errorf("authorize: %w", err)
	}
	qc := &dns.Client{Timeout: time.Second}
	for i := range o.Reps {
		if err := waitFor(ctx, 90*time.Second, "the primary healthy, the record on blue", func() bool {
			r, err := api.DnsShow(cctx, &golivev1.DnsShowRequest{Name: recordName})
			if err != nil || len(r.Records) != 1 || r.Records[0].Failover == nil {
				return false
			}
			f := r.Records[0].Failover
			return f.Active == "blue" && f.Bad == 0 && f.Good >= 2 && slices.Equal(r.Records[0].ServedValues, blueAddrs)
		}); err != nil {
			return fmt.Errorf("run %d: %w\n%s", i+1, err, ctl.LogTail(20))
		}
		// The primary goes bad at a random phase of the check interval
		// (the wait above ends just after a check).
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(rand.N(o.Interval)):
		}
		t0 := time.Now()
		setBlue(false)
		var t1 time.Time
		if err := waitForEvery(ctx, 60*time.Second, pollEvery, "the server answering green", func() bool {
			v, err := served(ctx, qc, s.Addr)
			if err == nil && slices.Equal(v, greenAddrs) {
				t1 = time.Now()
				return true
			}
			return false
		}); err != nil {
			return fmt.Errorf("run %d: %w\n%s", i+1, err, ctl.LogTail(20))
		}
		f := Failover{Total: t1.Sub(t0)}
		// The server answers green a moment before the controller records
		// the confirmed change: wait for its history entry.
		var sw *golivev1.DnsHistoryEntry
		if err := waitFor(ctx, 30*time.Second, "the switch's history entry", func() bool {
			h, err := api.DnsHistory(cctx, &golivev1.DnsHistoryRequest{Name: recordName, Limit: 10})
			if err != nil {
				return false
			}
			for _, e := range h.Entries {
				if e.Kind == "automatic" && e.Outcome == "confirmed" && e.At.AsTime().After(t0) {
					sw = e
					return true
				}
			}
			return false
		}); err != nil {
			return fmt.Errorf("run %d: %w", i+1, err)
		}
		f.Update = sw.Latency.AsDuration()
		f.Decision = sw.At.AsTime().Add(-f.Update).Sub(t0)
		if _, rest, ok := strings.Cut(sw.Reason, "not healthy on "); ok {
			f.Checks, _, _ = strings.Cut(rest, " since")
		}
		res.Failovers = append(res.Failovers, f)
		fmt.Fprintf(o.Log, "dnsbench: failover %d: %s (decision %s, update %s, %s)\n", i+1, f.Total, f.Decision, f.Update, f.Checks)

		// Back to blue: healthy again, an operator's failover (no approval needed).
		setBlue(true)
		if _, err := api.DnsFailover(cctx, &golivev1.DnsFailoverRequest{Name: recordName, To: "blue", Reason: "benchmark: back to blue"}); err != nil {
			return fmt.Errorf("run %d: back to blue: %w", i+1, err)
		}
	}
	return nil
}

// waitFor polls cond every 50 ms until it holds or d passed.
func waitFor(ctx context.Context, d time.Duration, what string, cond func() bool) error {
	return waitForEvery(ctx, d, 50*time.Millisecond, what, cond)
}

func waitForEvery(ctx context.Context, d, every time.Duration, what string, cond func() bool) error {
	deadline := time.Now().Add(d)
	for !cond() {
		if time.Now().After(deadline) {
			return fmt.Errorf("timed out after %s waiting for %s", d, what)
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(every):
		}
	}
	return nil
}

// simAgent speaks the agent protocol for one host with one service "app"
// whose probe window is healthy or not.
type simAgent struct {
	host    string
	every   time.Duration
	healthy atomic.Bool
}

func (a *simAgent) service() *golivev1.ServiceState {
	hw := &golivev1.HealthWindow{Requests: 50, Healthy: a.healthy.Load(), LastProbe: timestamppb.Now(), WindowSeconds: 30, AvgLatencyMs: 3}
	if !hw.Healthy {
		hw.Errors, hw.LastError = 50, "connection refused"
	}
	return &golivev1.ServiceState{Name: "app", CurrentRelease: "v1", State: "running", Health: hw}
}

func (a *simAgent) loop(ctx context.Context, conn *grpc.ClientConn) {
	for ctx.Err() == nil {
		a.run(ctx, conn)
		select {
		case <-ctx.Done():
		case <-time.After(200 * time.Millisecond):
		}
	}
}

func (a *simAgent) run(ctx context.Context, conn *grpc.ClientConn) error {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	stream, err := golivev1.NewAgentServiceClient(conn).Connect(ctx)
	if err != nil {
		return err
	}
	if err := stream.Send(&golivev1.ConnectRequest{Payload: &golivev1.ConnectRequest_Hello{Hello: &golivev1.Hello{
		HostId: a.host, InstanceId: a.host + "-bench", AgentVersion: "bench", Services: []*golivev1.ServiceState{a.service()}}}}); err != nil {
		return err
	}
	recvDone := make(chan error, 1)
	go func() {
		for {
			if _, err := stream.Recv(); err != nil {
				recvDone <- err
				return
			}
		}
	}()
	t := time.NewTicker(a.every)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return ctx.Err()
		case err := <-recvDone:
			return err
		case <-t.C:
			if err := stream.Send(&golivev1.ConnectRequest{Payload: &golivev1.ConnectRequest_Heartbeat{Heartbeat: &golivev1.Heartbeat{
				Services: []*golivev1.ServiceState{a.service()}, SentAt: timestamppb.Now()}}}); err != nil {
				return err
			}
		}
	}
}

// PrintTable prints the run's figures.
func PrintTable(w io.Writer, r Result) error {
	o := r.Opts
	if len(r.Failovers) > 0 {
		fmt.Fprintf(w, "failover: primary pool bad -> authoritative server answers the secondary (%s; checks every %s, threshold %d, heartbeat %s, under an approval; %d runs)\n",
			orUnknown(r.Server), o.Interval, o.Threshold, o.Heartbeat, len(r.Failovers))
		tw := benchkit.NewTable(w)
		fmt.Fprintln(tw, "  \tp50\tmax\tmin\t")
		row := func(name string, get func(Failover) time.Duration, format func(time.Duration) string) {
			var v []time.Duration
			for _, f := range r.Failovers {
				v = append(v, get(f))
			}
			slices.Sort(v)
			l := dnsupdate.Latencies(v)
			fmt.Fprintf(tw, "  %s\t%s\t%s\t%s\t\n", name, format(l.Quantile(0.5)), format(v[len(v)-1]), format(v[0]))
		}
		row("total, bad -> answer (s)", func(f Failover) time.Duration { return f.Total }, benchkit.Sec)
		row("detection, bad -> decision (s)", func(f Failover) time.Duration { return f.Decision }, benchkit.Sec)
		row("update + confirmation (ms)", func(f Failover) time.Duration { return f.Update }, benchkit.Ms)
		if err := tw.Flush(); err != nil {
			return err
		}
		var checks []string
		for _, f := range r.Failovers {
			checks = append(checks, f.Checks)
		}
		fmt.Fprintf(w, "  decided on: %s\n", strings.Join(checks, "; "))
	}
	if len(r.Updates) > 0 {
		fmt.Fprintln(w, "confirmed updates (UPDATE sent -> the server answers the new data; TSIG hmac-sha256, TCP/UDP on loopback)")
		tw := benchkit.NewTable(w)
		fmt.Fprintln(tw, "  server\tupdates\tp50 ms\tp99 ms\tmax ms\t")
		for _, u := range r.Updates {
			name := string(u.Kind)
			if u.Version != "" {
				name += " " + u.Version
			}
			if len(u.Lat) == 0 {
				fmt.Fprintf(tw, "  %s\t-\t-\t-\t-\t\n", name)
				continue
			}
			fmt.Fprintf(tw, "  %s\t%d\t%s\t%s\t%s\t\n", name, len(u.Lat), benchkit.Ms(u.Lat.Quantile(0.5)), benchkit.Ms(u.Lat.Quantile(0.99)), benchkit.Ms(u.Lat[len(u.Lat)-1]))
		}
		if err := tw.Flush(); err != nil {
			return err
		}
		for _, u := range r.Updates {
			if u.Err != nil {
				fmt.Fprintf(w, "  note: %s: %v\n", u.Kind, benchkit.FirstLine(u.Err.Error()))
			}
		}
	}
	return nil
}

func orUnknown(s string) string {
	if strings.TrimSpace(s) == "" || s == "bind " {
		return "bind"
	}
	return s
}
