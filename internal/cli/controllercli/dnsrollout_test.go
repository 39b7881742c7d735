package controllercli

import (
	"bytes"
	"strings"
	"testing"
	"time"

	"google.golang.org/protobuf/types/known/timestamppb"

	golivev1 "github.com/golive/golive/proto/golive/v1"
)

// TestRolloutShowsItsDNS: `rollout ID` and watch (screen and pipe lines)
// show each record's before/after, state and confirmation time.
func TestRolloutShowsItsDNS(t *testing.T) {
	at := time.Date(2026, 12, 2, 14, 0, 5, 0, time.UTC)
	r := &golivev1.Rollout{Id: "r1", Kind: "deploy", Service: "app", Release: "v2", State: "succeeded",
		Dns: []*golivev1.RolloutDns{{Name: "app.example.test.", Type: "A", Pool: "green", Action: "set", State: "succeeded",
			Before: []string{"192.0.2.10"}, After: []string{"198.51.100.10"}, ConfirmedAt: timestamppb.New(at)}}}
	var b bytes.Buffer
	printRollout(&b, r)
	for _, want := range []string{"app.example.test. A", "set -> green", "succeeded", "192.0.2.10", "198.51.100.10", "2026-12-02T14:00:05Z"} {
		if !strings.Contains(b.String(), want) {
			t.Fatalf("rollout output lacks %q:\n%s", want, b.String())
		}
	}
	resp := &golivev1.WatchRolloutResponse{Rollout: r}
	line := watchLine(resp, nil)
	if want := "dns=app.example.test/A:succeeded[192.0.2.10]->[198.51.100.10]@14:00:05"; !strings.Contains(line, want) {
		t.Fatalf("watch line %q lacks %q", line, want)
	}
	b.Reset()
	printWatch(&b, resp, nil, 200)
	if !strings.Contains(b.String(), "set -> green") {
		t.Fatalf("watch screen lacks the DNS table:\n%s", b.String())
	}
	r.Dns[0].RestoreState, r.Dns[0].RestoredAt = "succeeded", timestamppb.New(at.Add(time.Minute))
	if k := watchKey(resp, nil); !strings.Contains(k, "succeeded, restore succeeded") {
		t.Fatalf("watch key %q does not change with the restore", k)
	}
}
