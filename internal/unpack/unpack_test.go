package unpack

import (
	"archive/tar"
	"bytes"
	"compress/gzip"
	"context"
	"errors"
	"io/fs"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"

	"go.uber.org/goleak"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}

// ent describes one tar entry to build; typ 0 means a regular file.
type ent struct {
	name string
	typ  byte
	body string
	link string
	mode int64
	size int64 // for regular files with size > len(body): zero-filled
}

func buildTar(tb testing.TB, ents []ent) []byte {
	tb.Helper()
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	for _, e := range ents {
		h := &tar.Header{Name: e.name, Typeflag: e.typ, Linkname: e.link, Mode: e.mode, Format: tar.FormatPAX}
		if h.Typeflag == 0 {
			h.Typeflag = tar.TypeReg
		}
		if h.Mode == 0 {
			h.Mode = 0o644
		}
		if h.Typeflag == tar.TypeReg {
			h.Size = max(e.size, int64(len(e.body)))
		}
		if err := tw.WriteHeader(h); err != nil {
			tb.Fatalf("build tar: %v", err)
		}
		if h.Typeflag == tar.TypeReg {
			tw.Write([]byte(e.body))
			if pad := h.Size - int64(len(e.body)); pad > 0 {
				tw.Write(make([]byte, pad))
			}
		}
	}
	if err := tw.Close(); err != nil {
		tb.Fatal(err)
	}
	return buf.Bytes()
}

func gz(tb testing.TB, b []byte) []byte {
	tb.Helper()
	var buf bytes.Buffer
	zw := gzip.NewWriter(&buf)
	zw.Write(b)
	zw.Close()
	return buf.Bytes()
}

// sandbox is a directory holding the artifact, a sentinel file outside the
// release, and the release directory path (not created).
type sandbox struct {
	base, src, dst, sentinel string
}

func newSandbox(tb testing.TB, artifact []byte) sandbox {
	tb.Helper()
	base := tb.TempDir()
	s := sandbox{
		base:     base,
		src:      filepath.Join(base, "artifact"),
		dst:      filepath.Join(base, "releases", "r1.tmp"),
		sentinel: filepath.Join(base, "outside"),
	}
	if err := os.WriteFile(s.src, artifact, 0o644); err != nil {
		tb.Fatal(err)
	}
	if err := os.WriteFile(s.sentinel, []byte("untouched"), 0o644); err != nil {
		tb.Fatal(err)
	}
	if err := os.Mkdir(filepath.Dir(s.dst), 0o755); err != nil {
		tb.Fatal(err)
	}
	return s
}

// outsideChanges lists paths outside dst that were not there before, and
// reports a changed sentinel. An empty result means nothing escaped.
func (s sandbox) outsideChanges(tb testing.TB) []string {
	tb.Helper()
	var extra []string
	want := map[string]bool{".": true, "artifact": true, "outside": true, "releases": true}
	filepath.WalkDir(s.base, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			extra = append(extra, p+": "+err.Error())
			return nil
		}
		if p == s.dst {
			return fs.SkipDir
		}
		rel, _ := filepath.Rel(s.base, p)
		if !want[rel] {
			extra = append(extra, rel)
		}
		return nil
	})
	if b, err := os.ReadFile(s.sentinel); err != nil || string(b) != "untouched" {
		extra = append(extra, "sentinel changed")
	}
	// Go's temp dirs live in a fresh parent: anything next to base is ours too.
	parent := filepath.Dir(s.base)
	ents, _ := os.ReadDir(parent)
	for _, e := range ents {
		if p := filepath.Join(parent, e.Name()); p != s.base {
			extra = append(extra, "next to sandbox: "+p)
		}
	}
	return extra
}

func TestUnpackValid(t *testing.T) {
	ents := []ent{
		{name: "./", typ: tar.TypeDir, mode: 0o755},
		{name: "./bin/", typ: tar.TypeDir, mode: 0o755},
		{name: "./lib/app/app", body: "#!/bin/sh\necho hi\n", mode: 0o755},
		{name: "./bin/app", typ: tar.TypeSymlink, link: "../lib/app/app"},
		{name: "share/doc/README", body: "readme"},
		{name: "share/doc/README.hard", typ: tar.TypeLink, link: "./share/doc/README"},
		{name: "share/self", typ: tar.TypeSymlink, link: "."},
		{name: "ro/", typ: tar.TypeDir, mode: 0o555},
		{name: "ro/file", body: "x", mode: 0o444},
		{name: "VERSION", body: "1.2.3\n", mode: 0o4755},
		{name: "sticky/", typ: tar.TypeDir, mode: 0o1777},
	}
	raw := buildTar(t, ents)
	tests := []struct {
		name   string
		give   []byte
		format Format
	}{
		{name: "tar.gz", give: gz(t, raw), format: FormatTarGz},
		{name: "tar", give: raw, format: FormatTar},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s := newSandbox(t, tt.give)
			st, err := Unpack(t.Context(), s.src, s.dst, Options{})
			if err != nil {
				t.Fatal(err)
			}
			want := Stats{Format: tt.format, Files: 4, Dirs: 7, Symlinks: 2, Hardlinks: 1, Bytes: int64(len("#!/bin/sh\necho hi\n") + 6 + 1 + 6), ModeBitsDropped: 2}
			if st != want {
				t.Errorf("stats = %+v\nwant    %+v", st, want)
			}
			b, err := os.ReadFile(filepath.Join(s.dst, "bin", "app"))
			if err != nil || !strings.Contains(string(b), "echo hi") {
				t.Fatalf("read through inner symlink: %q, %v", b, err)
			}
			fi, _ := os.Stat(filepath.Join(s.dst, "VERSION"))
			if fi.Mode() != 0o755 {
				t.Errorf("VERSION mode %v, want setuid dropped -rwxr-xr-x", fi.Mode())
			}
			fi, _ = os.Stat(filepath.Join(s.dst, "sticky"))
			if fi.Mode()&fs.ModeSticky != 0 {
				t.Errorf("sticky bit kept: %v", fi.Mode())
			}
			a, _ := os.Stat(filepath.Join(s.dst, "share/doc/README"))
			h, _ := os.Stat(filepath.Join(s.dst, "share/doc/README.hard"))
			if !os.SameFile(a, h) {
				t.Error("hardlink is not the same file")
			}
			if extra := s.outsideChanges(t); len(extra) > 0 {
				t.Errorf("written outside dst: %v", extra)
			}
		})
	}
}

func TestUnpackExecutable(t *testing.T) {
	bin := append([]byte("\x7fELF\x02\x01\x01"), bytes.Repeat([]byte{0x90}, 5000)...)
	s := newSandbox(t, bin)
	st, err := Unpack(t.Context(), s.src, s.dst, Options{ExecutableName: "billing"})
	if err != nil {
		t.Fatal(err)
	}
	if st.Format != FormatExecutable || st.Files != 1 || st.Bytes != int64(len(bin)) {
		t.Fatalf("stats %+v", st)
	}
	fi, err := os.Stat(filepath.Join(s.dst, "billing"))
	if err != nil || fi.Mode() != 0o755 {
		t.Fatalf("executable: %v %v", fi, err)
	}
	got, _ := os.ReadFile(filepath.Join(s.dst, "billing"))
	if !bytes.Equal(got, bin) {
		t.Fatal("content differs")
	}
}

func TestUnpackErrors(t *testing.T) {
	notTar := gz(t, []byte("just some gzip"))
	truncated := gz(t, buildTar(t, []ent{{name: "a", body: strings.Repeat("abc", 100000)}}))
	truncated = truncated[:len(truncated)/2]
	tests := []struct {
		name    string
		give    []byte
		opt     Options
		ctx     func(context.Context) context.Context
		wantErr string
	}{
		{name: "gzip without tar", give: notTar, wantErr: "gzip data does not contain a tar archive"},
		{name: "truncated gzip", give: truncated, wantErr: "unexpected EOF"},
		{name: "executable without name", give: []byte("\x7fELF"), wantErr: "no executable name given"},
		{name: "executable name with slash", give: []byte("\x7fELF"), opt: Options{ExecutableName: "../x"}, wantErr: "not a plain file name"},
		{name: "executable over cap", give: bytes.Repeat([]byte("z"), 2000), opt: Options{ExecutableName: "x", Limits: Limits{MaxBytes: 1000}}, wantErr: "larger than 1000 bytes"},
		{name: "cancelled", give: gz(t, buildTar(t, []ent{{name: "a", body: "x"}})), ctx: func(ctx context.Context) context.Context {
			ctx, cancel := context.WithCancel(ctx)
			cancel()
			return ctx
		}, wantErr: "context canceled"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s := newSandbox(t, tt.give)
			ctx := t.Context()
			if tt.ctx != nil {
				ctx = tt.ctx(ctx)
			}
			_, err := Unpack(ctx, s.src, s.dst, tt.opt)
			if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
				t.Fatalf("err = %v, want containing %q", err, tt.wantErr)
			}
			if _, serr := os.Lstat(s.dst); !errors.Is(serr, fs.ErrNotExist) {
				t.Fatalf("dst left behind after error (%v)", serr)
			}
		})
	}
}

func TestUnpackRefusesExistingDst(t *testing.T) {
	s := newSandbox(t, buildTar(t, []ent{{name: "a", body: "x"}}))
	os.Mkdir(s.dst, 0o755)
	os.WriteFile(filepath.Join(s.dst, "keep"), []byte("mine"), 0o644)
	_, err := Unpack(t.Context(), s.src, s.dst, Options{})
	if err == nil || !strings.Contains(err.Error(), "already exists") {
		t.Fatalf("err = %v", err)
	}
	if b, _ := os.ReadFile(filepath.Join(s.dst, "keep")); string(b) != "mine" {
		t.Fatal("an existing destination was modified or removed")
	}
}

// hostileArchives are shared by the table test and the fuzz seed corpus.
func hostileArchives(tb testing.TB) []struct {
	name    string
	ents    []ent
	lim     Limits
	wantErr string
} {
	long := strings.Repeat("d/", 2600) + "f" // 5201 bytes
	many := make([]ent, 0, 101)
	for i := range 101 {
		many = append(many, ent{name: "f" + strconv.Itoa(i), body: "x"})
	}
	return []struct {
		name    string
		ents    []ent
		lim     Limits
		wantErr string
	}{
		{name: "dotdot", ents: []ent{{name: "../x", body: "pwned"}}, wantErr: `archive entry "../x": path escapes the release directory`},
		{name: "dotdot inside", ents: []ent{{name: "a/../../outside", body: "pwned"}}, wantErr: "path escapes the release directory"},
		{name: "absolute", ents: []ent{{name: "/tmp/golive-unpack-pwned", body: "pwned"}}, wantErr: "absolute path"},
		{name: "symlink absolute then write through", ents: []ent{
			{name: "l", typ: tar.TypeSymlink, link: "/tmp"},
			{name: "l/golive-unpack-pwned", body: "pwned"},
		}, wantErr: `archive entry "l": symlink target "/tmp" is absolute`},
		{name: "symlink relative out then write through", ents: []ent{
			{name: "sub/l", typ: tar.TypeSymlink, link: "../.."},
			{name: "sub/l/outside", body: "pwned"},
		}, wantErr: `symlink target "../.." escapes the release directory`},
		{name: "write through inner symlink", ents: []ent{
			{name: "sub/", typ: tar.TypeDir},
			{name: "l", typ: tar.TypeSymlink, link: "sub"},
			{name: "l/x", body: "x"},
		}, wantErr: `path passes through symlink "l"`},
		{name: "symlink chain escapes", ents: []ent{
			{name: "sub/l", typ: tar.TypeSymlink, link: ".."},
			{name: "a", typ: tar.TypeSymlink, link: "sub/l/../.."},
		}, wantErr: "symlink chain escapes the release directory"},
		{name: "symlink chain escapes, order reversed", ents: []ent{
			{name: "a", typ: tar.TypeSymlink, link: "sub/l/../../outside"},
			{name: "sub/l", typ: tar.TypeSymlink, link: ".."},
		}, wantErr: "symlink chain escapes"},
		{name: "symlink loop", ents: []ent{
			{name: "a", typ: tar.TypeSymlink, link: "b"},
			{name: "b", typ: tar.TypeSymlink, link: "a/x"},
		}, wantErr: "too many levels of symbolic links"},
		{name: "symlink replaces file", ents: []ent{
			{name: "a", body: "x"},
			{name: "a", typ: tar.TypeSymlink, link: "/etc/passwd"},
		}, wantErr: "duplicate entry"},
		{name: "duplicate file", ents: []ent{
			{name: "a", body: "x"},
			{name: "./a", body: "y"},
		}, wantErr: "duplicate entry"},
		{name: "hardlink out", ents: []ent{{name: "h", typ: tar.TypeLink, link: "../outside"}}, wantErr: `hardlink target "../outside": path escapes`},
		{name: "hardlink absolute", ents: []ent{{name: "h", typ: tar.TypeLink, link: "/etc/passwd"}}, wantErr: "absolute path"},
		{name: "hardlink to missing entry", ents: []ent{{name: "h", typ: tar.TypeLink, link: "nope"}}, wantErr: `hardlink target "nope" is not a regular file earlier in the archive`},
		{name: "hardlink to symlink", ents: []ent{
			{name: "s", typ: tar.TypeSymlink, link: "x"},
			{name: "h", typ: tar.TypeLink, link: "s"},
		}, wantErr: "is not a regular file"},
		{name: "char device", ents: []ent{{name: "null", typ: tar.TypeChar}}, wantErr: `archive entry "null": device files are not allowed`},
		{name: "block device", ents: []ent{{name: "sda", typ: tar.TypeBlock}}, wantErr: "device files are not allowed"},
		{name: "fifo", ents: []ent{{name: "p", typ: tar.TypeFifo}}, wantErr: "FIFOs are not allowed"},
		{name: "bomb", ents: []ent{{name: "zeros", size: 10 << 20}}, lim: Limits{MaxBytes: 1 << 20}, wantErr: "exceeds unpack limits"},
		{name: "bomb over many files", ents: []ent{{name: "z1", size: 600 << 10}, {name: "z2", size: 600 << 10}}, lim: Limits{MaxBytes: 1 << 20}, wantErr: `archive entry "z2"`},
		{name: "many entries", ents: many, lim: Limits{MaxEntries: 100}, wantErr: "more than 100 entries"},
		{name: "very long name", ents: []ent{{name: long, body: "x"}}, wantErr: "name is 5201 bytes, limit 4096"},
		{name: "very long symlink target", ents: []ent{{name: "l", typ: tar.TypeSymlink, link: strings.Repeat("a/", 2100)}}, wantErr: "link target is 4200 bytes"},
		{name: "file then entry below it", ents: []ent{{name: "f", body: "x"}, {name: "f/g", body: "y"}}, wantErr: `parent "f" is not a directory`},
		{name: "release dir itself as file", ents: []ent{{name: ".", body: "x"}}, wantErr: "names the release directory itself"},
	}
}

func TestUnpackHostile(t *testing.T) {
	for _, tt := range hostileArchives(t) {
		for _, compress := range []bool{true, false} {
			name := tt.name + "/tar"
			if compress {
				name = tt.name + "/tar.gz"
			}
			t.Run(name, func(t *testing.T) {
				a := buildTar(t, tt.ents)
				if compress {
					a = gz(t, a)
				}
				s := newSandbox(t, a)
				_, err := Unpack(t.Context(), s.src, s.dst, Options{Limits: tt.lim})
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("err = %v\nwant containing %q", err, tt.wantErr)
				}
				if _, serr := os.Lstat(s.dst); !errors.Is(serr, fs.ErrNotExist) {
					t.Errorf("dst left behind after error (%v)", serr)
				}
				if extra := s.outsideChanges(t); len(extra) > 0 {
					t.Errorf("written outside dst: %v", extra)
				}
				if _, err := os.Lstat("/tmp/golive-unpack-pwned"); err == nil {
					t.Error("/tmp/golive-unpack-pwned was created")
				}
			})
		}
	}
}

// TestStreamCap builds a stream of PAX headers that never yields an entry:
// only the decompressed-stream cap stops it.
func TestStreamCap(t *testing.T) {
	var buf bytes.Buffer
	hdr := func(typ byte, size int) {
		var b [512]byte
		copy(b[0:], "PaxHeaders/x")
		copy(b[100:], "0000644\x00")
		copy(b[124:], []byte(strconv.FormatInt(int64(size), 8)+"\x00"))
		copy(b[136:], "00000000000\x00")
		b[156] = typ
		copy(b[257:], "ustar\x0000")
		copy(b[148:], "        ")
		var sum int
		for _, c := range b {
			sum += int(c)
		}
		copy(b[148:], []byte(strconv.FormatInt(int64(sum), 8)+"\x00 "))
		buf.Write(b[:])
	}
	rec := "1000 comment=" + strings.Repeat("x", 1000-len("1000 comment=")-1) + "\n"
	for range 3000 {
		hdr(tar.TypeXHeader, len(rec))
		buf.WriteString(rec)
		buf.Write(make([]byte, 512-len(rec)%512))
	}
	s := newSandbox(t, gz(t, buf.Bytes()))
	_, err := Unpack(t.Context(), s.src, s.dst, Options{Limits: Limits{MaxBytes: 1 << 10, MaxEntries: 10, MaxNameLen: 100}})
	if !errors.Is(err, ErrLimit) {
		t.Fatalf("err = %v, want ErrLimit", err)
	}
}

// FuzzUnpack checks the package's one promise that matters most: whatever the
// bytes, nothing is created outside the target directory, a failed unpack
// leaves no target directory, and a successful one holds no escaping symlink,
// device, FIFO or setuid file.
func FuzzUnpack(f *testing.F) {
	valid := buildTar(f, []ent{
		{name: "bin/", typ: tar.TypeDir, mode: 0o755},
		{name: "bin/app", body: "app", mode: 0o755},
		{name: "current", typ: tar.TypeSymlink, link: "bin/app"},
		{name: "hard", typ: tar.TypeLink, link: "bin/app"},
	})
	f.Add(valid)
	f.Add(gz(f, valid))
	f.Add([]byte("\x7fELF single binary"))
	for _, tt := range hostileArchives(f) {
		a := buildTar(f, tt.ents)
		if len(a) > 64<<10 {
			a = gz(f, a) // keep the seed corpus small
		}
		f.Add(a)
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		s := newSandbox(t, data)
		lim := Limits{MaxBytes: 4 << 20, MaxEntries: 500, MaxNameLen: 1024}
		_, err := Unpack(t.Context(), s.src, s.dst, Options{Limits: lim, ExecutableName: "svc"})
		if extra := s.outsideChanges(t); len(extra) > 0 {
			t.Fatalf("written outside dst: %v (unpack err: %v)", extra, err)
		}
		if err != nil {
			if _, serr := os.Lstat(s.dst); !errors.Is(serr, fs.ErrNotExist) {
				t.Fatalf("dst left behind after error %v", err)
			}
			return
		}
		filepath.WalkDir(s.dst, func(p string, d fs.DirEntry, err error) error {
			if err != nil {
				t.Fatal(err)
			}
			fi, _ := d.Info()
			if fi.Mode()&(fs.ModeDevice|fs.ModeCharDevice|fs.ModeNamedPipe|fs.ModeSocket|fs.ModeSetuid|fs.ModeSetgid|fs.ModeSticky) != 0 {
				t.Fatalf("%s has mode %v", p, fi.Mode())
			}
			if fi.Mode()&fs.ModeSymlink != 0 {
				if real, err := filepath.EvalSymlinks(p); err == nil {
					rel, rerr := filepath.Rel(s.dst, real)
					if rerr != nil || !filepath.IsLocal(rel) && rel != "." {
						t.Fatalf("symlink %s resolves outside dst to %s", p, real)
					}
				}
			}
			return nil
		})
	})
}

func TestCleanName(t *testing.T) {
	tests := []struct {
		give, want string
		wantErr    bool
	}{
		{give: "a/b", want: "a/b"},
		{give: "./a//b/", want: "a/b"},
		{give: "./", want: "."},
		{give: "a/../b", wantErr: true},
		{give: "..", wantErr: true},
		{give: "/a", wantErr: true},
		{give: "a\x00b", wantErr: true},
		{give: "", wantErr: true},
	}
	for _, tt := range tests {
		got, err := cleanName(tt.give)
		if (err != nil) != tt.wantErr || got != tt.want {
			t.Errorf("cleanName(%q) = %q, %v; want %q, err %v", tt.give, got, err, tt.want, tt.wantErr)
		}
	}
}

// TestReadahead reads a stream many chunks long through tiny reads and
// checks it arrives intact, then that Close stops a reader that was not drained.
func TestReadahead(t *testing.T) {
	src := make([]byte, 1<<20+123)
	for i := range src {
		src[i] = byte(i * 7)
	}
	ra := newReadahead(bytes.NewReader(src), 4096, 3)
	var got bytes.Buffer
	buf := make([]byte, 1000)
	for {
		n, err := ra.Read(buf)
		got.Write(buf[:n])
		if err != nil {
			break
		}
	}
	ra.Close()
	if !bytes.Equal(got.Bytes(), src) {
		t.Fatalf("readahead changed the stream: %d bytes, want %d", got.Len(), len(src))
	}
	ra = newReadahead(bytes.NewReader(src), 4096, 3)
	ra.Read(buf)
	ra.Close() // must return although the producer is blocked on a full queue
}
