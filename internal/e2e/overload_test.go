package e2e

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
	"go.uber.org/zap"

	"github.com/golive/golive/internal/etcdtest"
	"github.com/golive/golive/internal/state"
	"github.com/golive/golive/internal/testenv"
	golivev1 "github.com/golive/golive/proto/golive/v1"
)

// cpuQuota confines pid to share of one CPU with a CPU cgroup of its own
// (cgroup v2 cpu.max, or v1 cpu.cfs_quota_us); the cleanup moves it back
// and removes the group. It skips the test when no writable CPU
// controller is mounted here.
func cpuQuota(t *testing.T, pid int, share float64) {
	t.Helper()
	// A period of 1 s (the longest allowed): the process runs share of
	// each second, then waits for the next, as a controller does behind a
	// queue of busier processes.
	const period = 1000000
	quota := int(share * period)
	name := "golive-e2e-" + randHex(4)
	type layout struct{ root, periodFile, limitFile, limit string }
	for _, l := range []layout{
		{"/sys/fs/cgroup", "", "cpu.max", fmt.Sprintf("%d %d", quota, period)},
		{"/sys/fs/cgroup/cpu", "cpu.cfs_period_us", "cpu.cfs_quota_us", strconv.Itoa(quota)},
	} {
		if _, err := os.Stat(filepath.Join(l.root, "cgroup.procs")); err != nil {
			continue
		}
		dir := filepath.Join(l.root, name)
		if err := os.Mkdir(dir, 0o755); err != nil {
			continue
		}
		undo := func() {
			os.WriteFile(filepath.Join(l.root, "cgroup.procs"), []byte(strconv.Itoa(pid)), 0o644)
			os.Remove(dir)
		}
		if l.periodFile != "" {
			if err := os.WriteFile(filepath.Join(dir, l.periodFile), []byte(strconv.Itoa(period)), 0o644); err != nil {
				undo()
				continue
			}
		}
		if err := os.WriteFile(filepath.Join(dir, l.limitFile), []byte(l.limit), 0o644); err != nil {
			undo()
			continue
		}
		if err := os.WriteFile(filepath.Join(dir, "cgroup.procs"), []byte(strconv.Itoa(pid)), 0o644); err != nil {
			undo()
			continue
		}
		t.Cleanup(func() {
			if b, err := os.ReadFile(filepath.Join(dir, "cpu.stat")); err == nil {
				t.Logf("controller's CPU cgroup: %s", strings.Join(strings.Fields(string(b)), " "))
			}
			undo()
		})
		t.Logf("controller (pid %d) confined to %.0f%% of a CPU (%s/%s = %s)", pid, share*100, dir, l.limitFile, l.limit)
		return
	}
	t.Skip("no writable CPU cgroup controller here: cannot starve the controller")
}

// hclogTime is the timestamp an hclog line starts with.
var hclogTime = regexp.MustCompile(`^(\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z)`)

// firstLineAfter is the time of the first line of log, logged at or after
// since, that contains every one of subs (zero: none).
func firstLineAfter(log string, since time.Time, subs ...string) time.Time {
	for _, line := range strings.Split(log, "\n") {
		m := hclogTime.FindStringSubmatch(line)
		if m == nil {
			continue
		}
		at, err := time.Parse("2006-01-02T15:04:05.000Z", m[1])
		if err != nil || at.Before(since.Truncate(time.Millisecond)) {
			continue
		}
		all := true
		for _, s := range subs {
			all = all && strings.Contains(line, s)
		}
		if all {
			return at
		}
	}
	return time.Time{}
}

// linesAfter counts log's lines logged at or after since containing sub.
func linesAfter(log string, since time.Time, sub string) int {
	n := 0
	for _, line := range strings.Split(log, "\n") {
		m := hclogTime.FindStringSubmatch(line)
		if m == nil || !strings.Contains(line, sub) {
			continue
		}
		if at, err := time.Parse("2006-01-02T15:04:05.000Z", m[1]); err == nil && !at.Before(since.Truncate(time.Millisecond)) {
			n++
		}
	}
	return n
}

// TestOverloadedControllerDoesNotCollapse starves the controller (its
// process, with its embedded etcd, held to 2% of one CPU by a cgroup
// quota: 20 ms in each second) while 20 real agents run a canary + 25%
// waves rollout with a gate, then a rollout of a release that fails health
// on every host (the fleet is rolled back). The lapse of its etcd sessions
// that starvation brings on a loaded machine is made certain: with steps in
// flight, the test ends the leases of its presence keys and of its
// leadership. It may be slow; it must not collapse:
//   - no agent stream is closed because the controller's etcd session
//     lapsed (the session is renewed and the streams claimed again),
//   - no agent halts a step in flight,
//   - the good rollout succeeds and every host serves it; the bad one ends
//     rolled_back with a reason, and no host result says "no reason given",
//   - a revoke, still starved, reaches every connected agent within 1 s.
func TestOverloadedControllerDoesNotCollapse(t *testing.T) {
	const n = 20
	bin := testenv.Binaries(t)
	rel, sums := testenv.Releases(t)
	ctlAddr, httpAddr, etcdAddr := etcdtest.FreeAddr(t), etcdtest.FreeAddr(t), etcdtest.FreeAddr(t)
	ctlProc := start(t, "controller", filepath.Join(bin, "golive-controller"), "serve", "--listen", ctlAddr, "--metrics-addr", httpAddr,
		"--data-dir", t.TempDir(), "--embedded-etcd-client", etcdAddr, "--embedded-etcd-peer", etcdtest.FreeAddr(t),
		"--artifacts-dir", rel, "--heartbeat-interval", "2s")
	f := &fleet{t: t, bin: bin, sums: sums, httpAddr: httpAddr, addrs: []string{ctlAddr}}
	f.ctl, f.ctx = testenv.Control(t, ctlAddr, "alice")
	for i := 1; i <= n; i++ {
		f.hosts = append(f.hosts, startSampleHost(t, bin, ctlAddr, fmt.Sprintf("web-%d", i)))
	}
	testenv.WaitFor(t, 90*time.Second, fmt.Sprintf("%d agents connected", n), func() bool {
		st, err := f.ctl.Status(f.ctx, &golivev1.StatusRequest{})
		return err == nil && int(st.AgentsConnected) == n
	})
	f.authorize()
	if r := finishWithin(t, f, f.start("v1", 0, "100%", time.Second), 3*time.Minute); r.State != "succeeded" {
		t.Fatalf("v1: %s %s", r.State, r.Reason)
	}

	cpuQuota(t, ctlProc.cmd.Process.Pid, 0.02)
	starved := time.Now()

	etcd, err := clientv3.New(clientv3.Config{Endpoints: []string{"http://" + etcdAddr}, DialTimeout: 5 * time.Second, Logger: zap.NewNop()})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { etcd.Close() })
	keys := state.NewKeys("/golive/")

	begin := time.Now()
	id := f.start("v2", 1, "25%", time.Second)
	// The lapse starvation brings, made certain: once steps are in flight,
	// the leases of the controller's presence keys and of its leadership
	// end.
	testenv.WaitFor(t, 3*time.Minute, "a wave's steps in flight", func() bool {
		r := f.rollout(id)
		if r == nil {
			return false
		}
		for _, h := range r.Hosts {
			if h.State == "pending" && r.CurrentWave >= 1 {
				return true
			}
		}
		return false
	})
	leases := map[clientv3.LeaseID]string{}
	for _, prefix := range []string{keys.Presences(), keys.Leader()} {
		resp, err := etcd.Get(f.ctx, prefix, clientv3.WithPrefix())
		if err != nil {
			t.Fatal(err)
		}
		for _, kv := range resp.Kvs {
			leases[clientv3.LeaseID(kv.Lease)] = prefix
		}
	}
	lapsed := time.Now()
	for l, prefix := range leases {
		if _, err := etcd.Revoke(f.ctx, l); err != nil {
			t.Fatalf("revoke the lease of %s: %v", prefix, err)
		}
	}
	t.Logf("ended %d leases (presence and leadership) with steps in flight", len(leases))
	r := finishWithin(t, f, id, 5*time.Minute)
	t.Logf("v2 under starvation: %s in %s (%q), %d waves", r.State, time.Since(begin).Round(time.Millisecond), r.Reason, len(r.Waves))
	if r.State != "succeeded" {
		t.Errorf("v2 under starvation ended %s: %s", r.State, r.Reason)
	}
	for id, got := range f.serving() {
		if got != "v2" && r.State == "succeeded" {
			t.Errorf("%s serves %q after v2 succeeded", id, got)
		}
	}

	begin = time.Now()
	r = finishWithin(t, f, f.start("v3", 0, "100%", time.Second), 5*time.Minute)
	t.Logf("v3 (fails health everywhere) under starvation: %s in %s (%q)", r.State, time.Since(begin).Round(time.Millisecond), r.Reason)
	if r.State != "rolled_back" {
		t.Errorf("v3 under starvation ended %s (%s), want rolled_back", r.State, r.Reason)
	}
	if strings.Contains(r.Reason, "no reason given") {
		t.Errorf("v3's reason: %q", r.Reason)
	}
	for _, h := range r.Hosts {
		if strings.Contains(h.Error, "no reason given") {
			t.Errorf("%s: %s %q", h.HostId, h.State, h.Error)
		}
	}

	// A stop, still starved: every agent logs the revoke within 1 s of
	// the call.
	called := time.Now()
	if _, err := f.ctl.Revoke(f.ctx, &golivev1.RevokeRequest{Reason: "overload test: stop"}); err != nil {
		t.Fatalf("revoke: %v", err)
	}
	var slowest time.Duration
	testenv.WaitFor(t, 30*time.Second, "every agent logged the revoke", func() bool {
		slowest = 0
		for _, h := range f.hosts {
			at := firstLineAfter(h.out.String(), called, "approval changed", "reason=revoked")
			if at.IsZero() {
				return false
			}
			slowest = max(slowest, at.Sub(called))
		}
		return true
	})
	t.Logf("revoke under starvation reached all %d agents within %s of the call", n, slowest.Round(time.Millisecond))
	if slowest > time.Second {
		t.Errorf("the revoke reached the last agent %s after the call, want within 1s", slowest.Round(time.Millisecond))
	}

	clog := ctlProc.out.String()
	lost, renewed := linesAfter(clog, starved, "etcd session lost"), linesAfter(clog, starved, "etcd session renewed")
	t.Logf("controller while starved: %d etcd session lapses (presence), %d renewed and claimed again, %d leadership losses",
		lost, renewed, linesAfter(clog, starved, "lost leadership"))
	if at := firstLineAfter(clog, lapsed, "etcd session renewed"); at.IsZero() {
		t.Errorf("the controller never renewed its presence session after the lease ended")
	} else {
		t.Logf("presence session renewed and streams claimed again %s after the lease ended", at.Sub(lapsed).Round(time.Millisecond))
	}
	ends, kept := 0, 0
	for _, h := range f.hosts {
		log := h.out.String()
		ends += linesAfter(log, starved, "controller stream ended")
		kept += linesAfter(log, starved, "keeping the approval token while reconnecting")
		if n := linesAfter(log, starved, "halting step"); n > 0 && firstLineAfter(log, starved, "halting step").Before(called) {
			t.Errorf("%s halted a step in flight while the controller was starved (%d times)", h.id, n)
		}
		if n := linesAfter(log, starved, "lost its etcd session"); n > 0 {
			t.Errorf("%s: its stream was closed %d times because the controller's etcd session lapsed", h.id, n)
		}
	}
	t.Logf("agents while starved: %d stream ends (%d kept their token through it)", ends, kept)
}

// finishWithin waits up to d for rollout id to end.
func finishWithin(t *testing.T, f *fleet, id string, d time.Duration) *golivev1.Rollout {
	t.Helper()
	var r *golivev1.Rollout
	testenv.WaitFor(t, d, "rollout "+id+" to finish", func() bool {
		ctx, cancel := context.WithTimeout(f.ctx, 10*time.Second)
		defer cancel()
		resp, err := f.ctl.GetRollout(ctx, &golivev1.GetRolloutRequest{Id: id})
		if err != nil {
			return false
		}
		r = resp.Rollout
		switch r.State {
		case "succeeded", "failed", "rolled_back", "aborted":
			return true
		}
		return false
	})
	return r
}
