package controllercli

import (
	"context"
	"fmt"
	"io"
	"os"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"
	"golang.org/x/sys/unix"
	"google.golang.org/grpc/metadata"

	"github.com/golive/golive/internal/cli"
	"github.com/golive/golive/internal/controller"
	"github.com/golive/golive/internal/rollout"
	golivev1 "github.com/golive/golive/proto/golive/v1"
)

// statusEvery is how often a watch on a pipe prints a line when nothing
// changed (a bake in progress), so a log shows it is alive.
const statusEvery = 30 * time.Second

// hostLive is what the host's agent says of the rollout's service: the
// stage of the command in flight and the probe's health.
type hostLive struct {
	stage  string
	health string
}

func newWatchCmd(co *clientOpts) *cobra.Command {
	var service string
	var dnsOnly bool
	cmd := &cobra.Command{
		Use:   "watch [ROLLOUT_ID]",
		Short: "follow a rollout live (streamed from the controller): waves, hosts, stages, the gate as it bakes",
		Long: "Follow a rollout until it ends: on a terminal, a screen redrawn at each change; on a pipe, a line\n" +
			"per change and a status line every 30s; with -o json, one compact JSON object per line.\n" +
			"Ctrl-C stops watching (exit 130); the rollout goes on.",
		Example: "  golive-controller watch r-20261202-0001\n" +
			"  golive-controller watch --service app\n" +
			"  golive-controller watch r-20261202-0001 -o json | jq -c .rollout.state\n" +
			"  golive-controller watch --dns",
		Args: func(cmd *cobra.Command, args []string) error {
			if len(args) > 1 {
				return cli.Usagef("watch takes at most one ROLLOUT_ID")
			}
			return nil
		},
		ValidArgsFunction: co.completeRolloutIDs(true),
		RunE: func(cmd *cobra.Command, args []string) error {
			if dnsOnly {
				if len(args) > 0 || service != "" {
					return cli.Usagef("watch --dns takes no ROLLOUT_ID or --service")
				}
				return co.watchDNS(cmd)
			}
			req := &golivev1.WatchRolloutRequest{Service: service}
			if len(args) == 1 {
				req.Id = args[0]
			}
			return co.watch(cmd, req)
		},
	}
	cmd.Flags().StringVar(&service, "service", "", "watch this service's running rollout")
	cmd.Flags().BoolVar(&dnsOnly, "dns", false, "follow the DNS failover records instead of a rollout (until Ctrl-C)")
	cmd.RegisterFlagCompletionFunc("service", co.completeServices)
	return cmd
}

func (co *clientOpts) watch(cmd *cobra.Command, req *golivev1.WatchRolloutRequest) error {
	conn, err := co.dial()
	if err != nil {
		return err
	}
	defer conn.Close()
	ctx := metadata.AppendToOutgoingContext(cmd.Context(), controller.ActorMetadataKey, co.actor)
	client := golivev1.NewControlServiceClient(conn)
	stream, err := client.WatchRollout(ctx, req)
	if err != nil {
		return co.connError(err)
	}
	w := cmd.OutOrStdout()
	tty := co.output != "json" && isTerminal(w)
	var last *golivev1.Rollout
	var lastKey, lastReason string
	var lastPrint time.Time
	var live map[string]hostLive
	var dns []*golivev1.DnsRecord
	var liveAt time.Time
	for {
		resp, err := stream.Recv()
		if err == io.EOF {
			break
		}
		if err != nil {
			if cmd.Context().Err() != nil {
				return watchInterrupted(last, req.Id)
			}
			return co.connError(err)
		}
		last = resp.Rollout
		if co.output != "json" && time.Since(liveAt) >= time.Second {
			// The agents' records carry the stage and health of each
			// host (the rollout record does not): join them here.
			live, liveAt = co.hostsLive(ctx, client, last.Service), time.Now()
			dns = dnsStatus(ctx, client)
		}
		switch {
		case co.output == "json":
			if err := writeJSON(w, jsonValue(resp), true); err != nil {
				return err
			}
		case tty:
			fmt.Fprint(w, "\033[H\033[2J")
			printWatch(w, resp, live, termWidth(w))
			if len(dns) > 0 {
				fmt.Fprintln(w)
				printDNSStatus(w, dns, termWidth(w))
			}
		default:
			key := watchKey(resp, live) + dnsWatchKey(dns)
			if key != lastKey || time.Since(lastPrint) >= statusEvery {
				line := watchLine(resp, live) + dnsWatchLine(dns)
				if r := last.Reason; r != "" && r != lastReason {
					line += fmt.Sprintf(" reason=%q", r)
					lastReason = r
				}
				fmt.Fprintf(w, "%s %s\n", time.Now().Format("15:04:05"), line)
				lastKey, lastPrint = key, time.Now()
			}
		}
	}
	if last == nil {
		return nil
	}
	if co.output != "json" {
		printRolloutPreflight(w, last)
	}
	if last.State != "succeeded" {
		if lastReason == last.Reason || tty {
			// The reason is on the screen already: say it once.
			return fmt.Errorf("rollout %s ended %s", last.Id, displayState(last))
		}
		return fmt.Errorf("rollout %s ended %s: %s", last.Id, displayState(last), last.Reason)
	}
	return nil
}

// watchInterrupted is Ctrl-C during a watch: exit 130, and say the rollout
// goes on without the watcher.
func watchInterrupted(r *golivev1.Rollout, id string) error {
	if r != nil {
		id = r.Id
	}
	if id == "" {
		return cli.Interrupted{Note: "stopped watching"}
	}
	return cli.Interrupted{Note: fmt.Sprintf("stopped watching; rollout %s continues (follow it again: golive-controller watch %s; stop it: golive-controller pause %s)", id, id, id)}
}

// hostsLive reads each agent's record of service: the stage of its command
// in flight and the probe's health. It returns nil if the agents cannot be
// listed (the columns then show "-").
func (co *clientOpts) hostsLive(ctx context.Context, c golivev1.ControlServiceClient, service string) map[string]hostLive {
	ctx, cancel := context.WithTimeout(ctx, co.timeout)
	defer cancel()
	resp, err := c.ListAgents(ctx, &golivev1.ListAgentsRequest{})
	if err != nil {
		return nil
	}
	out := map[string]hostLive{}
	for _, a := range resp.Agents {
		for _, s := range a.Services {
			if s.Name != service {
				continue
			}
			hl := hostLive{stage: s.Stage, health: healthWord(s)}
			if a.State != "connected" {
				hl.health = a.State
			}
			out[a.HostId] = hl
		}
	}
	return out
}

// healthWord sums up a service's probe window: "ok 0/40 err 3ms", or
// "FAILING 5/40 err" ("-" before the service has a release or a probe).
func healthWord(s *golivev1.ServiceState) string {
	h := s.Health
	if s.CurrentRelease == "" || h == nil || h.Requests == 0 {
		return "-"
	}
	word := "ok"
	if !h.Healthy {
		word = "FAILING"
	}
	out := fmt.Sprintf("%s %d/%d err %.0fms", word, h.Errors, h.Requests, h.AvgLatencyMs)
	if t := servingTraffic(s); t != nil {
		// What users see, by the load balancer's count (what gates judge).
		out += fmt.Sprintf("; real %d/%d err %.0fms", t.Errors, t.Requests, t.AvgLatencyMs)
	}
	return out
}

// servingTraffic is the real-traffic window of the slot that serves s
// (nil without a load balancer the agent reads).
func servingTraffic(s *golivev1.ServiceState) *golivev1.SlotTraffic {
	for _, t := range s.GetTraffic().GetSlots() {
		if t.Slot == s.ActiveSlot {
			return t
		}
	}
	return nil
}

func hostStage(h *golivev1.HostProgress, live map[string]hostLive) string {
	if h.Stage != "" {
		return h.Stage
	}
	if l, ok := live[h.HostId]; ok && l.stage != "" && (h.State == "running" || h.State == "pending") {
		return l.stage
	}
	return "-"
}

func hostHealth(h *golivev1.HostProgress, live map[string]hostLive) string {
	if hw := h.Health; hw != nil && hw.Requests > 0 {
		return fmt.Sprintf("%d/%d err %.0fms", hw.Errors, hw.Requests, hw.AvgLatencyMs)
	}
	if l, ok := live[h.HostId]; ok && l.health != "" {
		return l.health
	}
	return "-"
}

// displayState is a rollout's state in capitals; a halt the operator asked
// for (pause, pause-after-canary) is PAUSED, not HALTED like a revoked one.
func displayState(r *golivev1.Rollout) string {
	if r.Paused && r.State == string(rollout.PhaseHalted) {
		return "PAUSED"
	}
	return strings.ToUpper(r.State)
}

// nextStep says what the operator can do about a stopped rollout.
func nextStep(r *golivev1.Rollout) string {
	if r.State != string(rollout.PhaseHalted) {
		return ""
	}
	if r.Paused {
		return fmt.Sprintf("continue it: golive-controller resume %s (or stop it: golive-controller abort %s)", r.Id, r.Id)
	}
	return fmt.Sprintf("continue it under a live approval: golive-controller resume %s (or golive-controller abort %s)", r.Id, r.Id)
}

func isTerminal(w io.Writer) bool {
	f, ok := w.(*os.File)
	if !ok {
		return false
	}
	st, err := f.Stat()
	return err == nil && st.Mode()&os.ModeCharDevice != 0
}

// termWidth is the terminal's width in columns (80 if it cannot be read).
func termWidth(w io.Writer) int {
	if f, ok := w.(*os.File); ok {
		if ws, err := unix.IoctlGetWinsize(int(f.Fd()), unix.TIOCGWINSZ); err == nil && ws.Col > 0 {
			return int(ws.Col)
		}
	}
	return 80
}

// truncate cuts s to n runes, marking the cut with "…".
func truncate(s string, n int) string {
	r := []rune(s)
	if n <= 1 || len(r) <= n {
		return s
	}
	return string(r[:n-1]) + "…"
}

func progressBar(done, total, width int) string {
	if total == 0 {
		return strings.Repeat("-", width)
	}
	n := done * width / total
	return strings.Repeat("#", n) + strings.Repeat("-", width-n)
}

func hostsDone(r *golivev1.Rollout) int {
	n := 0
	for _, h := range r.Hosts {
		switch h.State {
		case "", "waiting", "pending", "running":
		default:
			n++
		}
	}
	return n
}

func printWatch(w io.Writer, resp *golivev1.WatchRolloutResponse, live map[string]hostLive, width int) {
	r := resp.Rollout
	fmt.Fprintf(w, "rollout %s  %s %s@%s by %s\n", r.Id, r.Kind, r.Service, orDash(r.Release), r.CreatedBy)
	fmt.Fprintln(w, truncate(fmt.Sprintf("state: %s  %s", displayState(r), r.Reason), width))
	if next := nextStep(r); next != "" {
		fmt.Fprintln(w, next)
	}
	fmt.Fprintf(w, "[%s] %d/%d hosts\n\n", progressBar(hostsDone(r), len(r.Hosts), 40), hostsDone(r), len(r.Hosts))
	for _, wv := range r.Waves {
		mark := " "
		if int(wv.Index) == int(r.CurrentWave) && !rollout.TerminalState(r.State) {
			mark = ">"
		}
		fmt.Fprintln(w, truncate(fmt.Sprintf("%s wave %d %-8s %-10s %s", mark, wv.Index, wv.Name, wv.State, strings.Join(wv.Hosts, ",")), width))
	}
	if g := resp.Gate; g != nil && g.WindowSeconds > 0 {
		fmt.Fprintln(w, truncate(fmt.Sprintf("\ngate (wave %d): baked %.0fs/%.0fs  error rate %.3f%%  avg latency %.1f ms  %s",
			g.Wave, g.BakedSeconds, g.WindowSeconds, g.ErrorRate*100, g.AvgLatencyMs, g.Detail), width))
	}
	if len(r.Dns) > 0 {
		fmt.Fprintln(w)
		printRolloutDNS(w, r)
	}
	if r.Analysis != nil {
		fmt.Fprintln(w)
		printAnalysis(w, r, 5)
	}
	fmt.Fprintln(w)
	rows := [][]string{{"HOST", "STATE", "STAGE", "HEALTH", "ERROR"}}
	for _, h := range r.Hosts {
		rows = append(rows, []string{h.HostId, h.State, hostStage(h, live), hostHealth(h, live), orDash(h.Error)})
	}
	printTableTruncated(w, rows, width)
}

// printTableTruncated prints rows as aligned columns, cutting the last
// column (the error) so each line fits in width.
func printTableTruncated(w io.Writer, rows [][]string, width int) {
	widths := make([]int, len(rows[0]))
	for _, row := range rows {
		for i, c := range row[:len(row)-1] {
			widths[i] = max(widths[i], len([]rune(c)))
		}
	}
	used := 0
	for _, n := range widths[:len(widths)-1] {
		used += n + 2
	}
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	for _, row := range rows {
		row[len(row)-1] = truncate(row[len(row)-1], width-used)
		fmt.Fprintln(tw, strings.Join(row, "\t"))
	}
	tw.Flush()
}

// watchKey is what a line on a pipe reports, less the figures that move
// every second while a wave bakes: a new line when it changes.
func watchKey(resp *golivev1.WatchRolloutResponse, live map[string]hostLive) string {
	r := resp.Rollout
	var b strings.Builder
	fmt.Fprintf(&b, "%s %v %d %s", r.State, r.Paused, r.CurrentWave, r.Reason)
	for _, wv := range r.Waves {
		fmt.Fprintf(&b, " %s", wv.State)
	}
	for _, h := range r.Hosts {
		fmt.Fprintf(&b, " %s=%s/%s", h.HostId, h.State, hostStage(h, live))
	}
	if g := resp.Gate; g != nil {
		fmt.Fprintf(&b, " gate=%d/%v", g.Wave, g.Passing)
	}
	if len(r.Dns) > 0 {
		b.WriteString(" dns=" + dnsLine(r))
	}
	return b.String()
}

func watchLine(resp *golivev1.WatchRolloutResponse, live map[string]hostLive) string {
	r := resp.Rollout
	line := fmt.Sprintf("%s %s@%s %s wave=%d hosts=%d/%d", r.Id, r.Service, orDash(r.Release), strings.ToLower(displayState(r)), r.CurrentWave, hostsDone(r), len(r.Hosts))
	var stages []string
	for _, h := range r.Hosts {
		if st := hostStage(h, live); st != "-" && h.State == "running" {
			stages = append(stages, h.HostId+":"+st)
		}
	}
	if len(stages) > 0 {
		line += " stages=" + strings.Join(stages, ",")
	}
	if g := resp.Gate; g != nil && g.WindowSeconds > 0 {
		line += fmt.Sprintf(" gate=%.0f/%.0fs err=%.3f%% lat=%.1fms", g.BakedSeconds, g.WindowSeconds, g.ErrorRate*100, g.AvgLatencyMs)
	}
	if len(r.Dns) > 0 {
		line += " dns=" + dnsLine(r)
	}
	return line
}
