package releasedir

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// writeTree makes releases/<release>.tmp with files (name -> content; a
// value starting "->" is a symlink target).
func writeTree(t *testing.T, d *Dir, release string, files map[string]string) {
	t.Helper()
	p, err := d.StagingDir(release)
	if err != nil {
		t.Fatal(err)
	}
	for name, body := range files {
		path := filepath.Join(p, name)
		if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
			t.Fatal(err)
		}
		if target, ok := strings.CutPrefix(body, "->"); ok {
			err = os.Symlink(target, path)
		} else {
			err = os.WriteFile(path, []byte(body), 0o644)
		}
		if err != nil {
			t.Fatal(err)
		}
	}
}

func TestManifestCommittedWithTheTree(t *testing.T) {
	d, err := Open(t.TempDir(), "app")
	if err != nil {
		t.Fatal(err)
	}
	writeTree(t, d, "r1", map[string]string{"bin/app": "x"})
	m := Manifest{Release: "r1", SHA256: " ABCDEF ", SignerKeyID: "k1", ArtifactURL: "https://x/r1.tgz"}
	if err := d.WriteStagedManifest(m); err != nil {
		t.Fatal(err)
	}
	if got, err := d.Manifest("r1"); got != nil || err != nil {
		t.Fatalf("manifest of an uncommitted release: %+v, %v", got, err)
	}
	if err := d.Commit("r1"); err != nil {
		t.Fatal(err)
	}
	got, err := d.Manifest("r1")
	if err != nil || got == nil || got.SHA256 != "abcdef" || got.SignerKeyID != "k1" || got.Unpacked.IsZero() {
		t.Fatalf("manifest %+v, %v", got, err)
	}
	if !got.SameSHA256("ABCDEF\n") || got.SameSHA256("abcde0") || (*Manifest)(nil).SameSHA256("abcdef") {
		t.Fatal("SameSHA256")
	}
	// A manifest naming another release is not trusted.
	p, _ := d.ReleasePath("r1")
	if err := os.WriteFile(filepath.Join(p, ManifestName), []byte(`{"release":"r2","sha256":"ab"}`), 0o644); err != nil {
		t.Fatal(err)
	}
	if _, err := d.Manifest("r1"); err == nil {
		t.Fatal("a manifest naming r2 accepted for r1")
	}
	if err := d.WriteManifest(Manifest{Release: "nope", SHA256: "ab"}); err == nil {
		t.Fatal("WriteManifest of a release that is not committed")
	}
}

func TestCheckStagedRefusesAForgedManifest(t *testing.T) {
	d, err := Open(t.TempDir(), "app")
	if err != nil {
		t.Fatal(err)
	}
	writeTree(t, d, "r1", map[string]string{"bin/app": "x"})
	if err := d.CheckStaged("r1"); err != nil {
		t.Fatal(err)
	}
	writeTree(t, d, "r2", map[string]string{ManifestName: "{}"})
	if err := d.CheckStaged("r2"); err == nil || !strings.Contains(err.Error(), "reserved") {
		t.Fatalf("CheckStaged = %v", err)
	}
}

func TestSameTree(t *testing.T) {
	base := map[string]string{"bin/app": "binary", "VERSION": "v1\n", "lib/link": "->../bin/app"}
	tests := []struct {
		name    string
		change  func(map[string]string)
		wantErr string
	}{
		{"same", func(map[string]string) {}, ""},
		{"content", func(m map[string]string) { m["VERSION"] = "v2\n" }, "VERSION: content differs"},
		{"size", func(m map[string]string) { m["VERSION"] = "v10\n" }, "VERSION: 3 bytes on the host, 4 in the artifact"},
		{"extra on host", func(m map[string]string) { delete(m, "VERSION") }, "VERSION is on the host but not in the artifact"},
		{"extra in artifact", func(m map[string]string) { m["NEW"] = "x" }, "NEW is in the artifact but not on the host"},
		{"link target", func(m map[string]string) { m["lib/link"] = "->../VERSION" }, `lib/link: links to "../bin/app"`},
		{"file vs link", func(m map[string]string) { m["lib/link"] = "text" }, "lib/link: mode"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			d, err := Open(t.TempDir(), "app")
			if err != nil {
				t.Fatal(err)
			}
			writeTree(t, d, "r1", base)
			if err := d.WriteStagedManifest(Manifest{Release: "r1", SHA256: "ab"}); err != nil {
				t.Fatal(err)
			}
			if err := d.Commit("r1"); err != nil {
				t.Fatal(err)
			}
			again := map[string]string{}
			for k, v := range base {
				again[k] = v
			}
			tt.change(again)
			writeTree(t, d, "r1", again) // the staging copy, without a manifest
			err = d.SameTree("r1")
			if tt.wantErr == "" && err != nil || tt.wantErr != "" && (err == nil || !strings.Contains(err.Error(), tt.wantErr)) {
				t.Fatalf("SameTree = %v, want %q", err, tt.wantErr)
			}
		})
	}
}

// ClearCurrent undoes a first Swap: no current, previous as before.
func TestClearCurrent(t *testing.T) {
	d, err := Open(t.TempDir(), "app")
	if err != nil {
		t.Fatal(err)
	}
	stage(t, d, "bad")
	if err := d.Swap("bad"); err != nil {
		t.Fatal(err)
	}
	for range 2 { // idempotent
		if err := d.ClearCurrent(""); err != nil {
			t.Fatal(err)
		}
		if c, err := d.Current(); c != "" || err != nil {
			t.Fatalf("current %q, %v", c, err)
		}
		if p, err := d.Previous(); p != "" || err != nil {
			t.Fatalf("previous %q, %v", p, err)
		}
	}
	stage(t, d, "good")
	if err := d.Swap("good"); err != nil {
		t.Fatal(err)
	}
	if p, _ := d.Previous(); p != "" {
		t.Fatalf("the release that never worked became previous: %q", p)
	}
	if err := d.ClearCurrent("missing"); err == nil {
		t.Fatal("ClearCurrent to a previous that is not committed")
	}
}
