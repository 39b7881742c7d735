package analysis

import (
	"cmp"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"
)

// StateVersion is the version of State's JSON form; Decode refuses others.
const StateVersion = 1

// maxKept bounds the measurements kept per metric in a State (the oldest
// are dropped first and counted in MetricRun.Dropped); the counters always
// cover every measurement.
const maxKept = 100

// Verdict is the judgement of one measurement.
type Verdict string

// The verdicts. Only VerdictPass counts towards a pass.
const (
	// VerdictPass: the value meets the condition (or the result was empty
	// and the metric says on_no_data = "pass": Measurement.NoData).
	VerdictPass Verdict = "pass"
	// VerdictFail: the value breaches the condition.
	VerdictFail Verdict = "fail"
	// VerdictInconclusive: Prometheus answered but the answer cannot be
	// judged (no data, NaN, an infinity, several series without reduce, a
	// matrix or string). It counts as a failure.
	VerdictInconclusive Verdict = "inconclusive"
	// VerdictError: no answer (Prometheus unreachable, a timeout, an
	// error). Retried up to consecutive_error_limit; a refused query
	// (ErrRefused) fails the run at once.
	VerdictError Verdict = "error"
)

// Measurement is one query taken and judged.
type Measurement struct {
	Metric string `json:"metric"`
	// Query is the query as sent (placeholders filled).
	Query string `json:"query"`
	// At is the evaluation time sent with the query.
	At time.Time `json:"at"`
	// Value is the judged value as Prometheus writes it ("0.0012", "NaN",
	// "+Inf"); "" when there was none.
	Value string `json:"value,omitempty"`
	// Series is how many series the result had.
	Series  int     `json:"series"`
	Verdict Verdict `json:"verdict"`
	// NoData marks an empty result passed by on_no_data = "pass".
	NoData  bool   `json:"no_data,omitempty"`
	Message string `json:"message"`
}

// Phase is where a run (or one metric of it) is.
type Phase string

// The phases. Passed and Failed are terminal.
const (
	PhaseRunning Phase = "running"
	PhasePassed  Phase = "passed"
	PhaseFailed  Phase = "failed"
)

// MetricRun is one metric's part of a run.
type MetricRun struct {
	Metric Metric `json:"metric"`
	// Query is the metric's query as sent, rendered once at Start.
	Query  string `json:"query"`
	Phase  Phase  `json:"phase"`
	Reason string `json:"reason,omitempty"`
	// Next is when the next measurement is due (zero: at once).
	Next time.Time `json:"next,omitzero"`
	// Conclusive counts measurements Prometheus answered (pass, fail,
	// inconclusive); Passes those that passed, NoDataPasses those of them
	// passed by on_no_data = "pass"; Failures fail and inconclusive ones.
	Conclusive        int `json:"conclusive"`
	Passes            int `json:"passes"`
	NoDataPasses      int `json:"no_data_passes,omitempty"`
	Failures          int `json:"failures"`
	Errors            int `json:"errors"`
	ConsecutiveErrors int `json:"consecutive_errors"`
	// Measurements are the last maxKept measurements; Dropped counts the
	// older ones.
	Measurements []Measurement `json:"measurements"`
	Dropped      int           `json:"dropped,omitempty"`
}

// State is an analysis run: everything a leader needs to continue it, so
// it is stored (Encode) in the rollout record and survives a leader
// change. It is a value: Step, Record and Cut return a new one.
type State struct {
	Version   int         `json:"version"`
	Values    Values      `json:"values"`
	Phase     Phase       `json:"phase"`
	Reason    string      `json:"reason,omitempty"`
	StartedAt time.Time   `json:"started_at"`
	EndedAt   time.Time   `json:"ended_at,omitzero"`
	Metrics   []MetricRun `json:"metrics"`
}

// Start makes the State of a run of metrics over v, at now: every query
// rendered (and refused if a placeholder has no value), every metric due
// at once. It refuses an empty list: a run that judges nothing cannot pass.
func Start(metrics []Metric, v Values, now time.Time) (State, error) {
	if len(metrics) == 0 {
		return State{}, errors.New("analysis: no metrics to run")
	}
	s := State{Version: StateVersion, Values: v, Phase: PhaseRunning, StartedAt: now}
	seen := map[string]bool{}
	for _, m := range metrics {
		if err := m.Validate(); err != nil {
			return State{}, fmt.Errorf("analysis: %w", err)
		}
		if seen[m.Name] {
			return State{}, fmt.Errorf("analysis: metric %q twice", m.Name)
		}
		seen[m.Name] = true
		q, err := Render(m.Query, v)
		if err != nil {
			return State{}, fmt.Errorf("analysis: metric %q: %w", m.Name, err)
		}
		mr := MetricRun{Metric: m, Query: q, Phase: PhaseRunning}
		if m.InitialDelay > 0 {
			mr.Next = now.Add(m.InitialDelay)
		}
		s.Metrics = append(s.Metrics, mr)
	}
	return s, nil
}

// Done reports whether the run has ended (passed or failed).
func (s State) Done() bool { return s.Phase != PhaseRunning }

// Passed reports whether the run ended and passed. Anything else (still
// running, failed, cut short) is not a pass.
func (s State) Passed() bool { return s.Phase == PhasePassed }

// Due lists the indexes of the metrics whose measurement is due at now.
func (s State) Due(now time.Time) []int {
	if s.Done() {
		return nil
	}
	var due []int
	for i, m := range s.Metrics {
		if m.Phase == PhaseRunning && !now.Before(m.Next) {
			due = append(due, i)
		}
	}
	return due
}

// NextAt is when the next measurement is due: the time the leader should
// call Step again. Zero once the run is done.
func (s State) NextAt() time.Time {
	var next time.Time
	if s.Done() {
		return next
	}
	for _, m := range s.Metrics {
		if m.Phase == PhaseRunning && (next.IsZero() || m.Next.Before(next)) {
			next = m.Next
			if next.IsZero() {
				next = s.StartedAt
			}
		}
	}
	return next
}

// Step takes every measurement due at now (concurrently, each bounded by
// min(interval, 30s) on top of the querier's own timeout) and records
// them all, even when one of them ends the run. If ctx ends while querying, Step records nothing and returns s
// and ctx's error: the caller lost its lease, and the next leader takes
// the measurements again.
func Step(ctx context.Context, q Querier, s State, now time.Time) (State, error) {
	due := s.Due(now)
	type answer struct {
		res Result
		err error
	}
	answers := make([]answer, len(due))
	var wg sync.WaitGroup
	for k, i := range due {
		wg.Go(func() {
			m := &s.Metrics[i]
			qctx, cancel := context.WithTimeout(ctx, min(m.Metric.Interval, DefaultQueryTimeout))
			defer cancel()
			res, err := q.Query(qctx, m.Query, now)
			if err != nil && qctx.Err() != nil && ctx.Err() == nil {
				err = fmt.Errorf("query timed out after %s: %w", min(m.Metric.Interval, DefaultQueryTimeout), err)
			}
			answers[k] = answer{res, err}
		})
	}
	wg.Wait()
	if err := ctx.Err(); err != nil {
		return s, err
	}
	if len(due) == 0 {
		return s, nil
	}
	s = s.clone()
	for k, i := range due {
		s.record(i, now, answers[k].res, answers[k].err)
	}
	return s.settle(now), nil
}

// Record judges the answer (res, or err) to metric i's query evaluated at
// at, and returns the State with the measurement and its consequences: the
// metric passes once Count conclusive measurements were taken within its
// failure limit, and fails when failures exceed FailureLimit, consecutive
// errors exceed ConsecutiveErrorLimit, or the query was refused. The run
// fails with its first failing metric and passes when all passed. Record
// is pure; Step calls it.
func (s State) Record(i int, at time.Time, res Result, err error) State {
	if s.Done() || i < 0 || i >= len(s.Metrics) || s.Metrics[i].Phase != PhaseRunning {
		return s
	}
	s = s.clone()
	s.record(i, at, res, err)
	return s.settle(at)
}

// record judges one answer into metric i (running) of s, a clone.
func (s *State) record(i int, at time.Time, res Result, err error) {
	mr := &s.Metrics[i]
	meas := Judge(&mr.Metric, mr.Query, at, res, err)
	mr.Measurements = append(mr.Measurements, meas)
	if n := len(mr.Measurements) - maxKept; n > 0 {
		mr.Measurements = slices.Delete(mr.Measurements, 0, n)
		mr.Dropped += n
	}
	mr.Next = at.Add(mr.Metric.Interval)
	m := &mr.Metric
	switch meas.Verdict {
	case VerdictError:
		mr.Errors++
		mr.ConsecutiveErrors++
		switch {
		case errors.Is(err, ErrRefused):
			mr.fail(fmt.Sprintf("the query cannot run: %s", meas.Message))
		case mr.ConsecutiveErrors > m.ConsecutiveErrorLimit:
			mr.fail(fmt.Sprintf("%d query errors in a row (consecutive_error_limit %d); last: %s",
				mr.ConsecutiveErrors, m.ConsecutiveErrorLimit, meas.Message))
		}
	case VerdictPass:
		mr.ConsecutiveErrors = 0
		mr.Conclusive++
		mr.Passes++
		if meas.NoData {
			mr.NoDataPasses++
		}
	default: // fail, inconclusive
		mr.ConsecutiveErrors = 0
		mr.Conclusive++
		mr.Failures++
		if mr.Failures > m.FailureLimit {
			mr.fail(fmt.Sprintf("%d failed measurement(s) (failure_limit %d); last: %s", mr.Failures, m.FailureLimit, meas.Message))
		}
	}
	// A pass needs Count passing measurements: failures (up to
	// failure_limit) never count towards it, so no failure_limit, however
	// large, lets a run of failures pass.
	if mr.Phase == PhaseRunning && mr.Passes >= m.Count {
		mr.Phase = PhasePassed
		mr.Next = time.Time{}
		mr.Reason = fmt.Sprintf("%d of %d measurements passed (failure_limit %d)", mr.Passes, mr.Conclusive, m.FailureLimit)
		if mr.NoDataPasses > 0 {
			mr.Reason += fmt.Sprintf("; %d had no data and passed by on_no_data = \"pass\"", mr.NoDataPasses)
		}
	}
}

// settle ends a running run whose metrics decided it: failed with its
// first failed metric (the others still running are cut short), or passed
// when every metric passed.
func (s State) settle(at time.Time) State {
	if s.Done() {
		return s
	}
	passed := true
	for _, mr := range s.Metrics {
		if mr.Phase == PhaseFailed {
			return s.end(at, fmt.Sprintf("metric %q failed: %s", mr.Metric.Name, mr.Reason))
		}
		passed = passed && mr.Phase == PhasePassed
	}
	if passed {
		s.Phase = PhasePassed
		s.EndedAt = at
		s.Reason = "every metric passed"
	}
	return s
}

func (mr *MetricRun) fail(reason string) {
	mr.Phase = PhaseFailed
	mr.Reason = reason
	mr.Next = time.Time{}
}

// Cut ends a run that is still running, as failed: the gate needs a
// verdict now (the bake window ended, the rollout was aborted or paused, a
// deadline passed) and a run short of its measurements never passes. A
// finished run is returned unchanged.
func (s State) Cut(now time.Time, why string) State {
	if s.Done() {
		return s
	}
	return s.clone().end(now, "cut short: "+why)
}

// end fails the run with reason, failing every metric still running as cut
// short.
func (s State) end(at time.Time, reason string) State {
	for i := range s.Metrics {
		mr := &s.Metrics[i]
		if mr.Phase == PhaseRunning {
			mr.fail(fmt.Sprintf("cut short after %d of %d measurements", mr.Conclusive, mr.Metric.Count))
		}
	}
	s.Phase = PhaseFailed
	s.Reason = reason
	s.EndedAt = at
	return s
}

func (s State) clone() State {
	c := s
	c.Values.Hosts = slices.Clone(s.Values.Hosts)
	c.Metrics = slices.Clone(s.Metrics)
	for i := range c.Metrics {
		c.Metrics[i].Measurements = slices.Clone(c.Metrics[i].Measurements)
	}
	return c
}

// Notes lists what the deploy's audit entry must record beyond the
// verdict: each metric that let an empty result pass (on_no_data =
// "pass"), and how many of its measurements did.
func (s State) Notes() []string {
	var notes []string
	for _, mr := range s.Metrics {
		if mr.Metric.OnNoData == NoDataPass {
			notes = append(notes, fmt.Sprintf("metric %q sets on_no_data = \"pass\": %d of %d measurement(s) had no data and passed",
				mr.Metric.Name, mr.NoDataPasses, mr.Conclusive))
		}
	}
	return notes
}

// Summary is one line per metric: its phase and reason.
func (s State) Summary() string {
	var b strings.Builder
	fmt.Fprintf(&b, "analysis %s", s.Phase)
	if s.Reason != "" {
		fmt.Fprintf(&b, ": %s", s.Reason)
	}
	for _, mr := range s.Metrics {
		fmt.Fprintf(&b, "\n  metric %q: %s", mr.Metric.Name, mr.Phase)
		if mr.Reason != "" {
			fmt.Fprintf(&b, ": %s", mr.Reason)
		}
	}
	return b.String()
}

// Encode is the State's JSON, for the rollout record.
func (s State) Encode() ([]byte, error) {
	b, err := json.Marshal(s)
	if err != nil {
		return nil, fmt.Errorf("encode analysis: %w", err)
	}
	return b, nil
}

// Decode reads an encoded State, refusing another version.
func Decode(b []byte) (State, error) {
	var s State
	if err := json.Unmarshal(b, &s); err != nil {
		return State{}, fmt.Errorf("decode analysis: %w", err)
	}
	if s.Version != StateVersion {
		return State{}, fmt.Errorf("decode analysis: version %d, this controller reads version %d: upgrade it", s.Version, StateVersion)
	}
	switch s.Phase {
	case PhaseRunning, PhasePassed, PhaseFailed:
	default:
		return State{}, fmt.Errorf("decode analysis: unknown phase %q", s.Phase)
	}
	return s, nil
}

// Run is the blocking form of the loop the leader runs: Start, then Step
// whenever a measurement is due, until the run ends. If ctx ends first,
// the run is Cut (and fails). For tests and benchmarks; the leader calls
// Step from its own loop and stores each State.
func Run(ctx context.Context, q Querier, metrics []Metric, v Values) (State, error) {
	s, err := Start(metrics, v, time.Now())
	if err != nil {
		return State{}, err
	}
	for !s.Done() {
		if wait := time.Until(s.NextAt()); wait > 0 {
			t := time.NewTimer(wait)
			select {
			case <-ctx.Done():
				t.Stop()
				return s.Cut(time.Now(), context.Cause(ctx).Error()), nil
			case <-t.C:
			}
		}
		next, err := Step(ctx, q, s, time.Now())
		if err != nil {
			return s.Cut(time.Now(), context.Cause(ctx).Error()), nil
		}
		s = next
	}
	return s, nil
}

// Judge turns one answer to m's query into a Measurement. It never passes
// what it cannot judge: an error, an empty result (unless on_no_data =
// "pass"), NaN, an infinity, a native histogram, several series without a
// reduce, a matrix or a string.
func Judge(m *Metric, query string, at time.Time, res Result, err error) Measurement {
	meas := Measurement{Metric: m.Name, Query: query, At: at, Series: res.Series}
	verdict := func(v Verdict, format string, args ...any) Measurement {
		meas.Verdict = v
		meas.Message = fmt.Sprintf(format, args...)
		if len(res.Warnings) > 0 && err == nil {
			meas.Message += " (Prometheus warns: " + strings.Join(res.Warnings, "; ") + ")"
		}
		return meas
	}
	if err != nil {
		meas.Series = 0
		return verdict(VerdictError, "%v", err)
	}
	var x float64
	switch res.Type {
	case TypeScalar:
		if len(res.Samples) != 1 {
			return verdict(VerdictInconclusive, "scalar result without a value")
		}
		meas.Series = 1
		x = res.Samples[0].Value
	case TypeVector:
		meas.Series = len(res.Samples)
		switch {
		case len(res.Samples) == 0 && m.OnNoData == NoDataPass:
			meas.NoData = true
			return verdict(VerdictPass, "no data (empty vector): passed because on_no_data = \"pass\"")
		case len(res.Samples) == 0:
			return verdict(VerdictInconclusive, "no data: the query returned an empty vector (no series matched); on_no_data = \"fail\"")
		case len(res.Samples) > 1 && m.Reduce == ReduceNone:
			return verdict(VerdictInconclusive, "%d series and no reduce: aggregate in the query (sum, max, ...) or set reduce = \"max\", \"min\", \"sum\" or \"avg\"", len(res.Samples))
		}
		values := make([]float64, 0, len(res.Samples))
		for _, smp := range res.Samples {
			if smp.Histogram {
				return verdict(VerdictInconclusive, "series %s is a native histogram, not a number: use histogram_quantile or similar", labelString(smp.Labels))
			}
			if !finite(smp.Value) {
				meas.Value = formatValue(smp.Value)
				return verdict(VerdictInconclusive, "series %s has value %s, which cannot be judged", labelString(smp.Labels), formatValue(smp.Value))
			}
			values = append(values, smp.Value)
		}
		x = reduce(m.Reduce, values)
	case TypeMatrix:
		return verdict(VerdictInconclusive, "the query returned a range vector (matrix) of %d series; an analysis needs an instant vector or a scalar: use a function over the range, such as rate(x[1m])", res.Series)
	default:
		return verdict(VerdictInconclusive, "the query returned a %s; an analysis needs an instant vector or a scalar", cmp.Or(string(res.Type), "result of no known type"))
	}
	meas.Value = formatValue(x)
	if !finite(x) {
		return verdict(VerdictInconclusive, "value %s cannot be judged", meas.Value)
	}
	how := ""
	if m.Reduce != ReduceNone && meas.Series > 1 {
		how = fmt.Sprintf(" (%s of %d series)", m.Reduce, meas.Series)
	}
	if m.Breach(x) {
		return verdict(VerdictFail, "value %s%s breaches %s", meas.Value, how, m.condition())
	}
	return verdict(VerdictPass, "value %s%s meets %s", meas.Value, how, m.condition())
}

func reduce(r Reduce, xs []float64) float64 {
	if len(xs) == 1 {
		return xs[0]
	}
	switch r {
	case ReduceMax:
		return slices.Max(xs)
	case ReduceMin:
		return slices.Min(xs)
	case ReduceSum, ReduceAvg:
		sum := 0.0
		for _, x := range xs {
			sum += x
		}
		if r == ReduceAvg {
			return sum / float64(len(xs))
		}
		return sum
	}
	return math.NaN()
}

// formatValue writes x as Prometheus does: "NaN", "+Inf", "-Inf", else
// the shortest exact decimal.
func formatValue(x float64) string {
	switch {
	case math.IsNaN(x):
		return "NaN"
	case math.IsInf(x, 1):
		return "+Inf"
	case math.IsInf(x, -1):
		return "-Inf"
	}
	return strconv.FormatFloat(x, 'g', -1, 64)
}

func labelString(l map[string]string) string {
	keys := make([]string, 0, len(l))
	for k := range l {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	parts := make([]string, len(keys))
	for i, k := range keys {
		parts[i] = k + "=" + strconv.Quote(l[k])
	}
	return "{" + strings.Join(parts, ", ") + "}"
}
