// Package systemdtest installs golive's .deb packages (internal/packaging)
// into a booted Debian with a real systemd and drives them as an operator
// would: dpkg -i, systemctl start, the controller CLI's authorize and
// deploy, releases of the sample service run as systemd units over D-Bus
// (internal/svcmgr/systemd) in restart mode and blue-green behind nginx,
// rollback, a kill -9 of the agent in the middle of a deploy recovered by the
// unit's restart, journalctl, then dpkg -r and dpkg -P.
//
// The Debian tree is made once with debootstrap (minbase + systemd, dbus,
// nginx) and cached in the temp dir ($TMPDIR/golive-systemdtest-*), shared
// by every test run on the machine (flock while it is made). Each run boots
// it with systemd-nspawn --volatile=overlay (the tree stays pristine: every
// write goes to a throw-away overlay), --private-network (its loopback is its
// own: fixed ports inside cannot collide with the host's), --register=no
// --keep-unit (no systemd-machined on the host). Commands run inside with
// nsenter into the container's init; the host's curl checks the services in
// the container's network namespace.
//
// Needs root, systemd-nspawn (systemd-container), debootstrap, nsenter,
// curl and a reachable Debian mirror (the one in the host's apt sources, or
// $GOLIVE_DEBIAN_MIRROR). Without them the test skips, naming what is
// missing, except under CI=true, where it fails: CI must run it.
//
// Every wait is a poll of a condition with a deadline (is-active, the
// answer of /version, a file's presence), never a sleep standing in for one.
package systemdtest

import (
	"bufio"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/golive/golive/internal/packaging"
)

const (
	suite    = "bookworm"
	packages = "systemd,dbus,nginx"

	versionInstalled = "1.0.0~systemdtest1"
	versionUpgrade   = "1.0.0~systemdtest2"
)

// need returns the path of tool, or skips (fails under CI=true).
func need(t *testing.T, tool string) string {
	t.Helper()
	p, err := exec.LookPath(tool)
	if err != nil {
		missing(t, fmt.Sprintf("%s not found (%v): install systemd-container, debootstrap, util-linux and curl", tool, err))
	}
	return p
}

func missing(t *testing.T, why string) {
	t.Helper()
	if os.Getenv("CI") == "true" {
		t.Fatalf("%s; CI must run the systemd test", why)
	}
	t.Skipf("%s; skipping (it fails under CI=true)", why)
}

func TestPackagesUnderSystemd(t *testing.T) {
	if testing.Short() {
		t.Skip("boots a Debian container (-short)")
	}
	if os.Getuid() != 0 {
		missing(t, "not root: systemd-nspawn and debootstrap need root")
	}
	for _, tool := range []string{"systemd-nspawn", "debootstrap", "nsenter", "curl", "bash"} {
		need(t, tool)
	}
	start := time.Now()
	repo, err := filepath.Abs("../..")
	if err != nil {
		t.Fatal(err)
	}

	// The Debian tree (cached, or made now) while the packages build.
	type tree struct {
		path, made string
		err        error
	}
	trees := make(chan tree, 1)
	go func() {
		path, made, err := rootfs(t.Context())
		trees <- tree{path, made, err}
	}()

	// The files the container sees read-only at /opt/golive.
	share := t.TempDir()
	if err := os.Chmod(share, 0o755); err != nil {
		t.Fatal(err)
	}
	t0 := time.Now()
	// Two versions of the same binaries: the first is installed, the
	// second upgrades it.
	bins := t.TempDir()
	if err := packaging.BuildBinaries(t.Context(), packaging.Options{Repo: repo, BinaryVersion: versionInstalled, Log: t.Logf}, bins); err != nil {
		t.Fatal(err)
	}
	debs, err := packaging.Build(t.Context(), packaging.Options{Repo: repo, Binaries: bins, Out: filepath.Join(share, "debs"), Version: versionInstalled, Log: t.Logf})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := packaging.Build(t.Context(), packaging.Options{Repo: repo, Binaries: bins, Out: filepath.Join(share, "debs-upgrade"), Version: versionUpgrade, Log: t.Logf}); err != nil {
		t.Fatal(err)
	}
	mk := exec.CommandContext(t.Context(), "bash", "cmd/sampleapp/mkreleases.sh", filepath.Join(share, "releases"))
	mk.Dir = repo
	if out, err := mk.CombinedOutput(); err != nil {
		t.Fatalf("mkreleases.sh: %v\n%s", err, out)
	}
	writeConfigs(t, share)
	t.Logf("timing: packages and releases built in %s", time.Since(t0).Round(100*time.Millisecond))
	tr := <-trees
	if tr.err != nil {
		missing(t, tr.err.Error())
	}
	t.Logf("timing: Debian tree at %s: %s", tr.path, tr.made)
	b := boot(t, tr.path, share)

	// Install: nothing is enabled or started, the user and state dirs exist.
	t0 = time.Now()
	b.must("dpkg -i " + strings.Join(inContainer(debs), " "))
	t.Logf("timing: dpkg -i of both packages %s", time.Since(t0).Round(100*time.Millisecond))
	for _, u := range []string{"golive-controller", "golive-agent"} {
		if got := b.out("systemctl is-enabled " + u); got != "disabled" {
			t.Errorf("after install %s is %q, want disabled", u, got)
		}
		if got := b.out("systemctl is-active " + u); got != "inactive" {
			t.Errorf("after install %s is %q, want inactive (nothing started on install)", u, got)
		}
	}
	b.must("id golive")
	if got := b.out("stat -c '%U %a' /var/lib/golive-controller /var/lib/golive-agent"); got != "golive 700\nroot 711" {
		t.Errorf("state dirs: %q", got)
	}

	// The test's own site config: the agent's services, their units, nginx.
	b.must(`install -m 0644 /opt/golive/conf/agent.hcl /etc/golive/agent.hcl &&
		install -m 0644 /opt/golive/conf/golive-web.service /etc/systemd/system/golive-web.service &&
		install -d /etc/nginx/golive &&
		install -m 0644 /opt/golive/conf/upstream-app.conf /etc/nginx/golive/app.conf &&
		install -m 0644 /opt/golive/conf/nginx-app.conf /etc/nginx/conf.d/golive-app.conf &&
		systemctl daemon-reload && systemctl restart nginx`)
	b.must("golive-agent check --config /etc/golive/agent.hcl")

	// Start: Type=notify units are active once systemctl start returns.
	t0 = time.Now()
	b.must("systemctl start golive-controller golive-agent")
	for _, u := range []string{"golive-controller", "golive-agent"} {
		b.waitActive(u, 30*time.Second)
		if got := b.out("systemctl show -P Type " + u); got != "notify" {
			t.Errorf("%s Type=%s, want notify", u, got)
		}
	}
	b.waitConnected()
	t.Logf("timing: controller and agent started and connected in %s", time.Since(t0).Round(100*time.Millisecond))

	b.must(`golive-controller --as systemdtest authorize "start automation now" --ttl 30m --reason "systemd test"`)

	t.Run("restart mode", func(t *testing.T) {
		b := b.on(t)
		b.ready()
		b.deploy("web", "v1", true)
		b.waitVersion(8080, "v1")
		b.waitActive("golive-web", 10*time.Second)
		b.deploy("web", "v2", true)
		b.waitVersion(8080, "v2")
		// v3 fails its health check: the rollout fails, the host goes back.
		t0 := time.Now()
		if out, err := b.sh(b.deployCmd("web", "v3") + " --wait"); err == nil {
			t.Fatalf("deploy of the broken v3 succeeded:\n%s", out)
		}
		b.waitVersion(8080, "v2")
		t.Logf("timing: deploy web v3, rolled back: %s", time.Since(t0).Round(100*time.Millisecond))
		t0 = time.Now()
		b.must("golive-controller --as systemdtest rollback --service web --wait")
		b.waitVersion(8080, "v1")
		t.Logf("timing: rollback web to v1: %s", time.Since(t0).Round(100*time.Millisecond))
	})

	t.Run("kill -9 mid-deploy", func(t *testing.T) {
		b := b.on(t)
		b.ready()
		before := b.out("systemctl show -P NRestarts golive-agent")
		// v3 spends its health deadline failing: the step is journaled all
		// that time. Kill the agent while the journal is there.
		out := b.must(b.deployCmd("web", "v3") + " -o json")
		id := rolloutID(t, out)
		b.waitFor("the deploy step's journal", 60*time.Second, func() (bool, string) {
			_, err := b.sh("test -e /var/lib/golive-agent/services/web/journal.json")
			return err == nil, ""
		})
		stage := b.out("cat /var/lib/golive-agent/services/web/journal.json")
		// The main process only: that is the kill -9 of the agent. (The
		// default, all processes of the unit, once failed here with
		// "Failed to send signal SIGKILL to auxiliary processes:
		// Input/output error" after the main process was killed.) The
		// wait below is the check that it died and was restarted.
		if out, err := b.sh("systemctl kill -s KILL --kill-whom=main golive-agent"); err != nil {
			t.Logf("systemctl kill: %v: %s", err, out)
		}
		t.Logf("killed the agent with the journal at: %s", stage)
		b.waitFor("the unit to restart the agent", 30*time.Second, func() (bool, string) {
			n := b.out("systemctl show -P NRestarts golive-agent")
			active := b.out("systemctl is-active golive-agent")
			return n != before && active == "active", "NRestarts=" + n + " " + active
		})
		// Recovered: the release before v3 serves, the journal is gone.
		b.waitVersion(8080, "v1")
		b.waitFor("the journal to be gone", 60*time.Second, func() (bool, string) {
			_, err := b.sh("test -e /var/lib/golive-agent/services/web/journal.json")
			return err != nil, ""
		})
		// watch follows the rollout to its end (exit 1: it did not succeed).
		out, err := b.sh("timeout 120 golive-controller watch " + id)
		if ee, ok := err.(*exec.ExitError); ok && ee.ExitCode() == 124 {
			t.Fatalf("rollout %s did not end within 120s of the kill:\n%s", id, lastLines(out, 20))
		}
		t.Logf("rollout %s after the kill: %s", id, lastLines(out, 3))
		b.waitVersion(8080, "v1")
		b.waitActive("golive-web", 10*time.Second)
	})

	t.Run("watchdog restarts a frozen agent", func(t *testing.T) {
		b := b.on(t)
		b.ready()
		// The packaged unit's WatchdogSec is 30s; a drop-in makes it 3s here.
		b.must("mkdir -p /run/systemd/system/golive-agent.service.d && printf '[Service]\nWatchdogSec=3s\n' > /run/systemd/system/golive-agent.service.d/wd.conf && systemctl daemon-reload && systemctl restart golive-agent")
		t.Cleanup(func() {
			b.sh("rm -f /run/systemd/system/golive-agent.service.d/wd.conf; systemctl daemon-reload; systemctl restart golive-agent")
		})
		b.ready()
		before := b.out("systemctl show -P NRestarts golive-agent")
		pid := b.out("systemctl show -P MainPID golive-agent")
		// Fed while it runs: still the same process after several intervals.
		b.waitFor("the agent fed its watchdog for 9s", 30*time.Second, func() (bool, string) {
			since := b.out("systemctl show -P ActiveEnterTimestampMonotonic golive-agent")
			now := b.out("cat /proc/uptime | cut -d' ' -f1")
			var s, u float64
			fmt.Sscan(since, &s)
			fmt.Sscan(now, &u)
			return u-s/1e6 > 9, "up " + fmt.Sprint(u-s/1e6) + "s"
		})
		if got := b.out("systemctl show -P MainPID golive-agent"); got != pid {
			t.Fatalf("the agent was restarted while it fed its watchdog: pid %s, was %s", got, pid)
		}
		t0 := time.Now()
		b.must("kill -STOP " + pid)
		b.waitFor("the watchdog to restart the frozen agent", 60*time.Second, func() (bool, string) {
			n := b.out("systemctl show -P NRestarts golive-agent")
			active := b.out("systemctl is-active golive-agent")
			return n != before && active == "active", "NRestarts=" + n + " " + active
		})
		t.Logf("timing: watchdog restart of a SIGSTOPped agent: %s", time.Since(t0).Round(100*time.Millisecond))
		if out, _ := b.sh("journalctl -u golive-agent --no-pager | grep -i watchdog"); !strings.Contains(strings.ToLower(out), "watchdog") {
			t.Fatalf("journal does not say the watchdog fired:\n%s", out)
		}
	})

	t.Run("blue-green behind nginx", func(t *testing.T) {
		b := b.on(t)
		b.ready()
		b.deploy("app", "v1", true)
		b.waitVersion(8000, "v1") // through nginx
		b.deploy("app", "v2", true)
		b.waitVersion(8000, "v2")
		// v1 stays warm in the other slot: both instances run.
		b.waitActive("golive-app@blue", 10*time.Second)
		b.waitActive("golive-app@green", 10*time.Second)
		b.must("golive-controller --as systemdtest rollback --service app --wait")
		b.waitVersion(8000, "v1")
	})

	t.Run("upgrade", func(t *testing.T) {
		b := b.on(t)
		b.ready()
		pids := map[string]string{}
		for _, u := range []string{"golive-controller", "golive-agent"} {
			pids[u] = b.out("systemctl show -P MainPID " + u)
		}
		t0 := time.Now()
		b.must("dpkg -i /opt/golive/debs-upgrade/*.deb")
		t.Logf("timing: dpkg -i of the upgrade %s", time.Since(t0).Round(100*time.Millisecond))
		if got := b.out("dpkg-query -W -f '${Version}' golive-agent golive-controller"); got != versionUpgrade+versionUpgrade {
			t.Errorf("installed versions %q, want %s", got, versionUpgrade)
		}
		// The site's edited conffile is kept.
		b.must(`grep -q 'host_id   = "box"' /etc/golive/agent.hcl`)
		// The running daemons were restarted on the new binaries.
		for u, before := range pids {
			b.waitActive(u, 30*time.Second)
			if after := b.out("systemctl show -P MainPID " + u); after == before {
				t.Errorf("%s still runs as pid %s after the upgrade: not restarted", u, before)
			}
		}
		b.waitConnected()
		// The service kept serving through the agent's restart.
		b.waitVersion(8080, "v1")
	})

	t.Run("bad controller.hcl", func(t *testing.T) {
		b := b.on(t)
		b.must(`cp /etc/golive/controller.hcl /root/controller.hcl.orig && echo 'listen_address = "0.0.0.0:7400"' >>/etc/golive/controller.hcl`)
		if out, err := b.sh("systemctl restart golive-controller"); err == nil {
			t.Errorf("the controller started with an unknown key in controller.hcl:\n%s", out)
		}
		b.waitFor("the unit to fail, not restart in a loop", 10*time.Second, func() (bool, string) {
			s := b.out("systemctl is-failed golive-controller")
			return s == "failed", s
		})
		b.waitFor("the journal to name the key", 10*time.Second, func() (bool, string) {
			out, _ := b.sh("journalctl --no-pager -o cat -n 20 -u golive-controller")
			return strings.Contains(out, `unknown setting "listen_address"`), lastLines(out, 5)
		})
		b.must("cp /root/controller.hcl.orig /etc/golive/controller.hcl && systemctl start golive-controller")
		b.waitActive("golive-controller", 30*time.Second)
		b.waitConnected()
	})

	t.Run("journalctl", func(t *testing.T) {
		b := b.on(t)
		for unit, want := range map[string]string{
			"golive-agent":      "agent running",
			"golive-controller": "controller serving",
			"golive-web":        "sampleapp v1 listening",
		} {
			b.waitFor("journalctl -u "+unit+" to show "+want, 10*time.Second, func() (bool, string) {
				out, _ := b.sh("journalctl --no-pager -o cat -u " + unit)
				return strings.Contains(out, want), lastLines(out, 5)
			})
		}
	})

	t.Run("dpkg -r and -P", func(t *testing.T) {
		b := b.on(t)
		b.must("dpkg -r golive-agent golive-controller")
		for _, u := range []string{"golive-controller", "golive-agent"} {
			if got := b.out("systemctl is-active " + u); got != "inactive" {
				t.Errorf("after dpkg -r %s is %q, want inactive (prerm stops it)", u, got)
			}
		}
		gone := []string{"/usr/bin/golive-controller", "/usr/bin/golive-agent", "/lib/systemd/system/golive-agent.service", "/lib/systemd/system/golive-controller.service"}
		kept := []string{"/etc/golive/controller.hcl", "/etc/golive/agent.hcl", "/var/lib/golive-controller/etcd", "/var/lib/golive-agent/services/web/current"}
		b.checkPaths("after dpkg -r", gone, kept)
		b.must("id golive")
		// Removing the deploy tool does not stop what it deployed.
		b.waitVersion(8080, "v1")
		b.must("systemctl stop golive-web 'golive-app@*'")
		b.must("dpkg -P golive-agent golive-controller")
		b.checkPaths("after dpkg -P", append(gone, "/etc/golive/controller.hcl", "/etc/golive/agent.hcl", "/var/lib/golive-controller", "/var/lib/golive-agent"), nil)
		b.must("id golive") // system users stay, as Debian does
	})

	t.Logf("timing: whole test %s", time.Since(start).Round(100*time.Millisecond))
}

// writeConfigs writes the site configuration the test installs.
func writeConfigs(t *testing.T, share string) {
	t.Helper()
	files := map[string]string{
		"agent.hcl": `# The systemd test's agent: a restart-mode and a blue-green service, both
# run by systemd.
host_id   = "box"
state_dir = "/var/lib/golive-agent"

controller {
  address = "127.0.0.1:7400"
}

service "web" {
  swap_mode = "restart"
  manager   = "systemd"
  unit      = "golive-web.service"
  port      = 8080
  health {
    url       = "http://127.0.0.1:{port}/healthz"
    interval  = "200ms"
    successes = 2
    deadline  = "8s"
  }
}

service "app" {
  swap_mode = "blue-green"
  manager   = "systemd"
  unit      = "golive-app@"
  health {
    url       = "http://127.0.0.1:{port}/healthz"
    interval  = "200ms"
    successes = 2
    deadline  = "8s"
  }
  blue_green {
    blue_port     = 8081
    green_port    = 8082
    keep_warm     = "10m"
    drain_timeout = "5s"
    router {
      kind          = "nginx"
      upstream_file = "/etc/nginx/golive/app.conf"
      reload        = ["systemctl", "reload", "nginx"]
      probe_url     = "http://127.0.0.1:8000/version"
    }
  }
}
`,
		// Restart mode: the unit runs whatever current points at.
		"golive-web.service": `[Unit]
Description=sample web service (restart mode, deployed by golive)

[Service]
Type=notify
NotifyAccess=main
WorkingDirectory=/var/lib/golive-agent/services/web/current
ExecStart=/var/lib/golive-agent/services/web/current/bin/sampleapp --port 8080
DynamicUser=yes
NoNewPrivileges=yes
ProtectSystem=strict
Restart=on-failure
RestartSec=1s
`,
		"upstream-app.conf": `# golive-state: {"blue":100,"green":0,"generation":"initial"}
upstream golive_app {
    server 127.0.0.1:8081 weight=100; # blue
    server 127.0.0.1:8082 backup; # green
    keepalive 32;
}
map $host $golive_app_generation {
    default "initial";
}
`,
		"nginx-app.conf": `include /etc/nginx/golive/app.conf;
server {
    listen 127.0.0.1:8000;
    location / {
        proxy_pass http://golive_app;
        proxy_http_version 1.1;
        proxy_set_header Connection "";
        proxy_next_upstream error timeout http_502 http_503;
        proxy_connect_timeout 2s;
        add_header X-Golive-Generation $golive_app_generation always;
    }
}
`,
	}
	dir := filepath.Join(share, "conf")
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	for name, content := range files {
		if err := os.WriteFile(filepath.Join(dir, name), []byte(content), 0o644); err != nil {
			t.Fatal(err)
		}
	}
}

func inContainer(paths []string) []string {
	var out []string
	for _, p := range paths {
		out = append(out, "/opt/golive/debs/"+filepath.Base(p))
	}
	return out
}

// rootfs returns the cached Debian tree, making it first if needed, and
// says which it did (with the time debootstrap took).
func rootfs(ctx context.Context) (path, made string, err error) {
	sum := sha256.Sum256([]byte(suite + " minbase " + packages))
	base := filepath.Join(os.TempDir(), "golive-systemdtest-"+suite+"-"+hex.EncodeToString(sum[:4]))
	lock, err := os.OpenFile(base+".lock", os.O_CREATE|os.O_RDWR, 0o600)
	if err != nil {
		return "", "", err
	}
	defer lock.Close() // releases the flock
	if err := syscall.Flock(int(lock.Fd()), syscall.LOCK_EX); err != nil {
		return "", "", err
	}
	if _, err := os.Stat(filepath.Join(base, ".golive-complete")); err == nil {
		return base, "cached", nil
	}
	mirror := debianMirror()
	tmp := base + ".tmp"
	if err := os.RemoveAll(tmp); err != nil {
		return "", "", err
	}
	t0 := time.Now()
	ctx, cancel := context.WithTimeout(ctx, 10*time.Minute)
	defer cancel()
	out, err := exec.CommandContext(ctx, "debootstrap", "--variant=minbase", "--include="+packages, suite, tmp, mirror).CombinedOutput()
	if err != nil {
		return "", "", fmt.Errorf("debootstrap --variant=minbase --include=%s %s %s: %v\n%s", packages, suite, mirror, err, lastLines(string(out), 20))
	}
	if err := os.WriteFile(filepath.Join(tmp, ".golive-complete"), []byte(mirror+"\n"), 0o644); err != nil {
		return "", "", err
	}
	if err := os.Rename(tmp, base); err != nil {
		return "", "", err
	}
	return base, fmt.Sprintf("made by debootstrap --variant=minbase --include=%s %s from %s in %s",
		packages, suite, mirror, time.Since(t0).Round(100*time.Millisecond)), nil
}

// debianMirror is $GOLIVE_DEBIAN_MIRROR, else the first non-security Debian
// URI in the host's apt sources, else deb.debian.org.
func debianMirror() string {
	if m := os.Getenv("GOLIVE_DEBIAN_MIRROR"); m != "" {
		return m
	}
	files, _ := filepath.Glob("/etc/apt/sources.list.d/*.sources")
	files = append(files, "/etc/apt/sources.list")
	for _, f := range files {
		data, err := os.ReadFile(f)
		if err != nil {
			continue
		}
		sc := bufio.NewScanner(strings.NewReader(string(data)))
		for sc.Scan() {
			fields := strings.Fields(sc.Text())
			var uri string
			switch {
			case len(fields) >= 2 && fields[0] == "URIs:":
				uri = fields[1]
			case len(fields) >= 3 && fields[0] == "deb" && !strings.HasPrefix(fields[1], "["):
				uri = fields[1]
			}
			if uri != "" && strings.Contains(uri, "debian") && !strings.Contains(uri, "security") {
				return uri
			}
		}
	}
	return "http://deb.debian.org/debian"
}

// box is a booted container.
type box struct {
	t   *testing.T
	pid int // the container's init (systemd) in the host's PID namespace
}

// on returns b reporting to t (a subtest).
func (b *box) on(t *testing.T) *box { return &box{t: t, pid: b.pid} }

// boot starts systemd in tree and waits until it reaches its default target.
func boot(t *testing.T, tree, share string) *box {
	t.Helper()
	name := fmt.Sprintf("golive-test-%d", os.Getpid())
	logPath := filepath.Join(t.TempDir(), "console.log")
	logf, err := os.Create(logPath)
	if err != nil {
		t.Fatal(err)
	}
	t0 := time.Now()
	cmd := exec.Command("systemd-nspawn", "-D", tree, "--volatile=overlay", "--boot", "--register=no", "--keep-unit",
		"-M", name, "--private-network", "--bind-ro="+share+":/opt/golive", "--console=passive")
	cmd.Stdout, cmd.Stderr = logf, logf
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	exited := make(chan error, 1)
	go func() { exited <- cmd.Wait(); logf.Close() }()
	b := &box{t: t}
	t.Cleanup(func() {
		if t.Failed() && b.pid != 0 {
			out, _ := b.sh("journalctl --no-pager -n 150 -o short-monotonic")
			t.Logf("container journal (last lines):\n%s", out)
		}
		// SIGTERM: nspawn powers the container off (SIGRTMIN+3 to its init).
		_ = cmd.Process.Signal(syscall.SIGTERM)
		select {
		case <-exited:
		case <-time.After(60 * time.Second):
			t.Errorf("systemd-nspawn did not stop within 60s of SIGTERM; killing it")
			_ = syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL)
			<-exited
		}
	})
	deadline := time.Now().Add(90 * time.Second)
	var state string
	for {
		select {
		case err := <-exited:
			console, _ := os.ReadFile(logPath)
			missing(t, fmt.Sprintf("systemd-nspawn exited (%v) before the container booted:\n%s", err, lastLines(string(console), 30)))
		default:
		}
		// nspawn's first children are short-lived helpers: look again
		// until its child is the container's systemd.
		b.pid = initOf(cmd.Process.Pid)
		if b.pid != 0 {
			state, _ = b.sh("systemctl is-system-running")
			state = strings.TrimSpace(state)
			if state == "running" || state == "degraded" {
				break
			}
		}
		if time.Now().After(deadline) {
			console, _ := os.ReadFile(logPath)
			t.Fatalf("the container did not boot within 90s (system state %q):\n%s", state, lastLines(string(console), 30))
		}
		time.Sleep(100 * time.Millisecond) // poll interval
	}
	if state == "degraded" {
		failed, _ := b.sh("systemctl --failed --no-pager")
		t.Logf("container booted degraded:\n%s", failed)
	}
	t.Logf("timing: container booted (systemd %s) in %s", b.out("systemctl --version | head -1 | cut -d' ' -f2"), time.Since(t0).Round(100*time.Millisecond))
	return b
}

// initOf is the child of pid that runs systemd (0 if none yet).
func initOf(pid int) int {
	tasks, _ := filepath.Glob(fmt.Sprintf("/proc/%d/task/*/children", pid))
	for _, f := range tasks {
		data, _ := os.ReadFile(f)
		for _, field := range strings.Fields(string(data)) {
			n, _ := strconv.Atoi(field)
			if comm, _ := os.ReadFile(fmt.Sprintf("/proc/%d/comm", n)); strings.TrimSpace(string(comm)) == "systemd" {
				return n
			}
		}
	}
	return 0
}

// sh runs script with /bin/sh inside the container (all its namespaces).
func (b *box) sh(script string) (string, error) {
	ctx, cancel := context.WithTimeout(b.t.Context(), 3*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, "nsenter", "-t", strconv.Itoa(b.pid), "-a", "/bin/sh", "-c", script)
	cmd.Env = []string{"PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin", "HOME=/root", "LANG=C.UTF-8"}
	out, err := cmd.CombinedOutput()
	return string(out), err
}

// must runs script and fails the test if it fails.
func (b *box) must(script string) string {
	b.t.Helper()
	out, err := b.sh(script)
	if err != nil {
		b.t.Fatalf("in the container: %s: %v\n%s", script, err, out)
	}
	return out
}

// out is script's trimmed output, whatever its exit status.
func (b *box) out(script string) string {
	out, _ := b.sh(script)
	return strings.TrimSpace(out)
}

// waitFor polls cond until it holds or timeout passes.
func (b *box) waitFor(what string, timeout time.Duration, cond func() (bool, string)) {
	b.t.Helper()
	deadline := time.Now().Add(timeout)
	for {
		ok, detail := cond()
		if ok {
			return
		}
		if time.Now().After(deadline) {
			b.t.Fatalf("waited %s for %s; last: %s", timeout, what, detail)
		}
		time.Sleep(200 * time.Millisecond) // poll interval
	}
}

// ready waits until both daemons are active and the agent is connected, so
// that a subtest does not start inside the aftermath of the one before.
func (b *box) ready() {
	b.t.Helper()
	b.waitActive("golive-controller", 30*time.Second)
	b.waitActive("golive-agent", 30*time.Second)
	b.waitConnected()
}

// waitConnected waits until the controller lists the agent as connected.
func (b *box) waitConnected() {
	b.t.Helper()
	b.waitFor("the agent to be connected to the controller", 30*time.Second, func() (bool, string) {
		out, err := b.sh("golive-controller agents -o json")
		if err != nil {
			return false, out
		}
		var resp struct {
			Agents []struct {
				HostID string `json:"host_id"`
				State  string `json:"state"`
			} `json:"agents"`
		}
		if err := json.Unmarshal([]byte(out), &resp); err != nil {
			return false, fmt.Sprintf("%v: %s", err, out)
		}
		for _, a := range resp.Agents {
			if a.HostID == "box" && a.State == "connected" {
				return true, ""
			}
		}
		return false, out
	})
}

func (b *box) waitActive(unit string, timeout time.Duration) {
	b.t.Helper()
	b.waitFor(unit+" to be active", timeout, func() (bool, string) {
		s := b.out("systemctl is-active " + unit)
		return s == "active", s + "\n" + b.out("systemctl status --no-pager -n 5 "+unit)
	})
}

// waitVersion waits until the container's 127.0.0.1:port/version answers
// want 5 times in a row (new connections: the host's curl in the container's
// network namespace).
func (b *box) waitVersion(port int, want string) {
	b.t.Helper()
	streak := 0
	b.waitFor(fmt.Sprintf(":%d/version to answer %s", port, want), 60*time.Second, func() (bool, string) {
		cmd := exec.CommandContext(b.t.Context(), "nsenter", "-t", strconv.Itoa(b.pid), "-n",
			"curl", "-sS", "--max-time", "2", fmt.Sprintf("http://127.0.0.1:%d/version", port))
		out, err := cmd.CombinedOutput()
		got := strings.TrimSpace(string(out))
		if err == nil && got == want {
			streak++
		} else {
			streak = 0
		}
		return streak >= 5, fmt.Sprintf("%q (%v)", got, err)
	})
}

func (b *box) deployCmd(service, version string) string {
	art := "/opt/golive/releases/sampleapp-" + version + ".tar.gz"
	return fmt.Sprintf("golive-controller --as systemdtest deploy --service %s --release %s --artifact file://%s --sha256 $(sha256sum %s | cut -d' ' -f1) --min-healthy 1s",
		service, version, art, art)
}

func (b *box) deploy(service, version string, wait bool) {
	b.t.Helper()
	t0 := time.Now()
	cmd := b.deployCmd(service, version)
	if wait {
		cmd += " --wait"
	}
	b.must(cmd)
	b.t.Logf("timing: deploy %s %s: %s", service, version, time.Since(t0).Round(100*time.Millisecond))
}

func (b *box) checkPaths(when string, gone, kept []string) {
	b.t.Helper()
	for _, p := range gone {
		if _, err := b.sh("test -e " + p); err == nil {
			b.t.Errorf("%s: %s still exists", when, p)
		}
	}
	for _, p := range kept {
		if _, err := b.sh("test -e " + p); err != nil {
			b.t.Errorf("%s: %s is gone, want it kept", when, p)
		}
	}
}

var rolloutIDRe = regexp.MustCompile(`"id":\s*"([^"]+)"`)

func rolloutID(t *testing.T, out string) string {
	t.Helper()
	m := rolloutIDRe.FindStringSubmatch(out)
	if m == nil {
		t.Fatalf("no rollout id in:\n%s", out)
	}
	return m[1]
}

func lastLines(s string, n int) string {
	lines := strings.Split(strings.TrimRight(s, "\n"), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}
