package releasedir

import (
	"errors"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"go.uber.org/goleak"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}

func TestValidate(t *testing.T) {
	tests := []struct {
		give    string
		wantErr string
	}{
		{give: "v1.2.3+build-7_rc1"},
		{give: "a"},
		{give: strings.Repeat("a", 128)},
		{give: "", wantErr: "is empty"},
		{give: strings.Repeat("a", 129), wantErr: "at most 128"},
		{give: ".hidden", wantErr: "must not start with a dot"},
		{give: "..", wantErr: "must not start with a dot"},
		{give: "a..b", wantErr: `must not contain ".."`},
		{give: "a/b", wantErr: "not allowed"},
		{give: "a\x00b", wantErr: "not allowed"},
		{give: "a b", wantErr: "not allowed"},
		{give: "é", wantErr: "not allowed"},
		{give: "r1.tmp", wantErr: "reserved for staging"},
	}
	for _, tt := range tests {
		err := ValidateRelease(tt.give)
		if tt.wantErr == "" && err != nil || tt.wantErr != "" && (err == nil || !strings.Contains(err.Error(), tt.wantErr)) {
			t.Errorf("ValidateRelease(%q) = %v, want %q", tt.give, err, tt.wantErr)
		}
	}
	if err := ValidateService("billing-api"); err != nil {
		t.Error(err)
	}
	if _, err := Open(t.TempDir(), "../etc"); err == nil {
		t.Error("Open accepted service ../etc")
	}
}

// stage creates a committed release holding a VERSION file.
func stage(t *testing.T, d *Dir, release string) {
	t.Helper()
	p, err := d.StagingDir(release)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.Mkdir(p, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(p, "VERSION"), []byte(release), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := d.Commit(release); err != nil {
		t.Fatal(err)
	}
}

func currentPrevious(t *testing.T, d *Dir) (string, string) {
	t.Helper()
	cur, err := d.Current()
	if err != nil {
		t.Fatal(err)
	}
	prev, err := d.Previous()
	if err != nil {
		t.Fatal(err)
	}
	return cur, prev
}

func TestLifecycle(t *testing.T) {
	d, err := Open(t.TempDir(), "billing")
	if err != nil {
		t.Fatal(err)
	}
	if cur, prev := currentPrevious(t, d); cur != "" || prev != "" {
		t.Fatalf("fresh dir: current %q previous %q", cur, prev)
	}

	// A stale staging dir from a crashed deploy is cleared.
	stale := filepath.Join(d.Path(), "releases", "r1.tmp")
	os.MkdirAll(filepath.Join(stale, "junk"), 0o755)
	stage(t, d, "r1")
	if _, err := os.Stat(filepath.Join(d.Path(), "releases", "r1", "junk")); err == nil {
		t.Fatal("stale staging content survived")
	}
	if err := d.Commit("r1"); !errors.Is(err, ErrExists) {
		t.Fatalf("recommit: %v, want ErrExists", err)
	}
	if err := d.Swap("nope"); !errors.Is(err, ErrNotFound) {
		t.Fatalf("swap to missing: %v, want ErrNotFound", err)
	}
	if err := d.Commit("never-staged"); err == nil {
		t.Fatal("commit without staging succeeded")
	}

	steps := []struct {
		swap, wantCur, wantPrev string
	}{
		{swap: "r1", wantCur: "r1", wantPrev: ""},
		{swap: "r2", wantCur: "r2", wantPrev: "r1"},
		{swap: "r2", wantCur: "r2", wantPrev: "r1"}, // no-op
		{swap: "r3", wantCur: "r3", wantPrev: "r2"},
		{swap: "r2", wantCur: "r2", wantPrev: "r3"}, // rollback
	}
	stage(t, d, "r2")
	stage(t, d, "r3")
	for _, s := range steps {
		if err := d.Swap(s.swap); err != nil {
			t.Fatal(err)
		}
		cur, prev := currentPrevious(t, d)
		if cur != s.wantCur || prev != s.wantPrev {
			t.Fatalf("after swap %s: current %q previous %q, want %q %q", s.swap, cur, prev, s.wantCur, s.wantPrev)
		}
		b, err := os.ReadFile(filepath.Join(d.CurrentPath(), "VERSION"))
		if err != nil || string(b) != s.wantCur {
			t.Fatalf("current/VERSION = %q, %v", b, err)
		}
	}
	link, _ := os.Readlink(d.CurrentPath())
	if link != "releases/r2" {
		t.Errorf("current -> %q, want relative releases/r2", link)
	}
	ents, _ := os.ReadDir(d.Path())
	for _, e := range ents {
		if strings.HasPrefix(e.Name(), ".") {
			t.Errorf("temporary left behind: %s", e.Name())
		}
	}
}

func TestCurrentRejectsForeignLink(t *testing.T) {
	d, _ := Open(t.TempDir(), "svc")
	os.Symlink("/etc", d.CurrentPath())
	if _, err := d.Current(); err == nil {
		t.Fatal("current -> /etc accepted")
	}
}

func TestPrune(t *testing.T) {
	d, err := Open(t.TempDir(), "svc")
	if err != nil {
		t.Fatal(err)
	}
	ids := []string{"r1", "r2", "r3", "r4", "r5", "r6", "r7", "r8"}
	base := time.Now().Add(-time.Hour)
	for i, id := range ids {
		stage(t, d, id)
		at := base.Add(time.Duration(i) * time.Minute) // commit order, independent of clock resolution
		os.Chtimes(filepath.Join(d.Path(), "releases", id), at, at)
	}
	// current and previous are the two oldest: they must survive.
	if err := d.Swap("r2"); err != nil {
		t.Fatal(err)
	}
	if err := d.Swap("r1"); err != nil {
		t.Fatal(err)
	}
	os.MkdirAll(filepath.Join(d.Path(), "releases", "r9.tmp", "x"), 0o755)
	os.Symlink("releases/r1", filepath.Join(d.Path(), ".current.tmp-deadbeef"))

	removed, err := d.Prune(4)
	if err != nil {
		t.Fatal(err)
	}
	if want := []string{"r3", "r4", "r5", "r6"}; !slices.Equal(removed, want) {
		t.Fatalf("removed %v, want %v", removed, want)
	}
	rels, _ := d.Releases()
	var left []string
	for _, r := range rels {
		left = append(left, r.ID)
	}
	if want := []string{"r1", "r2", "r7", "r8"}; !slices.Equal(left, want) {
		t.Fatalf("left %v, want %v", left, want)
	}
	if _, err := os.Stat(filepath.Join(d.Path(), "releases", "r9.tmp")); err == nil {
		t.Error("stray staging dir survived Prune")
	}
	if _, err := os.Lstat(filepath.Join(d.Path(), ".current.tmp-deadbeef")); err == nil {
		t.Error("stray temp symlink survived Prune")
	}
	// Default keep and nothing to do.
	if removed, err := d.Prune(0); err != nil || len(removed) != 0 {
		t.Fatalf("second prune: %v %v", removed, err)
	}
}

// TestSwapUnderConcurrentReaders swaps current back and forth while readers
// read through it: every read must succeed and see one of the two releases.
func TestSwapUnderConcurrentReaders(t *testing.T) {
	const (
		swaps   = 2000
		readers = 4
	)
	d, err := Open(t.TempDir(), "svc")
	if err != nil {
		t.Fatal(err)
	}
	stage(t, d, "blue")
	stage(t, d, "green")
	if err := d.Swap("blue"); err != nil {
		t.Fatal(err)
	}

	var (
		stop           = make(chan struct{})
		wg             sync.WaitGroup
		reads, failed  atomic.Int64
		firstFailure   atomic.Value
		versionThrough = filepath.Join(d.CurrentPath(), "VERSION")
	)
	for range readers {
		wg.Go(func() {
			for {
				select {
				case <-stop:
					return
				default:
				}
				b, err := os.ReadFile(versionThrough)
				reads.Add(1)
				if err != nil || (string(b) != "blue" && string(b) != "green") {
					failed.Add(1)
					firstFailure.CompareAndSwap(nil, err)
				}
			}
		})
	}
	for i := range swaps {
		target := "green"
		if i%2 == 1 {
			target = "blue"
		}
		if err := d.Swap(target); err != nil {
			close(stop)
			wg.Wait()
			t.Fatal(err)
		}
	}
	close(stop)
	wg.Wait()
	if n := failed.Load(); n != 0 {
		t.Fatalf("%d of %d reads failed; first: %v", n, reads.Load(), firstFailure.Load())
	}
	t.Logf("%d swaps, %d reads, 0 failed", swaps, reads.Load())
}

func TestSwapBack(t *testing.T) {
	tests := []struct {
		name string
		// swaps are done in order; the last one is the failed swap undone
		// by SwapBack(giveRelease, givePrevious).
		swaps                     []string
		giveRelease, givePrevious string
		// crashed leaves previous already restored and current on the
		// failed release, as a crash inside SwapBack would.
		crashed           bool
		wantCur, wantPrev string
		wantErr           error
	}{
		{name: "third deploy fails", swaps: []string{"v1", "v2", "v3"}, giveRelease: "v2", givePrevious: "v1",
			wantCur: "v2", wantPrev: "v1"},
		{name: "second deploy fails: no previous before", swaps: []string{"v1", "v2"}, giveRelease: "v1",
			wantCur: "v1", wantPrev: ""},
		{name: "crash after previous was restored", swaps: []string{"v1", "v2", "v3"}, giveRelease: "v2", givePrevious: "v1",
			crashed: true, wantCur: "v2", wantPrev: "v1"},
		{name: "previous equal to current before", swaps: []string{"v2", "v3"}, giveRelease: "v2", givePrevious: "v2",
			wantCur: "v2", wantPrev: "v2"},
		{name: "release not committed", swaps: []string{"v1", "v2", "v3"}, giveRelease: "gone", givePrevious: "v1",
			wantCur: "v3", wantPrev: "v2", wantErr: ErrNotFound},
		{name: "previous not committed", swaps: []string{"v1", "v2", "v3"}, giveRelease: "v2", givePrevious: "gone",
			wantCur: "v3", wantPrev: "v2", wantErr: ErrNotFound},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			d, err := Open(t.TempDir(), "billing")
			if err != nil {
				t.Fatal(err)
			}
			for _, r := range []string{"v1", "v2", "v3"} {
				stage(t, d, r)
			}
			for _, r := range tt.swaps {
				if err := d.Swap(r); err != nil {
					t.Fatal(err)
				}
			}
			if tt.crashed {
				if err := d.replaceLink(prevLink, tt.givePrevious); err != nil {
					t.Fatal(err)
				}
			}
			err = d.SwapBack(tt.giveRelease, tt.givePrevious)
			if !errors.Is(err, tt.wantErr) || (err == nil) != (tt.wantErr == nil) {
				t.Fatalf("SwapBack = %v, want %v", err, tt.wantErr)
			}
			check := func(when string) {
				t.Helper()
				if cur, prev := currentPrevious(t, d); cur != tt.wantCur || prev != tt.wantPrev {
					t.Fatalf("%s: current %q previous %q, want %q %q", when, cur, prev, tt.wantCur, tt.wantPrev)
				}
			}
			check("after SwapBack")
			if tt.wantErr != nil {
				return
			}
			// Idempotent: a retry after a crash finds nothing to do.
			if err := d.SwapBack(tt.giveRelease, tt.givePrevious); err != nil {
				t.Fatal(err)
			}
			check("after a second SwapBack")
			ents, _ := os.ReadDir(d.Path())
			for _, e := range ents {
				if strings.HasPrefix(e.Name(), ".") {
					t.Errorf("temporary left behind: %s", e.Name())
				}
			}
		})
	}
}
