package controller_test

import (
	"context"
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/golive/golive/internal/dnsupdate/dnstest"
	"github.com/golive/golive/internal/etcdtest"
	"github.com/golive/golive/internal/state"
	"github.com/golive/golive/internal/testenv"
	golivev1 "github.com/golive/golive/proto/golive/v1"
)

// TestDNSLeaderKilledMidChange: a dns failover is in flight on replica a
// (its intent stored, the update sent to a primary that does not answer:
// named is SIGSTOPped) when a is killed with SIGKILL. Replica b leads, finds
// the change pending and, past the grace, resolves it from what the
// primary serves: one consistent state (stored values = served values,
// the failover's active pool = the served pool, one history entry and one
// audited end for the change).
func TestDNSLeaderKilledMidChange(t *testing.T) {
	if testing.Short() {
		t.Skip("builds the controller binary and waits out the pending grace")
	}
	s := dnstest.Start(t, dnstest.BIND)
	bin := testenv.Binaries(t)
	etcd := etcdtest.Start(t, 1)
	cli := etcd.Client(t)
	conf := dnsConfigFile(t, s, s.Secrets[dnstest.KeyGolive])
	replica := func(id string) (*exec.Cmd, string) {
		addr := etcdtest.FreeAddr(t)
		cmd := exec.Command(filepath.Join(bin, "golive-controller"), "serve", "--listen", addr, "--metrics-addr", etcdtest.FreeAddr(t),
			"--data-dir", t.TempDir(), "--replica-id", id, "--etcd-endpoints", strings.Join(etcd.Endpoints(), ","),
			"--dns-config", conf, "--dashboard-addr", "")
		out := &syncBuffer{}
		cmd.Stdout, cmd.Stderr = out, out
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() {
			cmd.Process.Kill()
			cmd.Wait()
			if t.Failed() {
				t.Logf("--- replica %s:\n%s", id, out.String())
			}
		})
		return cmd, addr
	}
	a, aAddr := replica("a")
	ctlA, ctx := testenv.Control(t, aAddr, "alice")
	testenv.WaitFor(t, 60*time.Second, "replica a leading", func() bool {
		st, err := ctlA.Status(ctx, &golivev1.StatusRequest{})
		return err == nil && st.Leader == "a"
	})
	_, bAddr := replica("b")
	ctlB, _ := testenv.Control(t, bAddr, "alice")
	testenv.WaitFor(t, 60*time.Second, "replica b serving", func() bool {
		_, err := ctlB.Status(ctx, &golivev1.StatusRequest{})
		return err == nil
	})
	// golive's first reading of www (while named answers).
	testenv.WaitFor(t, 30*time.Second, "www adopted", func() bool {
		r, err := ctlA.DnsShow(ctx, &golivev1.DnsShowRequest{Name: dnsWWW})
		return err == nil && r.Records[0].Last != nil
	})

	pidb, err := os.ReadFile(filepath.Join(s.Dir, "named.pid"))
	if err != nil {
		t.Fatal(err)
	}
	pid, err := strconv.Atoi(strings.TrimSpace(string(pidb)))
	if err != nil {
		t.Fatal(err)
	}
	if err := syscall.Kill(pid, syscall.SIGSTOP); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { syscall.Kill(pid, syscall.SIGCONT) })
	go ctlA.DnsFailover(context.WithoutCancel(ctx), &golivev1.DnsFailoverRequest{Name: dnsWWW, To: "green", Reason: "drill"})
	keys := state.NewKeys("/golive/")
	var seq uint64
	testenv.WaitFor(t, 30*time.Second, "the failover's intent stored", func() bool {
		resp, err := cli.Get(ctx, keys.DNSRecord(dnsWWW, "A"))
		if err != nil || len(resp.Kvs) == 0 {
			return false
		}
		var rec struct {
			Pending *struct {
				Seq uint64 `json:"seq"`
			} `json:"pending"`
		}
		json.Unmarshal(resp.Kvs[0].Value, &rec)
		if rec.Pending != nil {
			seq = rec.Pending.Seq
		}
		return rec.Pending != nil
	})
	if err := a.Process.Kill(); err != nil {
		t.Fatal(err)
	}
	a.Wait()
	syscall.Kill(pid, syscall.SIGCONT)

	var r *golivev1.DnsRecord
	testenv.WaitFor(t, 120*time.Second, "replica b resolving the change a left in flight", func() bool {
		resp, err := ctlB.DnsShow(ctx, &golivev1.DnsShowRequest{Name: dnsWWW})
		if err != nil {
			return false
		}
		r = resp.Records[0]
		return r.Pending == nil && r.QueryError == "" && r.Failover != nil && r.Failover.LastCheck != nil && hasEntry(t, ctlB, ctx, seq)
	})
	if r.Drift || !slices.Equal(r.StoredValues, r.ServedValues) {
		t.Fatalf("after the kill: stored %v, served %v (drift %v)", r.StoredValues, r.ServedValues, r.Drift)
	}
	want := "blue"
	if slices.Equal(r.ServedValues, dnsGreen) {
		want = "green"
	} else if !slices.Equal(r.ServedValues, dnsBlue) {
		t.Fatalf("the primary serves %v, neither pool", r.ServedValues)
	}
	if r.Failover.Active != want {
		t.Fatalf("the primary serves pool %s but the failover state says %s", want, r.Failover.Active)
	}
	ends := 0
	resp, err := ctlB.ListAudit(ctx, &golivev1.ListAuditRequest{Action: "dns_failover"})
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range resp.Entries {
		if e.Outcome != "started" && strings.Contains(e.Detail, " seq="+strconv.FormatUint(seq, 10)+" ") {
			ends++
		}
	}
	if ends != 1 {
		t.Fatalf("the change's end was audited %d times: %v", ends, resp.Entries)
	}
	t.Logf("resolved after the kill: serves %s (%v), last %v", want, r.ServedValues, r.Last)
}

// hasEntry reports whether the history has entry seq of www, once.
func hasEntry(t *testing.T, ctl golivev1.ControlServiceClient, ctx context.Context, seq uint64) bool {
	h, err := ctl.DnsHistory(ctx, &golivev1.DnsHistoryRequest{Name: dnsWWW})
	if err != nil {
		return false
	}
	n := 0
	for _, e := range h.Entries {
		if e.Seq == seq {
			n++
		}
	}
	if n > 1 {
		t.Fatalf("history holds entry %d %d times", seq, n)
	}
	return n == 1
}
