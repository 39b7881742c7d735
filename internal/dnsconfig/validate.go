package dnsconfig

import (
	"fmt"
	"net"
	"slices"
	"strconv"
	"strings"
	"time"
)

// maxTTLSeconds is the largest TTL DNS carries (RFC 2181 §8).
const maxTTLSeconds = 1<<31 - 1

// Validate judges the whole config: names, references between blocks,
// ranges. The error, if any, is Errors naming each field.
func (c *Config) Validate() error {
	var es Errors
	fail := func(p positions, key, field, format string, args ...any) {
		es = append(es, &FieldError{Range: p.of(key), Field: field, Msg: fmt.Sprintf(format, args...)})
	}
	seenZones := map[string]bool{}
	for _, z := range c.Zones {
		zf := func(k string) string { return zoneField(z.Name, k) }
		if err := checkName(z.Name); err != nil {
			fail(z.pos, "", zf("name"), "%v", err)
		}
		if seenZones[z.Name] {
			fail(z.pos, "", zf("name"), "zone defined twice")
		}
		seenZones[z.Name] = true
		if z.Server == "" {
			fail(z.pos, "server", zf("server"), "required: the zone's primary server, host:port")
		} else if host, port, err := net.SplitHostPort(z.Server); err != nil || host == "" {
			fail(z.pos, "server", zf("server"), "%q is not host:port", z.Server)
		} else if n, err := strconv.Atoi(port); err != nil || n < 1 || n > 65535 {
			fail(z.pos, "server", zf("server"), "port %q is not 1-65535", port)
		}
		if z.Key.Name == "" {
			fail(z.pos, "key_name", zf("key_name"), "required: updates are TSIG-signed")
		} else if err := checkName(z.Key.Name); err != nil {
			fail(z.pos, "key_name", zf("key_name"), "%v", err)
		}
		if !slices.Contains(Algorithms, z.Key.Algorithm) {
			fail(z.pos, "key_algorithm", zf("key_algorithm"), "%q is not one of %s", z.Key.Algorithm, joinAlgorithms())
		}
		if z.Key.File == "" {
			fail(z.pos, "key_file", zf("key_file"), "required: the file holding the TSIG secret")
		}
		if z.Timeout <= 0 || z.Timeout > time.Minute {
			fail(z.pos, "timeout", zf("timeout"), "must be more than 0 and at most 1m")
		}
	}
	seenPools := map[string]bool{}
	for _, p := range c.Pools {
		pf := func(k string) string { return poolField(p.Name, k) }
		if !validPoolName(p.Name) {
			fail(p.pos, "", pf("name"), "must be letters, digits, '-' or '_', starting with a letter")
		}
		if seenPools[p.Name] {
			fail(p.pos, "", pf("name"), "pool defined twice")
		}
		seenPools[p.Name] = true
		switch {
		case len(p.Hosts) == 0 && len(p.Selector) == 0:
			fail(p.pos, "", pf("hosts"), "set hosts or selector: the hosts whose health judges the pool")
		case len(p.Hosts) > 0 && len(p.Selector) > 0:
			fail(p.pos, "selector", pf("selector"), "set hosts or selector, not both")
		}
		seenHosts := map[string]bool{}
		for _, h := range p.Hosts {
			if h == "" || strings.ContainsAny(h, " \t\n/") {
				fail(p.pos, "hosts", pf("hosts"), "%q is not a host id", h)
			}
			if seenHosts[h] {
				fail(p.pos, "hosts", pf("hosts"), "host %q listed twice", h)
			}
			seenHosts[h] = true
		}
		for k := range p.Selector {
			if k == "" {
				fail(p.pos, "selector", pf("selector"), "empty label name")
			}
		}
		if len(p.Addresses) == 0 {
			fail(p.pos, "addresses", pf("addresses"), "required: the A/AAAA values that point at the pool")
		}
		for i, a := range p.Addresses {
			if slices.Contains(p.Addresses[:i], a) {
				fail(p.pos, "addresses", pf("addresses"), "%s listed twice", a)
			}
		}
	}
	seenFailovers := map[string]bool{}
	for _, f := range c.Failovers {
		ff := func(k string) string { return failoverField(f.Name, k) }
		if err := checkName(f.Name); err != nil {
			fail(f.pos, "", ff("name"), "%v", err)
		}
		if seenFailovers[f.Name+" "+string(f.Type)] {
			fail(f.pos, "", ff("name"), "failover for this name and type defined twice")
		}
		seenFailovers[f.Name+" "+string(f.Type)] = true
		switch z := c.Zone(f.Zone); {
		case f.Zone == "":
			fail(f.pos, "zone", ff("zone"), "required: the zone that holds the record")
		case z == nil:
			fail(f.pos, "zone", ff("zone"), "no zone %q is configured", f.Zone)
		case !InZone(f.Name, z.Name):
			fail(f.pos, "zone", ff("zone"), "%s is not in zone %s", f.Name, z.Name)
		case f.Name == z.Name:
			// The apex has SOA and NS; A/AAAA there are fine.
		}
		if f.Type != TypeA && f.Type != TypeAAAA {
			fail(f.pos, "type", ff("type"), "%q is not A or AAAA", f.Type)
		}
		for _, side := range []struct{ key, name string }{{"primary", f.Primary}, {"secondary", f.Secondary}} {
			switch p := c.Pool(side.name); {
			case side.name == "":
				fail(f.pos, side.key, ff(side.key), "required: a pool's name")
			case p == nil:
				fail(f.pos, side.key, ff(side.key), "no pool %q is configured", side.name)
			case (f.Type == TypeA || f.Type == TypeAAAA) && len(p.Values(f.Type)) == 0:
				fail(f.pos, side.key, ff(side.key), "pool %q has no address for %s records", side.name, f.Type)
			}
		}
		if f.Primary != "" && f.Primary == f.Secondary {
			fail(f.pos, "secondary", ff("secondary"), "must differ from primary")
		}
		if f.Check.Interval < 100*time.Millisecond {
			fail(f.pos, "check.interval", ff("check.interval"), "must be at least 100ms")
		}
		if f.Check.Threshold < 2 || f.Check.Threshold > 1000 {
			fail(f.pos, "check.threshold", ff("check.threshold"), "must be 2 to 1000 (one bad check never switches a record)")
		}
		if f.Failback != FailbackManual && f.Failback != FailbackAuto {
			fail(f.pos, "failback", ff("failback"), "%q is not \"manual\" or \"auto\"", f.Failback)
		}
		if f.HoldDown <= 0 {
			fail(f.pos, "hold_down", ff("hold_down"), "must be more than 0")
		} else if f.HoldDown < time.Duration(f.Check.Threshold)*f.Check.Interval {
			fail(f.pos, "hold_down", ff("hold_down"), "must be at least check.threshold × check.interval (%s), or a flapping primary would fail back", time.Duration(f.Check.Threshold)*f.Check.Interval)
		}
		if f.TTL%time.Second != 0 || f.TTL < time.Second {
			fail(f.pos, "ttl", ff("ttl"), "must be a whole number of seconds, at least 1s")
		}
		if f.MaxTTL%time.Second != 0 || f.MaxTTL < time.Second || f.MaxTTL > maxTTLSeconds*time.Second {
			fail(f.pos, "max_ttl", ff("max_ttl"), "must be a whole number of seconds, at least 1s")
		} else if f.TTL > f.MaxTTL {
			fail(f.pos, "ttl", ff("ttl"), "%s is more than max_ttl %s: resolvers would keep a failed-over record too long", f.TTL, f.MaxTTL)
		}
	}
	return es.Err()
}

func joinAlgorithms() string {
	s := make([]string, len(Algorithms))
	for i, a := range Algorithms {
		s[i] = string(a)
	}
	return strings.Join(s, ", ")
}

func validPoolName(n string) bool {
	if n == "" || len(n) > 63 {
		return false
	}
	for i, r := range n {
		switch {
		case r >= 'a' && r <= 'z', r >= 'A' && r <= 'Z':
		case i > 0 && (r >= '0' && r <= '9' || r == '-' || r == '_'):
		default:
			return false
		}
	}
	return true
}

// CanonicalName returns name lower case with the trailing dot.
func CanonicalName(name string) string {
	n := strings.ToLower(strings.TrimSpace(name))
	if !strings.HasSuffix(n, ".") {
		n += "."
	}
	return n
}

// InZone reports whether the canonical name is zone or below it.
func InZone(name, zone string) bool {
	return name == zone || zone == "." || strings.HasSuffix(name, "."+zone)
}

// checkName checks a canonical DNS name: labels of 1-63 letters, digits,
// '-' or '_', 253 characters at most.
func checkName(n string) error {
	if n == "." {
		return fmt.Errorf("the root is not a zone golive updates")
	}
	body := strings.TrimSuffix(n, ".")
	if len(body) > 253 {
		return fmt.Errorf("name longer than 253 characters")
	}
	for _, l := range strings.Split(body, ".") {
		if l == "" || len(l) > 63 {
			return fmt.Errorf("%q: each label must be 1 to 63 characters", n)
		}
		for _, r := range l {
			if !(r >= 'a' && r <= 'z' || r >= '0' && r <= '9' || r == '-' || r == '_') {
				return fmt.Errorf("%q: labels are letters, digits, '-' and '_'", n)
			}
		}
	}
	return nil
}
