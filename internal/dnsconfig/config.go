package dnsconfig

import (
	"net/netip"
	"time"

	"github.com/hashicorp/hcl/v2"
)

// Algorithm is a TSIG algorithm, by its name in BIND and Knot configs.
type Algorithm string

// TSIG algorithms accepted. hmac-md5 is not: it is broken.
const (
	HMACSHA1   Algorithm = "hmac-sha1"
	HMACSHA224 Algorithm = "hmac-sha224"
	HMACSHA256 Algorithm = "hmac-sha256"
	HMACSHA384 Algorithm = "hmac-sha384"
	HMACSHA512 Algorithm = "hmac-sha512"
)

// Algorithms lists the accepted TSIG algorithms.
var Algorithms = []Algorithm{HMACSHA1, HMACSHA224, HMACSHA256, HMACSHA384, HMACSHA512}

// RRType is a record type a failover publishes.
type RRType string

// Record types a pool's addresses make.
const (
	TypeA    RRType = "A"
	TypeAAAA RRType = "AAAA"
)

// Failback says how a failed-over name returns to its primary pool.
type Failback string

// Failback modes.
const (
	// FailbackManual: the name stays on the secondary until an operator
	// runs `golive-controller dns failover NAME --to PRIMARY`.
	FailbackManual Failback = "manual"
	// FailbackAuto: the name returns after the primary has passed every
	// check for hold_down.
	FailbackAuto Failback = "auto"
)

// Defaults.
const (
	DefaultPort      = "53"
	DefaultTimeout   = 5 * time.Second
	DefaultTTL       = 30 * time.Second
	DefaultMaxTTL    = 60 * time.Second
	DefaultInterval  = 10 * time.Second
	DefaultThreshold = 3
	DefaultHoldDown  = 5 * time.Minute
	DefaultAlgorithm = HMACSHA256
)

// Config is the controller's whole DNS configuration.
type Config struct {
	Zones     []*Zone
	Pools     []*Pool
	Failovers []*Failover
}

// Zone is a DNS zone golive may update, and how.
type Zone struct {
	// Name is the zone's apex, canonical ("example.test.").
	Name string
	// Server is the zone's primary (the server that takes updates), host:port.
	Server string
	// Key signs every update and query (TSIG).
	Key TSIGKey
	// Timeout bounds one exchange with the server.
	Timeout time.Duration

	pos positions
}

// TSIGKey is a named shared key. Its Secret prints as "[redacted]".
type TSIGKey struct {
	// Name is the key's name as the server knows it ("golive." canonical).
	Name      string
	Algorithm Algorithm
	// File is where the secret is read from (absolute after Parse).
	File string
	// Secret is empty until LoadSecrets.
	Secret Secret
}

// Pool is a set of hosts and the addresses that publish them. The hosts
// are the ones whose health (reported by their agents) judges the pool.
type Pool struct {
	Name string
	// Hosts lists host ids; Selector matches host labels. Exactly one is set.
	Hosts    []string
	Selector map[string]string
	// Addresses are the values of the records that point at the pool.
	Addresses []netip.Addr

	pos positions
}

// Failover is one record (name and type) moved between two pools on health.
type Failover struct {
	// Name is the record's owner name, canonical ("www.example.test.").
	Name string
	// Zone is the name of the zone that holds it (a Zone's Name).
	Zone string
	Type RRType
	// TTL of the published records; whole seconds, at most MaxTTL.
	TTL time.Duration
	// Primary and Secondary are pool names.
	Primary   string
	Secondary string
	Check     Check
	Failback  Failback
	// HoldDown is how long the primary must stay healthy before an
	// automatic failback.
	HoldDown time.Duration
	// MaxTTL caps TTL (and what an operator may set on this name).
	MaxTTL time.Duration

	pos positions
}

// Check is how often the primary pool is judged, and how many consecutive
// bad judgements switch the record.
type Check struct {
	Interval  time.Duration
	Threshold int
}

// Zone returns the zone named name (any case, with or without the trailing
// dot), or nil.
func (c *Config) Zone(name string) *Zone {
	n := CanonicalName(name)
	for _, z := range c.Zones {
		if z.Name == n {
			return z
		}
	}
	return nil
}

// ZoneFor returns the longest configured zone that contains name, or nil.
func (c *Config) ZoneFor(name string) *Zone {
	n := CanonicalName(name)
	var best *Zone
	for _, z := range c.Zones {
		if InZone(n, z.Name) && (best == nil || len(z.Name) > len(best.Name)) {
			best = z
		}
	}
	return best
}

// Pool returns the pool named name, or nil.
func (c *Config) Pool(name string) *Pool {
	for _, p := range c.Pools {
		if p.Name == name {
			return p
		}
	}
	return nil
}

// Failover returns the failover of the record named name, or nil.
func (c *Config) Failover(name string) *Failover {
	n := CanonicalName(name)
	for _, f := range c.Failovers {
		if f.Name == n {
			return f
		}
	}
	return nil
}

// Values returns the pool's addresses that make records of type t, as
// record values in their canonical text form, in config order.
func (p *Pool) Values(t RRType) []string {
	var out []string
	for _, a := range p.Addresses {
		if (t == TypeA && a.Is4()) || (t == TypeAAAA && a.Is6()) {
			out = append(out, a.String())
		}
	}
	return out
}

// positions records where each field of one block came from; "" is the
// block itself.
type positions map[string]hcl.Range

func (p positions) of(key string) hcl.Range {
	if r, ok := p[key]; ok {
		return r
	}
	return p[""]
}
