// Package packaging builds golive's Debian packages, golive-controller and
// golive-agent, with nfpm used as a library (no nfpm binary, no dpkg-deb
// needed on the build machine). `make package` runs it through
// internal/packaging/cmd/mkdeb; internal/systemdtest calls BuildBinaries and
// Build directly.
//
// What a package holds (the packages variable has the exact list):
//
//	/usr/bin/golive-{controller,agent}           static binaries (CGO off, -trimpath)
//	/lib/systemd/system/golive-*.service          from deploy/systemd
//	/etc/golive/{controller,agent}.hcl            conffiles (config|noreplace), from deploy/packaging
//	/usr/share/doc/golive-agent/examples/agent.hcl  every agent setting, commented
//	postinst, prerm, postrm                       from deploy/packaging/<package>.<script>
//
// Invariants:
//
//   - The Debian version is derived from `git describe` by DebianVersion and
//     always sorts the way the commits do (upgrades go forward).
//   - Building never touches the build host outside the output directory
//     and a temp dir: the maintainer scripts run only on dpkg -i.
//   - File times are the commit time: two builds of a clean commit give the
//     same package contents.
package packaging

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"time"

	"github.com/goreleaser/nfpm/v2"
	_ "github.com/goreleaser/nfpm/v2/deb" // registers the "deb" packager
	"github.com/goreleaser/nfpm/v2/files"
)

// Package metadata shared by both packages.
const (
	Section    = "admin"
	Priority   = "optional"
	Maintainer = "golive maintainers <maintainers@golive.invalid>"
	Homepage   = "https://github.com/golive/golive"
	License    = "Apache-2.0"
	Arch       = "amd64"
)

// Options say what to build and where.
type Options struct {
	// Repo is the repository root (holds go.mod, deploy/).
	Repo string
	// Out is the directory the .deb files are written to (created).
	Out string
	// Version is the Debian version; empty: GitVersion(Repo).
	Version string
	// BinaryVersion is stamped into the binaries (internal/version);
	// empty: `git describe --always --dirty`, as `make build` does.
	BinaryVersion string
	// Binaries, if set, is a directory holding golive-controller and
	// golive-agent built by BuildBinaries: Build packages them instead of
	// building its own.
	Binaries string
	// Go is the go command (default "go").
	Go string
	// Log, if set, receives one line per step.
	Log func(format string, args ...any)
}

// pkgSpec is one package.
type pkgSpec struct {
	name        string
	cmd         string // ./cmd/<cmd>
	description string
	depends     []string
	recommends  []string
	units       []string // files of deploy/systemd
	conffile    string   // file of deploy/packaging, installed as /etc/golive/<conffile>
	examples    map[string]string
}

// packages are the packages Build makes, in order.
var packages = []pkgSpec{
	{
		name: "golive-controller",
		cmd:  "controller",
		description: "golive controller: deploys releases to production hosts under human control\n" +
			"The controller daemon (golive-controller serve, as the golive-controller\n" +
			"unit) stores approvals, rollouts and the audit log in etcd (embedded by\n" +
			"default) and drives the agents; the same binary is the operator CLI.",
		depends: []string{"passwd"},
		units:   []string{"golive-controller.service"},
		// The unit reads it with --config; flags in a drop-in win over it.
		conffile: "controller.hcl",
	},
	{
		name: "golive-agent",
		cmd:  "agent",
		description: "golive agent: the deploy agent on each production host\n" +
			"The agent daemon (golive-agent run, as the golive-agent unit) receives\n" +
			"deploy commands from the golive controller and fetches, verifies,\n" +
			"unpacks, swaps and health-checks releases, journaled so a crash\n" +
			"resumes or undoes the step. golive-app@.service is a template for a\n" +
			"blue-green service (one instance per slot).",
		recommends: []string{"systemd", "dbus"},
		units:      []string{"golive-agent.service", "golive-app@.service"},
		conffile:   "agent.hcl",
		examples:   map[string]string{"deploy/examples/agent.hcl": "agent.hcl"},
	},
}

// Names are the package names, in build order.
func Names() []string {
	var out []string
	for _, p := range packages {
		out = append(out, p.name)
	}
	return out
}

// FileName is the conventional file name of package name at version.
func FileName(name, version string) string {
	return fmt.Sprintf("%s_%s_%s.deb", name, version, Arch)
}

// Build compiles both binaries (unless o.Binaries has them) and writes both
// packages into o.Out. It returns the paths of the .deb files.
func Build(ctx context.Context, o Options) ([]string, error) {
	o.defaults()
	if o.Version == "" {
		v, err := GitVersion(ctx, o.Repo)
		if err != nil {
			return nil, err
		}
		o.Version = v
	}
	if err := ValidDebianVersion(o.Version); err != nil {
		return nil, err
	}
	if o.Binaries == "" {
		work, err := os.MkdirTemp("", "golive-package-")
		if err != nil {
			return nil, err
		}
		defer os.RemoveAll(work)
		if err := BuildBinaries(ctx, o, work); err != nil {
			return nil, err
		}
		o.Binaries = work
	}
	mtime := commitTime(ctx, o.Repo)
	if err := os.MkdirAll(o.Out, 0o755); err != nil {
		return nil, err
	}
	var debs []string
	for _, p := range packages {
		path := filepath.Join(o.Out, FileName(p.name, o.Version))
		if err := writeDeb(p, o, filepath.Join(o.Binaries, p.name), mtime, path); err != nil {
			return nil, fmt.Errorf("%s: %w", p.name, err)
		}
		o.Log("wrote %s", path)
		debs = append(debs, path)
	}
	return debs, nil
}

func (o *Options) defaults() {
	if o.Go == "" {
		o.Go = "go"
	}
	if o.Log == nil {
		o.Log = func(string, ...any) {}
	}
}

// BuildBinaries builds golive-controller and golive-agent into dir as the
// packages ship them: static (CGO off), -trimpath, stripped, stamped with
// o.BinaryVersion.
func BuildBinaries(ctx context.Context, o Options, dir string) error {
	o.defaults()
	if o.BinaryVersion == "" {
		out, err := git(ctx, o.Repo, "describe", "--always", "--dirty")
		if err != nil {
			return err
		}
		o.BinaryVersion = out
	}
	// One go build for both: the package graph is loaded once and the
	// links run in parallel.
	tmp, err := os.MkdirTemp(dir, ".build-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(tmp)
	args := []string{"build", "-trimpath", "-buildvcs=false",
		"-ldflags", "-s -w -X github.com/golive/golive/internal/version.Version=" + o.BinaryVersion, "-o", tmp + "/"}
	for _, p := range packages {
		args = append(args, "./cmd/"+p.cmd)
	}
	o.Log("go %s", strings.Join(args, " "))
	build := exec.CommandContext(ctx, o.Go, args...)
	build.Dir = o.Repo
	build.Env = append(os.Environ(), "CGO_ENABLED=0", "GOOS=linux", "GOARCH=amd64")
	if out, err := build.CombinedOutput(); err != nil {
		return fmt.Errorf("go build: %w\n%s", err, out)
	}
	for _, p := range packages {
		if err := os.Rename(filepath.Join(tmp, p.cmd), filepath.Join(dir, p.name)); err != nil {
			return err
		}
	}
	return nil
}

func writeDeb(p pkgSpec, o Options, bin string, mtime time.Time, path string) error {
	repo := o.Repo
	file := func(src, dst string, mode os.FileMode) *files.Content {
		return &files.Content{Source: src, Destination: dst, FileInfo: &files.ContentFileInfo{Mode: mode, MTime: mtime}}
	}
	contents := files.Contents{file(bin, "/usr/bin/"+p.name, 0o755)}
	for _, u := range p.units {
		contents = append(contents, file(filepath.Join(repo, "deploy/systemd", u), "/lib/systemd/system/"+u, 0o644))
	}
	conf := file(filepath.Join(repo, "deploy/packaging", p.conffile), "/etc/golive/"+p.conffile, 0o644)
	conf.Type = files.TypeConfigNoReplace
	contents = append(contents, conf)
	for src, dst := range p.examples {
		contents = append(contents, file(filepath.Join(repo, src), "/usr/share/doc/"+p.name+"/examples/"+dst, 0o644))
	}
	script := func(s string) string { return filepath.Join(repo, "deploy/packaging", p.name+"."+s) }
	info := &nfpm.Info{
		Name:          p.name,
		Arch:          Arch,
		Platform:      "linux",
		Version:       o.Version,
		VersionSchema: "none", // already a Debian version: no semver rewriting
		Section:       Section,
		Priority:      Priority,
		Maintainer:    Maintainer,
		Description:   p.description,
		Homepage:      Homepage,
		License:       License,
		MTime:         mtime,
		Overridables: nfpm.Overridables{
			Depends:    p.depends,
			Recommends: p.recommends,
			Contents:   contents,
			Scripts: nfpm.Scripts{
				PostInstall: script("postinst"),
				PreRemove:   script("prerm"),
				PostRemove:  script("postrm"),
			},
		},
	}
	for _, s := range []string{info.Scripts.PostInstall, info.Scripts.PreRemove, info.Scripts.PostRemove} {
		if _, err := os.Stat(s); err != nil {
			return fmt.Errorf("maintainer script: %w", err)
		}
	}
	info = nfpm.WithDefaults(info)
	if err := nfpm.PrepareForPackager(info, "deb"); err != nil {
		return err
	}
	pkg, err := nfpm.Get("deb")
	if err != nil {
		return err
	}
	tmp := path + ".tmp"
	f, err := os.Create(tmp)
	if err != nil {
		return err
	}
	if err := pkg.Package(info, f); err != nil {
		f.Close()
		os.Remove(tmp)
		return err
	}
	if err := f.Close(); err != nil {
		os.Remove(tmp)
		return err
	}
	return os.Rename(tmp, path)
}

// GitVersion is DebianVersion of the repository's `git describe` and
// commit count.
func GitVersion(ctx context.Context, repo string) (string, error) {
	desc, err := git(ctx, repo, "describe", "--tags", "--long", "--always", "--dirty", "--match", "v[0-9]*")
	if err != nil {
		return "", err
	}
	count := 0
	if out, err := git(ctx, repo, "rev-list", "--count", "HEAD"); err == nil {
		count, _ = strconv.Atoi(out)
	}
	return DebianVersion(desc, count)
}

var (
	// v1.2.3-4-gabcdef0 or v1.2.3-rc1-4-gabcdef0, with --long and maybe -dirty
	describeTagged = regexp.MustCompile(`^v([0-9]+(?:\.[0-9]+)*)(?:-([0-9A-Za-z.]+))?-([0-9]+)-g([0-9a-f]+)(-dirty)?$`)
	// abcdef0 or abcdef0-dirty: no tag yet
	describeBare = regexp.MustCompile(`^([0-9a-f]{4,40})(-dirty)?$`)
	debianUp     = regexp.MustCompile(`^[0-9][A-Za-z0-9.+~]*$`)
)

// DebianVersion turns `git describe --tags --long --always --dirty` output
// into a Debian version that sorts like the history:
//
//	v1.2.3-0-gabc        1.2.3
//	v1.2.3-4-gabc        1.2.3+git4.gabc     (after 1.2.3, before 1.2.4)
//	v1.2.3-rc1-0-gabc    1.2.3~rc1           (before 1.2.3)
//	abc (no tag)         0.0.0~git<count>.gabc  (count: commits in HEAD)
//	...-dirty            ... with .dirty (or +dirty) appended
func DebianVersion(describe string, count int) (string, error) {
	describe = strings.TrimSpace(describe)
	var v string
	var dirty bool
	if m := describeTagged.FindStringSubmatch(describe); m != nil {
		v = m[1]
		if m[2] != "" {
			v += "~" + m[2]
		}
		if m[3] != "0" {
			v += "+git" + m[3] + ".g" + m[4]
		}
		dirty = m[5] != ""
	} else if m := describeBare.FindStringSubmatch(describe); m != nil {
		v = fmt.Sprintf("0.0.0~git%d.g%s", count, m[1])
		dirty = m[2] != ""
	} else {
		return "", fmt.Errorf("git describe %q: want vX.Y.Z-N-gHASH or a bare commit", describe)
	}
	if dirty {
		if strings.Contains(v, "+") {
			v += ".dirty"
		} else {
			v += "+dirty"
		}
	}
	return v, ValidDebianVersion(v)
}

// ValidDebianVersion accepts an upstream version without a Debian revision
// (golive's packages are native): a digit first, then [A-Za-z0-9.+~].
func ValidDebianVersion(v string) error {
	if !debianUp.MatchString(v) {
		return fmt.Errorf("version %q is not a valid Debian version (a digit, then letters, digits, . + ~)", v)
	}
	return nil
}

func git(ctx context.Context, repo string, args ...string) (string, error) {
	cmd := exec.CommandContext(ctx, "git", args...)
	cmd.Dir = repo
	out, err := cmd.Output()
	if err != nil {
		var ee *exec.ExitError
		if errors.As(err, &ee) {
			return "", fmt.Errorf("git %s: %w: %s", strings.Join(args, " "), err, ee.Stderr)
		}
		return "", fmt.Errorf("git %s: %w", strings.Join(args, " "), err)
	}
	return strings.TrimSpace(string(out)), nil
}

// commitTime is HEAD's commit time (the files' mtime), or now outside git.
func commitTime(ctx context.Context, repo string) time.Time {
	out, err := git(ctx, repo, "log", "-1", "--format=%ct")
	if err != nil {
		return time.Now().UTC().Truncate(time.Second)
	}
	sec, err := strconv.ParseInt(out, 10, 64)
	if err != nil {
		return time.Now().UTC().Truncate(time.Second)
	}
	return time.Unix(sec, 0).UTC()
}
