package controllercli

import (
	"strings"
	"testing"

	golivev1 "github.com/golive/golive/proto/golive/v1"
)

func TestWatchShowsLiveStageAndHealth(t *testing.T) {
	resp := &golivev1.WatchRolloutResponse{Rollout: &golivev1.Rollout{Id: "r1", Service: "app", Release: "v2", State: "wave",
		Hosts: []*golivev1.HostProgress{{HostId: "web-1", State: "running"}, {HostId: "web-2", State: "waiting"}}}}
	live := map[string]hostLive{"web-1": {stage: "health", health: "ok 0/12 err 3ms"}, "web-2": {stage: "", health: "-"}}
	var b strings.Builder
	printWatch(&b, resp, live, 80)
	out := b.String()
	if !strings.Contains(out, "web-1  running  health  ok 0/12 err 3ms") {
		t.Errorf("web-1's stage and health not shown:\n%s", out)
	}
	b.Reset()
	printWatch(&b, resp, nil, 80)
	if !strings.Contains(b.String(), "web-1  running  -      -") {
		t.Errorf("without the agents' records:\n%s", b.String())
	}
}

func TestWatchErrorsFitTheTerminal(t *testing.T) {
	long := strings.Repeat("fetch: connection refused ", 20)
	resp := &golivev1.WatchRolloutResponse{Rollout: &golivev1.Rollout{Id: "r1", Service: "app", State: "failed", Reason: long,
		Hosts: []*golivev1.HostProgress{{HostId: "web-1", State: "failed", Error: long}}}}
	var b strings.Builder
	printWatch(&b, resp, nil, 60)
	for _, line := range strings.Split(b.String(), "\n") {
		if n := len([]rune(line)); n > 60 {
			t.Errorf("line of %d columns on a 60-column terminal: %q", n, line)
		}
	}
}

// On a pipe, a bake prints a line when something changes, not each second.
func TestWatchKeyIgnoresTheBakeClock(t *testing.T) {
	at := func(baked float64, state string) *golivev1.WatchRolloutResponse {
		return &golivev1.WatchRolloutResponse{Rollout: &golivev1.Rollout{Id: "r1", State: state},
			Gate: &golivev1.GateStatus{Wave: 0, BakedSeconds: baked, WindowSeconds: 60, ErrorRate: baked / 1e6}}
	}
	if watchKey(at(1, "canary"), nil) != watchKey(at(2, "canary"), nil) {
		t.Error("a second of baking is a change")
	}
	if watchKey(at(1, "canary"), nil) == watchKey(at(1, "wave"), nil) {
		t.Error("a new state is not a change")
	}
}

func TestJSONValueWords(t *testing.T) {
	a := &golivev1.Agent{HostId: "web-1", FencingToken: 9, Address: "<a&b>", RecentResults: []*golivev1.CommandResult{{CommandId: "c1", Outcome: golivev1.CommandOutcome_COMMAND_OUTCOME_ROLLED_BACK}}}
	var b strings.Builder
	if err := writeJSON(&b, jsonValue(a), true); err != nil {
		t.Fatal(err)
	}
	out := b.String()
	for _, want := range []string{`"fencing_token":9`, `"outcome":"rolled_back"`, `"address":"<a&b>"`} {
		if !strings.Contains(out, want) {
			t.Errorf("JSON lacks %s: %s", want, out)
		}
	}
	for _, bad := range []string{"COMMAND_OUTCOME", `"last_heartbeat"`, "null", "\n "} {
		if strings.Contains(out, bad) {
			t.Errorf("JSON has %q: %s", bad, out)
		}
	}
}
