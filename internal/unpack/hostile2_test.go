package unpack

import (
	"archive/tar"
	"bytes"
	"compress/gzip"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"
)

// refused checks the hostile-input promise after a failed Unpack: an error
// containing want, no release directory left, nothing outside it changed.
func (s sandbox) refused(t *testing.T, err error, want string) {
	t.Helper()
	if err == nil || !strings.Contains(err.Error(), want) {
		t.Fatalf("err = %v\nwant containing %q", err, want)
	}
	if _, serr := os.Lstat(s.dst); !errors.Is(serr, fs.ErrNotExist) {
		t.Errorf("partial release left behind after error (%v)", serr)
	}
	if extra := s.outsideChanges(t); len(extra) > 0 {
		t.Errorf("written outside dst: %v", extra)
	}
}

// TestUnpackMillionEntries: a gzip'd tar of 1,000,000 entries against the
// default limits is refused once it passes DefaultMaxEntries, and the
// entries already created are removed. The first 10,000 entries are
// symlinks (a real partial tree to clean up), the rest empty PAX global
// headers: every entry counts against the limit, and building the rest as
// files would make the test take minutes (an fsync per file) without
// testing anything more. The gzip stream is concatenated members, one
// compressed block of 10,000 identical headers repeated, so the artifact is
// built in well under a second.
func TestUnpackMillionEntries(t *testing.T) {
	const total, links, per = 1_000_000, 10_000, 10_000
	var a bytes.Buffer
	var tb bytes.Buffer
	tw := tar.NewWriter(&tb)
	for i := range links {
		if err := tw.WriteHeader(&tar.Header{Name: fmt.Sprintf("e%07d", i), Typeflag: tar.TypeSymlink, Linkname: "t",
			Mode: 0o777, Format: tar.FormatUSTAR}); err != nil {
			t.Fatal(err)
		}
	}
	tw.Flush()
	a.Write(gz(t, tb.Bytes()))
	tb.Reset()
	tw = tar.NewWriter(&tb)
	if err := tw.WriteHeader(&tar.Header{Typeflag: tar.TypeXGlobalHeader, Name: "g", Format: tar.FormatPAX}); err != nil {
		t.Fatal(err)
	}
	tw.Flush()
	global := tb.Bytes()
	member := gz(t, bytes.Repeat(global, per))
	for range (total - links) / per {
		a.Write(member)
	}
	a.Write(gz(t, make([]byte, 1024))) // end of archive

	s := newSandbox(t, a.Bytes())
	start := time.Now()
	_, err := Unpack(t.Context(), s.src, s.dst, Options{})
	t.Logf("1,000,000 entries: %d bytes gzip'd (%d-byte global headers), refused in %s", a.Len(), len(global), time.Since(start).Round(time.Millisecond))
	if !errors.Is(err, ErrLimit) {
		t.Errorf("err = %v, want ErrLimit", err)
	}
	s.refused(t, err, fmt.Sprintf("more than %d entries", DefaultMaxEntries))
}

const zeroMemberSize = 16 << 20

var (
	zeroOnce sync.Once
	zeroGz   []byte
)

// zeroMember is one gzip member holding zeroMemberSize zero bytes,
// compressed as well as deflate can (about 1,000:1), built once.
func zeroMember(t *testing.T) []byte {
	t.Helper()
	zeroOnce.Do(func() {
		var buf bytes.Buffer
		zw, _ := gzip.NewWriterLevel(&buf, gzip.BestCompression)
		zw.Write(make([]byte, zeroMemberSize))
		zw.Close()
		zeroGz = buf.Bytes()
	})
	return zeroGz
}

// TestUnpackDecompressionBombDefaultLimits: a ~20 MB artifact that
// decompresses to 20 GiB of zeros behind one tar header, under the default
// limits. Its gzip stream is a tar header member followed by 1,280 members of
// 16 MiB of zeros each (gzip readers concatenate members), so it is built in
// a second yet really is a 20 GiB stream. The entry's declared size is over
// DefaultMaxBytes: refused before a byte of it is decompressed or written.
//
// A bomb that stays under the per-release cap file by file (many files of
// zeros adding up to just over DefaultMaxBytes) would have to write 4 GiB
// to disk before the refusal; that case runs with explicit small limits in
// TestUnpackHostile ("bomb over many files"), and a stream that is all
// framing and no file bytes in TestStreamCap.
func TestUnpackDecompressionBombDefaultLimits(t *testing.T) {
	const total = 20 << 30
	var hdr bytes.Buffer
	tw := tar.NewWriter(&hdr)
	if err := tw.WriteHeader(&tar.Header{Name: "zeros", Typeflag: tar.TypeReg, Mode: 0o644, Size: total, Format: tar.FormatPAX}); err != nil {
		t.Fatal(err)
	}
	tw.Flush()
	var a bytes.Buffer
	a.Write(gz(t, hdr.Bytes()))
	member := zeroMember(t)
	for range total / zeroMemberSize {
		a.Write(member)
	}
	s := newSandbox(t, a.Bytes())
	start := time.Now()
	_, err := Unpack(t.Context(), s.src, s.dst, Options{})
	took := time.Since(start)
	t.Logf("bomb: %d bytes gzip'd for %d GiB of zeros, refused in %s", a.Len(), total>>30, took.Round(time.Millisecond))
	if !errors.Is(err, ErrLimit) {
		t.Errorf("err = %v, want ErrLimit", err)
	}
	s.refused(t, err, `archive entry "zeros"`)
	// Decompressing 20 GiB takes minutes; the refusal must not.
	if took > 10*time.Second {
		t.Errorf("refusal took %s: the bomb was decompressed", took)
	}
}

// TestUnpackBombWithoutHeader: the same 20 GiB of zeros without a tar header
// is not a tar archive, and only the first block is ever read.
func TestUnpackBombWithoutHeader(t *testing.T) {
	var a bytes.Buffer
	member := zeroMember(t)
	for range 20 << 30 / zeroMemberSize {
		a.Write(member)
	}
	s := newSandbox(t, a.Bytes())
	start := time.Now()
	_, err := Unpack(t.Context(), s.src, s.dst, Options{})
	s.refused(t, err, "gzip data does not contain a tar archive")
	if took := time.Since(start); took > 10*time.Second {
		t.Errorf("refusal took %s: the bomb was decompressed", took)
	}
}

// TestUnpackDropsSetuidSetgid: setuid, setgid and sticky bits on files and
// directories are dropped, the rest of the mode kept.
func TestUnpackDropsSetuidSetgid(t *testing.T) {
	ents := []ent{
		{name: "setuid", body: "x", mode: 0o4755},
		{name: "setgid", body: "x", mode: 0o2755},
		{name: "both", body: "x", mode: 0o6711},
		{name: "all", body: "x", mode: 0o7777},
		{name: "gdir/", typ: tar.TypeDir, mode: 0o2775},
		{name: "gdir/f", body: "x", mode: 0o2640},
	}
	want := map[string]fs.FileMode{"setuid": 0o755, "setgid": 0o755, "both": 0o711, "all": 0o777,
		"gdir": fs.ModeDir | 0o775, "gdir/f": 0o640}
	for _, compress := range []bool{false, true} {
		t.Run(fmt.Sprintf("gz=%v", compress), func(t *testing.T) { dropsSetuidSetgid(t, ents, want, compress) })
	}
}

func dropsSetuidSetgid(t *testing.T, ents []ent, want map[string]fs.FileMode, compress bool) {
	{
		a := buildTar(t, ents)
		if compress {
			a = gz(t, a)
		}
		s := newSandbox(t, a)
		st, err := Unpack(t.Context(), s.src, s.dst, Options{})
		if err != nil {
			t.Fatal(err)
		}
		if st.ModeBitsDropped != len(ents) {
			t.Errorf("ModeBitsDropped = %d, want %d", st.ModeBitsDropped, len(ents))
		}
		for name, m := range want {
			fi, err := os.Lstat(filepath.Join(s.dst, name))
			if err != nil {
				t.Fatal(err)
			}
			if fi.Mode() != m {
				t.Errorf("%s: mode %v, want %v", name, fi.Mode(), m)
			}
			if fi.Mode()&(fs.ModeSetuid|fs.ModeSetgid|fs.ModeSticky) != 0 {
				t.Errorf("%s: special bit kept: %v", name, fi.Mode())
			}
		}
		if extra := s.outsideChanges(t); len(extra) > 0 {
			t.Errorf("written outside dst: %v", extra)
		}
	}
}

// TestUnpackVeryLongNames: names past the limits (as PAX records or GNU
// long-name entries), a component longer than the file system allows, and
// a very long symlink target are refused with nothing left behind.
func TestUnpackVeryLongNames(t *testing.T) {
	gnu := func(name string, typ byte, link string) []byte {
		var buf bytes.Buffer
		tw := tar.NewWriter(&buf)
		h := &tar.Header{Name: name, Typeflag: typ, Linkname: link, Mode: 0o644, Format: tar.FormatGNU}
		if typ == tar.TypeReg {
			h.Size = 1
		}
		if err := tw.WriteHeader(h); err != nil {
			t.Fatal(err)
		}
		if typ == tar.TypeReg {
			tw.Write([]byte("x"))
		}
		tw.Close()
		return buf.Bytes()
	}
	for _, tt := range []struct {
		name    string
		archive []byte
		want    string
	}{
		{"PAX name of 512 KiB", buildTar(t, []ent{{name: strings.Repeat("n", 512<<10), body: "x"}}), "limit 4096"},
		{"GNU long name of 64 KiB", gnu(strings.Repeat("d/", 32<<10)+"f", tar.TypeReg, ""), "limit 4096"},
		{"GNU long symlink target", gnu("l", tar.TypeSymlink, strings.Repeat("../", 3000)), "link target is 9000 bytes"},
		{"name just over the limit", buildTar(t, []ent{{name: strings.Repeat("a/", 2048) + "f", body: "x"}}), "name is 4097 bytes, limit 4096"},
		{"component longer than NAME_MAX", buildTar(t, []ent{{name: "ok/" + strings.Repeat("c", 300), body: "x"}}), "file name too long"},
		{"long component after a file", buildTar(t, []ent{{name: "a", body: "x"}, {name: strings.Repeat("z", 1000), body: "x"}}), "file name too long"},
	} {
		for _, compress := range []bool{false, true} {
			t.Run(fmt.Sprintf("%s/gz=%v", tt.name, compress), func(t *testing.T) {
				a := tt.archive
				if compress {
					a = gz(t, a)
				}
				s := newSandbox(t, a)
				_, err := Unpack(t.Context(), s.src, s.dst, Options{})
				s.refused(t, err, tt.want)
			})
		}
	}
}
