package reconnectbench

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

// 30 mutual-TLS agents reconnect after a graceful restart and after a
// kill: every one is welcomed again by the new process. The only failed
// attempts allowed after its listener accepted are the controller's own
// "no etcd session yet" refusals (it listens before its presence lease
// exists; the bench reports them as errors), and no stream drops again.
func TestRunTiny(t *testing.T) {
	bin := buildController(t)
	for _, kill := range []bool{false, true} {
		name := "SIGTERM"
		if kill {
			name = "SIGKILL"
		}
		t.Run(name, func(t *testing.T) {
			defer goleak.VerifyNone(t)
			ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
			defer cancel()
			var progress bytes.Buffer
			res, err := Run(ctx, Options{N: 30, Kill: kill, ControllerBin: bin, SourceAddrs: 2, Timeout: 60 * time.Second, Log: &progress})
			t.Log(progress.String())
			if err != nil {
				t.Fatalf("Run: %v", err)
			}
			if res.Signal != name || res.Reconnected != 30 || res.Reconnect <= 0 || res.Down <= 0 || res.Attempts < 30 {
				t.Fatalf("result %+v", res)
			}
			if res.Errors != res.Causes[NotReady] || res.Dropped != 0 {
				t.Fatalf("%d failed attempts (%v), %d dropped streams after the listener accepted", res.Errors, res.Examples, res.Dropped)
			}
			if res.PeakRSS <= 0 || res.PeakCores <= 0 {
				t.Fatalf("no controller figures: peak RSS %d, peak cores %.2f", res.PeakRSS, res.PeakCores)
			}
			var table bytes.Buffer
			if err := PrintTable(&table, res); err != nil {
				t.Fatal(err)
			}
			t.Log("\n" + table.String())
			for _, want := range []string{"reconnect s", name, "met"} {
				if !strings.Contains(table.String(), want) {
					t.Errorf("table lacks %q:\n%s", want, table.String())
				}
			}
		})
	}
}

func TestClassify(t *testing.T) {
	for err, want := range map[error]string{
		errWelcomeTimeout: "no Welcome in time",
		&testErr{"rpc error: code = Unavailable desc = controller replica has no etcd session; try another replica"}:                                                    NotReady,
		&testErr{"rpc error: code = Unavailable desc = connection error: desc = \"transport: Error while dialing: dial tcp 127.0.0.1:1: connect: connection refused\""}: "TCP refused",
		&testErr{"connection error: desc = \"transport: authentication handshake failed: remote error: tls: bad certificate\""}:                                         "TLS handshake",
	} {
		if got := classify(err); got != want {
			t.Errorf("classify(%v) = %q, want %q", err, got, want)
		}
	}
}

type testErr struct{ s string }

func (e *testErr) Error() string { return e.s }

func TestOptionsValidate(t *testing.T) {
	for _, o := range []Options{{N: -1}, {MaxBackoff: time.Millisecond}, {SourceAddrs: 251}, {ConnectConcurrency: -1}} {
		if err := o.defaults(); err == nil {
			t.Errorf("%+v: no error", o)
		}
	}
}
