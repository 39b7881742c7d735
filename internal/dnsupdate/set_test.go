package dnsupdate_test

import (
	"net/netip"
	"testing"
	"time"

	"github.com/golive/golive/internal/dnsconfig"
	"github.com/golive/golive/internal/dnsupdate"
	"github.com/golive/golive/internal/dnsupdate/dnstest"
)

// TestFailoverChange moves a failover's record to its secondary pool and
// back on a real server, the way the executor does.
func TestFailoverChange(t *testing.T) {
	eachServer(t, func(t *testing.T, s *dnstest.Server) {
		cfg := &dnsconfig.Config{
			Zones: []*dnsconfig.Zone{s.ZoneConfig(dnstest.KeyGolive)},
			Pools: []*dnsconfig.Pool{
				{Name: "blue", Hosts: []string{"web1"}, Addresses: []netip.Addr{netip.MustParseAddr("192.0.2.10"), netip.MustParseAddr("192.0.2.11"), netip.MustParseAddr("2001:db8::1")}},
				{Name: "green", Hosts: []string{"web2"}, Addresses: []netip.Addr{netip.MustParseAddr("198.51.100.10")}},
			},
			Failovers: []*dnsconfig.Failover{{Name: www, Zone: dnstest.Zone, Type: dnsconfig.TypeA, TTL: 30 * time.Second, Primary: "blue", Secondary: "green"}},
		}
		set, err := dnsupdate.NewSet(cfg, dnsupdate.Options{})
		if err != nil {
			t.Fatal(err)
		}
		if _, err := set.For("www.elsewhere.test"); err == nil {
			t.Fatal("For found a client outside every zone")
		}
		c, err := set.For("WWW.example.test")
		if err != nil {
			t.Fatal(err)
		}
		f := cfg.Failover(www)
		res, err := c.Apply(t.Context(), dnsupdate.FailoverChange(f, cfg.Pool("green"), dnstest.InitialRecords))
		if err != nil {
			t.Fatal(err)
		}
		assertRecords(t, c, []string{"198.51.100.10"}, 30*time.Second)
		if _, err := c.Apply(t.Context(), dnsupdate.FailoverChange(f, cfg.Pool("blue"), res.Change.New)); err != nil {
			t.Fatal(err)
		}
		assertRecords(t, c, dnstest.InitialRecords, 30*time.Second)
	})
}
