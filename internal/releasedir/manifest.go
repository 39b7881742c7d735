package releasedir

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/golive/golive/internal/atomicfile"
)

// ManifestName is the file, at the top of a release tree, that records which
// artifact the tree was unpacked from. The name is reserved: an artifact
// that contains it is refused (CheckStaged).
const ManifestName = ".golive-release.json"

// Manifest says which artifact a release tree was unpacked from. A release
// id names one artifact on a host: a deploy of the same id with another
// sha256 is refused.
type Manifest struct {
	Release string `json:"release"`
	// SHA256 is the lowercase hex sha256 of the artifact.
	SHA256 string `json:"sha256"`
	// SignerKeyID names the trusted key whose signature verified
	// (artifact.KeyID); "" when signatures were not checked.
	SignerKeyID string `json:"signer_key_id,omitempty"`
	// ArtifactURL is where the artifact was fetched from (for messages).
	ArtifactURL string    `json:"artifact_url,omitempty"`
	Unpacked    time.Time `json:"unpacked"`
}

// SameSHA256 reports whether m records the artifact with hex digest sha
// (case and surrounding space ignored).
func (m *Manifest) SameSHA256(sha string) bool {
	return m != nil && m.SHA256 != "" && strings.EqualFold(m.SHA256, strings.TrimSpace(sha))
}

// CheckStaged fails if the unpacked staging tree of release carries a file
// named ManifestName: the artifact would forge its own manifest.
func (d *Dir) CheckStaged(release string) error {
	p, err := d.ReleasePath(release)
	if err != nil {
		return err
	}
	if _, err := os.Lstat(filepath.Join(p+stagingExt, ManifestName)); err == nil {
		return fmt.Errorf("artifact contains %s, a name reserved for the agent's release manifest", ManifestName)
	} else if !errors.Is(err, fs.ErrNotExist) {
		return err
	}
	return nil
}

// WriteStagedManifest writes m into the staging tree of its release, before
// Commit: the release directory then appears under its final name together
// with its manifest.
func (d *Dir) WriteStagedManifest(m Manifest) error {
	p, err := d.ReleasePath(m.Release)
	if err != nil {
		return err
	}
	return writeManifest(filepath.Join(p+stagingExt, ManifestName), m)
}

// WriteManifest (re)writes the manifest of a committed release, atomically:
// to adopt a tree an older agent unpacked (no manifest) once it proved to
// be the artifact's, or to record a new signer of the same artifact.
func (d *Dir) WriteManifest(m Manifest) error {
	ok, err := d.Exists(m.Release)
	if err != nil {
		return err
	}
	if !ok {
		return fmt.Errorf("write manifest of %s: %w", m.Release, ErrNotFound)
	}
	p, _ := d.ReleasePath(m.Release)
	return writeManifest(filepath.Join(p, ManifestName), m)
}

func writeManifest(path string, m Manifest) error {
	m.SHA256 = strings.ToLower(strings.TrimSpace(m.SHA256))
	if m.Unpacked.IsZero() {
		m.Unpacked = time.Now().UTC()
	}
	b, err := json.MarshalIndent(m, "", "  ")
	if err != nil {
		return err
	}
	if err := atomicfile.WriteFile(path, append(b, '\n'), 0o644); err != nil {
		return fmt.Errorf("write release manifest: %w", err)
	}
	return nil
}

// Manifest returns the manifest of a committed release, or nil (and no
// error) when the release has none: it was unpacked by an agent older than
// manifests, or it is not committed (see Exists).
func (d *Dir) Manifest(release string) (*Manifest, error) {
	p, err := d.ReleasePath(release)
	if err != nil {
		return nil, err
	}
	b, err := os.ReadFile(filepath.Join(p, ManifestName))
	if errors.Is(err, fs.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("read manifest of %s: %w", release, err)
	}
	var m Manifest
	if err := json.Unmarshal(b, &m); err != nil {
		return nil, fmt.Errorf("manifest of %s: %w", release, err)
	}
	if m.Release != release || m.SHA256 == "" {
		return nil, fmt.Errorf("manifest of %s: names release %q sha256 %q", release, m.Release, m.SHA256)
	}
	return &m, nil
}

// SameTree compares the committed tree of release with its staging tree
// (unpacked again from an artifact): the same names, types, permission bits,
// file contents and symlink targets. The manifest file is ignored. It
// returns nil when they are the same, else an error naming the first
// difference.
func (d *Dir) SameTree(release string) error {
	final, err := d.ReleasePath(release)
	if err != nil {
		return err
	}
	staging := final + stagingExt
	a, err := treeEntries(final)
	if err != nil {
		return err
	}
	b, err := treeEntries(staging)
	if err != nil {
		return err
	}
	for name, fa := range a {
		fb, ok := b[name]
		if !ok {
			return fmt.Errorf("%s is on the host but not in the artifact", name)
		}
		if fa.Mode().Type() != fb.Mode().Type() || fa.Mode().Perm() != fb.Mode().Perm() {
			return fmt.Errorf("%s: mode %v on the host, %v in the artifact", name, fa.Mode(), fb.Mode())
		}
		switch {
		case fa.Mode().Type() == fs.ModeSymlink:
			ta, err1 := os.Readlink(filepath.Join(final, name))
			tb, err2 := os.Readlink(filepath.Join(staging, name))
			if err := errors.Join(err1, err2); err != nil {
				return err
			}
			if ta != tb {
				return fmt.Errorf("%s: links to %q on the host, %q in the artifact", name, ta, tb)
			}
		case fa.Mode().IsRegular():
			if fa.Size() != fb.Size() {
				return fmt.Errorf("%s: %d bytes on the host, %d in the artifact", name, fa.Size(), fb.Size())
			}
			same, err := sameContent(filepath.Join(final, name), filepath.Join(staging, name))
			if err != nil {
				return err
			}
			if !same {
				return fmt.Errorf("%s: content differs", name)
			}
		}
	}
	for name := range b {
		if _, ok := a[name]; !ok {
			return fmt.Errorf("%s is in the artifact but not on the host", name)
		}
	}
	return nil
}

// treeEntries lists a tree by slash-separated relative name (without the
// top directory and the manifest).
func treeEntries(root string) (map[string]fs.FileInfo, error) {
	out := map[string]fs.FileInfo{}
	err := filepath.WalkDir(root, func(p string, e fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, err := filepath.Rel(root, p)
		if err != nil || rel == "." || rel == ManifestName {
			return err
		}
		fi, err := e.Info()
		if err != nil {
			return err
		}
		out[filepath.ToSlash(rel)] = fi
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("list release tree: %w", err)
	}
	return out, nil
}

func sameContent(a, b string) (bool, error) {
	fa, err := os.Open(a)
	if err != nil {
		return false, err
	}
	defer fa.Close()
	fb, err := os.Open(b)
	if err != nil {
		return false, err
	}
	defer fb.Close()
	ba, bb := make([]byte, 64<<10), make([]byte, 64<<10)
	for {
		na, ea := io.ReadFull(fa, ba)
		nb, eb := io.ReadFull(fb, bb)
		if na != nb || !bytes.Equal(ba[:na], bb[:nb]) {
			return false, nil
		}
		if ea == io.EOF || ea == io.ErrUnexpectedEOF {
			return eb == io.EOF || eb == io.ErrUnexpectedEOF, nil
		}
		if ea != nil {
			return false, ea
		}
		if eb != nil {
			return false, eb
		}
	}
}
