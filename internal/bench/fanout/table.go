package fanout

import (
	"fmt"
	"io"
	"runtime"
	"text/tabwriter"
	"time"
)

// PrintTable prints one row per result, with the targets and whether each
// run met them, and a few notes on how the figures were taken.
func PrintTable(w io.Writer, results ...Result) error {
	fmt.Fprintln(w, "Revoke fan-out: time until each agent had received the inactive update and sent its ack,")
	fmt.Fprintln(w, "measured in the bench process (which also runs the simulated agents) from the Revoke RPC's return")
	fmt.Fprintln(w, "and, in the \"call\" columns, from the Revoke call. The controller pushes the update before it")
	fmt.Fprintln(w, "answers, so an ack that precedes the return counts 0 ms from the return; the latency target is")
	fmt.Fprintln(w, "judged on the from-call p99, which bounds the from-return one.")
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', tabwriter.AlignRight)
	fmt.Fprintln(tw, "N\tacked\trounds\tp50 ms\tp99 ms\tmax ms\tlast p50 ms\tlast p99 ms\tcall p50 ms\tcall p99 ms\tcall last p99 ms\tKB/agent\tall acked, p99 <= 300 ms\t<= 40 KB/agent\t")
	for _, r := range results {
		fmt.Fprintf(tw, "%d\t%d\t%d/%d\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%.1f\t%s\t%s\t\n",
			r.N, r.Acked, r.RoundsDone, r.Rounds,
			ms(r.PerAgent.P50), ms(r.PerAgent.P99), ms(r.PerAgent.Max),
			ms(r.LastAgent.P50), ms(r.LastAgent.P99),
			ms(r.FromCall.P50), ms(r.FromCall.P99), ms(r.LastFromCall.P99),
			r.KBPerAgent(), metWord(r.LatencyMet()), metWord(r.MemoryMet()))
	}
	if err := tw.Flush(); err != nil {
		return err
	}
	for _, r := range results {
		fmt.Fprintf(w, "  N=%d: connect %s; controller RSS %.1f -> %.1f MB; Revoke RPC p50/max %s/%s ms; first ack after the call p50 %s ms; %d of %d acks before the RPC returned",
			r.N, r.ConnectTime.Round(time.Millisecond), mb(r.RSSBefore), mb(r.RSSAfter), ms(r.RevokeRPC.P50), ms(r.RevokeRPC.Max),
			ms(r.FirstFromCall.P50), r.BeforeReturn, r.PerAgent.Samples)
		if r.RoundsDone > 0 {
			fmt.Fprintf(w, "\n    per revoke (call -> all acked): wall %s ms, controller CPU %s ms, bench/agents CPU %s ms on %d CPUs; controller RSS after the rounds %.1f MB",
				ms(r.Wall), ms(r.ControllerCPU), ms(r.AgentsCPU), runtime.NumCPU(), mb(r.RSSEnd))
		}
		if r.StreamErrors > 0 {
			fmt.Fprintf(w, "; %d agent streams ended", r.StreamErrors)
		}
		if r.Err != nil {
			fmt.Fprintf(w, "; stopped early: %v", firstLine(r.Err.Error()))
		}
		fmt.Fprintln(w)
	}
	return nil
}

func ms(d time.Duration) string { return fmt.Sprintf("%.1f", float64(d)/float64(time.Millisecond)) }

func metWord(ok bool) string {
	if ok {
		return "met"
	}
	return "not met"
}

func firstLine(s string) string {
	for i := range len(s) {
		if s[i] == '\n' {
			return s[:i]
		}
	}
	return s
}
