package swapload

import (
	"bytes"
	"context"
	"strings"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/golive/golive/internal/deploystep"
)

func TestRunBrief(t *testing.T) {
	defer goleak.VerifyNone(t)
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	var progress bytes.Buffer
	res, err := Run(ctx, Options{Rate: 100, Steady: time.Second, After: time.Second,
		HealthInterval: 100 * time.Millisecond, HealthSuccesses: 2, Log: &progress})
	t.Log(progress.String())
	if err != nil {
		t.Fatalf("Run: %v", err)
	}
	if res.Outcome != deploystep.OutcomeSucceeded {
		t.Fatalf("outcome %s", res.Outcome)
	}
	// v1 answers before the swap, v2 after the step succeeded: no failure
	// outside the swap.
	if res.Steady.Failed != 0 || res.After.Failed != 0 {
		t.Fatalf("failures outside the swap: steady %v, after %v", res.Steady.ByClass, res.After.ByClass)
	}
	if res.Steady.Requests < 90 || res.After.Requests < 90 || res.Swap.Requests == 0 {
		t.Fatalf("requests: steady %d swap %d after %d", res.Steady.Requests, res.Swap.Requests, res.After.Requests)
	}
	if got := res.Steady.Requests + res.Swap.Requests + res.After.Requests; got != res.Total.Requests {
		t.Fatalf("phases hold %d of %d requests", got, res.Total.Requests)
	}
	if res.Restart <= 0 || res.RestartAt <= 0 {
		t.Fatalf("restart stage not timed: at %v took %v", res.RestartAt, res.Restart)
	}
	var table bytes.Buffer
	if err := PrintTable(&table, res); err != nil {
		t.Fatal(err)
	}
	t.Log("\n" + table.String())
	for _, want := range []string{"steady", "swap", "after", "conn_error", "p99 ms", "deploy v2: SUCCEEDED"} {
		if !strings.Contains(table.String(), want) {
			t.Errorf("table lacks %q", want)
		}
	}
}

func TestOptionsValidate(t *testing.T) {
	for _, o := range []Options{{Rate: -1}, {Steady: -1}, {Concurrency: -1}, {HealthSuccesses: -2}} {
		if err := o.defaults(); err == nil {
			t.Errorf("%+v: no error", o)
		}
	}
}
