package simrollout

import (
	"fmt"
	"io"
	"runtime"

	"github.com/golive/golive/internal/bench/benchkit"
)

// PrintTable prints one row per phase, with the goals.
func PrintTable(w io.Writer, r Result) error {
	fmt.Fprintf(w, "%d simulated agents (real gRPC streams, the agent protocol; each stage reported after %s, six per step) and the\n", r.Hosts, r.StageDelay)
	fmt.Fprintf(w, "controller binary on its embedded etcd (a subprocess: CPU is its utime+stime). Canary %d, then 10%% waves, gate %s\n", max(1, r.Hosts/100), r.MinHealthy)
	fmt.Fprintln(w, "between waves. etcd writes are key puts and deletes; max/txn is the most key writes in one revision (etcd refuses a")
	fmt.Fprintf(w, "transaction above %d ops). Hosts: touched (commanded). Load: 1-min load average at start -> end, %d CPUs.\n", TxnOpLimit, runtime.NumCPU())
	tw := benchkit.NewTable(w)
	fmt.Fprintf(tw, "phase\tstate\thosts\twaves\ttime s\tctl CPU s\tCPU ms/host\twrites\twrites/host\ttxns\tmax/txn\tload\t<= %s/host\t< %d ops\t\n", benchkit.Ms(TargetCPUPerHost)+"ms", TxnOpLimit)
	for _, p := range r.Phases {
		fmt.Fprintf(tw, "%s\t%s\t%d\t%d\t%s\t%s\t%s\t%d\t%.1f\t%d\t%d\t%s->%s\t%s\t%s\t\n", p.Name, p.State, p.Hosts, p.Waves,
			benchkit.Sec(p.Took), benchkit.Sec(p.CPU), benchkit.Ms(p.CPUPerHost()), p.Writes, p.WritesPerHost(), p.Txns, p.MaxTxnWrites,
			p.Load0, p.Load1, benchkit.MetWord(p.CPUPerHost() <= TargetCPUPerHost), benchkit.MetWord(p.MaxTxnWrites < TxnOpLimit))
	}
	if err := tw.Flush(); err != nil {
		return err
	}
	fmt.Fprintf(w, "  %d agents connected in %s; %d streams opened (%d means none broke)\n", r.Hosts, benchkit.Sec(r.Connect)+" s", r.Sessions, r.Hosts)
	for _, p := range r.Phases {
		if p.Steps > 0 {
			fmt.Fprintf(w, "  %s: per wave (mean, all but the last) start -> last step's result %s s (the steps themselves: %s s), then -> next wave %s s (the gate: %s s)\n",
				p.Name, benchkit.Sec(p.Steps), benchkit.Sec(6*r.StageDelay), benchkit.Sec(p.Between), benchkit.Sec(r.MinHealthy))
		}
	}
	return nil
}
