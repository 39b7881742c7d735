package dashboard_test

import (
	"bufio"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"strings"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/golive/golive/internal/etcdtest"
	"github.com/golive/golive/internal/testenv"
	golivev1 "github.com/golive/golive/proto/golive/v1"
)

// sseEvent is one server-sent event and its size on the wire.
type sseEvent struct {
	name string
	size int
	data string
	at   time.Time
}

func readEvents(t *testing.T, body io.Reader, out chan<- sseEvent) {
	sc := bufio.NewScanner(body)
	sc.Buffer(make([]byte, 1<<20), 16<<20)
	var ev sseEvent
	var data []string
	for sc.Scan() {
		line := sc.Text()
		ev.size += len(line) + 1
		switch {
		case line == "":
			if ev.name != "" {
				ev.data, ev.at = strings.Join(data, "\n"), time.Now()
				out <- ev
			}
			ev, data = sseEvent{}, nil
		case strings.HasPrefix(line, "event: "):
			ev.name = strings.TrimPrefix(line, "event: ")
		case strings.HasPrefix(line, "data: "):
			data = append(data, strings.TrimPrefix(line, "data: "))
		}
	}
	close(out)
}

// TestRealControllerAt5000Agents measures the dashboard of a real
// controller whose etcd holds 5,000 agents (their records and presence, as
// a fleet's replicas write them): the page's size and time, the first
// burst of events, and one agent's change in etcd reaching the page.
func TestRealControllerAt5000Agents(t *testing.T) {
	if testing.Short() {
		t.Skip("5,000 agent records")
	}
	cfg := testenv.ControllerConfig(t)
	cfg.DashboardAddr = etcdtest.FreeAddr(t)
	c := testenv.StartController(t, cfg)
	cli, keys := c.Client(), c.Keys()
	const n = 5000
	record := func(i int, release string) string {
		a := &golivev1.Agent{HostId: fmt.Sprintf("web-%05d", i), Labels: map[string]string{"role": "web", "dc": "dc1"},
			AgentVersion: "1.4.2", LastHeartbeat: timestamppb.Now(), ConnectedAt: timestamppb.Now(), Address: "10.0.0.1:7402",
			Services: []*golivev1.ServiceState{{Name: "shop", CurrentRelease: release, PreviousRelease: "v40", SwapMode: "blue-green",
				State: "running", ActiveSlot: "blue", Health: &golivev1.HealthWindow{Requests: 120, Errors: 0, AvgLatencyMs: 11, P99LatencyMs: 40,
					Healthy: i%101 != 0, LastProbe: timestamppb.Now(), WindowSeconds: 30}}}}
		b, _ := protojson.Marshal(a)
		return string(b)
	}
	ctx := t.Context()
	for lo := 0; lo < n; lo += 50 {
		var ops []clientv3.Op
		for i := lo; i < lo+50; i++ {
			host := fmt.Sprintf("web-%05d", i)
			ops = append(ops, clientv3.OpPut(keys.Agent(host), record(i, "v41")))
			if i%250 != 0 {
				p, _ := json.Marshal(map[string]any{"replica": "ctl-b", "conn_id": fmt.Sprint(i), "since": time.Now()})
				ops = append(ops, clientv3.OpPut(keys.Presence(host), string(p)))
			}
		}
		if _, err := cli.Txn(ctx).Then(ops...).Commit(); err != nil {
			t.Fatal(err)
		}
	}
	base := c.DashboardURL()
	var body string
	var took time.Duration
	testenv.WaitFor(t, 30*time.Second, "the page shows 5,000 agents", func() bool {
		start := time.Now()
		resp, err := http.Get(base + "/")
		if err != nil {
			return false
		}
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		took, body = time.Since(start), string(b)
		return strings.Contains(body, `data-connected="4980"`)
	})
	resp, err := http.Get(base + "/events")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	evs := make(chan sseEvent, 64)
	go readEvents(t, resp.Body, evs)
	first, burst := 0, 0
	for first < 5 {
		select {
		case ev := <-evs:
			first++
			burst += ev.size
		case <-time.After(30 * time.Second):
			t.Fatal("no first burst of events")
		}
	}
	// One agent's record changes in etcd (a new release on web-00007).
	put := time.Now()
	if _, err := cli.Put(ctx, keys.Agent("web-00007"), record(7, "v42")); err != nil {
		t.Fatal(err)
	}
	var change sseEvent
	for change.name == "" {
		select {
		case ev := <-evs:
			if ev.name == "agents" && strings.Contains(ev.data, `data-release="v42"`) {
				change = ev
			}
		case <-time.After(30 * time.Second):
			t.Fatal("the change never reached the page")
		}
	}
	lat := change.at.Sub(put)
	t.Logf("real controller, %d agents in etcd: page %d bytes in %s; first event burst %d bytes; one agent's change: %d-byte event, %s from the etcd write to the page",
		n, len(body), took.Round(time.Millisecond), burst, change.size, lat.Round(time.Millisecond))
	if lat > 5*time.Second {
		t.Errorf("a change took %s to reach the page", lat)
	}
}
