package rollout

import (
	"errors"
	"fmt"
	"reflect"
	"strings"
	"testing"
	"time"
)

func fleet(n int) []Host {
	var hs []Host
	// Out of order on purpose: Plan sorts.
	for i := n; i >= 1; i-- {
		role := "web"
		if i%2 == 0 {
			role = "api"
		}
		hs = append(hs, Host{ID: fmt.Sprintf("h%02d", i), Labels: map[string]string{"role": role},
			Services: []string{"shop"}, Releases: map[string]string{"shop": "v1"}})
	}
	return hs
}

func spec(mut func(*Spec)) Spec {
	s := Spec{Service: "shop", Release: "v2", Gate: DefaultGate(), ProgressDeadline: DefaultProgressDeadline}
	if mut != nil {
		mut(&s)
	}
	return s
}

func waveHosts(s Schedule) [][]string {
	var out [][]string
	for _, w := range s.Waves {
		out = append(out, w.Hosts)
	}
	return out
}

func TestPlan(t *testing.T) {
	lost := fleet(3)
	lost[0].Lost = true // h03
	noSvc := append(fleet(2), Host{ID: "db1", Services: []string{"postgres"}})
	tests := []struct {
		name      string
		giveHosts []Host
		giveSpec  Spec
		want      [][]string
		wantNames []string
		wantErr   error
		wantMsg   string
	}{
		{
			name: "all hosts one wave", giveHosts: fleet(3), giveSpec: spec(nil),
			want: [][]string{{"h01", "h02", "h03"}}, wantNames: []string{"wave 1"},
		},
		{
			name: "canary then batches of 2", giveHosts: fleet(5), giveSpec: spec(func(s *Spec) { s.Canary = 1; s.Batch = "2" }),
			want: [][]string{{"h01"}, {"h02", "h03"}, {"h04", "h05"}}, wantNames: []string{"canary", "wave 1", "wave 2"},
		},
		{
			name: "percent of the fleet rounds up", giveHosts: fleet(10), giveSpec: spec(func(s *Spec) { s.Canary = 1; s.Batch = "25%" }),
			want: [][]string{{"h01"}, {"h02", "h03", "h04"}, {"h05", "h06", "h07"}, {"h08", "h09", "h10"}},
		},
		{
			name: "100 hosts canary 1 batches of 25%", giveHosts: fleet(100), giveSpec: spec(func(s *Spec) { s.Canary = 1; s.Batch = "25%" }),
			wantNames: []string{"canary", "wave 1", "wave 2", "wave 3", "wave 4"},
		},
		{
			name: "canary is the whole fleet", giveHosts: fleet(2), giveSpec: spec(func(s *Spec) { s.Canary = 2 }),
			want: [][]string{{"h01", "h02"}}, wantNames: []string{"canary"},
		},
		{
			name: "selector", giveHosts: fleet(5), giveSpec: spec(func(s *Spec) { s.Selector = map[string]string{"role": "api"} }),
			want: [][]string{{"h02", "h04"}},
		},
		{
			name: "default skips hosts without the service", giveHosts: noSvc, giveSpec: spec(nil),
			want: [][]string{{"h01", "h02"}},
		},
		{
			name: "explicit hosts sorted", giveHosts: fleet(5), giveSpec: spec(func(s *Spec) { s.Hosts = []string{"h04", "h02"}; s.Batch = "1" }),
			want: [][]string{{"h02"}, {"h04"}},
		},
		{
			name: "no host matches selector", giveHosts: fleet(3), giveSpec: spec(func(s *Spec) { s.Selector = map[string]string{"role": "db"} }),
			wantErr: ErrNoHosts, wantMsg: `no host runs service "shop" with labels role=db`,
		},
		{
			name: "no host runs service", giveHosts: fleet(3), giveSpec: spec(func(s *Spec) { s.Service = "blog" }),
			wantErr: ErrNoHosts, wantMsg: `no host runs service "blog"`,
		},
		{
			name: "canary larger than fleet", giveHosts: fleet(3), giveSpec: spec(func(s *Spec) { s.Canary = 4 }),
			wantErr: ErrInvalid, wantMsg: "--canary 4 is larger than the 3 selected hosts",
		},
		{name: "batch 0", giveHosts: fleet(3), giveSpec: spec(func(s *Spec) { s.Batch = "0" }), wantErr: ErrInvalid, wantMsg: `--batch "0"`},
		{name: "batch 0%", giveHosts: fleet(3), giveSpec: spec(func(s *Spec) { s.Batch = "0%" }), wantErr: ErrInvalid, wantMsg: `--batch "0%"`},
		{name: "batch 150%", giveHosts: fleet(3), giveSpec: spec(func(s *Spec) { s.Batch = "150%" }), wantErr: ErrInvalid, wantMsg: `--batch "150%"`},
		{name: "batch abc", giveHosts: fleet(3), giveSpec: spec(func(s *Spec) { s.Batch = "abc" }), wantErr: ErrInvalid, wantMsg: `--batch "abc"`},
		{
			name: "unknown hosts", giveHosts: fleet(3), giveSpec: spec(func(s *Spec) { s.Hosts = []string{"h01", "zz", "aa"} }),
			wantErr: ErrUnknownHost, wantMsg: `hosts "aa", "zz" are not known`,
		},
		{
			name: "host lacking the service", giveHosts: noSvc, giveSpec: spec(func(s *Spec) { s.Hosts = []string{"h01", "db1"} }),
			wantErr: ErrInvalid, wantMsg: `host "db1" does not run service "shop"`,
		},
		{
			name: "host named twice", giveHosts: fleet(3), giveSpec: spec(func(s *Spec) { s.Hosts = []string{"h01", "h01"} }),
			wantErr: ErrInvalid, wantMsg: `host "h01" is named twice`,
		},
		{
			name: "hosts and selector", giveHosts: fleet(3),
			giveSpec: spec(func(s *Spec) { s.Hosts = []string{"h01"}; s.Selector = map[string]string{"role": "web"} }),
			wantErr:  ErrInvalid, wantMsg: "not both",
		},
		{
			name: "lost host selected", giveHosts: lost, giveSpec: spec(nil),
			wantErr: ErrUnavailable, wantMsg: `host "h03" is lost`,
		},
		{
			name: "deadline shorter than bake", giveHosts: fleet(3), giveSpec: spec(func(s *Spec) { s.ProgressDeadline = 10 * time.Second }),
			wantErr: ErrInvalid, wantMsg: "--progress-deadline 10s must be longer than --min-healthy 30s",
		},
		{
			name: "no latency limit", giveHosts: fleet(3), giveSpec: spec(func(s *Spec) { s.Gate.MaxAvgLatency = 0 }),
			wantErr: ErrInvalid, wantMsg: "--max-avg-latency",
		},
		{
			name: "error rate 100%", giveHosts: fleet(3), giveSpec: spec(func(s *Spec) { s.Gate.MaxErrorRate = 1 }),
			wantErr: ErrInvalid, wantMsg: "--max-error-rate",
		},
		{
			name: "no service", giveHosts: fleet(3), giveSpec: spec(func(s *Spec) { s.Service = "" }),
			wantErr: ErrInvalid, wantMsg: "--service",
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := Plan(tt.giveHosts, tt.giveSpec)
			if tt.wantErr != nil {
				if !errors.Is(err, tt.wantErr) {
					t.Fatalf("Plan() error = %v, want %v", err, tt.wantErr)
				}
				if !strings.Contains(err.Error(), tt.wantMsg) {
					t.Fatalf("Plan() error = %q, want it to contain %q", err, tt.wantMsg)
				}
				return
			}
			if err != nil {
				t.Fatalf("Plan() error = %v", err)
			}
			if tt.want != nil && !reflect.DeepEqual(waveHosts(got), tt.want) {
				t.Errorf("waves = %v, want %v", waveHosts(got), tt.want)
			}
			if tt.wantNames != nil {
				var names []string
				for _, w := range got.Waves {
					names = append(names, w.Name)
				}
				if !reflect.DeepEqual(names, tt.wantNames) {
					t.Errorf("wave names = %v, want %v", names, tt.wantNames)
				}
			}
			// Every selected host is in exactly one wave, waves indexed in order.
			seen := map[string]int{}
			for i, w := range got.Waves {
				if w.Index != i {
					t.Errorf("wave %d has index %d", i, w.Index)
				}
				for _, h := range w.Hosts {
					seen[h]++
				}
			}
			if len(seen) != len(got.Hosts) {
				t.Errorf("waves hold %d hosts, plan %d", len(seen), len(got.Hosts))
			}
			for h, n := range seen {
				if n != 1 {
					t.Errorf("host %s in %d waves", h, n)
				}
			}
			again, _ := Plan(tt.giveHosts, tt.giveSpec)
			if !reflect.DeepEqual(got, again) {
				t.Errorf("Plan is not deterministic")
			}
		})
	}
}

func TestPlanRecordsPreviousRelease(t *testing.T) {
	s, err := Plan(fleet(2), spec(nil))
	if err != nil {
		t.Fatal(err)
	}
	if want := map[string]string{"h01": "v1", "h02": "v1"}; !reflect.DeepEqual(s.Previous, want) {
		t.Errorf("Previous = %v, want %v", s.Previous, want)
	}
}

func TestParseBatch(t *testing.T) {
	tests := []struct {
		give     string
		want     Batch
		wantErr  bool
		wantSize int // for a fleet of 10
	}{
		{give: "", want: Batch{}, wantSize: 10},
		{give: "1", want: Batch{N: 1}, wantSize: 1},
		{give: " 5 ", want: Batch{N: 5}, wantSize: 5},
		{give: "25%", want: Batch{Percent: 25}, wantSize: 3},
		{give: "100%", want: Batch{Percent: 100}, wantSize: 10},
		{give: "1%", want: Batch{Percent: 1}, wantSize: 1},
		{give: "0", wantErr: true},
		{give: "-1", wantErr: true},
		{give: "0%", wantErr: true},
		{give: "150%", wantErr: true},
		{give: "2.5%", wantErr: true},
		{give: "abc", wantErr: true},
		{give: "%", wantErr: true},
	}
	for _, tt := range tests {
		t.Run(tt.give, func(t *testing.T) {
			got, err := ParseBatch(tt.give)
			if tt.wantErr {
				if !errors.Is(err, ErrInvalid) {
					t.Fatalf("ParseBatch(%q) error = %v, want ErrInvalid", tt.give, err)
				}
				return
			}
			if err != nil || got != tt.want {
				t.Fatalf("ParseBatch(%q) = %+v, %v; want %+v", tt.give, got, err, tt.want)
			}
			if n := got.Size(10); n != tt.wantSize {
				t.Errorf("Size(10) = %d, want %d", n, tt.wantSize)
			}
		})
	}
}

func TestParseRate(t *testing.T) {
	tests := []struct {
		give    string
		want    float64
		wantErr bool
	}{
		{give: "0.1%", want: 0.001},
		{give: "1%", want: 0.01},
		{give: "0%", want: 0},
		{give: "0.001", want: 0.001},
		{give: " 2.5 % ", want: 0.025},
		{give: "100%", wantErr: true},
		{give: "1", wantErr: true},
		{give: "-0.1%", wantErr: true},
		{give: "NaN", wantErr: true},
		{give: "abc%", wantErr: true},
		{give: "", wantErr: true},
	}
	for _, tt := range tests {
		t.Run(tt.give, func(t *testing.T) {
			got, err := ParseRate(tt.give)
			if tt.wantErr {
				if !errors.Is(err, ErrInvalid) {
					t.Fatalf("ParseRate(%q) = %v, %v; want ErrInvalid", tt.give, got, err)
				}
				return
			}
			if err != nil || diff(got, tt.want) > 1e-12 {
				t.Fatalf("ParseRate(%q) = %v, %v; want %v", tt.give, got, err, tt.want)
			}
		})
	}
}

func diff(a, b float64) float64 {
	if a > b {
		return a - b
	}
	return b - a
}

func TestParseSelector(t *testing.T) {
	tests := []struct {
		give    string
		want    map[string]string
		wantErr bool
	}{
		{give: "", want: nil},
		{give: "role=web", want: map[string]string{"role": "web"}},
		{give: "role=web, zone=a", want: map[string]string{"role": "web", "zone": "a"}},
		{give: "role", wantErr: true},
		{give: "=web", wantErr: true},
		{give: "a=1,a=2", wantErr: true},
	}
	for _, tt := range tests {
		t.Run(tt.give, func(t *testing.T) {
			got, err := ParseSelector(tt.give)
			if tt.wantErr {
				if !errors.Is(err, ErrInvalid) {
					t.Fatalf("ParseSelector(%q) error = %v, want ErrInvalid", tt.give, err)
				}
				return
			}
			if err != nil || !reflect.DeepEqual(got, tt.want) {
				t.Fatalf("ParseSelector(%q) = %v, %v; want %v", tt.give, got, err, tt.want)
			}
			if tt.want != nil {
				back, _ := ParseSelector(FormatSelector(got))
				if !reflect.DeepEqual(back, got) {
					t.Errorf("FormatSelector round trip = %v", back)
				}
			}
		})
	}
}

func FuzzParseBatch(f *testing.F) {
	for _, s := range []string{"", "1", "25%", "0", "150%", "abc"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		b, err := ParseBatch(s)
		if err != nil {
			return
		}
		for _, n := range []int{1, 7, 100} {
			if size := b.Size(n); size < 1 {
				t.Fatalf("ParseBatch(%q).Size(%d) = %d", s, n, size)
			}
		}
	})
}
