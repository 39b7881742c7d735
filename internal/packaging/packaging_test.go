package packaging

import (
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/golive/golive/internal/agentconfig"
)

func TestDebianVersion(t *testing.T) {
	tests := []struct {
		give  string
		count int
		want  string
	}{
		{give: "v1.2.3-0-gabc1234", want: "1.2.3"},
		{give: "v1.2.3-4-gabc1234", want: "1.2.3+git4.gabc1234"},
		{give: "v1.2.3-4-gabc1234-dirty", want: "1.2.3+git4.gabc1234.dirty"},
		{give: "v1.2.3-0-gabc1234-dirty", want: "1.2.3+dirty"},
		{give: "v1.2.3-rc1-0-gabc1234", want: "1.2.3~rc1"},
		{give: "v1.2.3-rc.1-2-gabc1234", want: "1.2.3~rc.1+git2.gabc1234"},
		{give: "abc1234", count: 812, want: "0.0.0~git812.gabc1234"},
		{give: "abc1234-dirty\n", count: 812, want: "0.0.0~git812.gabc1234+dirty"},
	}
	for _, tt := range tests {
		got, err := DebianVersion(tt.give, tt.count)
		if err != nil || got != tt.want {
			t.Errorf("DebianVersion(%q, %d) = %q, %v; want %q", tt.give, tt.count, got, err, tt.want)
		}
	}
	for _, bad := range []string{"", "1.2.3", "release-7", "v1.2.3-x-gabc"} {
		if got, err := DebianVersion(bad, 1); err == nil {
			t.Errorf("DebianVersion(%q) = %q, want an error", bad, got)
		}
	}
}

// The versions sort like the history, by dpkg's own comparison.
func TestDebianVersionOrder(t *testing.T) {
	dpkg, err := exec.LookPath("dpkg")
	if err != nil {
		t.Skipf("dpkg not found (%v)", err)
	}
	ordered := []string{"0.0.0~git9.gaaa", "0.0.0~git10.gbbb", "0.0.0~git10.gbbb+dirty", "1.0.0~rc1", "1.0.0", "1.0.0+git3.gccc", "1.0.0+git12.gddd", "1.0.1"}
	for i := 1; i < len(ordered); i++ {
		if err := exec.Command(dpkg, "--compare-versions", ordered[i-1], "lt", ordered[i]).Run(); err != nil {
			t.Errorf("dpkg: %s is not before %s", ordered[i-1], ordered[i])
		}
	}
}

// Build makes both packages; dpkg-deb reads back what they hold.
func TestBuild(t *testing.T) {
	if testing.Short() {
		t.Skip("builds both binaries")
	}
	dpkgDeb, err := exec.LookPath("dpkg-deb")
	if err != nil {
		if os.Getenv("CI") == "true" {
			t.Fatalf("dpkg-deb not found (%v): CI must check the packages", err)
		}
		t.Skipf("dpkg-deb not found (%v)", err)
	}
	repo, err := filepath.Abs("../..")
	if err != nil {
		t.Fatal(err)
	}
	out := t.TempDir()
	debs, err := Build(t.Context(), Options{Repo: repo, Out: out, Version: "1.2.3+git4.gabc", BinaryVersion: "v1.2.3-4-gabc", Log: t.Logf})
	if err != nil {
		t.Fatal(err)
	}
	want := map[string]struct {
		files, conffiles, control []string
	}{
		"golive-controller": {
			files:     []string{"./usr/bin/golive-controller", "./lib/systemd/system/golive-controller.service", "./etc/golive/controller.hcl"},
			conffiles: []string{"/etc/golive/controller.hcl"},
			control:   []string{"Package: golive-controller", "Version: 1.2.3+git4.gabc", "Architecture: amd64", "Section: admin", "Maintainer: " + Maintainer, "Depends: passwd"},
		},
		"golive-agent": {
			files:     []string{"./usr/bin/golive-agent", "./lib/systemd/system/golive-agent.service", "./lib/systemd/system/golive-app@.service", "./etc/golive/agent.hcl", "./usr/share/doc/golive-agent/examples/agent.hcl"},
			conffiles: []string{"/etc/golive/agent.hcl"},
			control:   []string{"Package: golive-agent", "Version: 1.2.3+git4.gabc", "Section: admin"},
		},
	}
	if len(debs) != len(want) {
		t.Fatalf("built %v, want %d packages", debs, len(want))
	}
	for _, deb := range debs {
		name := strings.SplitN(filepath.Base(deb), "_", 2)[0]
		w, ok := want[name]
		if !ok {
			t.Fatalf("unexpected package %s", deb)
		}
		if filepath.Base(deb) != FileName(name, "1.2.3+git4.gabc") {
			t.Errorf("file name %s", deb)
		}
		run := func(args ...string) string {
			b, err := exec.Command(dpkgDeb, args...).CombinedOutput()
			if err != nil {
				t.Fatalf("dpkg-deb %v: %v\n%s", args, err, b)
			}
			return string(b)
		}
		contents := run("--contents", deb)
		for _, f := range w.files {
			if !strings.Contains(contents, " "+f+"\n") && !strings.Contains(contents, " "+f+" ") {
				t.Errorf("%s lacks %s:\n%s", name, f, contents)
			}
		}
		if !strings.Contains(contents, "-rwxr-xr-x root/root") {
			t.Errorf("%s: binary not 0755 root/root:\n%s", name, contents)
		}
		control := run("--field", deb)
		for _, c := range w.control {
			if !strings.Contains(control, c+"\n") {
				t.Errorf("%s control lacks %q:\n%s", name, c, control)
			}
		}
		ctl := t.TempDir()
		run("--control", deb, ctl)
		conffiles, err := os.ReadFile(filepath.Join(ctl, "conffiles"))
		if err != nil {
			t.Fatal(err)
		}
		if got := strings.Fields(string(conffiles)); strings.Join(got, " ") != strings.Join(w.conffiles, " ") {
			t.Errorf("%s conffiles = %q, want %q", name, got, w.conffiles)
		}
		for _, s := range []string{"postinst", "prerm", "postrm"} {
			fi, err := os.Stat(filepath.Join(ctl, s))
			if err != nil || fi.Mode()&0o111 == 0 {
				t.Errorf("%s: maintainer script %s missing or not executable (%v)", name, s, err)
			}
		}
	}
}

// The maintainer scripts under $DPKG_ROOT: users and directories land inside
// it, the build host's files are untouched, and remove keeps the state that
// purge deletes. (systemctl is only called without $DPKG_ROOT.)
func TestMaintainerScriptsHonourDPKGRoot(t *testing.T) {
	if os.Getuid() != 0 {
		t.Skip("chown in postinst needs root")
	}
	for _, tool := range []string{"useradd", "groupadd", "awk", "install"} {
		if _, err := exec.LookPath(tool); err != nil {
			t.Skipf("%s not found (%v)", tool, err)
		}
	}
	root := t.TempDir()
	for _, d := range []string{"etc", "var/lib", "var/log"} {
		if err := os.MkdirAll(filepath.Join(root, d), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	for _, f := range []string{"etc/passwd", "etc/group", "etc/shadow", "etc/gshadow"} {
		content := ""
		switch f {
		case "etc/passwd":
			content = "root:x:0:0:root:/root:/bin/sh\n"
		case "etc/group":
			content = "root:x:0:\n"
		}
		if err := os.WriteFile(filepath.Join(root, f), []byte(content), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	hostPasswd, _ := os.ReadFile("/etc/passwd")
	script := func(pkg, name string, args ...string) {
		t.Helper()
		cmd := exec.Command("sh", append([]string{filepath.Join("../../deploy/packaging", pkg+"."+name)}, args...)...)
		cmd.Env = append(os.Environ(), "DPKG_ROOT="+root)
		if out, err := cmd.CombinedOutput(); err != nil {
			t.Fatalf("%s.%s %v: %v\n%s", pkg, name, args, err, out)
		}
	}
	script("golive-controller", "postinst", "configure")
	script("golive-controller", "postinst", "configure") // idempotent
	script("golive-agent", "postinst", "configure")
	passwd, _ := os.ReadFile(filepath.Join(root, "etc/passwd"))
	if strings.Count(string(passwd), "golive:") != 1 {
		t.Errorf("passwd under DPKG_ROOT:\n%s", passwd)
	}
	if after, _ := os.ReadFile("/etc/passwd"); string(after) != string(hostPasswd) {
		t.Errorf("the host's /etc/passwd changed")
	}
	for dir, mode := range map[string]os.FileMode{"var/lib/golive-controller": 0o700, "var/lib/golive-agent": 0o711} {
		fi, err := os.Stat(filepath.Join(root, dir))
		if err != nil || fi.Mode().Perm() != mode {
			t.Errorf("%s: %v, %v; want mode %v", dir, fi, err, mode)
		}
	}
	script("golive-controller", "prerm", "remove")
	script("golive-controller", "postrm", "remove")
	if _, err := os.Stat(filepath.Join(root, "var/lib/golive-controller")); err != nil {
		t.Errorf("remove deleted the state: %v", err)
	}
	script("golive-controller", "postrm", "purge")
	script("golive-agent", "postrm", "purge")
	for _, dir := range []string{"var/lib/golive-controller", "var/lib/golive-agent"} {
		if _, err := os.Stat(filepath.Join(root, dir)); !os.IsNotExist(err) {
			t.Errorf("purge left %s (%v)", dir, err)
		}
	}
}

// The packaged /etc/golive/agent.hcl is valid as shipped and names the
// unit's state directory (the sandbox makes the rest of /var/lib read-only).
func TestPackagedAgentConfig(t *testing.T) {
	cfg, err := agentconfig.Load("../../deploy/packaging/agent.hcl")
	if err != nil {
		t.Fatal(err)
	}
	if err := cfg.Validate(); err != nil {
		t.Fatal(err)
	}
	if cfg.StateDir != "/var/lib/golive-agent" {
		t.Errorf("state_dir = %q, want the unit's StateDirectory /var/lib/golive-agent", cfg.StateDir)
	}
	unit, err := os.ReadFile("../../deploy/systemd/golive-agent.service")
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(string(unit), "StateDirectory=golive-agent\n") {
		t.Error("golive-agent.service: StateDirectory is not golive-agent")
	}
}
