package e2e

import (
	"encoding/base64"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"google.golang.org/protobuf/types/known/durationpb"

	"github.com/golive/golive/internal/artifact"
	"github.com/golive/golive/internal/etcdtest"
	"github.com/golive/golive/internal/testenv"
	golivev1 "github.com/golive/golive/proto/golive/v1"
)

// TestSignedArtifactsEndToEnd: an agent process with a trusted key deploys
// through the controller. An unsigned artifact, one signed by another key,
// and one carrying the trusted key's signature of other bytes all fail at
// the verify stage: the host keeps serving the current release, `current`
// still points at it and nothing of the refused release is unpacked. The
// correctly signed artifact deploys.
func TestSignedArtifactsEndToEnd(t *testing.T) {
	bin := testenv.Binaries(t)
	rel, sums := testenv.Releases(t)
	ctlAddr, httpAddr := etcdtest.FreeAddr(t), etcdtest.FreeAddr(t)
	start(t, "controller", filepath.Join(bin, "golive-controller"), "serve", "--listen", ctlAddr, "--metrics-addr", httpAddr,
		"--data-dir", t.TempDir(), "--embedded-etcd-client", etcdtest.FreeAddr(t), "--embedded-etcd-peer", etcdtest.FreeAddr(t),
		"--artifacts-dir", rel, "--heartbeat-interval", "1s")

	keys := t.TempDir()
	trustedPriv, trustedPub := filepath.Join(keys, "trusted.key"), filepath.Join(keys, "trusted.pub")
	otherPriv, otherPub := filepath.Join(keys, "other.key"), filepath.Join(keys, "other.pub")
	if _, err := artifact.Keygen(trustedPriv, trustedPub); err != nil {
		t.Fatal(err)
	}
	if _, err := artifact.Keygen(otherPriv, otherPub); err != nil {
		t.Fatal(err)
	}
	sign := func(priv, v string) []byte {
		t.Helper()
		s, err := artifact.Sign(priv, filepath.Join(rel, "sampleapp-"+v+".tar.gz"))
		if err != nil {
			t.Fatal(err)
		}
		b, err := base64.StdEncoding.DecodeString(s)
		if err != nil {
			t.Fatal(err)
		}
		return b
	}

	h := &sampleHost{id: "signed-1", port: freePort(t), state: t.TempDir()}
	h.conf = writeAgentConfig(t, h.id, h.port, h.state)
	src, err := os.ReadFile(h.conf)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(h.conf, []byte(fmt.Sprintf("trusted_keys = [%q]\n%s", trustedPub, src)), 0o644); err != nil {
		t.Fatal(err)
	}
	h.proc = start(t, h.id, filepath.Join(bin, "golive-agent"), "run", "--controller", ctlAddr, "--config", h.conf,
		"--metrics-addr", "", "--grpc-addr", "")

	ctl, ctx := testenv.Control(t, ctlAddr, "signer")
	testenv.WaitFor(t, 30*time.Second, "controller serving", func() bool {
		_, err := ctl.Status(ctx, &golivev1.StatusRequest{})
		return err == nil
	})
	if _, err := ctl.Authorize(ctx, &golivev1.AuthorizeRequest{Phrase: "Start automation now", Ttl: durationpb.New(time.Hour)}); err != nil {
		t.Fatal(err)
	}
	testenv.WaitFor(t, 30*time.Second, "agent connected with the token", func() bool {
		la, err := ctl.ListAgents(ctx, &golivev1.ListAgentsRequest{})
		return err == nil && len(la.Agents) == 1 && la.Agents[0].State == "connected" && la.Agents[0].FencingToken != 0
	})

	deploy := func(v string, sig []byte) *golivev1.Rollout {
		t.Helper()
		resp, err := ctl.Deploy(ctx, &golivev1.DeployRequest{Service: "app", Release: v, Hosts: []string{h.id},
			ArtifactUrl: "http://" + httpAddr + "/artifacts/sampleapp-" + v + ".tar.gz", Sha256: sums[v], Signature: sig,
			MinHealthy: durationpb.New(time.Second)})
		if err != nil {
			t.Fatalf("deploy %s: %v", v, err)
		}
		return finish(t, ctl, ctx, resp.Rollout.Id)
	}
	svcDir := filepath.Join(h.state, "services", "app")
	releases := func() []string {
		t.Helper()
		ents, err := os.ReadDir(filepath.Join(svcDir, "releases"))
		if err != nil {
			t.Fatal(err)
		}
		var out []string
		for _, e := range ents {
			out = append(out, e.Name())
		}
		return out
	}
	current := func() string {
		t.Helper()
		target, err := os.Readlink(filepath.Join(svcDir, "current"))
		if err != nil {
			t.Fatal(err)
		}
		return filepath.Base(target)
	}

	if r := deploy("v1", sign(trustedPriv, "v1")); r.State != "succeeded" {
		t.Fatalf("v1 correctly signed: rollout %s %s %v", r.State, r.Reason, r.Hosts)
	}
	if got := h.answers(); got != "v1" {
		t.Fatalf("answers %q after the signed v1", got)
	}
	before := releases()

	for _, c := range []struct {
		name string
		sig  []byte
		want string // in the host's error
	}{
		{"unsigned", nil, "signature"},
		{"signed by another key", sign(otherPriv, "v2"), "signature"},
		{"trusted key's signature of other bytes", sign(trustedPriv, "v1"), "signature"},
		{"garbage signature", []byte("not a signature"), "signature"},
	} {
		r := deploy("v2", c.sig)
		if r.State == "succeeded" || len(r.Hosts) != 1 {
			t.Fatalf("%s: rollout %s %v", c.name, r.State, r.Hosts)
		}
		hp := r.Hosts[0]
		// The host's deploy failed at verify (the executor then rolls the
		// host back to what it ran: a no-op here).
		if (hp.State != "failed" && hp.State != "rollback_succeeded") || !strings.HasPrefix(hp.Error, "verify: ") ||
			!strings.Contains(strings.ToLower(hp.Error), c.want) {
			t.Fatalf("%s: host result state=%q stage=%q error=%q, want failed at verify", c.name, hp.State, hp.Stage, hp.Error)
		}
		if got := current(); got != "v1" {
			t.Fatalf("%s: current -> %s, want v1", c.name, got)
		}
		if got := releases(); strings.Join(got, ",") != strings.Join(before, ",") {
			t.Fatalf("%s: releases %v, were %v: something was unpacked", c.name, got, before)
		}
		if got := h.answers(); got != "v1" {
			t.Fatalf("%s: answers %q, want v1", c.name, got)
		}
		t.Logf("%s: refused: %s", c.name, hp.Error)
	}

	if r := deploy("v2", sign(trustedPriv, "v2")); r.State != "succeeded" {
		t.Fatalf("v2 correctly signed: rollout %s %s %v", r.State, r.Reason, r.Hosts)
	}
	if got, cur := h.answers(), current(); got != "v2" || cur != "v2" {
		t.Fatalf("after the signed v2: answers %q, current %s", got, cur)
	}
}
