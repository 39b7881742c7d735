package agentconfig

import (
	"net/url"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"github.com/hashicorp/hcl/v2"
)

// SwapMode is how a new release replaces the running one on a host.
type SwapMode string

// Swap modes.
const (
	// SwapRestart stages the release, swaps `current`, restarts the service.
	SwapRestart SwapMode = "restart"
	// SwapBlueGreen starts the idle slot on the new release, checks it, then
	// switches the router and keeps the old slot warm.
	SwapBlueGreen SwapMode = "blue-green"
)

// ManagerKind is what supervises the service's process.
type ManagerKind string

// Service managers.
const (
	// ManagerExec: the agent runs the process itself (exec block).
	ManagerExec ManagerKind = "exec"
	// ManagerSystemd: the agent drives a systemd unit.
	ManagerSystemd ManagerKind = "systemd"
)

// RouterKind is what sends traffic to the live blue-green slot.
type RouterKind string

// Routers.
const (
	RouterNginx   RouterKind = "nginx"
	RouterHAProxy RouterKind = "haproxy"
	// RouterNone: the operator switches traffic (typically from hooks).
	RouterNone RouterKind = "none"
)

// Blue-green slot names, as used in systemd instance units (app@blue).
const (
	SlotBlue  = "blue"
	SlotGreen = "green"
)

// PortPlaceholder is expanded to the port a service (or slot) listens on in
// exec.command, exec.env values and health.url.
const PortPlaceholder = "{port}"

// Defaults.
const (
	DefaultStateDir          = "/var/lib/golive"
	DefaultControllerAddress = "127.0.0.1:7400"
	DefaultMaxBytes          = 2 << 30 // 2GiB
	DefaultMaxUnpackedBytes  = 8 << 30 // 8GiB
	DefaultMaxFiles          = 100000
	DefaultRetries           = 3
)

// Config is the agent's whole configuration. Build it with Default, Parse or
// Load; check it with Validate.
type Config struct {
	// HostID names this host to the controller; it must match the agent's
	// certificate name. Default: the hostname.
	HostID string
	// Labels select hosts for rollouts (role = "web", zone = "a").
	Labels map[string]string
	// StateDir holds releases, journals, backups and logs.
	StateDir string
	// TrustedKeys are ed25519 public key files (absolute paths). When any is
	// set, every artifact must carry a valid signature by one of them.
	TrustedKeys []string
	Controller  Controller
	Artifacts   Artifacts
	// Services are deployed independently, in file order.
	Services []*Service

	pos positions
}

// Controller is how the agent reaches the controller. TLS files are all
// set (mTLS) or all empty (loopback dev mode).
type Controller struct {
	Address  string
	CAFile   string
	CertFile string
	KeyFile  string
}

// Artifacts limits what a fetch and an unpack may put on disk.
type Artifacts struct {
	// MaxBytes caps the downloaded artifact.
	MaxBytes int64
	// MaxUnpackedBytes caps the total size of the unpacked files.
	MaxUnpackedBytes int64
	// MaxFiles caps the number of entries in an artifact.
	MaxFiles int
	// Retries is how many times a failed fetch is retried (0: never).
	Retries int
}

// Service is one deployable service on this host.
type Service struct {
	Name     string
	SwapMode SwapMode
	// KeepReleases is how many releases stay on disk, the live one included.
	KeepReleases int
	Manager      ManagerKind
	// Unit is the systemd unit (restart: "app.service") or, for blue-green,
	// the template prefix ("app@"): slots run as app@blue / app@green.
	Unit string
	// Exec is set when the agent runs the process itself (manager "exec").
	// It may also be set with manager "systemd" to name an env_file.
	Exec *Exec
	// Port is the port the service listens on in restart mode (0: none);
	// blue-green slots use BlueGreen.BluePort / GreenPort instead.
	Port      int
	Health    Health
	Hooks     Hooks
	Database  *Database // nil: the service has no database
	Migrate   *Migrate  // nil: releases carry no migration
	BlueGreen *BlueGreen
	// Traffic, for a restart-mode service behind a load balancer, says
	// where the agent reads its real traffic (nil: nowhere). Blue-green
	// services read it through BlueGreen.Router.
	Traffic   *Traffic
	Preflight Preflight
	// Smoke checks run once a release is live, in order.
	Smoke []*Smoke
	// MetricsPath is the path of the service's own Prometheus metrics
	// endpoint on its port ("/metrics"); "" when it has none.
	MetricsPath string
	// Scale, when set, lets the service run several instances on this host
	// (see Scale); nil: one instance.
	Scale *Scale

	pos positions
}

// Exec describes a process the agent supervises itself.
type Exec struct {
	// Command is argv; a relative Command[0] is relative to the release dir.
	// "{port}" in any element is expanded (see Service.Command).
	Command []string
	// EnvFile is loaded into the environment (KEY=value lines).
	EnvFile string
	// Env is applied after EnvFile; values may use "{port}".
	Env         map[string]string
	StopTimeout time.Duration
	// LogFile receives stdout and stderr; empty: Config.LogFile's default.
	LogFile string
}

// Health says how to tell that a release is serving.
type Health struct {
	// URL is probed with GET; "{port}" is expanded (see Service.HealthURL).
	URL          string
	ExpectStatus int
	// Timeout bounds one probe.
	Timeout time.Duration
	// Interval is the time between probes.
	Interval time.Duration
	// Successes is how many probes in a row must pass.
	Successes int
	// Deadline bounds the whole check after a swap: not healthy by then is a
	// failed step.
	Deadline time.Duration
	// Window is the sliding window of the continuous health report.
	Window time.Duration
}

// Hooks are commands (argv, not shell lines) run around a swap. A failing
// pre_swap hook stops the step; post_swap and on_rollback failures are
// reported. Empty: no hook.
type Hooks struct {
	PreSwap    []string
	PostSwap   []string
	OnRollback []string
	// Timeout bounds each hook.
	Timeout time.Duration
}

// Database is the service's PostgreSQL database, backed up before every
// migration. The DSN is read from EnvFile at DSNEnvKey and never logged.
type Database struct {
	Kind      string // "postgres"
	DSNEnvKey string
	// EnvFile defaults to exec.env_file.
	EnvFile string
	// BackupDir holds pg_dump files; empty: Config.BackupDir's default.
	BackupDir   string
	KeepBackups int
	// MaxBackupAge prunes older backups (KeepBackups newest are kept
	// regardless); 0: prune by count only.
	MaxBackupAge time.Duration
}

// Migrate is the release's migration, run after a verified backup.
type Migrate struct {
	// Command is argv; a relative Command[0] is relative to the release dir.
	Command []string
	Timeout time.Duration
}

// BlueGreen configures the two slots of a blue-green service.
type BlueGreen struct {
	BluePort  int
	GreenPort int
	// KeepWarm is how long the old slot keeps running after a switch, for an
	// instant switch back.
	KeepWarm time.Duration
	// DrainTimeout is how long in-flight requests get before the old slot
	// stops.
	DrainTimeout time.Duration
	Router       Router
}

// Router switches traffic between blue-green slots.
type Router struct {
	Kind RouterKind
	// UpstreamFile (nginx) is rewritten atomically to point at the live slot;
	// Reload (nginx) is run afterwards.
	UpstreamFile string
	Reload       []string
	// ProbeURL, when set, is fetched through the router after a switch to
	// check it serves the new slot.
	ProbeURL string
	// AdminSocket and Backend (haproxy): the runtime API socket and the
	// backend whose "blue" and "green" servers are switched.
	AdminSocket string
	Backend     string
	// AccessLog (nginx) is the access log written in the golive JSON
	// format (deploy/examples/nginx/golive-log.conf) the agent counts each
	// slot's real requests from; "" without one. HAProxy's counters are
	// read on AdminSocket.
	AccessLog string
}

// TrafficSource is where real traffic figures come from.
type TrafficSource string

// Traffic sources.
const (
	TrafficNginx   TrafficSource = "nginx"
	TrafficHAProxy TrafficSource = "haproxy"
)

// Traffic is where a restart-mode service's real traffic is read.
type Traffic struct {
	Source TrafficSource
	// AccessLog (nginx): the JSON access log; the service's attempts are
	// those to 127.0.0.1:<port>.
	AccessLog string
	// AdminSocket, Backend and Server (haproxy): the runtime API socket
	// and the server whose counters are the service's.
	AdminSocket string
	Backend     string
	Server      string
}

// Preflight configures the pre-live checks of a service.
type Preflight struct {
	// Domain, when set, must resolve and serve a valid certificate on TLSPort.
	Domain         string
	TLSPort        int
	CertExpiryDays int
	// EnvFile holds RequiredSecrets; defaults to exec.env_file.
	EnvFile         string
	RequiredSecrets []string
	// MinFreeDiskFactor: free space in the state dir must be at least this
	// many times the artifact size.
	MinFreeDiskFactor float64
	// MaxBackupAge: the newest database backup must be younger (only with a
	// database).
	MaxBackupAge time.Duration
}

// Smoke is one post-live HTTP check.
type Smoke struct {
	Name         string
	Method       string
	Path         string
	Headers      map[string]string
	ExpectStatus int
	// BodyContains, when set, must appear in the response body.
	BodyContains string
	// MaxLatency, when set, bounds the response time; 0: no bound.
	MaxLatency time.Duration

	pos positions
}

// Default returns the configuration an empty file yields.
func Default() *Config {
	host, _ := os.Hostname()
	return &Config{
		HostID:     strings.TrimSpace(host),
		Labels:     map[string]string{},
		StateDir:   DefaultStateDir,
		Controller: Controller{Address: DefaultControllerAddress},
		Artifacts: Artifacts{
			MaxBytes:         DefaultMaxBytes,
			MaxUnpackedBytes: DefaultMaxUnpackedBytes,
			MaxFiles:         DefaultMaxFiles,
			Retries:          DefaultRetries,
		},
	}
}

// DefaultService returns a service named name with every default set, the
// way a `service "name" {}` block starts before its body is read.
func DefaultService(name string) *Service {
	return &Service{
		Name:         name,
		SwapMode:     SwapRestart,
		KeepReleases: 5,
		Manager:      ManagerExec,
		Health: Health{
			ExpectStatus: 200,
			Timeout:      2 * time.Second,
			Interval:     time.Second,
			Successes:    3,
			Deadline:     30 * time.Second,
			Window:       60 * time.Second,
		},
		Hooks: Hooks{Timeout: 30 * time.Second},
		Preflight: Preflight{
			TLSPort:           443,
			CertExpiryDays:    14,
			MinFreeDiskFactor: 3,
			MaxBackupAge:      24 * time.Hour,
		},
	}
}

func defaultExec() *Exec { return &Exec{StopTimeout: 10 * time.Second} }

func defaultDatabase() *Database {
	return &Database{Kind: "postgres", DSNEnvKey: "DATABASE_URL", KeepBackups: 10}
}

func defaultMigrate() *Migrate { return &Migrate{Timeout: 10 * time.Minute} }

func defaultBlueGreen() *BlueGreen {
	return &BlueGreen{KeepWarm: 15 * time.Minute, DrainTimeout: 30 * time.Second, Router: Router{Kind: RouterNone}}
}

func defaultNginxReload() []string { return []string{"nginx", "-s", "reload"} }

func defaultSmoke(name string) *Smoke {
	return &Smoke{Name: name, Method: "GET", ExpectStatus: 200}
}

// SetHostID overrides the host id (the agent's --host-id flag). Errors about
// it no longer point into the file.
func (c *Config) SetHostID(id string) {
	c.HostID = id
	delete(c.pos, "host_id")
}

// SetStateDir overrides the state dir (the agent's --state-dir flag).
func (c *Config) SetStateDir(dir string) {
	c.StateDir = dir
	delete(c.pos, "state_dir")
}

// Service returns the service named name, or nil.
func (c *Config) Service(name string) *Service {
	for _, s := range c.Services {
		if s.Name == name {
			return s
		}
	}
	return nil
}

// SignaturesRequired reports whether artifacts must be signed.
func (c *Config) SignaturesRequired() bool { return len(c.TrustedKeys) > 0 }

// ServiceDir is the directory holding a service's releases, `current` link,
// journal and, by default, its backups and log: <state_dir>/services/<name>.
func (c *Config) ServiceDir(name string) string {
	return filepath.Join(c.StateDir, "services", name)
}

// LogFile is where the exec manager writes the service's output:
// exec.log_file, or <service dir>/service.log.
func (c *Config) LogFile(s *Service) string {
	if s.Exec != nil && s.Exec.LogFile != "" {
		return s.Exec.LogFile
	}
	return filepath.Join(c.ServiceDir(s.Name), "service.log")
}

// BackupDir is where database backups go: database.backup_dir, or
// <service dir>/backups.
func (c *Config) BackupDir(s *Service) string {
	if s.Database != nil && s.Database.BackupDir != "" {
		return s.Database.BackupDir
	}
	return filepath.Join(c.ServiceDir(s.Name), "backups")
}

// ExpandPort replaces every "{port}" in v with port.
func ExpandPort(v string, port int) string {
	return strings.ReplaceAll(v, PortPlaceholder, strconv.Itoa(port))
}

// HealthURL is health.url for a service listening on port.
func (s *Service) HealthURL(port int) string { return ExpandPort(s.Health.URL, port) }

// Command is exec.command for a service listening on port (nil without an
// exec block).
func (s *Service) Command(port int) []string {
	if s.Exec == nil {
		return nil
	}
	return expandAll(s.Exec.Command, port)
}

// Env is exec.env for a service listening on port (nil without an exec
// block).
func (s *Service) Env(port int) map[string]string {
	if s.Exec == nil || s.Exec.Env == nil {
		return nil
	}
	out := make(map[string]string, len(s.Exec.Env))
	for k, v := range s.Exec.Env {
		out[k] = ExpandPort(v, port)
	}
	return out
}

// SmokeURL is the URL of smoke check sm against a service listening on port:
// the scheme and host of the health URL, and the smoke check's path.
func (s *Service) SmokeURL(sm *Smoke, port int) string {
	u, err := url.Parse(s.HealthURL(port))
	if err != nil {
		return ""
	}
	ref, err := url.Parse(sm.Path)
	if err != nil {
		return ""
	}
	return (&url.URL{Scheme: u.Scheme, User: u.User, Host: u.Host}).ResolveReference(ref).String()
}

// Ports lists the ports the service's instances listen on: Port in restart
// mode, the blue and green ports in blue-green mode.
func (s *Service) Ports() []int {
	if s.SwapMode == SwapBlueGreen && s.BlueGreen != nil {
		return []int{s.BlueGreen.BluePort, s.BlueGreen.GreenPort}
	}
	if s.Port == 0 {
		return nil
	}
	return []int{s.Port}
}

// SlotPort is the port of a blue-green slot (SlotBlue or SlotGreen); false
// for anything else or a service that is not blue-green.
func (s *Service) SlotPort(slot string) (int, bool) {
	if s.BlueGreen == nil {
		return 0, false
	}
	switch slot {
	case SlotBlue:
		return s.BlueGreen.BluePort, true
	case SlotGreen:
		return s.BlueGreen.GreenPort, true
	}
	return 0, false
}

// UnitName is the systemd unit to drive: Unit in restart mode, the instance
// unit of slot ("app@" + "blue" + ".service") in blue-green mode.
func (s *Service) UnitName(slot string) string {
	if s.SwapMode != SwapBlueGreen {
		return s.Unit
	}
	return s.Unit + slot + ".service"
}

// DatabaseEnvFile is the env file holding the database DSN ("" without a
// database).
func (s *Service) DatabaseEnvFile() string {
	if s.Database == nil {
		return ""
	}
	if s.Database.EnvFile != "" {
		return s.Database.EnvFile
	}
	return s.execEnvFile()
}

// SecretsEnvFile is the env file preflight looks for required secrets in.
func (s *Service) SecretsEnvFile() string {
	if s.Preflight.EnvFile != "" {
		return s.Preflight.EnvFile
	}
	return s.execEnvFile()
}

func (s *Service) execEnvFile() string {
	if s.Exec == nil {
		return ""
	}
	return s.Exec.EnvFile
}

func expandAll(v []string, port int) []string {
	if v == nil {
		return nil
	}
	out := make([]string, len(v))
	for i, a := range v {
		out[i] = ExpandPort(a, port)
	}
	return out
}

// positions records where values and blocks came from, keyed by the field
// path relative to the owner ("health.timeout"; "" is the owner's block).
type positions map[string]hcl.Range

// at returns the range of the first key present, then the owner's block.
func (p positions) at(keys ...string) hcl.Range {
	for _, k := range keys {
		if r, ok := p[k]; ok {
			return r
		}
	}
	return p[""]
}

func (p positions) has(key string) bool {
	_, ok := p[key]
	return ok
}
