package traffic

import (
	"fmt"
	"strings"
	"testing"
	"time"
)

// statOutput is what "show info;show stat -1 4 -1" answers for one server.
func statOutput(pid string, sid int, stot, h2xx, h5xx, econ, eresp, rtimeMS uint64) string {
	return fmt.Sprintf("Name: HAProxy\nPid: %s\nUptime_sec: 5\n\n"+
		"# pxname,svname,sid,stot,hrsp_1xx,hrsp_2xx,hrsp_3xx,hrsp_4xx,hrsp_5xx,hrsp_other,econ,eresp,rtime,\n"+
		"app,blue,%d,%d,0,%d,0,0,%d,0,%d,%d,%d,\n\n", pid, sid, stot, h2xx, h5xx, econ, eresp, rtimeMS)
}

// TestHAProxyDeltas: increases between reads are counted once; a reset
// (clear counters, a server added again with another id, another HAProxy
// process) counts the new values, never a negative or wrapped delta.
func TestHAProxyDeltas(t *testing.T) {
	c := newClock()
	w := NewWindow(WindowOptions{Size: time.Hour, Now: c.Now})
	r, err := NewHAProxyReader(HAProxyConfig{Socket: "/nonexistent", Now: c.Now, Servers: []Server{{Backend: "app", Server: "blue", Window: w}}})
	if err != nil {
		t.Fatal(err)
	}
	steps := []struct {
		name           string
		out            string
		requests, errs uint64
	}{
		{name: "baseline: history is not counted", out: statOutput("10", 1, 1000, 990, 10, 0, 0, 5)},
		{name: "100 more, 5 of them 5xx, 1 connect error", out: statOutput("10", 1, 1101, 1085, 15, 1, 0, 5), requests: 101, errs: 6},
		{name: "nothing new", out: statOutput("10", 1, 1101, 1085, 15, 1, 0, 5), requests: 101, errs: 6},
		{name: "clear counters all, then 20", out: statOutput("10", 1, 20, 20, 0, 0, 0, 5), requests: 121, errs: 6},
		{name: "server added again (another id), 3 so far", out: statOutput("10", 7, 3, 2, 1, 0, 0, 5), requests: 124, errs: 7},
		{name: "another process counted 2000 since it started", out: statOutput("11", 7, 2000, 2000, 0, 0, 0, 5), requests: 2124, errs: 7},
		{name: "and goes on", out: statOutput("11", 7, 2010, 2009, 0, 0, 1, 5), requests: 2134, errs: 8},
	}
	for _, s := range steps {
		c.Add(time.Second)
		if err := r.apply(s.out, c.Now()); err != nil {
			t.Fatalf("%s: %v", s.name, err)
		}
		st := w.Snapshot()
		if st.Requests != s.requests || st.Errors != s.errs {
			t.Fatalf("%s: %d requests %d errors, want %d and %d", s.name, st.Requests, st.Errors, s.requests, s.errs)
		}
	}
	if st := w.Snapshot(); st.AvgLatency != 5*time.Millisecond || st.HasP99 {
		t.Fatalf("latency %+v, want 5ms average and no p99", st)
	}
	if err := r.apply(strings.Replace(statOutput("11", 7, 0, 0, 0, 0, 0, 0), "app,blue", "app,other", 1), c.Now()); err == nil || !strings.Contains(err.Error(), "app/blue") {
		t.Fatalf("missing server: %v", err)
	}
	if err := r.apply("Unknown command\n", c.Now()); err == nil {
		t.Fatal("garbage accepted")
	}
}
