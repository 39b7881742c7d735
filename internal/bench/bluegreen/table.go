package bluegreen

import (
	"fmt"
	"io"
	"strings"

	"github.com/golive/golive/internal/bench/benchkit"
	"github.com/golive/golive/internal/loadgen"
)

// failClasses are the failure columns, in order.
var failClasses = []loadgen.Class{loadgen.ClassConnError, loadgen.ClassTimeout, loadgen.Class5xx,
	loadgen.ClassOtherStatus, loadgen.ClassWrongBody, loadgen.ClassDropped}

// PrintTable prints, per router, one row per load and phase, the switch
// and revert times, then a summary line per router.
func PrintTable(w io.Writer, rs ...Result) error {
	if len(rs) == 0 {
		return nil
	}
	r0 := rs[0]
	fmt.Fprintf(w, "Blue-green switches under load, router level (internal/router driving real nginx / HAProxy; two sampleapp\n")
	fmt.Fprintf(w, "processes as the slots). %d switches per router: deploy (drain+stop+start idle slot on a new version, health,\n", r0.Switches)
	fmt.Fprintf(w, "Switch) and switch back, alternately. Loads, open loop, GET /version: main %.0f rps on keep-alive connections,\n", r0.Rate)
	fmt.Fprintf(w, "check %.0f rps on a new connection each. Failed = conn_error + timeout + 5xx + other_status + dropped + wrong_body,\n", r0.CheckRate)
	fmt.Fprintln(w, "wrong_body = not the version of the slot confirmed active when the request was sent (either while Switch runs).")
	fmt.Fprintln(w, "Latency from the due time, over answered requests; phases: steady, prepare (idle slot redeployed), switch (Switch")
	fmt.Fprintln(w, "call to return), settle (1s after).")
	tw := benchkit.NewTable(w)
	head := []string{"router", "load", "phase", "seconds", "requests", "failed"}
	for _, c := range failClasses {
		head = append(head, string(c))
	}
	head = append(head, "p50 ms", "p99 ms", "max ms")
	fmt.Fprintln(tw, strings.Join(head, "\t")+"\t")
	for _, r := range rs {
		for _, l := range []struct {
			name string
			load Load
		}{{"main", r.Main}, {"check", r.Check}} {
			for _, p := range append(append([]string{}, Phases...), "total") {
				s := l.load.Total
				if p != "total" {
					s = l.load.Phases[p]
				}
				cells := []string{r.Router, l.name, p, fmt.Sprintf("%.1f", phaseSeconds(l.load, p, r)), fmt.Sprint(s.Requests), fmt.Sprint(s.Failed)}
				for _, c := range failClasses {
					cells = append(cells, fmt.Sprint(s.ByClass[c]))
				}
				cells = append(cells, benchkit.Ms(s.Latency.P50), benchkit.Ms(s.Latency.P99), benchkit.Ms(s.Latency.Max))
				fmt.Fprintln(tw, strings.Join(cells, "\t")+"\t")
			}
		}
	}
	if err := tw.Flush(); err != nil {
		return err
	}
	fmt.Fprintln(w)
	tw = benchkit.NewTable(w)
	fmt.Fprintln(tw, "router\tswitches\tfailed/total\tachieved rps\tload avg\tswitch call p50/p99 ms\tprepare p50 ms\trevert runs\trevert p50/p99 ms\tswitch-back call p50/p99 ms\trevert <= 1s\t")
	for _, r := range rs {
		fmt.Fprintf(tw, "%s\t%d\t%d/%d\t%.0f+%.0f\t%s -> %s\t%s/%s\t%s\t%d\t%s/%s\t%s/%s\t%s\t\n", r.Router, r.Switches, r.Failed(), r.Requests(),
			r.Main.Achieved, r.Check.Achieved, r.LoadAvgStart, r.LoadAvgEnd,
			benchkit.Ms(r.SwitchCall.P50), benchkit.Ms(r.SwitchCall.P99), benchkit.Ms(r.Prepare.P50), r.RevertRuns,
			benchkit.Ms(r.Revert.P50), benchkit.Ms(r.Revert.P99), benchkit.Ms(r.RevertCall.P50), benchkit.Ms(r.RevertCall.P99),
			benchkit.MetWord(r.RevertRuns > 0 && r.Revert.P99+r.RevertCall.P99 <= 1e9))
	}
	if err := tw.Flush(); err != nil {
		return err
	}
	fmt.Fprintln(w, "  revert = from the switch back's return until the first of 20 consecutive new-connection probes through the proxy")
	fmt.Fprintln(w, "  answered by the old slot (end of that answer); 'revert <= 1s' checks p99 of switch-back call + revert.")
	for _, r := range rs {
		for _, l := range []struct {
			name string
			load Load
		}{{"main", r.Main}, {"check", r.Check}} {
			for _, e := range l.load.Errors {
				fmt.Fprintf(w, "  %s %s failure: %s\n", r.Router, l.name, e)
			}
		}
	}
	return nil
}

// phaseSeconds is the time the phase lasted: the whole run for total.
func phaseSeconds(l Load, p string, r Result) float64 {
	if p == "total" {
		return r.Duration.Seconds()
	}
	return l.Seconds[p]
}
