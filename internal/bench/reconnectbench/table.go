package reconnectbench

import (
	"fmt"
	"io"
	"runtime"
	"strings"

	"github.com/golive/golive/internal/bench/benchkit"
)

// PrintTable prints one row per run, whether it met the goal, and per run
// the failed attempts by cause with an example message.
func PrintTable(w io.Writer, results ...Result) error {
	fmt.Fprintln(w, "Reconnect after a controller restart: N simulated agents, each with its own mutual-TLS certificate and")
	fmt.Fprintln(w, "the real agent's jittered backoff (200ms*2^n, uniform in [d/2, d], max 10s), reconnect to the restarted")
	fmt.Fprintln(w, "controller (same ports and data dir, embedded etcd). \"reconnect s\" is from the new listener accepting")
	fmt.Fprintln(w, "until the last agent's Welcome; errors are failed attempts after that moment (attempts while the")
	fmt.Fprintln(w, "controller was down are counted apart). CPU and RSS are the new controller's during the storm.")
	tw := benchkit.NewTable(w)
	fmt.Fprintln(tw, "N\tstop\tdown s\treconnect s\tagent p50 s\tagent p99 s\tattempts\terrors\tdropped\tfailed while down\tpeak cores\tmean cores\tpeak RSS MB\t<= 20 s, no errors\t")
	for _, r := range results {
		fmt.Fprintf(tw, "%d\t%s\t%s\t%s\t%s\t%s\t%d\t%d\t%d\t%d\t%.2f\t%.2f\t%.1f\t%s\t\n",
			r.N, r.Signal, benchkit.Sec(r.Down), benchkit.Sec(r.Reconnect), benchkit.Sec(r.PerAgent.P50), benchkit.Sec(r.PerAgent.P99),
			r.Attempts, r.Errors, r.Dropped, r.AttemptsDown, r.PeakCores, r.MeanCores, mb(r.PeakRSS), benchkit.MetWord(r.Met()))
	}
	if err := tw.Flush(); err != nil {
		return err
	}
	for _, r := range results {
		fmt.Fprintf(w, "  N=%d %s: initial connect %s s, controller RSS %.1f MB with all connected; old controller exited %s s after the signal;"+
			" health SERVING %s s after the listener; RSS after the storm %.1f MB; bench process (the agents) %.2f cores on %d CPUs; load average %s",
			r.N, r.Signal, benchkit.Sec(r.InitialConnect), mb(r.RSSConnected), benchkit.Sec(r.Stop), benchkit.Sec(r.ServingAfter),
			mb(r.RSSEnd), r.BenchCores, runtime.NumCPU(), r.LoadAvg)
		if len(r.DownCauses) > 0 {
			fmt.Fprintf(w, "\n    while down: %s", causes(r.DownCauses))
		}
		for _, c := range sortedCauses(r.Causes) {
			fmt.Fprintf(w, "\n    error %s x%d, e.g. %s", c, r.Causes[c], benchkit.FirstLine(r.Examples[c]))
		}
		if r.Dropped > 0 {
			fmt.Fprintf(w, "\n    %d streams dropped after their Welcome, the first: %s", r.Dropped, benchkit.FirstLine(r.DropExample))
		}
		if r.Err != nil {
			fmt.Fprintf(w, "\n    stopped early: %v", benchkit.FirstLine(r.Err.Error()))
		}
		fmt.Fprintln(w)
	}
	return nil
}

func causes(m map[string]int) string {
	var parts []string
	for _, c := range sortedCauses(m) {
		parts = append(parts, fmt.Sprintf("%s x%d", c, m[c]))
	}
	return strings.Join(parts, ", ")
}
