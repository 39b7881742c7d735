package swapload

import (
	"fmt"
	"io"
	"strings"
	"time"

	"github.com/golive/golive/internal/bench/benchkit"
	"github.com/golive/golive/internal/loadgen"
)

// tableClasses are the failure columns, in order.
var tableClasses = []loadgen.Class{loadgen.ClassConnError, loadgen.ClassTimeout, loadgen.Class5xx,
	loadgen.ClassOtherStatus, loadgen.ClassWrongBody, loadgen.ClassDropped}

// PrintTable prints one row per phase and the whole run, then the failure
// window and the step's timing.
func PrintTable(w io.Writer, r Result) error {
	fmt.Fprintf(w, "Requests failed during one restart-mode swap (v1 -> v2, real deploy step and execmgr) at %.0f rps,\n", r.Rate)
	fmt.Fprintln(w, "open loop on GET /version over loopback. Latency from the due time, over requests that got an answer;")
	fmt.Fprintln(w, "before the swap v1 is expected, after the step succeeded v2 (anything else is wrong_body).")
	tw := benchkit.NewTable(w)
	head := []string{"phase", "seconds", "requests", "ok", "failed"}
	for _, c := range tableClasses {
		head = append(head, string(c))
	}
	head = append(head, "p50 ms", "p99 ms", "max ms")
	fmt.Fprintln(tw, strings.Join(head, "\t")+"\t")
	rows := []struct {
		name string
		s    loadgen.Summary
	}{{PhaseSteady, r.Steady}, {PhaseSwap, r.Swap}, {PhaseAfter, r.After}, {"total", r.Total}}
	for _, row := range rows {
		cells := []string{row.name, fmt.Sprintf("%.2f", row.s.Span.Seconds()), fmt.Sprint(row.s.Requests), fmt.Sprint(row.s.OK), fmt.Sprint(row.s.Failed)}
		for _, c := range tableClasses {
			cells = append(cells, fmt.Sprint(row.s.ByClass[c]))
		}
		cells = append(cells, benchkit.Ms(row.s.Latency.P50), benchkit.Ms(row.s.Latency.P99), benchkit.Ms(row.s.Latency.Max))
		fmt.Fprintln(tw, strings.Join(cells, "\t")+"\t")
	}
	if err := tw.Flush(); err != nil {
		return err
	}
	fmt.Fprintf(w, "  deploy v2: %s in %s; restart stage began %s ms into the swap and took %s ms\n",
		r.Outcome, r.Deploy.Round(time.Millisecond), benchkit.Ms(r.RestartAt), benchkit.Ms(r.Restart))
	if r.Total.Failed == 0 {
		fmt.Fprintln(w, "  failures: none")
	} else {
		fmt.Fprintf(w, "  failures: %d, due from %s to %s ms into the swap: window %s ms (one request due every %.1f ms)\n",
			r.Total.Failed, benchkit.Ms(r.FirstFailure), benchkit.Ms(r.LastFailure), benchkit.Ms(r.FailureWindow), 1000/r.Rate)
	}
	for _, e := range r.Errors {
		fmt.Fprintf(w, "  error: %s\n", e)
	}
	if r.Swap.Failed > 0 {
		fmt.Fprintln(w, "  note: restart mode stops v1 before v2 listens; blue-green (a later issue) removes these failures")
	}
	return nil
}
