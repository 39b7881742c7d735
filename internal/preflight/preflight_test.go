package preflight

import (
	"context"
	"strings"
	"testing"
	"time"

	"go.uber.org/goleak"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}

func constant(r Result) func(context.Context) Result {
	return func(context.Context) Result { return r }
}

func TestRun(t *testing.T) {
	block := func(ctx context.Context) Result {
		<-ctx.Done()
		return Result{Status: StatusPass, Detail: "ignored its deadline."}
	}
	tests := []struct {
		name   string
		give   []Check
		skip   []string
		want   []Status
		wantOK bool
	}{
		{
			name:   "all pass",
			give:   []Check{{Name: "a", Fn: constant(Result{Status: StatusPass})}, {Name: "b", Fn: constant(Result{Status: StatusPass})}},
			want:   []Status{StatusPass, StatusPass},
			wantOK: true,
		},
		{
			name:   "warn is ok",
			give:   []Check{{Name: "a", Fn: constant(Result{Status: StatusWarn})}},
			want:   []Status{StatusWarn},
			wantOK: true,
		},
		{
			name:   "fail is not ok",
			give:   []Check{{Name: "a", Fn: constant(Result{Status: StatusPass})}, {Name: "b", Fn: constant(Result{Status: StatusFail})}},
			want:   []Status{StatusPass, StatusFail},
			wantOK: false,
		},
		{
			name:   "skipped fail is ok",
			give:   []Check{{Name: "a", Fn: constant(Result{Status: StatusPass})}, {Name: "b", Fn: constant(Result{Status: StatusFail})}},
			skip:   []string{"b"},
			want:   []Status{StatusPass, StatusSkip},
			wantOK: true,
		},
		{
			name:   "timeout fails even if the check says pass",
			give:   []Check{{Name: "slow", Timeout: 20 * time.Millisecond, Fn: block}},
			want:   []Status{StatusFail},
			wantOK: false,
		},
		{
			name:   "panic fails",
			give:   []Check{{Name: "boom", Fn: func(context.Context) Result { panic("boom") }}},
			want:   []Status{StatusFail},
			wantOK: false,
		},
		{
			name:   "nil func fails",
			give:   []Check{{Name: "nil"}},
			want:   []Status{StatusFail},
			wantOK: false,
		},
		{
			name:   "unknown status fails",
			give:   []Check{{Name: "odd", Fn: constant(Result{Status: "maybe"})}},
			want:   []Status{StatusFail},
			wantOK: false,
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got := Run(t.Context(), tt.give, tt.skip)
			if len(got) != len(tt.want) {
				t.Fatalf("got %d results, want %d", len(got), len(tt.want))
			}
			for i, r := range got {
				if r.Name != tt.give[i].Name {
					t.Errorf("result %d: name %q, want %q", i, r.Name, tt.give[i].Name)
				}
				if r.Status != tt.want[i] {
					t.Errorf("result %d (%s): status %q, want %q (%s)", i, r.Name, r.Status, tt.want[i], r.Detail)
				}
			}
			if ok := Summary(got); ok != tt.wantOK {
				t.Errorf("Summary = %v, want %v", ok, tt.wantOK)
			}
		})
	}
}

// TestRunConcurrent shows that checks run at the same time: each waits for
// all the others to have started.
func TestRunConcurrent(t *testing.T) {
	const n = 5
	started := make(chan struct{}, n)
	checks := make([]Check, n)
	for i := range checks {
		checks[i] = Check{Name: string(rune('a' + i)), Timeout: 5 * time.Second, Fn: func(ctx context.Context) Result {
			started <- struct{}{}
			for len(started) < n {
				select {
				case <-ctx.Done():
					return Result{Status: StatusFail, Detail: "ran alone."}
				case <-time.After(time.Millisecond):
				}
			}
			return Result{Status: StatusPass}
		}}
	}
	for _, r := range Run(t.Context(), checks, nil) {
		if r.Status != StatusPass {
			t.Errorf("%s: %s %s", r.Name, r.Status, r.Detail)
		}
	}
}

func TestSummary(t *testing.T) {
	tests := []struct {
		name string
		give []Result
		want bool
	}{
		{name: "empty", give: nil, want: true},
		{name: "pass warn skip", give: []Result{{Status: StatusPass}, {Status: StatusWarn}, {Status: StatusSkip}}, want: true},
		{name: "one fail", give: []Result{{Status: StatusPass}, {Status: StatusFail}}, want: false},
		{name: "blank status", give: []Result{{Status: ""}}, want: false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := Summary(tt.give); got != tt.want {
				t.Errorf("Summary = %v, want %v", got, tt.want)
			}
		})
	}
}

func TestValidateSkips(t *testing.T) {
	if err := ValidateSkips([]string{NameTLS, NamePreviousRelease}); err != nil {
		t.Fatal(err)
	}
	err := ValidateSkips([]string{NameTLS, "tsl"})
	if err == nil || !strings.Contains(err.Error(), `unknown check "tsl"`) || !strings.Contains(err.Error(), "previous-release") {
		t.Fatalf("ValidateSkips(tsl) = %v, want an error naming it and the known checks", err)
	}
}
