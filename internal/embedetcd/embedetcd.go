// Package embedetcd runs an etcd member inside the controller process: the
// zero-setup default of `golive-controller serve` (one member in --data-dir),
// and the multi-member clusters that tests use for failover.
//
// It owns the member's lifetime only: Start returns once the member serves
// clients, Close stops it and waits. Everything else talks to etcd through
// go.etcd.io/etcd/client/v3 like it would to an external cluster.
//
// Space: etcd keeps every revision of every key until it is compacted, and
// refuses writes (alarm NOSPACE) once its backend reaches the quota. The
// member is started with an explicit quota (DefaultQuotaBytes, 2 GiB, etcd's
// own default made visible: the controller exports it as
// golive_controller_etcd_quota_bytes beside golive_controller_etcd_db_bytes,
// and deploy/prometheus/alerts.yml warns at 80%) and periodic compaction
// every DefaultCompactionRetention (5 min of history kept). With the
// controller's write budget (agent records rewritten every few minutes, not
// per heartbeat; see internal/controller/hub) 10,000 idle agents write about
// 33 records/s, ~60 KB/s: 5 min of history is ~20 MB beside the live keys.
// Compaction frees pages for reuse; it does not shrink the file (etcdctl
// defrag does, offline or member by member).
package embedetcd

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"time"

	"go.etcd.io/etcd/server/v3/embed"
)

// Config describes one member.
type Config struct {
	// Name of the member; default "golive".
	Name string
	// Dir holds the member's data (member/ is created inside).
	Dir string
	// ClientAddr and PeerAddr are host:port on loopback (or wherever the
	// operator chose). Port 0 is not allowed: the peers must know them.
	ClientAddr string
	PeerAddr   string
	// InitialCluster is "name=http://peer,..." for a multi-member cluster;
	// empty means a single-member cluster of this member.
	InitialCluster string
	// ClusterToken separates clusters on one machine.
	ClusterToken string
	// LogLevel for etcd's own logs, written to Dir/etcd.log. Default "warn".
	LogLevel string
	// StartTimeout bounds the wait for the member to serve. Default 60s.
	StartTimeout time.Duration
	// QuotaBytes is the backend quota (default DefaultQuotaBytes).
	QuotaBytes int64
	// CompactionRetention is how much history periodic compaction keeps
	// (default DefaultCompactionRetention; etcd compacts that often).
	CompactionRetention time.Duration
}

// Defaults of Config.
const (
	DefaultQuotaBytes          = 2 << 30
	DefaultCompactionRetention = 5 * time.Minute
)

// Server is a running member.
type Server struct {
	etcd     *embed.Etcd
	endpoint string
}

// Start starts the member and waits until it serves clients.
func Start(ctx context.Context, c Config) (*Server, error) {
	if c.Name == "" {
		c.Name = "golive"
	}
	if c.LogLevel == "" {
		c.LogLevel = "warn"
	}
	if c.StartTimeout == 0 {
		c.StartTimeout = 60 * time.Second
	}
	if c.ClusterToken == "" {
		c.ClusterToken = "golive"
	}
	if c.QuotaBytes == 0 {
		c.QuotaBytes = DefaultQuotaBytes
	}
	if c.CompactionRetention == 0 {
		c.CompactionRetention = DefaultCompactionRetention
	}
	curl, err := hostURL("embedded etcd client address", c.ClientAddr)
	if err != nil {
		return nil, err
	}
	purl, err := hostURL("embedded etcd peer address", c.PeerAddr)
	if err != nil {
		return nil, err
	}
	if err := os.MkdirAll(c.Dir, 0o700); err != nil {
		return nil, fmt.Errorf("embedded etcd data dir: %w", err)
	}
	cfg := embed.NewConfig()
	cfg.Name = c.Name
	cfg.Dir = c.Dir
	cfg.ListenClientUrls = []url.URL{*curl}
	cfg.AdvertiseClientUrls = []url.URL{*curl}
	cfg.ListenPeerUrls = []url.URL{*purl}
	cfg.AdvertisePeerUrls = []url.URL{*purl}
	cfg.InitialClusterToken = c.ClusterToken
	if c.InitialCluster != "" {
		cfg.InitialCluster = c.InitialCluster
	} else {
		cfg.InitialCluster = cfg.InitialClusterFromName(c.Name)
	}
	cfg.LogLevel = c.LogLevel
	cfg.LogOutputs = []string{filepath.Join(c.Dir, "etcd.log")}
	// Keep history bounded and the database under its quota on
	// long-running installs (see the package doc).
	cfg.QuotaBackendBytes = c.QuotaBytes
	cfg.AutoCompactionMode = "periodic"
	cfg.AutoCompactionRetention = c.CompactionRetention.String()
	// Faster failure detection than etcd's defaults suit a loopback or LAN
	// cluster and make leader loss visible within a few seconds.
	cfg.TickMs = 100
	cfg.ElectionMs = 1000

	e, err := embed.StartEtcd(cfg)
	if err != nil {
		return nil, fmt.Errorf("start embedded etcd in %s: %w", c.Dir, err)
	}
	t := time.NewTimer(c.StartTimeout)
	defer t.Stop()
	select {
	case <-e.Server.ReadyNotify():
	case err := <-e.Err():
		e.Close()
		return nil, fmt.Errorf("embedded etcd: %w", err)
	case <-t.C:
		e.Server.Stop()
		e.Close()
		return nil, fmt.Errorf("embedded etcd did not become ready within %s (for a multi-member cluster, are the other members up?)", c.StartTimeout)
	case <-ctx.Done():
		e.Close()
		return nil, ctx.Err()
	}
	return &Server{etcd: e, endpoint: curl.String()}, nil
}

// Endpoint is the client URL.
func (s *Server) Endpoint() string { return s.endpoint }

// Err reports a fatal error of the member after start.
func (s *Server) Err() <-chan error { return s.etcd.Err() }

// Close stops the member and waits for it.
func (s *Server) Close() { s.etcd.Close() }

func hostURL(what, addr string) (*url.URL, error) {
	if addr == "" {
		return nil, fmt.Errorf("%s is empty", what)
	}
	if strings.Contains(addr, "://") {
		u, err := url.Parse(addr)
		if err != nil {
			return nil, fmt.Errorf("%s %q: %w", what, addr, err)
		}
		return u, nil
	}
	host, port, err := net.SplitHostPort(addr)
	if err != nil {
		return nil, fmt.Errorf("%s %q: want host:port: %w", what, addr, err)
	}
	if port == "0" {
		return nil, errors.New(what + ": port 0 is not allowed; give a fixed port")
	}
	return &url.URL{Scheme: "http", Host: net.JoinHostPort(host, port)}, nil
}
