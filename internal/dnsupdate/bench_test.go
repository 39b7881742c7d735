package dnsupdate_test

import (
	"testing"
	"time"

	"github.com/golive/golive/internal/dnsupdate"
	"github.com/golive/golive/internal/dnsupdate/dnstest"
)

// BenchmarkConfirmedUpdate measures 200 confirmed updates (UPDATE sent ->
// the primary answers the new data) against BIND and Knot per iteration
// and reports p50 and p99.
func BenchmarkConfirmedUpdate(b *testing.B) {
	for _, kind := range dnstest.Kinds {
		b.Run(string(kind), func(b *testing.B) {
			s := dnstest.Start(b, kind)
			c, err := dnsupdate.New(s.ZoneConfig(dnstest.KeyGolive), dnsupdate.Options{})
			if err != nil {
				b.Fatal(err)
			}
			var all dnsupdate.Latencies
			for b.Loop() {
				l, err := dnsupdate.Measure(b.Context(), c, "bench.example.test.", "A", 200)
				if err != nil {
					b.Fatal(err)
				}
				all = append(all, l...)
			}
			all = sortLatencies(all)
			b.ReportMetric(float64(all.Quantile(0.50))/float64(time.Millisecond), "p50-ms")
			b.ReportMetric(float64(all.Quantile(0.99))/float64(time.Millisecond), "p99-ms")
			b.ReportMetric(float64(len(all)), "updates")
		})
	}
}

func TestMeasure(t *testing.T) {
	eachServer(t, func(t *testing.T, s *dnstest.Server) {
		c := newClient(t, s.ZoneConfig(dnstest.KeyGolive))
		l, err := dnsupdate.Measure(t.Context(), c, "measure.example.test.", "AAAA", 5)
		if err != nil {
			t.Fatal(err)
		}
		if len(l) != 5 || l.Quantile(0.5) <= 0 || l.Quantile(0.99) < l.Quantile(0.5) {
			t.Fatalf("latencies = %v", l)
		}
		assertRecordsOf(t, c, "measure.example.test.", "AAAA", []string{"2001:db8::201"})
	})
}
