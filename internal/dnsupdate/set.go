package dnsupdate

import (
	"fmt"

	"github.com/golive/golive/internal/dnsconfig"
)

// Set holds a Client per configured zone: what the controller builds once
// from `serve --dns-config FILE`.
type Set struct {
	cfg     *dnsconfig.Config
	clients map[string]*Client // by zone name
}

// NewSet makes a client for every zone of cfg (validated, secrets loaded).
func NewSet(cfg *dnsconfig.Config, opts Options) (*Set, error) {
	s := &Set{cfg: cfg, clients: map[string]*Client{}}
	for _, z := range cfg.Zones {
		c, err := New(z, opts)
		if err != nil {
			return nil, err
		}
		s.clients[z.Name] = c
	}
	return s, nil
}

// For returns the client of the zone that holds name (the longest
// configured zone containing it).
func (s *Set) For(name string) (*Client, error) {
	z := s.cfg.ZoneFor(name)
	if z == nil {
		return nil, fmt.Errorf("dns: %s is in no configured zone (see --dns-config)", dnsconfig.CanonicalName(name))
	}
	return s.clients[z.Name], nil
}

// Config is the configuration the set was built from.
func (s *Set) Config() *dnsconfig.Config { return s.cfg }

// FailoverChange is the change that points failover f's record at pool:
// the pool's addresses of f's type, f's TTL, and old as the prerequisite
// (the values last confirmed, from the caller's stored state).
func FailoverChange(f *dnsconfig.Failover, pool *dnsconfig.Pool, old []string) Change {
	return Change{Name: f.Name, Type: string(f.Type), TTL: f.TTL, Old: old, New: pool.Values(f.Type)}
}
