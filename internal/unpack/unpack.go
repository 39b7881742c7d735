// Package unpack owns turning a verified artifact into a release directory on
// an agent, safely, whatever the artifact contains.
//
// Formats are detected by content, never by file name:
//
//	1f 8b ...            gzip; must decompress to a tar archive
//	"ustar" at 257, or a
//	valid v7 tar header  tar
//	anything else        a single executable, installed as <dst>/<ExecutableName>, mode 0755
//
// Invariants:
//   - Nothing is ever created, changed or followed outside dst. All writes go
//     through an os.Root opened on dst, and, independently, every entry is
//     checked before it is written: no absolute names, no ".." components, no
//     entry below a symlink, no symlink whose target leaves dst (checked both
//     lexically and, after the last entry, by resolving every symlink chain
//     against the archive's own tree), hardlinks only to regular files the
//     archive already created, no device files or FIFOs.
//   - setuid, setgid and sticky bits are dropped; ownership is not restored
//     (files belong to the agent's user); directories always get owner rwx;
//     modification times are not restored.
//   - Limits bound the work: total file bytes, entry count, name length. The
//     decompressed stream is capped too, so a decompression bomb stops at the
//     byte cap however it is built.
//   - dst must not exist. On success every file and directory under it has been
//     fsynced. On any error (including cancellation) dst is removed, so the
//     caller never sees a partial tree. The caller makes dst visible by renaming
//     it (see package releasedir).
package unpack

import (
	"archive/tar"
	"bufio"
	"bytes"
	"compress/gzip"
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
)

// Default limits, applied to zero-valued Limits fields.
const (
	DefaultMaxBytes   int64 = 4 << 30 // 4 GiB
	DefaultMaxEntries       = 100_000
	DefaultMaxNameLen       = 4096
)

// Limits cap what one archive may make Unpack do.
type Limits struct {
	// MaxBytes caps the total size of regular files written. The decompressed
	// tar stream may exceed it only by a framing allowance per entry (headers,
	// padding, long names).
	MaxBytes int64
	// MaxEntries caps the number of archive entries of any type.
	MaxEntries int
	// MaxNameLen caps the length in bytes of entry names and link targets.
	MaxNameLen int
}

func (l Limits) withDefaults() Limits {
	if l.MaxBytes <= 0 {
		l.MaxBytes = DefaultMaxBytes
	}
	if l.MaxEntries <= 0 {
		l.MaxEntries = DefaultMaxEntries
	}
	if l.MaxNameLen <= 0 {
		l.MaxNameLen = DefaultMaxNameLen
	}
	return l
}

// streamCap is how many decompressed bytes a tar stream may have: file bytes
// plus, per entry, a header block, padding, a PAX record and long names.
func (l Limits) streamCap() int64 {
	return l.MaxBytes + int64(l.MaxEntries)*int64(2048+2*l.MaxNameLen) + 1<<20
}

// Options configure Unpack.
type Options struct {
	Limits
	// ExecutableName is the file name given to an artifact that is not an
	// archive (for example the service name). Required for such artifacts.
	ExecutableName string
}

// Format is the detected kind of artifact.
type Format string

// Formats Unpack recognizes.
const (
	FormatTarGz      Format = "tar.gz"
	FormatTar        Format = "tar"
	FormatExecutable Format = "executable"
)

// Stats describe what Unpack wrote.
type Stats struct {
	Format    Format
	Files     int   // regular files
	Dirs      int   // directories, including implied parents
	Symlinks  int   // symbolic links
	Hardlinks int   // hard links
	Bytes     int64 // bytes of regular file content
	// ModeBitsDropped counts entries whose setuid, setgid or sticky bit was removed.
	ModeBitsDropped int
}

// ErrLimit is wrapped by errors reporting that an archive exceeded Limits.
var ErrLimit = errors.New("archive exceeds unpack limits")

// Unpack unpacks the artifact at src into dst, which must not exist and whose
// parent must. See the package comment for the guarantees. Errors about an
// entry name it, e.g. `archive entry "../x": path escapes the release directory`.
func Unpack(ctx context.Context, src, dst string, opt Options) (st Stats, err error) {
	lim := opt.Limits.withDefaults()
	in, err := os.Open(src)
	if err != nil {
		return Stats{}, fmt.Errorf("unpack: open artifact: %w", err)
	}
	defer in.Close()
	br := bufio.NewReaderSize(in, 1<<20)
	head, err := br.Peek(512)
	if err != nil && err != io.EOF && !errors.Is(err, bufio.ErrBufferFull) {
		return Stats{}, fmt.Errorf("unpack: read artifact: %w", err)
	}
	format := FormatExecutable
	switch {
	case len(head) >= 2 && head[0] == 0x1f && head[1] == 0x8b:
		format = FormatTarGz
	case isTarHeader(head):
		format = FormatTar
	}
	if format == FormatExecutable {
		if err := checkExecutableName(opt.ExecutableName); err != nil {
			return Stats{}, fmt.Errorf("unpack: artifact is not an archive, so it is installed as a single executable: %w", err)
		}
	}

	if _, err := os.Lstat(dst); err == nil {
		return Stats{}, fmt.Errorf("unpack: destination %s already exists", dst)
	} else if !errors.Is(err, fs.ErrNotExist) {
		return Stats{}, fmt.Errorf("unpack: %w", err)
	}
	if err := os.Mkdir(dst, 0o755); err != nil {
		return Stats{}, fmt.Errorf("unpack: create destination: %w", err)
	}
	defer func() {
		if err != nil {
			if rmErr := os.RemoveAll(dst); rmErr != nil {
				err = errors.Join(err, fmt.Errorf("remove partial destination: %w", rmErr))
			}
		}
	}()
	root, err := os.OpenRoot(dst)
	if err != nil {
		return Stats{}, fmt.Errorf("unpack: open destination: %w", err)
	}
	defer root.Close()

	x := &extractor{
		ctx:   ctx,
		root:  root,
		lim:   lim,
		kinds: map[string]kind{".": kindDir},
		links: map[string]string{},
		sync:  newSyncer(4),
		st:    Stats{Format: format},
	}
	switch format {
	case FormatTarGz:
		err = x.tarGz(br)
	case FormatTar:
		err = x.tar(br)
	case FormatExecutable:
		err = x.executable(br, opt.ExecutableName)
	}
	// The syncer's goroutines must be stopped on every path.
	if serr := x.sync.wait(); err == nil && serr != nil {
		err = fmt.Errorf("fsync unpacked file: %w", serr)
	}
	if err == nil {
		err = x.syncDirs()
	}
	if err != nil {
		return Stats{}, fmt.Errorf("unpack %s: %w", filepath.Base(src), err)
	}
	return x.st, nil
}

// isTarHeader reports whether b starts with a tar header: a ustar/GNU magic,
// or a v7 header whose checksum is right.
func isTarHeader(b []byte) bool {
	if len(b) < 512 {
		return false
	}
	if bytes.Equal(b[257:263], []byte("ustar\x00")) || bytes.Equal(b[257:265], []byte("ustar  \x00")) {
		return true
	}
	field := strings.TrimRight(strings.TrimSpace(string(b[148:156])), "\x00 ")
	want, err := strconv.ParseInt(field, 8, 64)
	if err != nil || b[0] == 0 {
		return false
	}
	var sum int64
	for i, c := range b[:512] {
		if i >= 148 && i < 156 {
			c = ' '
		}
		sum += int64(c)
	}
	return sum == want
}

func checkExecutableName(name string) error {
	switch {
	case name == "":
		return errors.New("no executable name given (Options.ExecutableName)")
	case name == "." || name == ".." || strings.ContainsAny(name, "/\x00") || len(name) > 255:
		return fmt.Errorf("executable name %q is not a plain file name", name)
	}
	return nil
}

type kind uint8

const (
	kindDir kind = iota + 1
	kindFile
	kindSymlink
)

type extractor struct {
	ctx   context.Context
	root  *os.Root
	lim   Limits
	kinds map[string]kind   // every path created, cleaned, relative to dst
	links map[string]string // symlink path -> target
	sync  *syncer
	st    Stats
	buf   []byte
}

// entryError names the archive entry a problem is about.
type entryError struct {
	name string
	err  error
}

func (e *entryError) Error() string {
	name := e.name
	if len(name) > 120 {
		name = name[:120] + "..."
	}
	return fmt.Sprintf("archive entry %q: %v", name, e.err)
}

func (e *entryError) Unwrap() error { return e.err }

func entryErr(name string, format string, args ...any) error {
	return &entryError{name: name, err: fmt.Errorf(format, args...)}
}

func (x *extractor) tarGz(r io.Reader) error {
	zr, err := gzip.NewReader(r)
	if err != nil {
		return fmt.Errorf("read gzip header: %w", err)
	}
	defer zr.Close()
	ra := newReadahead(zr, 1<<20, 4)
	defer ra.Close()
	br := bufio.NewReaderSize(ra, 1<<20)
	head, err := br.Peek(512)
	if err != nil && err != io.EOF && !errors.Is(err, bufio.ErrBufferFull) {
		return fmt.Errorf("decompress: %w", err)
	}
	if !isTarHeader(head) {
		return errors.New("gzip data does not contain a tar archive")
	}
	return x.tar(br)
}

// errStreamCap is returned by the capped reader; tar passes it through.
var errStreamCap = fmt.Errorf("%w: decompressed archive stream is larger than the byte cap allows (Limits.MaxBytes)", ErrLimit)

type cappedReader struct {
	r    io.Reader
	left int64
}

func (c *cappedReader) Read(p []byte) (int, error) {
	if c.left <= 0 {
		return 0, errStreamCap
	}
	if int64(len(p)) > c.left {
		p = p[:c.left]
	}
	n, err := c.r.Read(p)
	c.left -= int64(n)
	return n, err
}

func (x *extractor) tar(r io.Reader) error {
	tr := tar.NewReader(&cappedReader{r: r, left: x.lim.streamCap()})
	entries := 0
	last := ""
	for {
		if err := x.ctx.Err(); err != nil {
			return fmt.Errorf("unpack interrupted: %w", err)
		}
		hdr, err := tr.Next()
		if err == io.EOF {
			break
		}
		if err != nil {
			if errors.Is(err, errStreamCap) {
				return errStreamCap
			}
			if last != "" {
				return fmt.Errorf("read archive after entry %q: %w", last, err)
			}
			return fmt.Errorf("read archive: %w", err)
		}
		entries++
		if entries > x.lim.MaxEntries {
			return fmt.Errorf("%w: more than %d entries (Limits.MaxEntries)", ErrLimit, x.lim.MaxEntries)
		}
		last = hdr.Name
		if err := x.entry(tr, hdr); err != nil {
			return err
		}
	}
	return x.checkSymlinks()
}

func (x *extractor) entry(tr *tar.Reader, hdr *tar.Header) error {
	if len(hdr.Name) > x.lim.MaxNameLen {
		return entryErr(hdr.Name, "%w: name is %d bytes, limit %d (Limits.MaxNameLen)", ErrLimit, len(hdr.Name), x.lim.MaxNameLen)
	}
	if len(hdr.Linkname) > x.lim.MaxNameLen {
		return entryErr(hdr.Name, "%w: link target is %d bytes, limit %d (Limits.MaxNameLen)", ErrLimit, len(hdr.Linkname), x.lim.MaxNameLen)
	}
	if hdr.Typeflag == tar.TypeXGlobalHeader {
		return nil // PAX global header: metadata only
	}
	name, err := cleanName(hdr.Name)
	if err != nil {
		return &entryError{name: hdr.Name, err: err}
	}
	perm := fs.FileMode(hdr.Mode).Perm()
	if hdr.Mode&0o7000 != 0 {
		x.st.ModeBitsDropped++
	}

	if name == "." {
		if hdr.Typeflag == tar.TypeDir {
			return nil // "./": the release directory itself
		}
		return entryErr(hdr.Name, "names the release directory itself")
	}
	if err := x.checkParents(name); err != nil {
		return &entryError{name: hdr.Name, err: err}
	}
	if k, ok := x.kinds[name]; ok {
		if k == kindDir && hdr.Typeflag == tar.TypeDir {
			return nil // repeated directory entry
		}
		return entryErr(hdr.Name, "duplicate entry: %s already exists in the archive", name)
	}
	if err := x.ensureParent(name); err != nil {
		return &entryError{name: hdr.Name, err: err}
	}

	switch hdr.Typeflag {
	case tar.TypeReg:
		return x.file(tr, hdr, name, perm)
	case tar.TypeDir:
		if err := x.root.Mkdir(name, 0o700); err != nil {
			return entryErr(hdr.Name, "create directory: %w", err)
		}
		if err := x.root.Chmod(name, perm|0o700); err != nil {
			return entryErr(hdr.Name, "set directory mode: %w", err)
		}
		x.kinds[name] = kindDir
		x.st.Dirs++
	case tar.TypeSymlink:
		if err := checkSymlinkTarget(name, hdr.Linkname); err != nil {
			return &entryError{name: hdr.Name, err: err}
		}
		if err := x.root.Symlink(hdr.Linkname, name); err != nil {
			return entryErr(hdr.Name, "create symlink: %w", err)
		}
		x.kinds[name] = kindSymlink
		x.links[name] = hdr.Linkname
		x.st.Symlinks++
	case tar.TypeLink:
		target, err := cleanName(hdr.Linkname)
		if err != nil {
			return entryErr(hdr.Name, "hardlink target %q: %w", hdr.Linkname, err)
		}
		if x.kinds[target] != kindFile {
			return entryErr(hdr.Name, "hardlink target %q is not a regular file earlier in the archive", hdr.Linkname)
		}
		if err := x.root.Link(target, name); err != nil {
			return entryErr(hdr.Name, "create hardlink: %w", err)
		}
		x.kinds[name] = kindFile
		x.st.Hardlinks++
	case tar.TypeChar, tar.TypeBlock:
		return entryErr(hdr.Name, "device files are not allowed in a release")
	case tar.TypeFifo:
		return entryErr(hdr.Name, "FIFOs are not allowed in a release")
	default:
		return entryErr(hdr.Name, "unsupported entry type %q", hdr.Typeflag)
	}
	return nil
}

func (x *extractor) file(r io.Reader, hdr *tar.Header, name string, perm fs.FileMode) error {
	if hdr.Size < 0 {
		return entryErr(hdr.Name, "negative size")
	}
	if x.st.Bytes+hdr.Size > x.lim.MaxBytes {
		return entryErr(hdr.Name, "%w: %d bytes would bring the release to %d bytes, limit %d (Limits.MaxBytes)",
			ErrLimit, hdr.Size, x.st.Bytes+hdr.Size, x.lim.MaxBytes)
	}
	f, err := x.root.OpenFile(name, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
	if err != nil {
		return entryErr(hdr.Name, "create file: %w", err)
	}
	x.kinds[name] = kindFile
	n, err := x.copy(f, r)
	if err == nil && n != hdr.Size {
		err = fmt.Errorf("short content: %d of %d bytes", n, hdr.Size)
	}
	if err == nil {
		err = f.Chmod(perm)
	}
	if err != nil {
		f.Close()
		if errors.Is(err, errStreamCap) {
			return errStreamCap
		}
		return entryErr(hdr.Name, "write file: %w", err)
	}
	x.st.Files++
	x.st.Bytes += n
	x.sync.add(f)
	return nil
}

// copy copies r to w in large chunks (decompressors return small reads),
// checking for cancellation between chunks.
func (x *extractor) copy(w io.Writer, r io.Reader) (int64, error) {
	if x.buf == nil {
		x.buf = make([]byte, 1<<20)
	}
	var n int64
	for {
		if err := x.ctx.Err(); err != nil {
			return n, fmt.Errorf("unpack interrupted: %w", err)
		}
		fill := 0
		var rerr error
		for fill < len(x.buf) && rerr == nil {
			var nr int
			nr, rerr = r.Read(x.buf[fill:])
			fill += nr
		}
		if fill > 0 {
			nw, werr := w.Write(x.buf[:fill])
			n += int64(nw)
			if werr != nil {
				return n, werr
			}
		}
		if rerr == io.EOF {
			return n, nil
		}
		if rerr != nil {
			if errors.Is(rerr, errStreamCap) {
				return n, rerr
			}
			return n, fmt.Errorf("read archive: %w", rerr)
		}
	}
}

func (x *extractor) executable(r io.Reader, name string) error {
	f, err := x.root.OpenFile(name, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o700)
	if err != nil {
		return fmt.Errorf("create executable: %w", err)
	}
	n, err := x.copy(f, io.LimitReader(r, x.lim.MaxBytes+1))
	if err == nil && n > x.lim.MaxBytes {
		err = fmt.Errorf("%w: executable is larger than %d bytes (Limits.MaxBytes)", ErrLimit, x.lim.MaxBytes)
	}
	if err == nil {
		err = f.Chmod(0o755)
	}
	if err != nil {
		f.Close()
		return fmt.Errorf("write executable %s: %w", name, err)
	}
	x.kinds[name] = kindFile
	x.st.Files++
	x.st.Bytes = n
	x.sync.add(f)
	return nil
}

// cleanName turns an archive name into a clean, slash-separated path relative
// to dst, or explains why it cannot be one. "." means dst itself.
func cleanName(raw string) (string, error) {
	switch {
	case raw == "":
		return "", errors.New("empty name")
	case strings.ContainsRune(raw, 0):
		return "", errors.New("name contains a NUL byte")
	case strings.HasPrefix(raw, "/"):
		return "", errors.New("absolute path not allowed in a release")
	}
	parts := strings.Split(raw, "/")
	kept := parts[:0]
	for _, p := range parts {
		switch p {
		case "..":
			return "", errors.New("path escapes the release directory")
		case "", ".":
			continue
		}
		kept = append(kept, p)
	}
	if len(kept) == 0 {
		return ".", nil
	}
	name := strings.Join(kept, "/")
	if !filepath.IsLocal(name) {
		return "", errors.New("path is not local to the release directory")
	}
	return name, nil
}

// checkParents refuses entries below a symlink or below a non-directory.
func (x *extractor) checkParents(name string) error {
	for i := 0; i < len(name); i++ {
		if name[i] != '/' {
			continue
		}
		switch x.kinds[name[:i]] {
		case kindSymlink:
			return fmt.Errorf("path passes through symlink %q", name[:i])
		case kindFile:
			return fmt.Errorf("parent %q is not a directory", name[:i])
		}
	}
	return nil
}

// ensureParent creates missing parent directories (archives often omit them).
func (x *extractor) ensureParent(name string) error {
	dir := path.Dir(name)
	if x.kinds[dir] == kindDir {
		return nil
	}
	if err := x.root.MkdirAll(dir, 0o755); err != nil {
		return fmt.Errorf("create parent directory: %w", err)
	}
	for d := dir; d != "."; d = path.Dir(d) {
		if _, ok := x.kinds[d]; !ok {
			x.kinds[d] = kindDir
			x.st.Dirs++
		}
	}
	return nil
}

// checkSymlinkTarget refuses targets that are absolute or lexically leave dst.
func checkSymlinkTarget(name, target string) error {
	switch {
	case target == "":
		return errors.New("symlink with an empty target")
	case strings.ContainsRune(target, 0):
		return errors.New("symlink target contains a NUL byte")
	case strings.HasPrefix(target, "/"):
		return fmt.Errorf("symlink target %q is absolute; it would point outside the release directory", target)
	}
	if !filepath.IsLocal(path.Join(path.Dir(name), target)) {
		return fmt.Errorf("symlink target %q escapes the release directory", target)
	}
	return nil
}

// checkSymlinks resolves every symlink the way the kernel would, over the
// tree the archive built, and refuses any whose chain leaves dst. The lexical
// check alone misses chains like a -> "sub/l/../.." with sub/l -> "..".
func (x *extractor) checkSymlinks() error {
	names := make([]string, 0, len(x.links))
	for name := range x.links {
		names = append(names, name)
	}
	slices.Sort(names)
	for _, name := range names {
		if err := x.resolve(name); err != nil {
			return &entryError{name: name, err: err}
		}
	}
	return nil
}

const maxSymlinkHops = 40 // Linux's limit

func (x *extractor) resolve(name string) error {
	var cur []string
	if d := path.Dir(name); d != "." {
		cur = strings.Split(d, "/")
	}
	pending := strings.Split(x.links[name], "/")
	hops := 1
	for len(pending) > 0 {
		c := pending[0]
		pending = pending[1:]
		switch c {
		case "", ".":
			continue
		case "..":
			if len(cur) == 0 {
				return errors.New("symlink chain escapes the release directory")
			}
			cur = cur[:len(cur)-1]
			continue
		}
		next := append(slices.Clip(cur), c)
		p := strings.Join(next, "/")
		if x.kinds[p] != kindSymlink {
			cur = next // a directory, a file or nothing: the name stays as it is
			continue
		}
		hops++
		if hops > maxSymlinkHops {
			return errors.New("too many levels of symbolic links")
		}
		t := x.links[p]
		if strings.HasPrefix(t, "/") {
			return errors.New("symlink chain reaches an absolute target")
		}
		pending = append(strings.Split(t, "/"), pending...)
	}
	return nil
}

// syncDirs fsyncs every directory, deepest first, then dst itself.
func (x *extractor) syncDirs() error {
	var dirs []string
	for name, k := range x.kinds {
		if k == kindDir {
			dirs = append(dirs, name)
		}
	}
	slices.SortFunc(dirs, func(a, b string) int {
		return strings.Count(b, "/") - strings.Count(a, "/") // "." has none and sorts last among depth 0
	})
	for _, d := range dirs {
		if d == "." {
			continue
		}
		if err := syncPath(x.root, d); err != nil {
			return err
		}
	}
	return syncPath(x.root, ".")
}

func syncPath(root *os.Root, name string) error {
	f, err := root.Open(name)
	if err != nil {
		return fmt.Errorf("open %s for fsync: %w", name, err)
	}
	defer f.Close()
	if err := f.Sync(); err != nil {
		return fmt.Errorf("fsync %s: %w", name, err)
	}
	return nil
}

// syncer fsyncs and closes written files on a few goroutines, so the disk
// flushes one file while the next is being decompressed. Unpack owns it and
// always calls wait.
type syncer struct {
	files chan *os.File
	wg    sync.WaitGroup
	mu    sync.Mutex
	err   error
}

func newSyncer(workers int) *syncer {
	s := &syncer{files: make(chan *os.File, 64)}
	for range workers {
		s.wg.Go(func() {
			for f := range s.files {
				err := f.Sync()
				if cerr := f.Close(); err == nil {
					err = cerr
				}
				if err != nil {
					s.mu.Lock()
					if s.err == nil {
						s.err = fmt.Errorf("%s: %w", f.Name(), err)
					}
					s.mu.Unlock()
				}
			}
		})
	}
	return s
}

func (s *syncer) add(f *os.File) { s.files <- f }

// wait stops the workers after they drain the queue and returns the first error.
func (s *syncer) wait() error {
	close(s.files)
	s.wg.Wait()
	return s.err
}

// readahead decompresses on its own goroutine, a few chunks ahead of the
// reader, so inflating the next chunk overlaps writing the last one to disk.
// Its owner must call Close, which stops and waits for the goroutine.
type readahead struct {
	full  chan []byte // filled chunks, in order
	free  chan []byte // chunks to fill
	done  chan struct{}
	quit  chan struct{}
	err   error  // set before full is closed
	cur   []byte // chunk being read, from its start
	off   int    // read position in cur
	close sync.Once
}

func newReadahead(r io.Reader, chunk, n int) *readahead {
	ra := &readahead{
		full: make(chan []byte, n),
		free: make(chan []byte, n),
		done: make(chan struct{}),
		quit: make(chan struct{}),
	}
	for range n {
		ra.free <- make([]byte, chunk)
	}
	go func() {
		defer close(ra.done)
		defer close(ra.full)
		for {
			var buf []byte
			select {
			case buf = <-ra.free:
			case <-ra.quit:
				return
			}
			fill := 0
			var err error
			for fill < len(buf) && err == nil {
				var nr int
				nr, err = r.Read(buf[fill:])
				fill += nr
			}
			if fill > 0 {
				select {
				case ra.full <- buf[:fill]:
				case <-ra.quit:
					return
				}
			}
			if err != nil {
				ra.err = err
				return
			}
		}
	}()
	return ra
}

func (ra *readahead) Read(p []byte) (int, error) {
	if ra.off == len(ra.cur) {
		if ra.cur != nil {
			ra.free <- ra.cur[:cap(ra.cur)] // never blocks: n buffers, n slots
			ra.cur = nil
		}
		buf, ok := <-ra.full
		if !ok {
			return 0, ra.err // the channel close orders the write of err before this read
		}
		ra.cur, ra.off = buf, 0
	}
	n := copy(p, ra.cur[ra.off:])
	ra.off += n
	return n, nil
}

// Close stops the decompressing goroutine and waits for it.
func (ra *readahead) Close() error {
	ra.close.Do(func() { close(ra.quit) })
	<-ra.done
	return nil
}
