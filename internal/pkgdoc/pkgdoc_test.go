package pkgdoc

import (
	"go/ast"
	"go/parser"
	"go/token"
	"io/fs"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"testing"
)

// moduleRoot is the directory of go.mod above the test's directory.
func moduleRoot(t *testing.T) string {
	t.Helper()
	dir, err := os.Getwd()
	if err != nil {
		t.Fatal(err)
	}
	for {
		if _, err := os.Stat(filepath.Join(dir, "go.mod")); err == nil {
			return dir
		}
		parent := filepath.Dir(dir)
		if parent == dir {
			t.Fatal("no go.mod above the test's directory")
		}
		dir = parent
	}
}

// pkgFile is one parsed non-test file of a package.
type pkgFile struct {
	name      string
	doc       string // the file's package doc comment ("" if none)
	generated bool
}

// packages parses the package clause and doc of every non-test .go file of
// the module, by directory (testdata, vendor and dot/underscore dirs are
// not packages of the module; nor is a nested module).
func packages(t *testing.T, root string) map[string]map[string][]pkgFile {
	t.Helper()
	out := map[string]map[string][]pkgFile{} // dir -> package name -> files
	fset := token.NewFileSet()
	err := filepath.WalkDir(root, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if d.IsDir() {
			n := d.Name()
			if p != root && (n == "testdata" || n == "vendor" || strings.HasPrefix(n, ".") || strings.HasPrefix(n, "_")) {
				return filepath.SkipDir
			}
			if p != root {
				if _, err := os.Stat(filepath.Join(p, "go.mod")); err == nil {
					return filepath.SkipDir
				}
			}
			return nil
		}
		if !strings.HasSuffix(p, ".go") || strings.HasSuffix(p, "_test.go") {
			return nil
		}
		f, err := parser.ParseFile(fset, p, nil, parser.PackageClauseOnly|parser.ParseComments)
		if err != nil {
			t.Errorf("%v", err)
			return nil
		}
		rel, _ := filepath.Rel(root, filepath.Dir(p))
		if out[rel] == nil {
			out[rel] = map[string][]pkgFile{}
		}
		pf := pkgFile{name: filepath.Base(p), generated: ast.IsGenerated(f)}
		if f.Doc != nil {
			pf.doc = f.Doc.Text()
		}
		out[rel][f.Name.Name] = append(out[rel][f.Name.Name], pf)
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return out
}

// Every package of the module but main (whose doc says "Command ...") and
// wholly generated ones has a doc comment, and every file's package doc
// comment starts "Package <name> ", so `go doc` opens with the right
// paragraph.
func TestPackageDocs(t *testing.T) {
	root := moduleRoot(t)
	pkgs := packages(t, root)
	if len(pkgs) < 10 {
		t.Fatalf("found %d package directories under %s: the walk is broken", len(pkgs), root)
	}
	dirs := make([]string, 0, len(pkgs))
	for d := range pkgs {
		dirs = append(dirs, d)
	}
	sort.Strings(dirs)
	checked := 0
	for _, dir := range dirs {
		for name, files := range pkgs[dir] {
			if name == "main" {
				continue
			}
			generated, documented := true, false
			for _, f := range files {
				generated = generated && f.generated
				if f.doc == "" {
					continue
				}
				documented = true
				if want := "Package " + name + " "; !strings.HasPrefix(f.doc, want) {
					first, _, _ := strings.Cut(f.doc, "\n")
					t.Errorf("%s/%s: package doc starts %q, want %q (a blank line in a doc comment cuts off what is above it)",
						dir, f.name, first, want+"...")
				}
			}
			if generated {
				continue
			}
			checked++
			if !documented {
				t.Errorf("%s: package %s has no doc comment (add one above `package %s`, saying what it owns)", dir, name, name)
			}
		}
	}
	t.Logf("%d packages checked", checked)
}
