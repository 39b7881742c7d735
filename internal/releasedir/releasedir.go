// Package releasedir owns the on-disk layout of one service's releases on an
// agent, and the atomic switch between them:
//
//	<state-dir>/<service>/
//	    releases/
//	        <release>/        committed, immutable release trees
//	        <release>.tmp/    staging: being unpacked, never pointed at
//	    current  -> releases/<release>   (relative symlink)
//	    previous -> releases/<release>   (relative symlink; the release current
//	                                      pointed at before the last Swap, or
//	                                      what SwapBack restored)
//
// Invariants:
//   - Release ids and service names match [A-Za-z0-9._+-]{1,128}, do not start
//     with a dot, contain no "..", and release ids do not end in ".tmp", so a
//     name can never leave its directory or collide with a staging directory.
//   - current and previous are only ever replaced by rename(2) of a symlink
//     created beside them (previous may also be removed by SwapBack), each
//     change followed by an fsync of the service directory before the next:
//     a reader resolving current sees the old release or the new one, never
//     nothing, and a crash never reorders the two changes.
//   - current is the commit point of both Swap and SwapBack: each writes
//     previous first and current last. After a crash in Swap, previous is
//     either its old value or equal to current. After a crash in SwapBack,
//     previous is already restored while current may still name the failed
//     release; the caller sees current != the release it swaps back to and
//     calls SwapBack again (it is idempotent). The reverse order would let a
//     crash leave current restored but previous naming the failed release,
//     which looks finished from current and sends a later "roll back to
//     previous" to the broken release.
//   - A release directory appears under its final name only complete and
//     fsynced (Commit renames the staging directory).
//   - Prune never removes the releases current or previous point at.
//   - A release committed by this package carries its manifest from the
//     moment it appears (WriteStagedManifest before Commit); a release tree
//     without one was unpacked by an older agent.
//
// Dir's methods may be called from several goroutines; Swap, Commit and
// Prune are serialized with each other. Only one process should manage a
// service directory.
package releasedir

import (
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/golive/golive/internal/atomicfile"
)

// DefaultKeep is how many releases Prune keeps when asked to keep 0 or fewer.
const DefaultKeep = 5

const (
	releasesDir = "releases"
	currentLink = "current"
	prevLink    = "previous"
	stagingExt  = ".tmp"
	maxNameLen  = 128
)

// ErrNotFound is wrapped by errors about a release that is not committed.
var ErrNotFound = errors.New("release not found")

// ErrExists is wrapped by Commit's error when the release is already committed.
var ErrExists = errors.New("release already committed")

// ValidateService checks a service name for use as a directory name.
func ValidateService(name string) error { return validateName("service name", name) }

// ValidateRelease checks a release id for use as a directory name.
func ValidateRelease(id string) error {
	if err := validateName("release id", id); err != nil {
		return err
	}
	if strings.HasSuffix(id, stagingExt) {
		return fmt.Errorf("release id %q: must not end in %q (reserved for staging)", id, stagingExt)
	}
	return nil
}

func validateName(what, s string) error {
	switch {
	case s == "":
		return fmt.Errorf("%s is empty", what)
	case len(s) > maxNameLen:
		return fmt.Errorf("%s %.20q...: %d bytes, at most %d allowed", what, s, len(s), maxNameLen)
	case s[0] == '.':
		return fmt.Errorf("%s %q: must not start with a dot", what, s)
	case strings.Contains(s, ".."):
		return fmt.Errorf("%s %q: must not contain \"..\"", what, s)
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		if 'a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' || '0' <= c && c <= '9' || c == '.' || c == '_' || c == '-' || c == '+' {
			continue
		}
		return fmt.Errorf("%s %q: character %q at %d not allowed (use A-Z a-z 0-9 . _ - +)", what, s, c, i)
	}
	return nil
}

// Dir is one service's release directory.
type Dir struct {
	path string // <state-dir>/<service>
	mu   sync.Mutex
}

// Open returns the release directory of service under stateDir, creating
// <state-dir>/<service>/releases if needed.
func Open(stateDir, service string) (*Dir, error) {
	if err := ValidateService(service); err != nil {
		return nil, err
	}
	if stateDir == "" {
		return nil, errors.New("release dir: state dir is empty")
	}
	d := &Dir{path: filepath.Join(stateDir, service)}
	if err := os.MkdirAll(filepath.Join(d.path, releasesDir), 0o755); err != nil {
		return nil, fmt.Errorf("release dir %s: %w", d.path, err)
	}
	return d, nil
}

// Path is <state-dir>/<service>.
func (d *Dir) Path() string { return d.path }

// CurrentPath is the path of the current symlink, the stable path services run from.
func (d *Dir) CurrentPath() string { return filepath.Join(d.path, currentLink) }

// ReleasePath is where a committed release lives. It does not check existence.
func (d *Dir) ReleasePath(release string) (string, error) {
	if err := ValidateRelease(release); err != nil {
		return "", err
	}
	return filepath.Join(d.path, releasesDir, release), nil
}

// StagingDir returns releases/<release>.tmp, removing a stale one left by an
// interrupted deploy. The directory does not exist on return: the unpacker
// creates it (unpack.Unpack requires a fresh destination).
func (d *Dir) StagingDir(release string) (string, error) {
	if err := ValidateRelease(release); err != nil {
		return "", err
	}
	p := filepath.Join(d.path, releasesDir, release+stagingExt)
	if err := os.RemoveAll(p); err != nil {
		return "", fmt.Errorf("remove stale staging dir %s: %w", p, err)
	}
	return p, nil
}

// Exists reports whether release is committed.
func (d *Dir) Exists(release string) (bool, error) {
	p, err := d.ReleasePath(release)
	if err != nil {
		return false, err
	}
	fi, err := os.Lstat(p)
	if errors.Is(err, fs.ErrNotExist) {
		return false, nil
	}
	if err != nil {
		return false, fmt.Errorf("stat release %s: %w", release, err)
	}
	return fi.IsDir(), nil
}

// Commit makes the staged release final: it fsyncs the staging directory,
// renames it to releases/<release>, stamps its modification time (Prune's
// notion of age) and fsyncs releases/. Committing a release that already
// exists fails with ErrExists and leaves both directories alone.
func (d *Dir) Commit(release string) error {
	d.mu.Lock()
	defer d.mu.Unlock()
	final, err := d.ReleasePath(release)
	if err != nil {
		return err
	}
	staging := final + stagingExt
	if _, err := os.Lstat(final); err == nil {
		return fmt.Errorf("commit %s: %w", release, ErrExists)
	}
	fi, err := os.Lstat(staging)
	if err != nil {
		return fmt.Errorf("commit %s: staging dir: %w", release, err)
	}
	if !fi.IsDir() {
		return fmt.Errorf("commit %s: staging path %s is not a directory", release, staging)
	}
	if err := atomicfile.SyncDir(staging); err != nil {
		return fmt.Errorf("commit %s: %w", release, err)
	}
	if err := os.Rename(staging, final); err != nil {
		return fmt.Errorf("commit %s: %w", release, err)
	}
	now := time.Now()
	if err := os.Chtimes(final, now, now); err != nil {
		return fmt.Errorf("commit %s: stamp time: %w", release, err)
	}
	if err := atomicfile.SyncDir(filepath.Join(d.path, releasesDir)); err != nil {
		return fmt.Errorf("commit %s: %w", release, err)
	}
	return nil
}

// Current returns the release current points at, or "" if there is none yet.
func (d *Dir) Current() (string, error) { return d.readLink(currentLink) }

// Previous returns the release current pointed at before the last Swap, or
// "" if there is none.
func (d *Dir) Previous() (string, error) { return d.readLink(prevLink) }

func (d *Dir) readLink(name string) (string, error) {
	t, err := os.Readlink(filepath.Join(d.path, name))
	if errors.Is(err, fs.ErrNotExist) {
		return "", nil
	}
	if err != nil {
		return "", fmt.Errorf("read %s: %w", name, err)
	}
	dir, rel := filepath.Split(t)
	if filepath.Clean(dir) != releasesDir || ValidateRelease(rel) != nil {
		return "", fmt.Errorf("%s points at %q, which is not releases/<release>", name, t)
	}
	return rel, nil
}

// Swap atomically points current at release (which must be committed) and
// records the release it pointed at before as previous. Swapping to the
// release that is already current changes nothing.
func (d *Dir) Swap(release string) error {
	d.mu.Lock()
	defer d.mu.Unlock()
	ok, err := d.Exists(release)
	if err != nil {
		return fmt.Errorf("swap to %s: %w", release, err)
	}
	if !ok {
		return fmt.Errorf("swap to %s: %w", release, ErrNotFound)
	}
	old, err := d.Current()
	if err != nil {
		return fmt.Errorf("swap to %s: %w", release, err)
	}
	if old == release {
		return nil
	}
	if old != "" {
		if err := d.replaceLink(prevLink, old); err != nil {
			return fmt.Errorf("swap to %s: record previous: %w", release, err)
		}
		// Durable before current moves, so a crash cannot persist the
		// current rename without this one.
		if err := atomicfile.SyncDir(d.path); err != nil {
			return fmt.Errorf("swap to %s: %w", release, err)
		}
	}
	if err := d.replaceLink(currentLink, release); err != nil {
		return fmt.Errorf("swap to %s: %w", release, err)
	}
	if err := atomicfile.SyncDir(d.path); err != nil {
		return fmt.Errorf("swap to %s: %w", release, err)
	}
	return nil
}

// SwapBack undoes a Swap: it points current at release and previous at
// previous ("" removes the previous link), restoring both links to what they
// were before the Swap being undone. Both releases must be committed;
// otherwise it returns an error wrapping ErrNotFound and changes nothing.
//
// Swap(old) is not an undo: it would record the failed release as previous,
// so a later rollback to previous would go back to it.
//
// previous is written (and fsynced) before current, so current is the commit
// point; see the package doc. SwapBack is idempotent: after a crash, calling
// it again with the same arguments completes it.
func (d *Dir) SwapBack(release, previous string) error {
	d.mu.Lock()
	defer d.mu.Unlock()
	check := []string{release}
	if previous != "" {
		check = append(check, previous)
	}
	for _, r := range check {
		ok, err := d.Exists(r)
		if err != nil {
			return fmt.Errorf("swap back to %s: %w", release, err)
		}
		if !ok {
			return fmt.Errorf("swap back to %s: release %s: %w", release, r, ErrNotFound)
		}
	}
	// A link that cannot be read is rewritten rather than trusted.
	if p, err := d.Previous(); err != nil || p != previous {
		if previous == "" {
			err = os.Remove(filepath.Join(d.path, prevLink))
			if errors.Is(err, fs.ErrNotExist) {
				err = nil
			}
		} else {
			err = d.replaceLink(prevLink, previous)
		}
		if err != nil {
			return fmt.Errorf("swap back to %s: restore previous: %w", release, err)
		}
		if err := atomicfile.SyncDir(d.path); err != nil {
			return fmt.Errorf("swap back to %s: %w", release, err)
		}
	}
	if c, err := d.Current(); err != nil || c != release {
		if err := d.replaceLink(currentLink, release); err != nil {
			return fmt.Errorf("swap back to %s: %w", release, err)
		}
		if err := atomicfile.SyncDir(d.path); err != nil {
			return fmt.Errorf("swap back to %s: %w", release, err)
		}
	}
	return nil
}

// ClearCurrent undoes the first Swap of a service, which had no release
// to go back to: it restores previous to what it named before that Swap
// ("" removes it), then removes current, so no current names a release that
// never worked and a later Swap does not record it as previous. Like
// SwapBack it writes previous first and current last, and is idempotent.
func (d *Dir) ClearCurrent(previous string) error {
	d.mu.Lock()
	defer d.mu.Unlock()
	if previous != "" {
		ok, err := d.Exists(previous)
		if err != nil {
			return fmt.Errorf("clear current: %w", err)
		}
		if !ok {
			return fmt.Errorf("clear current: release %s: %w", previous, ErrNotFound)
		}
	}
	if p, err := d.Previous(); err != nil || p != previous {
		if previous == "" {
			err = os.Remove(filepath.Join(d.path, prevLink))
			if errors.Is(err, fs.ErrNotExist) {
				err = nil
			}
		} else {
			err = d.replaceLink(prevLink, previous)
		}
		if err != nil {
			return fmt.Errorf("clear current: restore previous: %w", err)
		}
		if err := atomicfile.SyncDir(d.path); err != nil {
			return fmt.Errorf("clear current: %w", err)
		}
	}
	if err := os.Remove(filepath.Join(d.path, currentLink)); err != nil && !errors.Is(err, fs.ErrNotExist) {
		return fmt.Errorf("clear current: %w", err)
	}
	if err := atomicfile.SyncDir(d.path); err != nil {
		return fmt.Errorf("clear current: %w", err)
	}
	return nil
}

// replaceLink atomically makes name a symlink to releases/<release>: symlink
// at a temporary name in the same directory, then rename over name.
func (d *Dir) replaceLink(name, release string) error {
	var rnd [6]byte
	rand.Read(rnd[:])
	tmp := filepath.Join(d.path, "."+name+".tmp-"+hex.EncodeToString(rnd[:]))
	if err := os.Symlink(filepath.Join(releasesDir, release), tmp); err != nil {
		return fmt.Errorf("create %s symlink: %w", name, err)
	}
	if err := os.Rename(tmp, filepath.Join(d.path, name)); err != nil {
		os.Remove(tmp)
		return fmt.Errorf("replace %s symlink: %w", name, err)
	}
	return nil
}

// Release is a committed release and its commit time.
type Release struct {
	ID        string
	Committed time.Time
}

// Releases lists committed releases, oldest first.
func (d *Dir) Releases() ([]Release, error) {
	ents, err := os.ReadDir(filepath.Join(d.path, releasesDir))
	if err != nil {
		return nil, fmt.Errorf("list releases: %w", err)
	}
	var rels []Release
	for _, e := range ents {
		if !e.IsDir() || ValidateRelease(e.Name()) != nil {
			continue
		}
		fi, err := e.Info()
		if err != nil {
			return nil, fmt.Errorf("list releases: %w", err)
		}
		rels = append(rels, Release{ID: e.Name(), Committed: fi.ModTime()})
	}
	slices.SortFunc(rels, func(a, b Release) int {
		if c := a.Committed.Compare(b.Committed); c != 0 {
			return c
		}
		return strings.Compare(a.ID, b.ID)
	})
	return rels, nil
}

// Prune removes the oldest committed releases so that at most keep remain
// (DefaultKeep if keep <= 0), never removing current or previous (they count
// towards keep). It also removes staging directories (*.tmp) and temporary
// symlinks left by an interrupted run. It returns the release ids removed.
// Do not run it while a deploy of the same service is staging a release.
func (d *Dir) Prune(keep int) ([]string, error) {
	d.mu.Lock()
	defer d.mu.Unlock()
	if keep <= 0 {
		keep = DefaultKeep
	}
	cur, err := d.Current()
	if err != nil {
		return nil, fmt.Errorf("prune: %w", err)
	}
	prev, err := d.Previous()
	if err != nil {
		return nil, fmt.Errorf("prune: %w", err)
	}
	var errs []error
	relDir := filepath.Join(d.path, releasesDir)
	ents, err := os.ReadDir(relDir)
	if err != nil {
		return nil, fmt.Errorf("prune: %w", err)
	}
	for _, e := range ents {
		if strings.HasSuffix(e.Name(), stagingExt) {
			if err := os.RemoveAll(filepath.Join(relDir, e.Name())); err != nil {
				errs = append(errs, err)
			}
		}
	}
	if ents, err := os.ReadDir(d.path); err == nil {
		for _, e := range ents {
			if strings.HasPrefix(e.Name(), "."+currentLink+".tmp-") || strings.HasPrefix(e.Name(), "."+prevLink+".tmp-") {
				if err := os.Remove(filepath.Join(d.path, e.Name())); err != nil {
					errs = append(errs, err)
				}
			}
		}
	}

	rels, err := d.Releases()
	if err != nil {
		return nil, fmt.Errorf("prune: %w", err)
	}
	var removed []string
	excess := len(rels) - keep
	for _, r := range rels {
		if excess <= 0 {
			break
		}
		if r.ID == cur || r.ID == prev {
			continue
		}
		if err := os.RemoveAll(filepath.Join(relDir, r.ID)); err != nil {
			errs = append(errs, err)
			continue
		}
		removed = append(removed, r.ID)
		excess--
	}
	if err := atomicfile.SyncDir(relDir); err != nil {
		errs = append(errs, err)
	}
	if err := errors.Join(errs...); err != nil {
		return removed, fmt.Errorf("prune: %w", err)
	}
	return removed, nil
}
