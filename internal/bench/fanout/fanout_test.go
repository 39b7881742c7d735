package fanout

import (
	"bytes"
	"context"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/golive/golive/internal/bench/benchkit"
)

// buildController builds ./cmd/controller from the module root into a
// temporary directory.
func buildController(t *testing.T) string {
	t.Helper()
	root, err := benchkit.ModuleRoot(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	bin := filepath.Join(t.TempDir(), "golive-controller")
	if err := benchkit.BuildBinary(t.Context(), root, bin, "./cmd/controller", nil); err != nil {
		t.Fatal(err)
	}
	return bin
}

func TestRunTiny(t *testing.T) {
	bin := buildController(t)
	for _, withTLS := range []bool{false, true} {
		t.Run(tlsWord(withTLS), func(t *testing.T) { runTiny(t, bin, withTLS) })
	}
}

// runTiny runs 20 agents for 2 rounds, in plaintext or with mutual TLS
// (each agent presenting its own certificate: the controller refuses an
// agent whose certificate does not name its host id).
func runTiny(t *testing.T, bin string, withTLS bool) {
	defer goleak.VerifyNone(t)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	var progress bytes.Buffer
	res, err := Run(ctx, Options{N: 20, Rounds: 2, ControllerBin: bin, SourceAddrs: 2, PhaseTimeout: 30 * time.Second, Log: &progress, TLS: withTLS})
	t.Log(progress.String())
	if err != nil {
		t.Fatalf("Run: %v", err)
	}
	if res.Acked != 20 || res.RoundsDone != 2 || res.StreamErrors != 0 {
		t.Fatalf("acked %d of 20, %d of 2 rounds, %d stream errors", res.Acked, res.RoundsDone, res.StreamErrors)
	}
	if res.PerAgent.Samples != 40 || res.LastAgent.Samples != 2 {
		t.Fatalf("samples: per agent %d (want 40), last agent %d (want 2)", res.PerAgent.Samples, res.LastAgent.Samples)
	}
	if res.PerAgent.Max <= 0 && res.BeforeReturn == 0 {
		t.Fatalf("no latency measured: %+v", res)
	}
	if res.RSSBefore <= 0 || res.RSSAfter <= 0 {
		t.Fatalf("RSS not read: before %d after %d", res.RSSBefore, res.RSSAfter)
	}
	var table bytes.Buffer
	if err := PrintTable(&table, res); err != nil {
		t.Fatal(err)
	}
	t.Log("\n" + table.String())
	if res.TLS != withTLS {
		t.Fatalf("result TLS %v, want %v", res.TLS, withTLS)
	}
	for _, want := range []string{"KB/agent", "p99 ms", "met", tlsWord(withTLS)} {
		if !strings.Contains(table.String(), want) {
			t.Errorf("table lacks %q:\n%s", want, table.String())
		}
	}
}

func TestSummarize(t *testing.T) {
	var ds []time.Duration
	for i := 1; i <= 100; i++ {
		ds = append(ds, time.Duration(i)*time.Millisecond)
	}
	s := summarize(ds)
	if s.P50 != 50*time.Millisecond || s.P99 != 99*time.Millisecond || s.Max != 100*time.Millisecond || s.Samples != 100 {
		t.Fatalf("summarize 1..100 ms = %+v", s)
	}
	if s := summarize([]time.Duration{7}); s.P50 != 7 || s.P99 != 7 || s.Max != 7 {
		t.Fatalf("summarize one = %+v", s)
	}
	if s := summarize(nil); s != (Stats{}) {
		t.Fatalf("summarize none = %+v", s)
	}
}

func TestOptionsValidate(t *testing.T) {
	for _, o := range []Options{{N: -1}, {Rounds: -2}, {SourceAddrs: 251}, {ConnectConcurrency: -1}} {
		if err := o.defaults(); err == nil {
			t.Errorf("%+v: no error", o)
		}
	}
}
