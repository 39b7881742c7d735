package analysis

import (
	"context"
	"errors"
	"fmt"
	"math"
	"strings"
	"sync"
	"testing"
	"time"
)

// fakeQuerier answers from a script, one answer per call, and records the
// queries it got.
type fakeQuerier struct {
	mu      sync.Mutex
	answers []fakeAnswer
	got     []string
}

type fakeAnswer struct {
	res Result
	err error
}

func (f *fakeQuerier) Query(_ context.Context, q string, _ time.Time) (Result, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.got = append(f.got, q)
	if len(f.answers) == 0 {
		return Result{}, errors.New("fake: no more answers")
	}
	a := f.answers[0]
	f.answers = f.answers[1:]
	return a.res, a.err
}

func scalar(x float64) fakeAnswer {
	return fakeAnswer{res: Result{Type: TypeScalar, Series: 1, Samples: []Sample{{Value: x}}}}
}

func vector(xs ...float64) fakeAnswer {
	r := Result{Type: TypeVector, Series: len(xs)}
	for i, x := range xs {
		r.Samples = append(r.Samples, Sample{Labels: map[string]string{"host": fmt.Sprint("h", i)}, Value: x})
	}
	return fakeAnswer{res: r}
}

func failed(err error) fakeAnswer { return fakeAnswer{err: err} }

func testMetric(mod func(*Metric)) Metric {
	m := Metric{Name: "m", Query: `up{host=~"{{hosts_regex}}"}`, Interval: 10 * time.Second, Count: 3,
		FailIf: &Condition{OpGT, 0.01}, ConsecutiveErrorLimit: 2, OnNoData: NoDataFail}
	if mod != nil {
		mod(&m)
	}
	return m
}

var t0 = time.Date(2026, 12, 1, 10, 0, 0, 0, time.UTC)

// drive runs Step until the run ends or steps run out, at t0, t0+interval, ...
func drive(t *testing.T, m Metric, answers ...fakeAnswer) State {
	t.Helper()
	q := &fakeQuerier{answers: answers}
	s, err := Start([]Metric{m}, Values{Hosts: []string{"web-1"}}, t0)
	if err != nil {
		t.Fatal(err)
	}
	for i := 0; i < len(answers) && !s.Done(); i++ {
		now := t0.Add(time.Duration(i) * m.Interval)
		if due := s.Due(now); len(due) != 1 {
			t.Fatalf("step %d: due = %v, want the metric", i, due)
		}
		if s, err = Step(t.Context(), q, s, now); err != nil {
			t.Fatal(err)
		}
		// Every State survives the rollout record: encode, decode, go on.
		b, err := s.Encode()
		if err != nil {
			t.Fatalf("step %d: %v", i, err)
		}
		if s, err = Decode(b); err != nil {
			t.Fatalf("step %d: %v", i, err)
		}
	}
	return s
}

func TestRecordVerdicts(t *testing.T) {
	boom := errors.New("connection refused")
	tests := []struct {
		name       string
		metric     Metric
		give       []fakeAnswer
		wantPhase  Phase
		wantReason string
		wantLast   Verdict
	}{
		{"pass", testMetric(nil), []fakeAnswer{scalar(0), vector(0.001), scalar(0.01)}, PhasePassed, "3 of 3 measurements passed", VerdictPass},
		{"fail_if breach", testMetric(nil), []fakeAnswer{scalar(0), vector(0.5)}, PhaseFailed, "value 0.5 breaches fail_if > 0.01", VerdictFail},
		{"failure limit tolerates", testMetric(func(m *Metric) { m.FailureLimit = 1 }), []fakeAnswer{vector(0.5), vector(0), vector(0), vector(0)}, PhasePassed, "3 of 4 measurements passed (failure_limit 1)", VerdictPass},
		{"failure limit exceeded", testMetric(func(m *Metric) { m.FailureLimit = 1 }), []fakeAnswer{vector(0.5), vector(0), vector(0.7)}, PhaseFailed, "2 failed measurement(s) (failure_limit 1)", VerdictFail},
		{"success_if", testMetric(func(m *Metric) { m.FailIf, m.SuccessIf, m.Count = nil, &Condition{OpGE, 0.99}, 1 }), []fakeAnswer{vector(0.995)}, PhasePassed, "1 of 1", VerdictPass},
		{"success_if miss", testMetric(func(m *Metric) { m.FailIf, m.SuccessIf = nil, &Condition{OpGE, 0.99} }), []fakeAnswer{vector(0.9)}, PhaseFailed, "value 0.9 breaches success_if >= 0.99", VerdictFail},
		{"empty vector", testMetric(nil), []fakeAnswer{vector()}, PhaseFailed, "no data", VerdictInconclusive},
		{"empty vector on_no_data pass", testMetric(func(m *Metric) { m.OnNoData = NoDataPass; m.Count = 2 }), []fakeAnswer{vector(), vector(0)}, PhasePassed, `1 had no data and passed by on_no_data = "pass"`, VerdictPass},
		{"NaN", testMetric(nil), []fakeAnswer{vector(math.NaN())}, PhaseFailed, "value NaN, which cannot be judged", VerdictInconclusive},
		{"NaN even with on_no_data pass", testMetric(func(m *Metric) { m.OnNoData = NoDataPass }), []fakeAnswer{scalar(math.NaN())}, PhaseFailed, "value NaN cannot be judged", VerdictInconclusive},
		{"+Inf", testMetric(nil), []fakeAnswer{vector(math.Inf(1))}, PhaseFailed, "+Inf", VerdictInconclusive},
		{"-Inf scalar", testMetric(func(m *Metric) { m.FailIf, m.SuccessIf = nil, &Condition{OpLT, 1} }), []fakeAnswer{scalar(math.Inf(-1))}, PhaseFailed, "-Inf", VerdictInconclusive},
		{"multi-series without reduce", testMetric(nil), []fakeAnswer{vector(0, 0)}, PhaseFailed, "2 series and no reduce", VerdictInconclusive},
		{"multi-series max", testMetric(func(m *Metric) { m.Reduce, m.Count = ReduceMax, 1 }), []fakeAnswer{vector(0, 0.02)}, PhaseFailed, "value 0.02 (max of 2 series) breaches", VerdictFail},
		{"multi-series avg", testMetric(func(m *Metric) { m.Reduce, m.Count = ReduceAvg, 1 }), []fakeAnswer{vector(0, 0.02)}, PhasePassed, "1 of 1", VerdictPass},
		{"multi-series with a NaN", testMetric(func(m *Metric) { m.Reduce = ReduceMin }), []fakeAnswer{vector(0, math.NaN())}, PhaseFailed, "NaN", VerdictInconclusive},
		{"matrix", testMetric(nil), []fakeAnswer{{res: Result{Type: TypeMatrix, Series: 2}}}, PhaseFailed, "range vector (matrix)", VerdictInconclusive},
		{"string", testMetric(nil), []fakeAnswer{{res: Result{Type: TypeString, Series: 1}}}, PhaseFailed, "returned a string", VerdictInconclusive},
		{"histogram", testMetric(nil), []fakeAnswer{{res: Result{Type: TypeVector, Series: 1, Samples: []Sample{{Histogram: true}}}}}, PhaseFailed, "native histogram", VerdictInconclusive},
		{"errors within the limit are retried", testMetric(nil), []fakeAnswer{failed(boom), failed(boom), scalar(0), failed(boom), scalar(0), scalar(0)}, PhasePassed, "3 of 3", VerdictPass},
		{"errors past the limit fail", testMetric(nil), []fakeAnswer{scalar(0), failed(boom), failed(boom), failed(boom)}, PhaseFailed, "3 query errors in a row (consecutive_error_limit 2); last: connection refused", VerdictError},
		{"all errors never pass", testMetric(func(m *Metric) { m.ConsecutiveErrorLimit = 0 }), []fakeAnswer{failed(boom)}, PhaseFailed, "1 query errors in a row", VerdictError},
		{"refused query fails at once", testMetric(nil), []fakeAnswer{failed(fmt.Errorf("%w by Prometheus: parse error", ErrRefused))}, PhaseFailed, "the query cannot run: query refused by Prometheus: parse error", VerdictError},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s := drive(t, tt.metric, tt.give...)
			if s.Phase != tt.wantPhase || !strings.Contains(s.Summary(), tt.wantReason) {
				t.Fatalf("got %s, want %s with %q", s.Summary(), tt.wantPhase, tt.wantReason)
			}
			mr := s.Metrics[0]
			last := mr.Measurements[len(mr.Measurements)-1]
			if last.Verdict != tt.wantLast {
				t.Errorf("last verdict = %s (%s), want %s", last.Verdict, last.Message, tt.wantLast)
			}
			if len(mr.Measurements) != len(tt.give) {
				t.Errorf("%d measurements, want %d (one per answer)", len(mr.Measurements), len(tt.give))
			}
			for i, m := range mr.Measurements {
				if m.Query != `up{host=~"(?:web-1)"}` || !m.At.Equal(t0.Add(time.Duration(i)*tt.metric.Interval)) || m.Message == "" || m.Metric != "m" {
					t.Errorf("measurement %d = %+v", i, m)
				}
			}
			if !s.Done() || s.EndedAt.IsZero() || !s.NextAt().IsZero() || s.Due(t0.Add(time.Hour)) != nil {
				t.Errorf("ended run: done %v ended %v next %v", s.Done(), s.EndedAt, s.NextAt())
			}
		})
	}
}

// TestFailuresNeverCountTowardsAPass: with a failure_limit at or above
// count, a run of failures and empty answers does not pass (a pass needs
// count passing measurements); cut short, it fails.
func TestFailuresNeverCountTowardsAPass(t *testing.T) {
	m := testMetric(func(m *Metric) { m.FailureLimit = 6 })
	s := drive(t, m, vector(), vector(0.5), vector(), vector(0.5), vector())
	if s.Passed() || s.Phase != PhaseRunning {
		t.Fatalf("after 5 failing answers (count %d, failure_limit 6): %s", m.Count, s.Summary())
	}
	if s = s.Cut(t0.Add(time.Hour), "bake window ended"); s.Passed() || s.Phase != PhaseFailed {
		t.Fatalf("cut short: %s", s.Summary())
	}
}

func TestCutShortFails(t *testing.T) {
	q := &fakeQuerier{answers: []fakeAnswer{scalar(0), scalar(0)}}
	s, err := Start([]Metric{testMetric(nil)}, Values{Hosts: []string{"web-1"}}, t0)
	if err != nil {
		t.Fatal(err)
	}
	for i := range 2 {
		if s, err = Step(t.Context(), q, s, t0.Add(time.Duration(i)*10*time.Second)); err != nil {
			t.Fatal(err)
		}
	}
	if s.Done() {
		t.Fatalf("run ended after 2 of 3: %s", s.Summary())
	}
	if got := s.NextAt(); !got.Equal(t0.Add(20 * time.Second)) {
		t.Errorf("NextAt = %v, want t0+20s", got)
	}
	// Not due yet: Step takes nothing.
	if s2, err := Step(t.Context(), q, s, t0.Add(15*time.Second)); err != nil || len(s2.Metrics[0].Measurements) != 2 {
		t.Errorf("Step before due took a measurement: %v", err)
	}
	cut := s.Cut(t0.Add(25*time.Second), "bake window ended")
	if cut.Passed() || cut.Phase != PhaseFailed || !strings.Contains(cut.Summary(), "cut short: bake window ended") ||
		!strings.Contains(cut.Summary(), "cut short after 2 of 3 measurements") {
		t.Errorf("cut run: %s", cut.Summary())
	}
	if s.Done() {
		t.Error("Cut changed the State it was called on")
	}
	if again := cut.Cut(t0.Add(time.Hour), "again"); again.Reason != cut.Reason || !again.EndedAt.Equal(cut.EndedAt) {
		t.Errorf("Cut of an ended run changed it: %s", again.Summary())
	}
}

func TestStepDiscardsWhenContextEnds(t *testing.T) {
	s, err := Start([]Metric{testMetric(nil)}, Values{Hosts: []string{"web-1"}}, t0)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(t.Context())
	cancel()
	got, err := Step(ctx, &fakeQuerier{}, s, t0)
	if !errors.Is(err, context.Canceled) || len(got.Metrics[0].Measurements) != 0 {
		t.Errorf("Step with an ended context = %v, %d measurements; want context.Canceled and none recorded", err, len(got.Metrics[0].Measurements))
	}
}

func TestRunFailsOnOtherMetric(t *testing.T) {
	a := testMetric(func(m *Metric) { m.Name = "a" })
	b := testMetric(func(m *Metric) { m.Name, m.Interval = "b", time.Minute })
	q := &fakeQuerier{answers: []fakeAnswer{scalar(0), scalar(0), scalar(0), scalar(1)}}
	s, err := Start([]Metric{a, b}, Values{Hosts: []string{"web-1"}}, t0)
	if err != nil {
		t.Fatal(err)
	}
	// t0: both due (answered concurrently, both pass); then only a, every
	// 10s, until it breaches while b has taken 1 of 3.
	if s, err = Step(t.Context(), q, s, t0); err != nil {
		t.Fatal(err)
	}
	if s, err = Step(t.Context(), q, s, t0.Add(10*time.Second)); err != nil {
		t.Fatal(err)
	}
	if s, err = Step(t.Context(), q, s, t0.Add(20*time.Second)); err != nil {
		t.Fatal(err)
	}
	if s.Metrics[0].Phase != PhaseFailed || s.Phase != PhaseFailed || s.Metrics[1].Phase != PhaseFailed ||
		!strings.Contains(s.Metrics[1].Reason, "cut short after 1 of 3") {
		t.Errorf("got %s", s.Summary())
	}
}

func TestStartRefuses(t *testing.T) {
	tests := []struct {
		name    string
		metrics []Metric
		values  Values
		want    string
	}{
		{"nothing", nil, Values{}, "no metrics"},
		{"no hosts", []Metric{testMetric(nil)}, Values{}, "{{hosts_regex}} but it has no value"},
		{"invalid", []Metric{testMetric(func(m *Metric) { m.Count = 0 })}, Values{Hosts: []string{"h"}}, "count"},
		{"duplicate", []Metric{testMetric(nil), testMetric(nil)}, Values{Hosts: []string{"h"}}, "twice"},
	}
	for _, tt := range tests {
		if _, err := Start(tt.metrics, tt.values, t0); err == nil || !strings.Contains(err.Error(), tt.want) {
			t.Errorf("%s: Start error %v, want %q", tt.name, err, tt.want)
		}
	}
}

func TestNotesRecordOnNoDataPass(t *testing.T) {
	s := drive(t, testMetric(func(m *Metric) { m.OnNoData = NoDataPass; m.Count = 2 }), vector(), vector())
	if !s.Passed() {
		t.Fatalf("got %s", s.Summary())
	}
	notes := s.Notes()
	if len(notes) != 1 || !strings.Contains(notes[0], `metric "m" sets on_no_data = "pass": 2 of 2 measurement(s) had no data and passed`) {
		t.Errorf("Notes = %q", notes)
	}
	for _, m := range s.Metrics[0].Measurements {
		if !m.NoData {
			t.Errorf("measurement %+v: NoData not set", m)
		}
	}
}

func TestDecodeRefuses(t *testing.T) {
	for _, give := range []string{`{`, `{"version":2,"phase":"running"}`, `{"version":1,"phase":"paused"}`} {
		if _, err := Decode([]byte(give)); err == nil {
			t.Errorf("Decode(%s) accepted it", give)
		}
	}
}

func TestMeasurementsBounded(t *testing.T) {
	m := testMetric(func(m *Metric) { m.Count = maxKept + 20 })
	answers := make([]fakeAnswer, m.Count)
	for i := range answers {
		answers[i] = scalar(0)
	}
	s := drive(t, m, answers...)
	mr := s.Metrics[0]
	if !s.Passed() || len(mr.Measurements) != maxKept || mr.Dropped != 20 || mr.Conclusive != m.Count {
		t.Errorf("passed %v, kept %d, dropped %d, conclusive %d", s.Passed(), len(mr.Measurements), mr.Dropped, mr.Conclusive)
	}
}

// hangingQuerier answers only when its context ends.
type hangingQuerier struct{}

func (hangingQuerier) Query(ctx context.Context, _ string, _ time.Time) (Result, error) {
	<-ctx.Done()
	return Result{}, ctx.Err()
}

func TestQueryTimeoutIsAnError(t *testing.T) {
	m := testMetric(func(m *Metric) { m.Interval, m.ConsecutiveErrorLimit = time.Second, 0 })
	s, err := Start([]Metric{m}, Values{Hosts: []string{"web-1"}}, t0)
	if err != nil {
		t.Fatal(err)
	}
	if s, err = Step(t.Context(), hangingQuerier{}, s, t0); err != nil {
		t.Fatal(err)
	}
	last := s.Metrics[0].Measurements[0]
	if s.Passed() || !s.Done() || last.Verdict != VerdictError || !strings.Contains(last.Message, "query timed out after 1s") {
		t.Errorf("got %s; measurement %+v", s.Summary(), last)
	}
}
