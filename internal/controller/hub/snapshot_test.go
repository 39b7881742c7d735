package hub

import (
	"testing"

	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/timestamppb"

	golivev1 "github.com/golive/golive/proto/golive/v1"
)

// TestSnapshot: a snapshot equals the record; setting its top-level fields
// leaves the record and later snapshots alone; a change of the record
// (gen) shows in the next snapshot.
func TestSnapshot(t *testing.T) {
	c := &agentConn{record: &golivev1.Agent{HostId: "h", Labels: map[string]string{"a": "b"}, FencingToken: 3, State: "connected",
		LastHeartbeat: timestamppb.Now(), Services: []*golivev1.ServiceState{{Name: "app", CurrentRelease: "v1"}},
		RecentResults: []*golivev1.CommandResult{{CommandId: "c1"}}}}
	s1 := c.snapshot()
	if !proto.Equal(s1, c.record) {
		t.Fatalf("snapshot %v, want %v", s1, c.record)
	}
	s1.State, s1.FencingToken = "lost", 0
	if c.record.State != "connected" || c.snapshot().State != "connected" {
		t.Fatal("setting a snapshot's field changed the record or the next snapshot")
	}
	c.mu.Lock()
	c.record.Services[0].CurrentRelease = "v2"
	c.gen++
	c.mu.Unlock()
	if got := c.snapshot().Services[0].CurrentRelease; got != "v2" {
		t.Fatalf("after a change the snapshot shows %s, want v2", got)
	}
	if got := s1.Services[0].CurrentRelease; got != "v1" {
		t.Fatalf("an earlier snapshot changed with the record: %s", got)
	}
}
