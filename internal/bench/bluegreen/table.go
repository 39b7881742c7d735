package bluegreen

import (
	"fmt"
	"io"
	"strings"
	"time"

	"github.com/golive/golive/internal/bench/benchkit"
	"github.com/golive/golive/internal/loadgen"
)

// failClasses are the failure columns, in order.
var failClasses = []loadgen.Class{loadgen.ClassConnError, loadgen.ClassTimeout, loadgen.Class5xx,
	loadgen.ClassOtherStatus, loadgen.ClassWrongBody, loadgen.ClassDropped}

// PrintTable prints, per mode, one row per load and phase, then a summary
// line per mode (failures, rates, step and revert times) and the distinct
// errors of failed requests.
func PrintTable(w io.Writer, rs ...Result) error {
	if len(rs) == 0 {
		return nil
	}
	r0 := rs[0]
	fmt.Fprintln(w, "Deploys under load through the real deploy step (deploystep.Runner with execmgr slots and router.New, as the agent")
	fmt.Fprintf(w, "builds them; sampleapp releases). %d steps per mode: deploy, rollback, deploy, ... Blue-green behind real nginx /\n", r0.Switches)
	fmt.Fprintln(w, "HAProxy (a rollback is the switch back to the warm slot); restart = the same service on one port, no proxy;")
	fmt.Fprintln(w, "agent-nginx, agent-haproxy = the built golive-controller and golive-agent with the blue-green service in the")
	fmt.Fprintln(w, "agent's config: Deploy and Rollback calls to the controller, each followed until its rollout is terminal.")
	fmt.Fprintf(w, "Loads, open loop, GET /version: main %.0f rps on keep-alive connections, check %.0f rps on a new connection each.\n", r0.Rate, r0.CheckRate)
	fmt.Fprintln(w, "failed = conn_error + timeout + 5xx + other_status + wrong_body + dropped; wrong_body = not the release confirmed")
	fmt.Fprintln(w, "serving when the request was sent (either is right during the switch phase). Latency from the due time, over")
	fmt.Fprintln(w, "answered requests. Phases: steady; prepare (step before its switch: fetch, start + health of the idle slot);")
	fmt.Fprintln(w, "switch (blue-green: switch stage until confirmed; restart: swap+restart+health; agent-*: the call until the")
	fmt.Fprintln(w, "rollout succeeded, the controller does not report stages); settle (until 1s after the step).")
	tw := benchkit.NewTable(w)
	head := []string{"mode", "load", "phase", "seconds", "requests", "failed"}
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
				cells := []string{r.Mode, l.name, p, fmt.Sprintf("%.1f", phaseSeconds(l.load, p, r)), fmt.Sprint(s.Requests), fmt.Sprint(s.Failed)}
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
	fmt.Fprintln(tw, "mode\tsteps\tfailed/total\tfailed %\tstale keep-alive (max lag ms)\tfailed (issue)\tachieved rps\tload avg\tdeploy p50 ms\trollback p50 ms\tswitch p50/p99 ms\treverts\trevert p50/p99 ms\trevert step p50/p99 ms\tprobe errors\trevert <= 1s\t")
	for _, r := range rs {
		pct := 0.0
		if r.Requests() > 0 {
			pct = 100 * float64(r.Failed()) / float64(r.Requests())
		}
		stale := "-"
		if strings.TrimPrefix(r.Mode, agentPrefix) == Nginx {
			stale = fmt.Sprintf("%d (%s)", r.StaleKeepAlive(), benchkit.Ms(r.Main.WrongMaxLag))
		}
		fmt.Fprintf(tw, "%s\t%d\t%d/%d\t%.3f\t%s\t%d\t%.0f+%.0f\t%s -> %s\t%s\t%s\t%s/%s\t%d\t%s/%s\t%s/%s\t%d\t%s\t\n", r.Mode, r.Switches, r.Failed(), r.Requests(), pct, stale, r.FailedIssue(),
			r.Main.Achieved, r.Check.Achieved, r.LoadAvgStart, r.LoadAvgEnd,
			benchkit.Ms(r.Deploy.P50), benchkit.Ms(r.Rollback.P50), benchkit.Ms(r.Switch.P50), benchkit.Ms(r.Switch.P99), r.RevertRuns,
			benchkit.Ms(r.Revert.P50), benchkit.Ms(r.Revert.P99), benchkit.Ms(r.RevertStep.P50), benchkit.Ms(r.RevertStep.P99), r.ProbeErrors,
			benchkit.MetWord(r.RevertRuns > 0 && r.Revert.P99 <= time.Second))
	}
	if err := tw.Flush(); err != nil {
		return err
	}
	fmt.Fprintln(w, "  failed/total counts every class on both loads. stale keep-alive (nginx): main-load requests on kept-alive")
	fmt.Fprintln(w, "  connections answered by the old release after the confirmed switch (a connection an old nginx worker accepted")
	fmt.Fprintln(w, "  before the reload keeps the old upstream: package router's documented limitation), with the longest time from")
	fmt.Fprintln(w, "  the confirm to such a request's sending; failed (issue) = failed minus those: the wrong-version check through")
	fmt.Fprintln(w, "  nginx is the check load's, one new connection per request.")
	fmt.Fprintln(w, "  revert = from the rollback step's return (agent-*: the rollback rollout seen succeeded) until the first of")
	fmt.Fprintln(w, "  20 consecutive new-connection probes through the proxy answered by the old release (end of that answer), after")
	fmt.Fprintln(w, "  a deploy, without load; revert step = the rollback step's own wall time (blue-green: start_slot skipped on the")
	fmt.Fprintln(w, "  warm slot, slot_health, switch confirmed; agent-*: the Rollback call until the rollout succeeded).")
	for _, r := range rs {
		for _, l := range []struct {
			name string
			load Load
		}{{"main", r.Main}, {"check", r.Check}} {
			for _, e := range l.load.Errors {
				fmt.Fprintf(w, "  %s %s failure: %s\n", r.Mode, l.name, e)
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
