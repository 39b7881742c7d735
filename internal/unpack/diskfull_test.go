package unpack

import (
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"syscall"
	"testing"
)

// TestDiskFullDuringUnpack unpacks a release bigger than the file system it
// lands on (a 2 MiB tmpfs): the unpack fails with ENOSPC and leaves nothing
// behind, so the disk is as empty as before. Needs root for mount; under
// CI=true (where the run is root) it must not skip.
func TestDiskFullDuringUnpack(t *testing.T) {
	mnt := t.TempDir()
	if out, err := exec.Command("mount", "-t", "tmpfs", "-o", "size=2m", "tmpfs", mnt).CombinedOutput(); err != nil {
		if os.Getenv("CI") == "true" {
			t.Fatalf("mount a small tmpfs (CI runs as root): %v: %s", err, out)
		}
		t.Skipf("cannot mount a tmpfs here (not root?): %v: %s", err, out)
	}
	t.Cleanup(func() { exec.Command("umount", mnt).Run() })

	ents := []ent{{name: "bin/", typ: '5', mode: 0o755}}
	for _, n := range []string{"a", "b", "c", "d"} {
		ents = append(ents, ent{name: "bin/" + n, size: 1 << 20})
	}
	src := filepath.Join(t.TempDir(), "big.tar.gz")
	if err := os.WriteFile(src, gz(t, buildTar(t, ents)), 0o644); err != nil {
		t.Fatal(err)
	}
	dst := filepath.Join(mnt, "v2.tmp")
	_, err := Unpack(t.Context(), src, dst, Options{Limits: Limits{MaxBytes: 1 << 30, MaxEntries: 100, MaxNameLen: 255}})
	if !errors.Is(err, syscall.ENOSPC) {
		t.Fatalf("unpack onto a full disk: %v, want ENOSPC", err)
	}
	left, _ := os.ReadDir(mnt)
	if len(left) != 0 {
		t.Fatalf("left behind on the full disk: %v", left)
	}
	var st syscall.Statfs_t
	if err := syscall.Statfs(mnt, &st); err != nil {
		t.Fatal(err)
	}
	if used := (st.Blocks - st.Bfree) * uint64(st.Bsize); used > 64<<10 {
		t.Fatalf("%d bytes still used on the tmpfs after cleanup", used)
	}
}
