package deploystep

import (
	"crypto/ed25519"
	"crypto/rand"
	"encoding/base64"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/golive/golive/internal/artifact"
	"github.com/golive/golive/internal/releasedir"
	"github.com/golive/golive/internal/svcmgr/execmgr"
)

// serveWith serves the sample releases as /sampleapp-<v>.tar.gz and extra
// artifacts by path; anything else is a 404.
func serveWith(t *testing.T, extra map[string][]byte) *httptest.Server {
	t.Helper()
	buildReleases(t)
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if b, ok := extra[r.URL.Path]; ok {
			_, _ = w.Write(b)
			return
		}
		v := strings.TrimSuffix(strings.TrimPrefix(r.URL.Path, "/sampleapp-"), ".tar.gz")
		if b, ok := tarballs[v]; ok {
			_, _ = w.Write(b)
			return
		}
		http.NotFound(w, r)
	}))
	t.Cleanup(srv.Close)
	return srv
}

// live is the process that serves: its pid and the manager's restart count.
type live struct{ pid, restarts int }

func liveProc(t *testing.T, r *Runner) live {
	t.Helper()
	m := r.cfg.Manager.(*execmgr.Manager)
	if !m.Running() || m.PID() == 0 {
		t.Fatalf("service not running (pid %d)", m.PID())
	}
	return live{m.PID(), m.Restarts()}
}

func hasStage(res Result, name string) bool { return stageReport(res, name) != nil }

// A deploy that fails before the swap leaves the live service alone: the
// same process serves before and after, the result is FAILED and Unchanged,
// and its error says nothing changed.
func TestFailureBeforeSwapChangesNothing(t *testing.T) {
	buildReleases(t)
	_, priv, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	sign := func(b []byte) string { return base64.StdEncoding.EncodeToString(ed25519.Sign(priv, b)) }
	// An artifact that carries its own manifest is refused at unpack.
	bin := filepath.Join(t.TempDir(), "sampleapp")
	if err := os.WriteFile(bin, []byte("#!/bin/sh\n"), 0o755); err != nil {
		t.Fatal(err)
	}
	withManifest, err := makeTarball(bin, "v2", tarFile{name: releasedir.ManifestName, mode: 0o644, body: `{"release":"v2","sha256":"00"}`})
	if err != nil {
		t.Fatal(err)
	}
	srv := serveWith(t, map[string][]byte{"/forged.tar.gz": withManifest})
	state, port := t.TempDir(), freePort(t)
	r := newRunnerWith(t, state, port, testLogger(t), func(c *Config) {
		c.TrustedKeys = []ed25519.PublicKey{priv.Public().(ed25519.PublicKey)}
	})
	v1 := deployCmd(srv, "c1", "v1")
	v1.Signature = sign(tarballs["v1"])
	mustRun(t, r, v1, OutcomeSucceeded)
	before := liveProc(t, r)

	v2 := func(id string) Command {
		c := deployCmd(srv, id, "v2")
		c.Signature = sign(tarballs["v2"])
		return c
	}
	tests := []struct {
		name      string
		give      Command
		wantStage string
		wantErr   string
	}{
		{"fetch 404", func() Command { c := v2("f1"); c.ArtifactURL = srv.URL + "/nope.tar.gz"; return c }(), StageFetch, "404"},
		{"wrong sha256", func() Command { c := v2("f2"); c.SHA256 = sha([]byte("other")); return c }(), StageVerify, "sha256 mismatch"},
		{"bad signature", func() Command { c := v2("f3"); c.Signature = sign([]byte("other")); return c }(), StageVerify, "signature"},
		{"no signature", func() Command { c := v2("f4"); c.Signature = ""; return c }(), StageVerify, "signature"},
		{"unpack refuses a forged manifest", Command{ID: "f5", Kind: KindDeploy, Release: "v2", ArtifactURL: srv.URL + "/forged.tar.gz",
			SHA256: sha(withManifest), Signature: sign(withManifest)}, StageUnpack, releasedir.ManifestName},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			res := mustRun(t, r, tt.give, OutcomeFailed)
			if res.FailedStage != tt.wantStage || !strings.Contains(res.Error, tt.wantErr) {
				t.Fatalf("failed stage %q error %q, want %q containing %q", res.FailedStage, res.Error, tt.wantStage, tt.wantErr)
			}
			if !res.Unchanged || !strings.Contains(res.Error, NothingChanged) {
				t.Fatalf("unchanged %v, error %q", res.Unchanged, res.Error)
			}
			if hasStage(res, StageOnRollback) || hasStage(res, StageRollbackHealth) || hasStage(res, StageSwap) {
				t.Fatalf("a failure before the swap ran live stages: %+v", res.Stages)
			}
			if got := liveProc(t, r); got != before {
				t.Fatalf("live process %+v, want %+v (not stopped or restarted)", got, before)
			}
			if c := current(t, r); c != "v1" {
				t.Fatalf("current %q, want v1", c)
			}
			if ok, _ := r.Dir().Exists("v2"); ok {
				t.Fatal("release v2 committed by a failed deploy")
			}
			if got := answers(t, port); got != "v1" {
				t.Fatalf("service answers %q", got)
			}
			noJournal(t, r)
		})
	}
}

// A release id names one artifact: re-deploying v2 with another artifact is
// refused before anything changes; with the same sha256 the fetch is skipped
// and the report says so.
func TestRedeployReleaseID(t *testing.T) {
	srv := serveWith(t, nil)
	state, port := t.TempDir(), freePort(t)
	r := newRunner(t, state, port, testLogger(t))
	mustRun(t, r, deployCmd(srv, "c1", "v1"), OutcomeSucceeded)
	mustRun(t, r, deployCmd(srv, "c2", "v2"), OutcomeSucceeded)
	m, err := r.Dir().Manifest("v2")
	if err != nil || m == nil || m.SHA256 != sha(tarballs["v2"]) || m.ArtifactURL == "" {
		t.Fatalf("manifest of v2: %+v, %v", m, err)
	}
	before := liveProc(t, r)

	other := Command{ID: "c3", Kind: KindDeploy, Release: "v2", ArtifactURL: srv.URL + "/nope.tar.gz", SHA256: sha([]byte("nope"))}
	res := mustRun(t, r, other, OutcomeFailed)
	if !res.Unchanged || !strings.Contains(res.Error, "new release id") || !strings.Contains(res.Error, NothingChanged) {
		t.Fatalf("re-deploy with another sha256: unchanged %v, error %q", res.Unchanged, res.Error)
	}
	if len(res.Stages) != 0 {
		t.Fatalf("a refused re-deploy ran stages: %+v", res.Stages)
	}
	if got := liveProc(t, r); got != before {
		t.Fatalf("live process %+v, want %+v", got, before)
	}
	if m2, _ := r.Dir().Manifest("v2"); *m2 != *m {
		t.Fatalf("manifest changed: %+v", m2)
	}

	// The same artifact from a URL that no longer answers: nothing fetched.
	same := Command{ID: "c4", Kind: KindDeploy, Release: "v2", ArtifactURL: srv.URL + "/gone.tar.gz", SHA256: strings.ToUpper(sha(tarballs["v2"]))}
	res = mustRun(t, r, same, OutcomeSucceeded)
	for _, name := range []string{StageFetch, StageVerify, StageUnpack} {
		if st := stageReport(res, name); st == nil || !st.Skipped || st.Note == "" {
			t.Fatalf("stage %s of a same-sha256 re-deploy: %+v", name, st)
		}
	}
	if st := stageReport(res, StageFetch); !strings.Contains(st.Note, "not fetched again") {
		t.Fatalf("fetch note %q", st.Note)
	}
	if got := answers(t, port); got != "v2" {
		t.Fatalf("service answers %q", got)
	}
}

// A release tree without a manifest (an older agent's) is kept only if the
// artifact unpacks to the same tree.
func TestRedeployLegacyReleaseWithoutManifest(t *testing.T) {
	srv := serveWith(t, nil)
	state, port := t.TempDir(), freePort(t)
	r := newRunner(t, state, port, testLogger(t))
	mustRun(t, r, deployCmd(srv, "c1", "v1"), OutcomeSucceeded)
	mustRun(t, r, deployCmd(srv, "c2", "v2"), OutcomeSucceeded)
	v1dir, _ := r.Dir().ReleasePath("v1")
	manifest := filepath.Join(v1dir, releasedir.ManifestName)

	// Same tree: adopted, manifest written.
	if err := os.Remove(manifest); err != nil {
		t.Fatal(err)
	}
	res := mustRun(t, r, deployCmd(srv, "c3", "v1"), OutcomeSucceeded)
	if st := stageReport(res, StageUnpack); st == nil || !strings.Contains(st.Note, "same tree") {
		t.Fatalf("unpack report %+v", st)
	}
	if m, err := r.Dir().Manifest("v1"); err != nil || m == nil || m.SHA256 != sha(tarballs["v1"]) {
		t.Fatalf("manifest after adoption: %+v, %v", m, err)
	}
	if got := answers(t, port); got != "v1" {
		t.Fatalf("service answers %q", got)
	}

	// Another tree under the same id: refused, nothing changed.
	mustRun(t, r, deployCmd(srv, "c4", "v2"), OutcomeSucceeded)
	before := liveProc(t, r)
	if err := os.Remove(manifest); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(v1dir, "VERSION"), []byte("changed\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	res = mustRun(t, r, deployCmd(srv, "c5", "v1"), OutcomeFailed)
	if res.FailedStage != StageUnpack || !res.Unchanged || !strings.Contains(res.Error, "new release id") || !strings.Contains(res.Error, "VERSION") {
		t.Fatalf("legacy tree that differs: stage %q unchanged %v error %q", res.FailedStage, res.Unchanged, res.Error)
	}
	if got := liveProc(t, r); got != before {
		t.Fatalf("live process %+v, want %+v", got, before)
	}
	if b, _ := os.ReadFile(filepath.Join(v1dir, "VERSION")); string(b) != "changed\n" {
		t.Fatalf("legacy tree changed: VERSION %q", b)
	}
	if m, _ := r.Dir().Manifest("v1"); m != nil {
		t.Fatalf("manifest written for a tree that differs: %+v", m)
	}
	if _, err := os.Stat(v1dir + ".tmp"); !os.IsNotExist(err) {
		t.Fatalf("staging left: %v", err)
	}
}

// A re-deploy of the same artifact whose recorded signer is no longer
// trusted is fetched and verified again, and the manifest names the new
// signer.
func TestRedeploySameArtifactNewSigner(t *testing.T) {
	srv := serveWith(t, nil)
	_, oldKey, _ := ed25519.GenerateKey(rand.Reader)
	_, newKey, _ := ed25519.GenerateKey(rand.Reader)
	state, port := t.TempDir(), freePort(t)
	keys := []ed25519.PublicKey{oldKey.Public().(ed25519.PublicKey)}
	r := newRunnerWith(t, state, port, testLogger(t), func(c *Config) { c.TrustedKeys = keys })
	cmd := deployCmd(srv, "c1", "v1")
	cmd.Signature = base64.StdEncoding.EncodeToString(ed25519.Sign(oldKey, tarballs["v1"]))
	mustRun(t, r, cmd, OutcomeSucceeded)
	if m, _ := r.Dir().Manifest("v1"); m == nil || m.SignerKeyID != artifact.KeyID(keys[0]) {
		t.Fatalf("manifest %+v", m)
	}
	// The same runner, new trust: the old key is rotated out.
	r.cfg.TrustedKeys = []ed25519.PublicKey{newKey.Public().(ed25519.PublicKey)}
	cmd = deployCmd(srv, "c2", "v1")
	cmd.Signature = base64.StdEncoding.EncodeToString(ed25519.Sign(oldKey, tarballs["v1"]))
	res := mustRun(t, r, cmd, OutcomeFailed)
	if res.FailedStage != StageVerify || !res.Unchanged {
		t.Fatalf("old signer after rotation: stage %q unchanged %v: %s", res.FailedStage, res.Unchanged, res.Error)
	}
	cmd = deployCmd(srv, "c3", "v1")
	cmd.Signature = base64.StdEncoding.EncodeToString(ed25519.Sign(newKey, tarballs["v1"]))
	res = mustRun(t, r, cmd, OutcomeSucceeded)
	if st := stageReport(res, StageFetch); st == nil || st.Skipped {
		t.Fatalf("fetch skipped although the signer is not trusted: %+v", st)
	}
	if m, _ := r.Dir().Manifest("v1"); m == nil || m.SignerKeyID != artifact.KeyID(r.cfg.TrustedKeys[0]) {
		t.Fatalf("manifest after re-sign %+v", m)
	}
}

// A rollback to the release that already runs and is healthy does nothing;
// one whose service is down restarts it.
func TestRollbackToLiveReleaseIsNoop(t *testing.T) {
	srv := serveWith(t, nil)
	state, port := t.TempDir(), freePort(t)
	r := newRunner(t, state, port, testLogger(t))
	mustRun(t, r, deployCmd(srv, "c1", "v1"), OutcomeSucceeded)
	mustRun(t, r, deployCmd(srv, "c2", "v2"), OutcomeSucceeded)
	before := liveProc(t, r)
	res := mustRun(t, r, Command{ID: "r1", Kind: KindRollback, Release: "v2"}, OutcomeSucceeded)
	if !res.Unchanged {
		t.Fatalf("no-op rollback not Unchanged: %+v", res)
	}
	if st := stageReport(res, StageRestart); st == nil || !st.Skipped || !strings.Contains(st.Note, "not restarted") {
		t.Fatalf("restart report %+v", st)
	}
	if got := liveProc(t, r); got != before {
		t.Fatalf("live process %+v, want %+v", got, before)
	}
	if p, _ := r.Dir().Previous(); p != "v1" || current(t, r) != "v2" {
		t.Fatalf("links moved: current %q previous %q", current(t, r), p)
	}
	// Sent again (another id, e.g. after a freeze): still nothing.
	mustRun(t, r, Command{ID: "r2", Kind: KindRollback, Release: "v2"}, OutcomeSucceeded)
	if got := liveProc(t, r); got != before {
		t.Fatalf("second rollback restarted: %+v, want %+v", got, before)
	}

	// Stopped: the rollback starts it.
	if err := r.cfg.Manager.Stop(t.Context()); err != nil {
		t.Fatal(err)
	}
	res = mustRun(t, r, Command{ID: "r3", Kind: KindRollback, Release: "v2"}, OutcomeSucceeded)
	if res.Unchanged || answers(t, port) != "v2" {
		t.Fatalf("rollback of a stopped service: unchanged %v, answers %q", res.Unchanged, answers(t, port))
	}
}

// A failed first deploy leaves no current naming it, and the release that
// never worked is never a rollback target.
func TestFailedFirstDeployLeavesNoCurrent(t *testing.T) {
	srv := serveWith(t, nil)
	state, port := t.TempDir(), freePort(t)
	r := newRunner(t, state, port, testLogger(t))
	res := mustRun(t, r, deployCmd(srv, "c1", "v3"), OutcomeFailed)
	if res.FailedStage != StageHealth || res.Unchanged {
		t.Fatalf("failed stage %q unchanged %v", res.FailedStage, res.Unchanged)
	}
	if c := current(t, r); c != "" {
		t.Fatalf("current %q after a failed first deploy, want none", c)
	}
	if _, err := os.Lstat(r.Dir().CurrentPath()); !os.IsNotExist(err) {
		t.Fatalf("current link left: %v", err)
	}
	res = mustRun(t, r, deployCmd(srv, "c2", "v1"), OutcomeSucceeded)
	if res.Previous != "" {
		t.Fatalf("deploy after a failed first deploy: previous %q, want none", res.Previous)
	}
	if p, _ := r.Dir().Previous(); p != "" {
		t.Fatalf("previous link %q, want none (v3 never worked)", p)
	}
	res = mustRun(t, r, Command{ID: "c3", Kind: KindRollback}, OutcomeFailed)
	if !strings.Contains(res.Error, "no previous release") || !res.Unchanged {
		t.Fatalf("rollback: %q unchanged %v", res.Error, res.Unchanged)
	}
	if got := answers(t, port); got != "v1" {
		t.Fatalf("service answers %q", got)
	}
}

// A backup that fails (no pre_swap hook ran) changed nothing either: the
// database was only read, the live process still serves.
func TestBackupFailureChangesNothing(t *testing.T) {
	srv := serveArtifacts(t)
	db := newDBFixture(t)
	state, port := t.TempDir(), freePort(t)
	r := newRunnerWith(t, state, port, testLogger(t), db.plan.apply)
	mustRun(t, r, deployCmd(srv, "c1", "m1"), OutcomeSucceeded)
	before, fp := liveProc(t, r), db.fingerprint(t)
	db.setTool(t, "pg_dump", "#!/bin/sh\nkill -9 $$\n")
	res := mustRun(t, r, deployCmd(srv, "c2", "m2"), OutcomeFailed)
	if res.FailedStage != StageBackup || !res.Unchanged || !strings.Contains(res.Error, NothingChanged) {
		t.Fatalf("stage %q unchanged %v error %q", res.FailedStage, res.Unchanged, res.Error)
	}
	if hasStage(res, StageOnRollback) || hasStage(res, StageRollbackHealth) {
		t.Fatalf("rollback stages ran: %+v", res.Stages)
	}
	if got := liveProc(t, r); got != before {
		t.Fatalf("live process %+v, want %+v", got, before)
	}
	if db.fingerprint(t) != fp || current(t, r) != "m1" {
		t.Fatalf("database or current changed (current %q)", current(t, r))
	}
}

// Recover of a first deploy that crashed after its swap, whose release then
// fails its health check: stopped, and no current names it.
func TestRecoverFailedFirstDeployLeavesNoCurrent(t *testing.T) {
	srv := serveWith(t, nil)
	state, port := t.TempDir(), freePort(t)
	r := newRunner(t, state, port, testLogger(t))
	mustRun(t, r, deployCmd(srv, "c0", "v3"), OutcomeFailed) // leaves v3 committed
	// What a kill -9 during c1's health stage leaves: current -> v3, journal.
	if err := r.Dir().Swap("v3"); err != nil {
		t.Fatal(err)
	}
	j := &Journal{CommandID: "c1", Kind: KindDeploy, Release: "v3", Stage: StageHealth,
		Completed: []string{StageFetch, StageVerify, StageUnpack, StagePreSwap, StageBackup, StageMigrate, StageSwap, StageRestart}}
	if err := writeJSON(r.journalPath(), j); err != nil {
		t.Fatal(err)
	}
	res, err := r.Recover(t.Context())
	if err != nil || res == nil {
		t.Fatalf("Recover: %+v, %v", res, err)
	}
	if res.Outcome != OutcomeFailed || res.Unchanged {
		t.Fatalf("recovered %s unchanged %v: %s", res.Outcome, res.Unchanged, res.Error)
	}
	if c := current(t, r); c != "" {
		t.Fatalf("current %q after recovering a failed first deploy, want none", c)
	}
	if r.cfg.Manager.Running() {
		t.Fatal("the failed first release still runs")
	}
	noJournal(t, r)
}
