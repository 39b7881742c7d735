package analysis_test

import (
	"context"
	"crypto/x509"
	"encoding/pem"
	"fmt"
	"io"
	"log"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/golive/golive/internal/analysis"
	"github.com/golive/golive/internal/analysis/promtest"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// The backfilled data: samples every 15s from base-10m to base+10m, base
// three hours back (well inside retention, outside the head block). Every
// query below is evaluated at base, base+10s, ... so its answer is known.
const (
	step   = 15 * time.Second
	before = 10 * time.Minute
	after  = 10 * time.Minute
)

// series is one backfilled series: a gauge value, or a counter's rate.
type series struct {
	family, typ, labels string
	value               string  // gauges: the value at every sample
	rate                float64 // counters: increase per second
}

var data = []series{
	{family: "test_ratio", typ: "gauge", labels: `host="good"`, value: "0.0001"},
	{family: "test_ratio", typ: "gauge", labels: `host="bad"`, value: "0.05"},
	{family: "test_nan", typ: "gauge", labels: `host="h"`, value: "NaN"},
	{family: "test_inf", typ: "gauge", labels: `host="h"`, value: "+Inf"},
	{family: "test_multi", typ: "gauge", labels: `host="a"`, value: "1"},
	{family: "test_multi", typ: "gauge", labels: `host="b"`, value: "3"},
	// web-1.example serves 10 requests/s with 0.001 errors/s (ratio
	// 0.0001); web-2 has 10% errors. web-1xexample and web-1.example0
	// would match "web-1.example" if the dot were not escaped or the
	// regexp not anchored: their errors must never count.
	{family: "http_requests", typ: "counter", labels: `code="200",host="web-1.example"`, rate: 10},
	{family: "http_requests", typ: "counter", labels: `code="500",host="web-1.example"`, rate: 0.001},
	{family: "http_requests", typ: "counter", labels: `code="500",host="web-1xexample"`, rate: 5},
	{family: "http_requests", typ: "counter", labels: `code="500",host="web-1.example0"`, rate: 5},
	{family: "http_requests", typ: "counter", labels: `code="200",host="web-2"`, rate: 9},
	{family: "http_requests", typ: "counter", labels: `code="500",host="web-2"`, rate: 1},
}

func openMetrics(base time.Time) string {
	var b strings.Builder
	family := ""
	for _, s := range data {
		if s.family != family {
			fmt.Fprintf(&b, "# TYPE %s %s\n", s.family, s.typ)
			family = s.family
		}
		name := s.family
		if s.typ == "counter" {
			name += "_total"
		}
		for ts := base.Add(-before); !ts.After(base.Add(after)); ts = ts.Add(step) {
			v := s.value
			if s.typ == "counter" {
				v = fmt.Sprint(s.rate * ts.Sub(base.Add(-before)).Seconds())
			}
			fmt.Fprintf(&b, "%s{%s} %s %d\n", name, s.labels, v, ts.Unix())
		}
	}
	b.WriteString("# EOF\n")
	return b.String()
}

const errorRate = `sum(rate(http_requests_total{code=~"5..",host=~"{{hosts_regex}}"}[1m])) / sum(rate(http_requests_total{host=~"{{hosts_regex}}"}[1m]))`

// metric parses one metric block, as a user writes it.
func metric(t *testing.T, body string) analysis.Metric {
	t.Helper()
	ms, err := analysis.Parse([]byte("metric \"m\" {\n"+body+"\n}\n"), "analysis.hcl")
	if err != nil {
		t.Fatal(err)
	}
	return ms[0]
}

// runAt runs the metric to its end with Step at base, base+interval, ...
// (at most 20 steps), storing and reloading the State between steps as
// the leader does.
func runAt(t *testing.T, q analysis.Querier, m analysis.Metric, v analysis.Values, base time.Time) analysis.State {
	t.Helper()
	s, err := analysis.Start([]analysis.Metric{m}, v, base)
	if err != nil {
		t.Fatal(err)
	}
	for i := 0; i < 20 && !s.Done(); i++ {
		if s, err = analysis.Step(t.Context(), q, s, base.Add(time.Duration(i)*m.Interval)); err != nil {
			t.Fatal(err)
		}
		b, err := s.Encode()
		if err != nil {
			t.Fatal(err)
		}
		if s, err = analysis.Decode(b); err != nil {
			t.Fatal(err)
		}
	}
	return s
}

func newQuerier(t *testing.T, url string) *analysis.Prometheus {
	t.Helper()
	q, err := analysis.NewPrometheus(analysis.PrometheusConfig{URL: url, Timeout: 10 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(q.Close)
	return q
}

func TestPrometheus(t *testing.T) {
	base := time.Now().Add(-3 * time.Hour).Truncate(time.Minute)
	srv := promtest.Start(t, promtest.Options{OpenMetrics: openMetrics(base)})
	q := newQuerier(t, srv.URL)

	const common = "interval = \"10s\"\ncount = 3\n"
	wave1 := analysis.Values{Hosts: []string{"web-1.example"}, Service: "api", Release: "v2"}
	tests := []struct {
		name       string
		body       string
		values     analysis.Values
		wantPass   bool
		wantSteps  int
		wantValue  string
		wantVerd   analysis.Verdict
		wantReason string
	}{
		{name: "pass", body: "query = \"" + esc(errorRate) + "\"\nfail_if = \"> 0.001\"\n" + common, values: wave1,
			wantPass: true, wantSteps: 3, wantValue: "9.999000099989987e-05", wantVerd: analysis.VerdictPass, wantReason: "3 of 3 measurements passed"}, // 0.001/10.001
		{name: "fail_if breach", body: "query = \"" + esc(errorRate) + "\"\nfail_if = \"> 0.001\"\n" + common,
			values: analysis.Values{Hosts: []string{"web-2"}}, wantSteps: 1, wantValue: "0.1", wantVerd: analysis.VerdictFail, wantReason: "value 0.1 breaches fail_if > 0.001"},
		{name: "whole touched set fails with one bad host", body: "query = \"" + esc(errorRate) + "\"\nfail_if = \"> 0.001\"\n" + common,
			values: analysis.Values{Hosts: []string{"web-1.example", "web-2"}}, wantSteps: 1, wantVerd: analysis.VerdictFail, wantReason: "breaches fail_if > 0.001"},
		{name: "success_if", body: "query = \"test_ratio{host=\\\"good\\\"}\"\nsuccess_if = \"< 0.001\"\n" + common, values: wave1,
			wantPass: true, wantSteps: 3, wantValue: "0.0001", wantVerd: analysis.VerdictPass},
		{name: "success_if miss", body: "query = \"test_ratio{host=\\\"bad\\\"}\"\nsuccess_if = \"< 0.001\"\n" + common, values: wave1,
			wantSteps: 1, wantValue: "0.05", wantVerd: analysis.VerdictFail, wantReason: "value 0.05 breaches success_if < 0.001"},
		{name: "scalar", body: "query = \"scalar(test_ratio{host=\\\"good\\\"})\"\nfail_if = \"> 0.001\"\n" + common, values: wave1,
			wantPass: true, wantSteps: 3, wantValue: "0.0001", wantVerd: analysis.VerdictPass},
		{name: "empty vector", body: "query = \"test_ratio{host=\\\"nope\\\"}\"\nfail_if = \"> 0.001\"\n" + common, values: wave1,
			wantSteps: 1, wantVerd: analysis.VerdictInconclusive, wantReason: "no data: the query returned an empty vector"},
		{name: "empty vector on_no_data pass", body: "query = \"test_ratio{host=\\\"nope\\\"}\"\nfail_if = \"> 0.001\"\non_no_data = \"pass\"\n" + common, values: wave1,
			wantPass: true, wantSteps: 3, wantVerd: analysis.VerdictPass, wantReason: `3 had no data and passed by on_no_data = "pass"`},
		{name: "NaN", body: "query = \"test_nan\"\nfail_if = \"> 0.001\"\non_no_data = \"pass\"\n" + common, values: wave1,
			wantSteps: 1, wantValue: "NaN", wantVerd: analysis.VerdictInconclusive, wantReason: "cannot be judged"},
		{name: "NaN from a ratio over no traffic", body: "query = \"sum(rate(http_requests_total{code=\\\"500\\\",host=\\\"web-2\\\"}[1m])) * 0 / 0\"\nfail_if = \"> 0.001\"\n" + common, values: wave1,
			wantSteps: 1, wantValue: "NaN", wantVerd: analysis.VerdictInconclusive},
		{name: "Inf", body: "query = \"test_inf\"\nfail_if = \"> 0.001\"\n" + common, values: wave1,
			wantSteps: 1, wantValue: "+Inf", wantVerd: analysis.VerdictInconclusive, wantReason: "+Inf"},
		{name: "multi-series without reduce", body: "query = \"test_multi\"\nfail_if = \"> 2\"\n" + common, values: wave1,
			wantSteps: 1, wantVerd: analysis.VerdictInconclusive, wantReason: "2 series and no reduce"},
		{name: "multi-series reduce max", body: "query = \"test_multi\"\nfail_if = \"> 2\"\nreduce = \"max\"\n" + common, values: wave1,
			wantSteps: 1, wantValue: "3", wantVerd: analysis.VerdictFail, wantReason: "value 3 (max of 2 series) breaches fail_if > 2"},
		{name: "multi-series reduce min", body: "query = \"test_multi\"\nfail_if = \"> 2\"\nreduce = \"min\"\n" + common, values: wave1,
			wantPass: true, wantSteps: 3, wantValue: "1", wantVerd: analysis.VerdictPass},
		{name: "multi-series reduce sum", body: "query = \"test_multi\"\nfail_if = \">= 4\"\nreduce = \"sum\"\n" + common, values: wave1,
			wantSteps: 1, wantValue: "4", wantVerd: analysis.VerdictFail},
		{name: "query syntax error", body: "query = \"sum(rate(test_multi[1m])\"\nfail_if = \"> 2\"\n" + common, values: wave1,
			wantSteps: 1, wantVerd: analysis.VerdictError, wantReason: "the query cannot run: query refused by Prometheus"},
		{name: "matrix", body: "query = \"test_multi[1m]\"\nfail_if = \"> 2\"\n" + common, values: wave1,
			wantSteps: 1, wantVerd: analysis.VerdictInconclusive, wantReason: "range vector (matrix) of 2 series"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s := runAt(t, q, metric(t, tt.body), tt.values, base)
			if s.Passed() != tt.wantPass || !s.Done() {
				t.Fatalf("passed = %v, want %v: %s", s.Passed(), tt.wantPass, s.Summary())
			}
			if !strings.Contains(s.Summary(), tt.wantReason) {
				t.Errorf("summary %q does not say %q", s.Summary(), tt.wantReason)
			}
			ms := s.Metrics[0].Measurements
			if len(ms) != tt.wantSteps {
				t.Fatalf("%d measurements, want %d: %+v", len(ms), tt.wantSteps, ms)
			}
			last := ms[len(ms)-1]
			if last.Verdict != tt.wantVerd || (tt.wantValue != "" && last.Value != tt.wantValue) {
				t.Errorf("last measurement = %+v, want verdict %s value %q", last, tt.wantVerd, tt.wantValue)
			}
			for i, m := range ms {
				if !m.At.Equal(base.Add(time.Duration(i) * 10 * time.Second)) {
					t.Errorf("measurement %d evaluated at %v, want base+%ds", i, m.At, i*10)
				}
				if strings.Contains(m.Query, "{{") {
					t.Errorf("query sent with a placeholder: %s", m.Query)
				}
			}
		})
	}

	t.Run("query as sent", func(t *testing.T) {
		s := runAt(t, q, metric(t, "query = \""+esc(errorRate)+"\"\nfail_if = \"> 0.001\"\n"+common), wave1, base)
		want := `sum(rate(http_requests_total{code=~"5..",host=~"(?:web-1\\.example)"}[1m])) / sum(rate(http_requests_total{host=~"(?:web-1\\.example)"}[1m]))`
		if got := s.Metrics[0].Measurements[0].Query; got != want {
			t.Errorf("query sent = %s\nwant         %s", got, want)
		}
	})
}

// esc escapes a query for an HCL string.
func esc(s string) string { return strings.ReplaceAll(s, `"`, `\"`) }

func TestPrometheusStoppedMidRun(t *testing.T) {
	base := time.Now().Add(-3 * time.Hour).Truncate(time.Minute)
	srv := promtest.Start(t, promtest.Options{OpenMetrics: openMetrics(base)})
	q := newQuerier(t, srv.URL)
	m := metric(t, "query = \"test_ratio{host=\\\"good\\\"}\"\nfail_if = \"> 0.001\"\ninterval = \"10s\"\ncount = 3\nconsecutive_error_limit = 1\n")
	s, err := analysis.Start([]analysis.Metric{m}, analysis.Values{}, base)
	if err != nil {
		t.Fatal(err)
	}
	if s, err = analysis.Step(t.Context(), q, s, base); err != nil {
		t.Fatal(err)
	}
	if got := s.Metrics[0].Measurements[0].Verdict; got != analysis.VerdictPass || s.Done() {
		t.Fatalf("first measurement %s, done %v: %s", got, s.Done(), s.Summary())
	}
	srv.Stop()
	for i := 1; i <= 2; i++ {
		if s, err = analysis.Step(t.Context(), q, s, base.Add(time.Duration(i)*m.Interval)); err != nil {
			t.Fatal(err)
		}
		if got := s.Metrics[0].Measurements[i].Verdict; got != analysis.VerdictError {
			t.Fatalf("measurement %d with Prometheus stopped: %s", i, got)
		}
	}
	if s.Passed() || !s.Done() || !strings.Contains(s.Reason, "2 query errors in a row (consecutive_error_limit 1)") {
		t.Errorf("got %s", s.Summary())
	}
}

func TestRunBlocking(t *testing.T) {
	srv := promtest.Start(t, promtest.Options{})
	q := newQuerier(t, srv.URL)
	m := metric(t, "query = \"vector(0)\"\nfail_if = \"> 0\"\ninterval = \"1s\"\ncount = 2\n")

	t.Run("to the end", func(t *testing.T) {
		s, err := analysis.Run(t.Context(), q, []analysis.Metric{m}, analysis.Values{})
		if err != nil {
			t.Fatal(err)
		}
		ms := s.Metrics[0].Measurements
		if !s.Passed() || len(ms) != 2 || ms[1].At.Sub(ms[0].At) < time.Second {
			t.Errorf("got %s, measurements %+v", s.Summary(), ms)
		}
	})
	t.Run("cut short", func(t *testing.T) {
		long := m
		long.Count = 5 // at least 4s
		ctx, cancel := context.WithTimeout(t.Context(), 1500*time.Millisecond)
		defer cancel()
		s, err := analysis.Run(ctx, q, []analysis.Metric{long}, analysis.Values{})
		if err != nil {
			t.Fatal(err)
		}
		n := s.Metrics[0].Conclusive
		if s.Passed() || !s.Done() || n < 1 || n >= 5 || !strings.Contains(s.Reason, "cut short") ||
			!strings.Contains(s.Metrics[0].Reason, fmt.Sprintf("cut short after %d of 5 measurements", n)) {
			t.Errorf("got %s", s.Summary())
		}
		for _, meas := range s.Metrics[0].Measurements {
			if meas.Verdict != analysis.VerdictPass {
				t.Errorf("measurement %+v: every measurement passed, only the cut fails the run", meas)
			}
		}
	})
}

// TestPrometheusClientOptions checks the bearer token file and the CA file
// against a TLS server that answers as Prometheus does.
func TestPrometheusClientOptions(t *testing.T) {
	dir := t.TempDir()
	tokenFile := filepath.Join(dir, "token")
	if err := os.WriteFile(tokenFile, []byte("s3cret\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Header.Get("Authorization") != "Bearer s3cret" {
			http.Error(w, `{"status":"error","errorType":"unauthorized","error":"no token"}`, http.StatusUnauthorized)
			return
		}
		w.Header().Set("Content-Type", "application/json")
		fmt.Fprint(w, `{"status":"success","data":{"resultType":"vector","result":[{"metric":{"host":"a"},"value":[1700000000,"0.5"]}]}}`)
	}))
	srv.Config.ErrorLog = log.New(io.Discard, "", 0) // the no-CA case's handshake error
	srv.StartTLS()
	t.Cleanup(srv.Close)
	caFile := filepath.Join(dir, "ca.pem")
	pemBytes := pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: srv.Certificate().Raw})
	if err := os.WriteFile(caFile, pemBytes, 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := x509.ParseCertificate(srv.Certificate().Raw); err != nil {
		t.Fatal(err)
	}
	query := func(cfg analysis.PrometheusConfig) (analysis.Result, error) {
		cfg.URL = srv.URL
		p, err := analysis.NewPrometheus(cfg)
		if err != nil {
			return analysis.Result{}, err
		}
		defer p.Close()
		return p.Query(t.Context(), "x", time.Unix(1700000000, 0))
	}
	res, err := query(analysis.PrometheusConfig{CAFile: caFile, BearerTokenFile: tokenFile})
	if err != nil || res.Type != analysis.TypeVector || len(res.Samples) != 1 || res.Samples[0].Value != 0.5 || res.Samples[0].Labels["host"] != "a" {
		t.Fatalf("query with token and CA = %+v, %v", res, err)
	}
	if _, err := query(analysis.PrometheusConfig{CAFile: caFile}); err == nil {
		t.Error("query without the token succeeded")
	}
	if _, err := query(analysis.PrometheusConfig{BearerTokenFile: tokenFile}); err == nil || !strings.Contains(err.Error(), "certificate") {
		t.Errorf("query without the CA: %v, want a certificate error", err)
	}
	for _, cfg := range []analysis.PrometheusConfig{
		{URL: "127.0.0.1:9090"}, {URL: "ftp://x"}, {URL: "http://x", CAFile: tokenFile},
		{URL: "http://x", BearerTokenFile: filepath.Join(dir, "missing")}, {URL: "http://x", Timeout: -1},
	} {
		if _, err := analysis.NewPrometheus(cfg); err == nil {
			t.Errorf("NewPrometheus(%+v) accepted it", cfg)
		}
	}
}

// TestExampleFile loads the shipped example and runs each of its queries
// once against a real (empty) Prometheus: none may be refused, so every
// one is valid PromQL once rendered; with no data, none may pass.
func TestExampleFile(t *testing.T) {
	ms, err := analysis.Load(filepath.Join("..", "..", "deploy", "prometheus", "analysis.hcl"))
	if err != nil {
		t.Fatal(err)
	}
	srv := promtest.Start(t, promtest.Options{})
	q := newQuerier(t, srv.URL)
	now := time.Now()
	s, err := analysis.Start(ms, analysis.Values{Hosts: []string{"web-1.example", "web-2"}, Service: "api", Release: "v2", Slot: "green"}, now)
	if err != nil {
		t.Fatal(err)
	}
	// Past every metric's initial_delay: each takes its first measurement.
	if s, err = analysis.Step(t.Context(), q, s, now.Add(time.Minute)); err != nil {
		t.Fatal(err)
	}
	for _, mr := range s.Metrics {
		if len(mr.Measurements) != 1 {
			t.Fatalf("metric %s: %d measurements, want 1", mr.Metric.Name, len(mr.Measurements))
		}
		if m := mr.Measurements[0]; m.Verdict != analysis.VerdictInconclusive || !strings.Contains(m.Message, "no data") {
			t.Errorf("metric %s: %s (%s), want inconclusive for no data; query %s", mr.Metric.Name, m.Verdict, m.Message, m.Query)
		}
	}
	if s.Passed() {
		t.Error("an analysis over no data passed")
	}
}
