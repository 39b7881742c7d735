package rolloutbench

import (
	"fmt"
	"io"
	"runtime"
	"time"

	"github.com/golive/golive/internal/bench/benchkit"
)

// PrintTable prints one row per result with the goals and whether each run
// met them, then where each rollout's time went, wave by wave.
func PrintTable(w io.Writer, results ...Result) error {
	fmt.Fprintln(w, "Fleet rollout: real controller (embedded etcd) and real agents as processes, each host with its own")
	fmt.Fprintln(w, "sampleapp; tiny release (~3 MB), canary 1 then batches of 25%, bake 0. Rollout: wall time of a v2")
	fmt.Fprintln(w, "rollout from the Deploy call to its terminal record, and the controller's CPU (utime+stime) in it.")
	fmt.Fprintln(w, "Rollback: v3 fails health on the last host (last wave), so every host is touched when the gate")
	fmt.Fprintln(w, "fails; time from the first rolling_back record until every touched host answers v2 at /version.")
	tw := benchkit.NewTable(w)
	fmt.Fprintln(tw, "hosts\twaves\theartbeat\trollout s\tctl CPU s\tCPU ms/host\tgate failed s\ttouched\tserve old s\trolled_back s\trollout <= 10 s\trollback <= 5 s\t")
	for _, r := range results {
		fmt.Fprintf(tw, "%d\t%d\t%s\t%s\t%s\t%s\t%s\t%d\t%s\t%s\t%s\t%s\t\n",
			r.Hosts, r.Waves, heartbeat(r.Heartbeat), benchkit.Sec(r.Rollout), benchkit.Sec(r.ControllerCPU), benchkit.Ms(r.CPUPerHost()),
			benchkit.Sec(r.GateFailed), r.Touched, benchkit.Sec(r.ServeOld), benchkit.Sec(r.Terminal),
			benchkit.MetWord(r.RolloutMet()), benchkit.MetWord(r.RollbackMet()))
	}
	if err := tw.Flush(); err != nil {
		return err
	}
	for _, r := range results {
		fmt.Fprintf(w, "  %d hosts on %d CPUs: setup (start, connect, deploy v1) %s s; v2 %s", r.Hosts, runtime.NumCPU(), benchkit.Sec(r.Setup), r.RolloutState)
		if r.FailState != "" {
			fmt.Fprintf(w, "; v3 %s (%s), controller CPU %s s; last host back: %s", r.FailState, r.FailReason, benchkit.Sec(r.RollbackCPU), r.SlowestHost)
		}
		if r.Leftovers > 0 {
			fmt.Fprintf(w, "; %d processes left behind and killed", r.Leftovers)
		}
		fmt.Fprintln(w)
		printWaves(w, "v2", r.RolloutWaves)
		printWaves(w, "v3", r.FailWaves)
	}
	return nil
}

// printWaves prints where a rollout's time went: per wave, its start from
// the Deploy call, the steps (deploying) and the gate's wait (baking).
func printWaves(w io.Writer, name string, waves []WaveTime) {
	if len(waves) == 0 {
		return
	}
	fmt.Fprintf(w, "    %s waves (start / steps / gate, s):", name)
	for _, wt := range waves {
		fmt.Fprintf(w, " %s[%d] %s/%s/%s;", wt.Name, wt.Hosts, benchkit.Sec(wt.Start), benchkit.Sec(wt.Deploy), benchkit.Sec(wt.Gate))
	}
	fmt.Fprintln(w)
}

func heartbeat(d time.Duration) string {
	if d == 0 {
		return "default"
	}
	return d.String()
}
