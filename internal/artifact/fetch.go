package artifact

import (
	"context"
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"encoding/hex"
	"errors"
	"fmt"
	"hash"
	"io"
	"math/rand/v2"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"regexp"
	"time"

	"github.com/hashicorp/go-hclog"
)

// Defaults applied by Fetch to zero-valued Options fields.
const (
	DefaultMaxBytes    int64 = 4 << 30 // 4 GiB
	DefaultRetries           = 4
	DefaultBaseBackoff       = 250 * time.Millisecond
	DefaultMaxBackoff        = 15 * time.Second
)

// NoRetries, as Options.Retries, makes Fetch try exactly once.
const NoRetries = -1

// ErrTooLarge is wrapped by errors from Fetch when the artifact exceeds Options.MaxBytes.
var ErrTooLarge = errors.New("artifact exceeds the size cap")

// ErrChecksum is wrapped by errors reporting a sha256 mismatch.
var ErrChecksum = errors.New("sha256 mismatch")

// Options tune Fetch. The zero value is usable.
type Options struct {
	// MaxBytes caps the artifact size; 0 means DefaultMaxBytes.
	MaxBytes int64
	// Retries is how many times a transient failure is retried after the first
	// attempt; 0 means DefaultRetries, NoRetries means none.
	Retries int
	// BaseBackoff and MaxBackoff bound the exponential backoff between attempts;
	// each wait is drawn uniformly from [d/2, d] where d doubles per attempt.
	BaseBackoff, MaxBackoff time.Duration
	// HTTPClient is used for http and https URLs. If nil, Fetch builds one
	// using TLSConfig (nil means the system roots).
	HTTPClient *http.Client
	TLSConfig  *tls.Config
	// WantSHA256, if set, is checked as soon as the download completes; a
	// mismatch removes the file and is not retried. Verify must still be called.
	WantSHA256 string
	// Logger receives one line per failed attempt; nil means no logging.
	Logger hclog.Logger
}

func (o Options) withDefaults() Options {
	if o.MaxBytes <= 0 {
		o.MaxBytes = DefaultMaxBytes
	}
	switch {
	case o.Retries == 0:
		o.Retries = DefaultRetries
	case o.Retries < 0:
		o.Retries = 0
	}
	if o.BaseBackoff <= 0 {
		o.BaseBackoff = DefaultBaseBackoff
	}
	if o.MaxBackoff <= 0 {
		o.MaxBackoff = DefaultMaxBackoff
	}
	if o.MaxBackoff < o.BaseBackoff {
		o.MaxBackoff = o.BaseBackoff
	}
	if o.Logger == nil {
		o.Logger = hclog.NewNullLogger()
	}
	return o
}

// newHTTPClient returns a client without an overall timeout (artifacts can be
// large; the caller's context bounds the transfer) but with bounded connection
// setup so a dead server fails fast and is retried.
func newHTTPClient(tlsConf *tls.Config) *http.Client {
	tr := http.DefaultTransport.(*http.Transport).Clone()
	tr.TLSClientConfig = tlsConf
	tr.ResponseHeaderTimeout = 30 * time.Second
	tr.TLSHandshakeTimeout = 10 * time.Second
	// Artifacts are usually already compressed; transparent gzip would also
	// hide Content-Length from the size pre-check.
	tr.DisableCompression = true
	return &http.Client{Transport: tr}
}

// Artifact is a fetched file and what Fetch measured while writing it.
type Artifact struct {
	Path   string // absolute or dir-relative path of the file
	Size   int64  // bytes written
	SHA256 string // lowercase hex sha256 of the bytes written
}

// Fetch downloads rawURL (http, https or file) into a new file in dir, named
// after the last element of the URL path when that is a plain file name, or
// "artifact" otherwise. An existing file of that name is replaced only once
// the download has completed. The sha256 is computed while streaming.
//
// Transient failures (network errors, HTTP 5xx, 408, 429) are retried with
// exponential backoff and jitter; everything else fails at once. On error no
// file is left in dir. Cancelling ctx aborts the transfer and any wait.
func Fetch(ctx context.Context, rawURL, dir string, opt Options) (Artifact, error) {
	opt = opt.withDefaults()
	if opt.HTTPClient == nil {
		// A client of our own: do not leave its keep-alive connections behind.
		opt.HTTPClient = newHTTPClient(opt.TLSConfig)
		defer opt.HTTPClient.CloseIdleConnections()
	}
	u, err := url.Parse(rawURL)
	if err != nil {
		return Artifact{}, fmt.Errorf("fetch artifact: parse url: %w", err)
	}
	switch u.Scheme {
	case "http", "https", "file":
	default:
		return Artifact{}, fmt.Errorf("fetch artifact %s: unsupported url scheme %q (want http, https or file)", redact(u), u.Scheme)
	}
	dest := filepath.Join(dir, fileName(u))
	log := opt.Logger.Named("artifact").With("url", redact(u))

	for attempt := 0; ; attempt++ {
		a, err := fetchOnce(ctx, u, dest, opt)
		if err == nil {
			return a, nil
		}
		var te *transientError
		if !errors.As(err, &te) || attempt >= opt.Retries || ctx.Err() != nil {
			if ctx.Err() != nil {
				err = fmt.Errorf("%w (%w)", err, context.Cause(ctx))
			}
			if attempt > 0 {
				return Artifact{}, fmt.Errorf("fetch artifact %s (after %d attempts): %w", redact(u), attempt+1, err)
			}
			return Artifact{}, fmt.Errorf("fetch artifact %s: %w", redact(u), err)
		}
		wait := backoff(attempt, opt.BaseBackoff, opt.MaxBackoff)
		log.Warn("artifact fetch failed, retrying", "attempt", attempt+1, "retry_in", wait, "error", err)
		t := time.NewTimer(wait)
		select {
		case <-ctx.Done():
			t.Stop()
			return Artifact{}, fmt.Errorf("fetch artifact %s: %w (gave up waiting to retry: %w)", redact(u), err, context.Cause(ctx))
		case <-t.C:
		}
	}
}

// backoff returns the wait before retry number attempt+1: d = base*2^attempt
// capped at max, drawn uniformly from [d/2, d].
func backoff(attempt int, base, max time.Duration) time.Duration {
	d := base
	for i := 0; i < attempt && d < max; i++ {
		d *= 2
	}
	d = min(d, max)
	half := d / 2
	return half + rand.N(d-half+1)
}

// transientError marks a failure that may succeed if tried again.
type transientError struct{ err error }

func (e *transientError) Error() string { return e.err.Error() }
func (e *transientError) Unwrap() error { return e.err }

func transient(err error) error { return &transientError{err: err} }

var plainName = regexp.MustCompile(`^[A-Za-z0-9_+-][A-Za-z0-9._+-]{0,127}$`)

func fileName(u *url.URL) string {
	base := filepath.Base(u.Path)
	if plainName.MatchString(base) {
		return base
	}
	return "artifact"
}

// redact drops credentials and query strings (often signed tokens) from URLs
// that end up in errors and logs.
func redact(u *url.URL) string {
	c := *u
	c.User = nil
	if c.RawQuery != "" {
		c.RawQuery = "REDACTED"
	}
	return c.String()
}

func fetchOnce(ctx context.Context, u *url.URL, dest string, opt Options) (Artifact, error) {
	body, size, err := open(ctx, u, opt)
	if err != nil {
		return Artifact{}, err
	}
	defer body.Close()
	if size > opt.MaxBytes {
		return Artifact{}, fmt.Errorf("%w: source reports %d bytes, cap is %d (Options.MaxBytes)", ErrTooLarge, size, opt.MaxBytes)
	}

	f, err := os.CreateTemp(filepath.Dir(dest), "."+filepath.Base(dest)+".part-*")
	if err != nil {
		return Artifact{}, fmt.Errorf("create download file: %w", err)
	}
	keep := false
	defer func() {
		if !keep {
			f.Close()
			os.Remove(f.Name())
		}
	}()

	h := sha256.New()
	n, err := copyCapped(ctx, f, h, body, opt.MaxBytes)
	if err != nil {
		return Artifact{}, err
	}
	if size >= 0 && n != size {
		return Artifact{}, transient(fmt.Errorf("short body: got %d of %d bytes", n, size))
	}
	sum := hex.EncodeToString(h.Sum(nil))
	if opt.WantSHA256 != "" {
		if err := compareSHA256(sum, opt.WantSHA256); err != nil {
			return Artifact{}, err
		}
	}
	// No fsync: the download is scratch. After a crash it is fetched again
	// and verified again; only the unpacked release must be durable.
	if err := f.Close(); err != nil {
		return Artifact{}, fmt.Errorf("close download file: %w", err)
	}
	if err := os.Rename(f.Name(), dest); err != nil {
		return Artifact{}, fmt.Errorf("rename download into place: %w", err)
	}
	keep = true
	return Artifact{Path: dest, Size: n, SHA256: sum}, nil
}

// open returns the source stream and its size (-1 when unknown).
func open(ctx context.Context, u *url.URL, opt Options) (io.ReadCloser, int64, error) {
	if u.Scheme == "file" {
		if u.Host != "" && u.Host != "localhost" {
			return nil, 0, fmt.Errorf("file url with remote host %q is not supported", u.Host)
		}
		f, err := os.Open(u.Path)
		if err != nil {
			return nil, 0, fmt.Errorf("open source: %w", err)
		}
		st, err := f.Stat()
		if err != nil {
			f.Close()
			return nil, 0, fmt.Errorf("stat source: %w", err)
		}
		if !st.Mode().IsRegular() {
			f.Close()
			return nil, 0, fmt.Errorf("source %s is not a regular file", u.Path)
		}
		return f, st.Size(), nil
	}

	req, err := http.NewRequestWithContext(ctx, http.MethodGet, u.String(), nil)
	if err != nil {
		return nil, 0, fmt.Errorf("build request: %w", err)
	}
	resp, err := opt.HTTPClient.Do(req)
	if err != nil {
		if isPermanentTransportError(err) {
			return nil, 0, err
		}
		return nil, 0, transient(err)
	}
	if resp.StatusCode != http.StatusOK {
		// Keep a little of the body: servers often explain themselves there.
		msg, _ := io.ReadAll(io.LimitReader(resp.Body, 256))
		resp.Body.Close()
		err := fmt.Errorf("http status %s: %q", resp.Status, msg)
		if resp.StatusCode >= 500 || resp.StatusCode == http.StatusRequestTimeout || resp.StatusCode == http.StatusTooManyRequests {
			return nil, 0, transient(err)
		}
		return nil, 0, err
	}
	return resp.Body, resp.ContentLength, nil
}

// isPermanentTransportError reports transport errors that a retry cannot fix:
// certificate problems and a protocol mismatch (https spoken to a plain http port).
func isPermanentTransportError(err error) bool {
	var (
		certErr     *tls.CertificateVerificationError
		unknownAuth x509.UnknownAuthorityError
		hostErr     x509.HostnameError
		invalidErr  x509.CertificateInvalidError
		recErr      tls.RecordHeaderError
	)
	return errors.As(err, &certErr) || errors.As(err, &unknownAuth) || errors.As(err, &hostErr) ||
		errors.As(err, &invalidErr) || errors.As(err, &recErr)
}

const copyBufSize = 1 << 20

// copyCapped copies src to dst and h, failing with ErrTooLarge as soon as more
// than max bytes arrive. Read errors are transient (the network dropped);
// write errors are not (the local disk is the problem).
func copyCapped(ctx context.Context, dst io.Writer, h hash.Hash, src io.Reader, max int64) (int64, error) {
	buf := make([]byte, copyBufSize)
	var n int64
	for {
		if err := ctx.Err(); err != nil {
			return n, fmt.Errorf("download interrupted after %d bytes: %w", n, err)
		}
		nr, rerr := src.Read(buf)
		if nr > 0 {
			n += int64(nr)
			if n > max {
				return n, fmt.Errorf("%w: more than %d bytes received (Options.MaxBytes); partial file removed", ErrTooLarge, max)
			}
			h.Write(buf[:nr])
			if _, err := dst.Write(buf[:nr]); err != nil {
				return n, fmt.Errorf("write download file: %w", err)
			}
		}
		if rerr == io.EOF {
			return n, nil
		}
		if rerr != nil {
			if ctx.Err() != nil {
				return n, fmt.Errorf("download interrupted after %d bytes: %w", n, ctx.Err())
			}
			return n, transient(fmt.Errorf("read body after %d bytes: %w", n, rerr))
		}
	}
}
