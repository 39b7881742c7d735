package deploystep

import (
	"context"
	"crypto/ed25519"
	"fmt"
	"slices"
	"time"

	"github.com/golive/golive/internal/artifact"
	"github.com/golive/golive/internal/releasedir"
)

// reuse is how a deploy treats a release id already committed on the host.
type reuse int

const (
	// reuseFresh: the release is not on the host: fetch, verify, unpack.
	reuseFresh reuse = iota
	// reuseSame: its manifest records the command's sha256 (and a signer
	// the agent still trusts): fetch, verify and unpack are skipped.
	reuseSame
	// reuseResign: same sha256, but the recorded signer is not (or no
	// longer) trusted: fetch and verify run, the tree is kept (same bytes),
	// the manifest records the new signer.
	reuseResign
	// reuseLegacy: the tree has no manifest (unpacked by an older agent):
	// fetch, verify and unpack into staging run, and the tree is kept only
	// if it is the same as the one just unpacked (the manifest is written);
	// otherwise the deploy is refused.
	reuseLegacy
)

// artifactPlan decides how a deploy treats its release id. It returns an
// error (the deploy is refused, nothing changed) when the release id is
// already on the host with another artifact.
func (r *Runner) artifactPlan(cmd Command) (reuse, *releasedir.Manifest, error) {
	ok, err := r.dir.Exists(cmd.Release)
	if err != nil || !ok {
		return reuseFresh, nil, err
	}
	m, err := r.dir.Manifest(cmd.Release)
	if err != nil {
		return reuseFresh, nil, fmt.Errorf("release %s is on this host but its manifest is unreadable (%v): deploy it under a new release id", cmd.Release, err)
	}
	if m == nil {
		return reuseLegacy, nil, nil
	}
	if !m.SameSHA256(cmd.SHA256) {
		return reuseFresh, nil, fmt.Errorf("release %s is already on this host with artifact sha256 %s, and this deploy names sha256 %s (%s): a release id names one artifact; deploy the new artifact under a new release id",
			cmd.Release, m.SHA256, cmd.SHA256, cmd.ArtifactURL)
	}
	if len(r.cfg.TrustedKeys) == 0 || r.trusts(m.SignerKeyID) {
		return reuseSame, m, nil
	}
	return reuseResign, m, nil
}

// trusts reports whether keyID names one of the configured trusted keys.
func (r *Runner) trusts(keyID string) bool {
	return keyID != "" && slices.ContainsFunc(r.cfg.TrustedKeys, func(k ed25519.PublicKey) bool { return artifact.KeyID(k) == keyID })
}

// alreadyLive is a rollback to the release current already names: when the
// service runs and passes its health check there is nothing to do, and the
// result says so (SUCCEEDED, Unchanged, no stop or restart). ok is false
// when the service must be restarted after all (the normal rollback runs).
func (r *Runner) alreadyLive(ctx context.Context, cmd Command, res *Result) (Result, bool) {
	if !r.cfg.Manager.Running() {
		return Result{}, false
	}
	hctx, cancel := context.WithTimeout(ctx, r.cfg.CriticalTimeout)
	defer cancel()
	start := time.Now()
	if err := r.waitHealthy(hctx); err != nil {
		r.log.Info("rollback target is current but not healthy: restarting it", "release", cmd.Release, "error", err)
		return Result{}, false
	}
	out := *res
	note := "release " + cmd.Release + " is already live, running and healthy: not restarted (nothing to roll back)"
	out.Stages = []StageReport{
		{Name: StageSwap, Skipped: true, Note: "current already names " + cmd.Release},
		{Name: StageRestart, Skipped: true, Note: note},
		{Name: StageHealth, Seconds: time.Since(start).Seconds()},
	}
	out.Outcome, out.Unchanged = OutcomeSucceeded, true
	r.log.Info("rollback to the live, healthy release: nothing to do", "command_id", cmd.ID, "release", cmd.Release)
	return out, true
}

// liveNote completes NothingChanged with what still runs.
func liveNote(live string) string {
	if live == "" {
		return " (no release was live)"
	}
	return " (release " + live + " is still live; it was not stopped or restarted)"
}
