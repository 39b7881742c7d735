package deploystep

import (
	"archive/tar"
	"bytes"
	"compress/gzip"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/hashicorp/go-hclog"

	"github.com/golive/golive/internal/agentconfig"
	"github.com/golive/golive/internal/svcmgr/execmgr"
)

// artifacts built once per test binary: name -> tar.gz bytes.
var (
	buildOnce sync.Once
	buildErr  error
	tarballs  = map[string][]byte{}
)

// buildReleases builds cmd/sampleapp as v1, v2 and v3 and packs each as a
// release tarball (bin/sampleapp, VERSION; v3 also FAIL_HEALTH, so its
// /healthz answers 500).
func buildReleases(t *testing.T) {
	t.Helper()
	buildOnce.Do(func() {
		dir, err := os.MkdirTemp("", "deploystep-build-")
		if err != nil {
			buildErr = err
			return
		}
		defer os.RemoveAll(dir)
		var wg sync.WaitGroup
		var mu sync.Mutex
		for _, v := range []string{"v1", "v2", "v3"} {
			wg.Go(func() {
				bin := filepath.Join(dir, v)
				cmd := exec.Command("go", "build", "-ldflags", "-X main.version="+v, "-o", bin, "github.com/golive/golive/cmd/sampleapp")
				cmd.Env = append(os.Environ(), "CGO_ENABLED=0")
				out, err := cmd.CombinedOutput()
				var tgz []byte
				if err == nil {
					tgz, err = makeTarball(bin, v)
				}
				var mtgz map[string][]byte
				if err == nil {
					mtgz, err = migrationReleases(bin, v)
				}
				mu.Lock()
				defer mu.Unlock()
				if err != nil {
					buildErr = fmt.Errorf("build sampleapp %s: %v\n%s", v, err, out)
					return
				}
				tarballs[v] = tgz
				for k, b := range mtgz {
					tarballs[k] = b
				}
			})
		}
		wg.Wait()
	})
	if buildErr != nil {
		t.Fatal(buildErr)
	}
}

// tarFile is an extra file in a test release.
type tarFile struct {
	name string
	mode int64
	body string
}

func makeTarball(bin, version string, extra ...tarFile) ([]byte, error) {
	exe, err := os.ReadFile(bin)
	if err != nil {
		return nil, err
	}
	var buf bytes.Buffer
	gz := gzip.NewWriter(&buf)
	tw := tar.NewWriter(gz)
	add := func(name string, mode int64, body []byte) error {
		if err := tw.WriteHeader(&tar.Header{Name: name, Mode: mode, Size: int64(len(body)), Typeflag: tar.TypeReg}); err != nil {
			return err
		}
		_, err := tw.Write(body)
		return err
	}
	if err := tw.WriteHeader(&tar.Header{Name: "bin/", Mode: 0o755, Typeflag: tar.TypeDir}); err != nil {
		return nil, err
	}
	if err := add("bin/sampleapp", 0o755, exe); err != nil {
		return nil, err
	}
	if err := add("VERSION", 0o644, []byte(version+"\n")); err != nil {
		return nil, err
	}
	if version == "v3" {
		if err := add("FAIL_HEALTH", 0o644, []byte("v3 is broken\n")); err != nil {
			return nil, err
		}
	}
	for _, f := range extra {
		if err := add(f.name, f.mode, []byte(f.body)); err != nil {
			return nil, err
		}
	}
	if err := tw.Close(); err != nil {
		return nil, err
	}
	if err := gz.Close(); err != nil {
		return nil, err
	}
	return buf.Bytes(), nil
}

func sha(b []byte) string {
	s := sha256.Sum256(b)
	return hex.EncodeToString(s[:])
}

// serveArtifacts serves the tarballs as /sampleapp-<v>.tar.gz on loopback.
func serveArtifacts(t *testing.T) *httptest.Server {
	t.Helper()
	buildReleases(t)
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		v := strings.TrimSuffix(strings.TrimPrefix(r.URL.Path, "/sampleapp-"), ".tar.gz")
		b, ok := tarballs[v]
		if !ok {
			http.NotFound(w, r)
			return
		}
		_, _ = w.Write(b)
	}))
	t.Cleanup(srv.Close)
	return srv
}

func freePort(t *testing.T) int {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().(*net.TCPAddr).Port
}

func testService(port int) *agentconfig.Service {
	svc := agentconfig.DefaultService("app")
	svc.Port = port
	svc.KeepReleases = 3
	svc.Exec = &agentconfig.Exec{Command: []string{"bin/sampleapp", "--port", "{port}"}, StopTimeout: 5 * time.Second}
	svc.Health.URL = "http://127.0.0.1:{port}/healthz"
	svc.Health.Successes = 2
	svc.Health.Interval = 100 * time.Millisecond
	svc.Health.Timeout = time.Second
	svc.Health.Deadline = 3 * time.Second
	svc.Hooks.OnRollback = []string{"/bin/sh", "-c", "echo on_rollback $GOLIVE_RELEASE back to $GOLIVE_PREVIOUS_RELEASE"}
	svc.Hooks.Timeout = 10 * time.Second
	return svc
}

// newRunner returns a Runner on a real execmgr.Manager for the service.
func newRunner(t *testing.T, stateDir string, port int, logger hclog.Logger) *Runner {
	t.Helper()
	return newRunnerWith(t, stateDir, port, logger, nil)
}

// newRunnerWith is newRunner with the service's config and the Runner's
// config changed by edit before the Runner is made.
func newRunnerWith(t *testing.T, stateDir string, port int, logger hclog.Logger, edit func(*Config)) *Runner {
	t.Helper()
	svc := testService(port)
	mgr, err := execmgr.New(execmgr.Config{
		Name:        svc.Name,
		Command:     svc.Command(port),
		LogFile:     filepath.Join(stateDir, "app.log"),
		StopTimeout: 5 * time.Second,
		StartGrace:  300 * time.Millisecond,
		Logger:      logger,
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = mgr.Close() })
	cfg := Config{StateDir: stateDir, Service: svc, Manager: mgr, Logger: logger,
		Artifacts: agentconfig.Artifacts{MaxBytes: 256 << 20, MaxUnpackedBytes: 512 << 20, MaxFiles: 100}}
	if edit != nil {
		edit(&cfg)
	}
	r, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	return r
}

func testLogger(t *testing.T) hclog.Logger {
	return hclog.New(&hclog.LoggerOptions{Output: tWriter{t}, Level: hclog.Debug})
}

type tWriter struct{ t *testing.T }

func (w tWriter) Write(p []byte) (int, error) {
	w.t.Log(strings.TrimRight(string(p), "\n"))
	return len(p), nil
}

func deployCmd(srv *httptest.Server, id, v string) Command {
	return Command{ID: id, Kind: KindDeploy, Release: v, ArtifactURL: srv.URL + "/sampleapp-" + v + ".tar.gz", SHA256: sha(tarballs[v])}
}

// answers returns what the service says at /version.
func answers(t *testing.T, port int) string {
	t.Helper()
	c := &http.Client{Timeout: 2 * time.Second}
	resp, err := c.Get(fmt.Sprintf("http://127.0.0.1:%d/version", port))
	if err != nil {
		return "error: " + err.Error()
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return strings.TrimSpace(string(b))
}

func current(t *testing.T, r *Runner) string {
	t.Helper()
	c, err := r.Dir().Current()
	if err != nil {
		t.Fatal(err)
	}
	return c
}

func mustRun(t *testing.T, r *Runner, cmd Command, want Outcome) Result {
	t.Helper()
	var stages []string
	res := r.Run(t.Context(), cmd, func(s string) { stages = append(stages, s) })
	if res.Outcome != want {
		t.Fatalf("%s %s: outcome %s, want %s (failed stage %q: %s); stages %v", cmd.Kind, cmd.Release, res.Outcome, want, res.FailedStage, res.Error, res.Stages)
	}
	t.Logf("%s %s: %s, progress %v", cmd.Kind, cmd.Release, res.Outcome, stages)
	return res
}

func noJournal(t *testing.T, r *Runner) {
	t.Helper()
	if j, err := r.ReadJournal(); err != nil || j != nil {
		t.Fatalf("journal left behind: %+v, %v", j, err)
	}
}

func TestDeployUpgradeRollbackAndReplay(t *testing.T) {
	srv := serveArtifacts(t)
	state, port := t.TempDir(), freePort(t)
	r := newRunner(t, state, port, testLogger(t))

	mustRun(t, r, deployCmd(srv, "c1", "v1"), OutcomeSucceeded)
	if got := answers(t, port); got != "v1" {
		t.Fatalf("after v1: service answers %q", got)
	}
	res := mustRun(t, r, deployCmd(srv, "c2", "v2"), OutcomeSucceeded)
	if got := answers(t, port); got != "v2" {
		t.Fatalf("after v2: service answers %q", got)
	}
	if res.Previous != "v1" || current(t, r) != "v2" {
		t.Fatalf("previous %q current %q", res.Previous, current(t, r))
	}
	if ents, _ := os.ReadDir(filepath.Join(r.Dir().Path(), downloadsDir)); len(ents) != 0 {
		t.Errorf("downloads left: %v", ents)
	}

	// v3 fails its health check: rolled back to v2.
	res = mustRun(t, r, deployCmd(srv, "c3", "v3"), OutcomeRolledBack)
	if res.FailedStage != StageHealth {
		t.Errorf("failed stage %q, want health", res.FailedStage)
	}
	if got := answers(t, port); got != "v2" {
		t.Fatalf("after v3 rollback: service answers %q", got)
	}
	if c := current(t, r); c != "v2" {
		t.Fatalf("current %q after rollback, want v2", c)
	}
	// The undo restores previous too: a later "roll back to previous" must
	// not go to the broken v3.
	if p, err := r.Dir().Previous(); err != nil || p != "v1" {
		t.Fatalf("previous %q, %v after rollback, want v1", p, err)
	}
	var hookOut string
	var undone []string
	for _, st := range res.Stages {
		if st.Name == StageOnRollback {
			hookOut = st.HookOutput
		}
		if st.Undone {
			undone = append(undone, st.Name)
		}
	}
	if last := res.Stages[len(res.Stages)-1]; last.Name != StageRollbackHealth || last.Error != "" {
		t.Errorf("last stage report %+v, want a passing %s", last, StageRollbackHealth)
	}
	if !strings.Contains(hookOut, "on_rollback v3 back to v2") {
		t.Errorf("on_rollback output %q", hookOut)
	}
	if strings.Join(undone, ",") != "fetch,unpack,swap,restart" {
		t.Errorf("undone stages %v", undone)
	}
	noJournal(t, r)

	// The same command id again: the stored result, no work.
	start := time.Now()
	called := false
	again := r.Run(t.Context(), deployCmd(srv, "c3", "v3"), func(string) { called = true })
	if !again.Replayed || again.Outcome != OutcomeRolledBack || again.FailedStage != StageHealth || called {
		t.Fatalf("replay: %+v (progress called: %v)", again, called)
	}
	if d := time.Since(start); d > time.Second {
		t.Errorf("replay took %v", d)
	}

	// Roll back to a named release, then redeploy v2 (already on disk: no fetch).
	mustRun(t, r, Command{ID: "c4", Kind: KindRollback, Release: "v1"}, OutcomeSucceeded)
	if got := answers(t, port); got != "v1" {
		t.Fatalf("after rollback to v1: service answers %q", got)
	}
	res = mustRun(t, r, deployCmd(srv, "c5", "v2"), OutcomeSucceeded)
	if !res.Stages[0].Skipped || res.Stages[0].Name != StageFetch {
		t.Errorf("fetch of a release on disk not skipped: %+v", res.Stages[0])
	}
	if got := answers(t, port); got != "v2" {
		t.Fatalf("after redeploy v2: service answers %q", got)
	}
}

func TestWrongSHA256FailsAtVerify(t *testing.T) {
	srv := serveArtifacts(t)
	state, port := t.TempDir(), freePort(t)
	r := newRunner(t, state, port, testLogger(t))
	mustRun(t, r, deployCmd(srv, "c1", "v1"), OutcomeSucceeded)

	cmd := deployCmd(srv, "c2", "v2")
	cmd.SHA256 = sha([]byte("something else"))
	res := mustRun(t, r, cmd, OutcomeFailed)
	if res.FailedStage != StageVerify || !strings.Contains(res.Error, "verify") {
		t.Fatalf("failed stage %q error %q", res.FailedStage, res.Error)
	}
	if c := current(t, r); c != "v1" {
		t.Fatalf("current %q, want v1", c)
	}
	if got := answers(t, port); got != "v1" {
		t.Fatalf("service answers %q", got)
	}
	ents, err := os.ReadDir(filepath.Join(r.Dir().Path(), "releases"))
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range ents {
		if e.Name() != "v1" {
			t.Errorf("left in releases/: %s", e.Name())
		}
	}
	if ents, _ := os.ReadDir(filepath.Join(r.Dir().Path(), downloadsDir)); len(ents) != 0 {
		t.Errorf("downloads left: %v", ents)
	}
	noJournal(t, r)
	for _, st := range res.Stages {
		if st.Name == StageOnRollback {
			t.Errorf("on_rollback ran for a failure before anything live was touched")
		}
	}
}

func TestInvalidCommands(t *testing.T) {
	state, port := t.TempDir(), freePort(t)
	r := newRunner(t, state, port, hclog.NewNullLogger())
	tests := []struct {
		name string
		give Command
		want string
	}{
		{"bad id", Command{ID: "../x", Kind: KindDeploy, Release: "v1", ArtifactURL: "http://x/"}, "invalid command id"},
		{"bad release", Command{ID: "a", Kind: KindDeploy, Release: "../v1", ArtifactURL: "http://x/"}, "release"},
		{"no previous", Command{ID: "b", Kind: KindRollback}, "no previous release"},
		{"unknown release", Command{ID: "c", Kind: KindRollback, Release: "v9"}, "not on this host"},
		{"unknown kind", Command{ID: "d", Kind: "dance", Release: "v1"}, "unknown command kind"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			res := r.Run(t.Context(), tt.give, nil)
			if res.Outcome != OutcomeFailed || !strings.Contains(res.Error, tt.want) {
				t.Fatalf("got %s %q, want FAILED %q", res.Outcome, res.Error, tt.want)
			}
		})
	}
}

// Cancelling the operation once the swap has begun does not cut it in half:
// swap and restart complete, then the step is undone back to v1.
func TestCancelDuringSwapUndoesCompletely(t *testing.T) {
	srv := serveArtifacts(t)
	state, port := t.TempDir(), freePort(t)
	r := newRunner(t, state, port, testLogger(t))
	mustRun(t, r, deployCmd(srv, "c1", "v1"), OutcomeSucceeded)

	ctx, cancel := context.WithCancel(t.Context())
	defer cancel()
	res := r.Run(ctx, deployCmd(srv, "c2", "v2"), func(stage string) {
		if stage == StageSwap {
			cancel() // e.g. the agent is asked to stop
		}
	})
	if res.Outcome != OutcomeRolledBack || res.FailedStage != StageHealth {
		t.Fatalf("outcome %s at %q: %s", res.Outcome, res.FailedStage, res.Error)
	}
	for _, st := range res.Stages {
		if (st.Name == StageSwap || st.Name == StageRestart) && (st.Error != "" || !st.Undone || st.UndoError != "") {
			t.Errorf("critical stage %+v", st)
		}
	}
	if c := current(t, r); c != "v1" {
		t.Fatalf("current %q, want v1", c)
	}
	if got := answers(t, port); got != "v1" {
		t.Fatalf("service answers %q, want v1", got)
	}
	noJournal(t, r)

	// Cancelled before the swap: nothing live is touched, nothing undone live.
	ctx, cancel = context.WithCancel(t.Context())
	res = r.Run(ctx, deployCmd(srv, "c3", "v3"), func(stage string) {
		if stage == StageFetch {
			cancel()
		}
	})
	cancel()
	// v3 is not on disk, so fetch runs, under a cancelled context.
	if res.Outcome != OutcomeFailed || res.FailedStage != StageFetch || !strings.Contains(res.Error, "canceled") {
		t.Fatalf("outcome %s at %q: %s", res.Outcome, res.FailedStage, res.Error)
	}
	if got := answers(t, port); got != "v1" {
		t.Fatalf("service answers %q, want v1", got)
	}
}

// A broken first release has nothing to roll back to: FAILED, service stopped.
func TestBrokenFirstDeployFails(t *testing.T) {
	srv := serveArtifacts(t)
	state, port := t.TempDir(), freePort(t)
	r := newRunner(t, state, port, testLogger(t))
	res := mustRun(t, r, deployCmd(srv, "c1", "v3"), OutcomeFailed)
	if res.FailedStage != StageHealth {
		t.Fatalf("failed stage %q: %s", res.FailedStage, res.Error)
	}
	if r.cfg.Manager.Running() {
		t.Fatal("broken first release left running")
	}
	noJournal(t, r)
}
