package fanout

import (
	"fmt"
	"io"
	"runtime"
	"time"

	"github.com/golive/golive/internal/bench/benchkit"
)

// PrintTable prints one row per result, with the targets and whether each
// run met them, and a few notes on how the figures were taken.
func PrintTable(w io.Writer, results ...Result) error {
	fmt.Fprintln(w, "Revoke fan-out: time until each agent had received the inactive update and sent its ack,")
	fmt.Fprintln(w, "measured in the bench process (which also runs the simulated agents) from the Revoke RPC's return")
	fmt.Fprintln(w, "and, in the \"call\" columns, from the Revoke call. The controller pushes the update before it")
	fmt.Fprintln(w, "answers, so an ack that precedes the return counts 0 ms from the return; the latency target is")
	fmt.Fprintln(w, "judged on the from-call p99, which bounds the from-return one.")
	tw := benchkit.NewTable(w)
	fmt.Fprintln(tw, "server\tN\tTLS\tacked\trounds\tp50 ms\tp99 ms\tmax ms\tlast p50 ms\tlast p99 ms\tcall p50 ms\tcall p99 ms\tcall last p99 ms\tKB/agent\tCPU µs/agent/revoke\tbaseline p99 / this p99\tall acked, p99 <= 300 ms\t<= 40 KB/agent\t")
	for _, r := range results {
		ratio := "-"
		if b, ok := baselineOf(results, r); ok && r.Label != "baseline" && r.FromCall.P99 > 0 {
			ratio = fmt.Sprintf("%.2fx", float64(b.FromCall.P99)/float64(r.FromCall.P99))
		}
		fmt.Fprintf(tw, "%s\t%d\t%s\t%d\t%d/%d\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%.1f\t%.1f\t%s\t%s\t%s\t\n",
			labelOf(r), r.N, tlsWord(r.TLS), r.Acked, r.RoundsDone, r.Rounds,
			benchkit.Ms(r.PerAgent.P50), benchkit.Ms(r.PerAgent.P99), benchkit.Ms(r.PerAgent.Max),
			benchkit.Ms(r.LastAgent.P50), benchkit.Ms(r.LastAgent.P99),
			benchkit.Ms(r.FromCall.P50), benchkit.Ms(r.FromCall.P99), benchkit.Ms(r.LastFromCall.P99),
			r.KBPerAgent(), float64(r.CPUPerAgent())/float64(time.Microsecond), ratio, benchkit.MetWord(r.LatencyMet()), benchkit.MetWord(r.MemoryMet()))
	}
	if err := tw.Flush(); err != nil {
		return err
	}
	for _, r := range results {
		fmt.Fprintf(w, "  %s N=%d %s: connect %s; controller RSS %.1f -> %.1f MB; Revoke RPC p50/max %s/%s ms; first ack after the call p50 %s ms; %d of %d acks before the RPC returned",
			labelOf(r), r.N, tlsWord(r.TLS), r.ConnectTime.Round(time.Millisecond), mb(r.RSSBefore), mb(r.RSSAfter), benchkit.Ms(r.RevokeRPC.P50), benchkit.Ms(r.RevokeRPC.Max),
			benchkit.Ms(r.FirstFromCall.P50), r.BeforeReturn, r.PerAgent.Samples)
		if r.RoundsDone > 0 {
			fmt.Fprintf(w, "\n    per revoke (call -> all acked): wall %s ms, controller CPU %s ms, bench/agents CPU %s ms on %d CPUs; controller RSS after the rounds %.1f MB",
				benchkit.Ms(r.Wall), benchkit.Ms(r.ControllerCPU), benchkit.Ms(r.AgentsCPU), runtime.NumCPU(), mb(r.RSSEnd))
		}
		if r.StreamErrors > 0 {
			fmt.Fprintf(w, "; %d agent streams ended", r.StreamErrors)
		}
		if r.Err != nil {
			fmt.Fprintf(w, "; stopped early: %v", benchkit.FirstLine(r.Err.Error()))
		}
		fmt.Fprintln(w)
	}
	return nil
}

func labelOf(r Result) string {
	if r.Label == "" {
		return "golive"
	}
	return r.Label
}

// baselineOf finds the baseline run of r's size and TLS mode.
func baselineOf(rs []Result, r Result) (Result, bool) {
	for _, b := range rs {
		if b.Label == "baseline" && b.N == r.N && b.TLS == r.TLS && b.RoundsDone > 0 {
			return b, true
		}
	}
	return Result{}, false
}

func tlsWord(on bool) string {
	if on {
		return "mTLS"
	}
	return "off"
}
