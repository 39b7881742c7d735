package artifact

import (
	"bytes"
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"encoding/hex"
	"errors"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/hashicorp/go-hclog"
	"go.uber.org/goleak"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}

type testWriter struct{ t *testing.T }

func (w testWriter) Write(p []byte) (int, error) {
	w.t.Helper()
	w.t.Log(strings.TrimRight(string(p), "\n"))
	return len(p), nil
}

func testLogger(t *testing.T) hclog.Logger {
	return hclog.New(&hclog.LoggerOptions{Output: testWriter{t}, Level: hclog.Debug})
}

func randBytes(t *testing.T, n int) []byte {
	t.Helper()
	b := make([]byte, n)
	rand.Read(b)
	return b
}

func sum(b []byte) string {
	s := sha256.Sum256(b)
	return hex.EncodeToString(s[:])
}

// fastOpts retries quickly so tests do not wait on real backoff.
func fastOpts(t *testing.T) Options {
	return Options{Retries: 3, BaseBackoff: time.Millisecond, MaxBackoff: 4 * time.Millisecond, Logger: testLogger(t)}
}

// dirEntries lists names in dir, to assert nothing partial was left behind.
func dirEntries(t *testing.T, dir string) []string {
	t.Helper()
	ents, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, e := range ents {
		names = append(names, e.Name())
	}
	return names
}

func TestFetchHTTP(t *testing.T) {
	payload := randBytes(t, 3<<20+17)
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Write(payload)
	}))
	t.Cleanup(srv.Close)

	dir := t.TempDir()
	a, err := Fetch(t.Context(), srv.URL+"/svc-1.2.3.tar.gz?token=secret", dir, fastOpts(t))
	if err != nil {
		t.Fatal(err)
	}
	if a.Path != filepath.Join(dir, "svc-1.2.3.tar.gz") || a.Size != int64(len(payload)) || a.SHA256 != sum(payload) {
		t.Fatalf("got %+v", a)
	}
	got, _ := os.ReadFile(a.Path)
	if !bytes.Equal(got, payload) {
		t.Fatal("file content differs")
	}
	if names := dirEntries(t, dir); len(names) != 1 {
		t.Fatalf("dir holds %v, want only the artifact", names)
	}
}

func TestFetchFile(t *testing.T) {
	payload := randBytes(t, 1000)
	src := filepath.Join(t.TempDir(), "app")
	os.WriteFile(src, payload, 0o644)
	dir := t.TempDir()
	a, err := Fetch(t.Context(), "file://"+src, dir, Options{})
	if err != nil {
		t.Fatal(err)
	}
	if a.SHA256 != sum(payload) || filepath.Base(a.Path) != "app" {
		t.Fatalf("got %+v", a)
	}
	if err := Verify(t.Context(), a, Want{SHA256: sum(payload)}); err != nil {
		t.Fatal(err)
	}
}

func TestFetchRetries(t *testing.T) {
	payload := []byte("hello release")
	tests := []struct {
		name         string
		give         []int // status per attempt; 0 means "drop the connection mid-body"
		wantErr      string
		wantAttempts int32
	}{
		{name: "503 then ok", give: []int{503, 502, 200}, wantAttempts: 3},
		{name: "dropped body then ok", give: []int{0, 200}, wantAttempts: 2},
		{name: "429 then ok", give: []int{429, 200}, wantAttempts: 2},
		{name: "404 not retried", give: []int{404, 200}, wantErr: "404", wantAttempts: 1},
		{name: "403 not retried", give: []int{403, 200}, wantErr: "403", wantAttempts: 1},
		{name: "500 exhausts retries", give: []int{500, 500, 500, 500, 500}, wantErr: "after 4 attempts", wantAttempts: 4},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var n atomic.Int32
			srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				i := int(n.Add(1)) - 1
				switch st := tt.give[min(i, len(tt.give)-1)]; st {
				case 0:
					w.Header().Set("Content-Length", strconv.Itoa(len(payload)*10))
					w.WriteHeader(200)
					w.Write(payload[:3])
					w.(http.Flusher).Flush()
					panic(http.ErrAbortHandler) // drops the connection
				case 200:
					w.Write(payload)
				default:
					http.Error(w, "nope", st)
				}
			}))
			t.Cleanup(srv.Close)
			dir := t.TempDir()
			a, err := Fetch(t.Context(), srv.URL+"/x", dir, fastOpts(t))
			if got := n.Load(); got != tt.wantAttempts {
				t.Errorf("attempts = %d, want %d", got, tt.wantAttempts)
			}
			if tt.wantErr == "" {
				if err != nil {
					t.Fatal(err)
				}
				if a.SHA256 != sum(payload) {
					t.Fatal("wrong content")
				}
				return
			}
			if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
				t.Fatalf("err = %v, want containing %q", err, tt.wantErr)
			}
			if names := dirEntries(t, dir); len(names) != 0 {
				t.Fatalf("partial files left: %v", names)
			}
		})
	}
}

func TestFetchSizeCap(t *testing.T) {
	payload := randBytes(t, 64<<10)
	tests := []struct {
		name    string
		chunked bool
	}{
		{name: "content-length over cap"},
		{name: "chunked body over cap", chunked: true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var n atomic.Int32
			srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				n.Add(1)
				if tt.chunked {
					for i := 0; i < len(payload); i += 1024 {
						w.Write(payload[i : i+1024])
						w.(http.Flusher).Flush()
					}
					return
				}
				w.Write(payload)
			}))
			t.Cleanup(srv.Close)
			dir := t.TempDir()
			opt := fastOpts(t)
			opt.MaxBytes = 10 << 10
			_, err := Fetch(t.Context(), srv.URL+"/big", dir, opt)
			if !errors.Is(err, ErrTooLarge) {
				t.Fatalf("err = %v, want ErrTooLarge", err)
			}
			if n.Load() != 1 {
				t.Errorf("size cap was retried: %d attempts", n.Load())
			}
			if names := dirEntries(t, dir); len(names) != 0 {
				t.Fatalf("partial files left: %v", names)
			}
		})
	}
}

func TestFetchWantSHA256NotRetried(t *testing.T) {
	var n atomic.Int32
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		n.Add(1)
		w.Write([]byte("tampered"))
	}))
	t.Cleanup(srv.Close)
	dir := t.TempDir()
	opt := fastOpts(t)
	opt.WantSHA256 = sum([]byte("original"))
	_, err := Fetch(t.Context(), srv.URL+"/a", dir, opt)
	if !errors.Is(err, ErrChecksum) || !strings.Contains(err.Error(), "artifact has "+sum([]byte("tampered"))+", expected "+opt.WantSHA256) {
		t.Fatalf("err = %v", err)
	}
	if n.Load() != 1 {
		t.Errorf("checksum mismatch retried: %d attempts", n.Load())
	}
	if names := dirEntries(t, dir); len(names) != 0 {
		t.Fatalf("partial files left: %v", names)
	}
}

func TestFetchCancelDuringBackoff(t *testing.T) {
	hit := make(chan struct{}, 16)
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		http.Error(w, "down", 503)
		hit <- struct{}{}
	}))
	t.Cleanup(srv.Close)
	ctx, cancel := context.WithCancel(t.Context())
	opt := Options{Retries: 10, BaseBackoff: time.Hour, MaxBackoff: time.Hour, Logger: testLogger(t)}
	done := make(chan error, 1)
	go func() {
		_, err := Fetch(ctx, srv.URL+"/a", t.TempDir(), opt)
		done <- err
	}()
	<-hit // the first attempt failed; Fetch is now waiting an hour to retry
	cancel()
	select {
	case err := <-done:
		if !errors.Is(err, context.Canceled) {
			t.Fatalf("err = %v, want context.Canceled", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("Fetch did not return after cancel")
	}
}

func TestFetchTLS(t *testing.T) {
	payload := []byte("over tls")
	srv := httptest.NewTLSServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Write(payload)
	}))
	t.Cleanup(srv.Close)

	t.Run("trusted CA", func(t *testing.T) {
		pool := x509.NewCertPool()
		pool.AddCert(srv.Certificate())
		opt := fastOpts(t)
		opt.TLSConfig = &tls.Config{RootCAs: pool}
		a, err := Fetch(t.Context(), srv.URL+"/a", t.TempDir(), opt)
		if err != nil {
			t.Fatal(err)
		}
		if a.SHA256 != sum(payload) {
			t.Fatal("wrong content")
		}
	})
	t.Run("untrusted certificate is not retried", func(t *testing.T) {
		start := time.Now()
		opt := fastOpts(t)
		opt.BaseBackoff, opt.MaxBackoff = time.Minute, time.Minute
		_, err := Fetch(t.Context(), srv.URL+"/a", t.TempDir(), opt)
		if err == nil || !strings.Contains(err.Error(), "certificate") {
			t.Fatalf("err = %v, want certificate error", err)
		}
		if time.Since(start) > 30*time.Second {
			t.Fatal("certificate error was retried")
		}
	})
}

func TestFetchBadScheme(t *testing.T) {
	_, err := Fetch(t.Context(), "ftp://example.com/a", t.TempDir(), Options{})
	if err == nil || !strings.Contains(err.Error(), "unsupported url scheme") {
		t.Fatalf("err = %v", err)
	}
}

func TestBackoffBounds(t *testing.T) {
	for attempt := range 20 {
		d := backoff(attempt, 100*time.Millisecond, 2*time.Second)
		hi := min(100*time.Millisecond<<attempt, 2*time.Second)
		if attempt > 10 {
			hi = 2 * time.Second
		}
		if d < hi/2 || d > hi {
			t.Fatalf("attempt %d: backoff %v outside [%v, %v]", attempt, d, hi/2, hi)
		}
	}
}

func TestVerify(t *testing.T) {
	dir := t.TempDir()
	payload := randBytes(t, 100_000)
	path := filepath.Join(dir, "art")
	os.WriteFile(path, payload, 0o644)

	priv1, pub1 := filepath.Join(dir, "k1"), filepath.Join(dir, "k1.pub")
	priv2, pub2 := filepath.Join(dir, "k2"), filepath.Join(dir, "k2.pub")
	if _, err := Keygen(priv1, pub1); err != nil {
		t.Fatal(err)
	}
	if _, err := Keygen(priv2, pub2); err != nil {
		t.Fatal(err)
	}
	sig1, err := Sign(priv1, path)
	if err != nil {
		t.Fatal(err)
	}
	keys1, err := LoadPublicKeys(pub1)
	if err != nil {
		t.Fatal(err)
	}
	keys2, err := LoadPublicKeys(pub2)
	if err != nil {
		t.Fatal(err)
	}
	both := append(append([]ed25519.PublicKey{}, keys2...), keys1...)
	otherSig, _ := Sign(priv1, pub1) // a valid signature, over other bytes

	good := sum(payload)
	tests := []struct {
		name    string
		give    Artifact
		want    Want
		wantErr string
	}{
		{name: "sha only, computed by Verify", give: Artifact{Path: path}, want: Want{SHA256: good}},
		{name: "sha only, from Fetch", give: Artifact{Path: path, SHA256: good}, want: Want{SHA256: strings.ToUpper(good)}},
		{name: "empty expected sha", give: Artifact{Path: path}, want: Want{}, wantErr: "no expected sha256"},
		{name: "malformed expected sha", give: Artifact{Path: path}, want: Want{SHA256: "abc"}, wantErr: "not 64 hex digits"},
		{name: "sha mismatch", give: Artifact{Path: path}, want: Want{SHA256: sum(nil)}, wantErr: "sha256 mismatch: artifact has " + good + ", expected " + sum(nil)},
		{name: "signed by trusted key", give: Artifact{Path: path}, want: Want{SHA256: good, Signature: sig1, TrustedKeys: keys1}},
		{name: "any trusted key is enough", give: Artifact{Path: path}, want: Want{SHA256: good, Signature: sig1, TrustedKeys: both}},
		{name: "signed by untrusted key", give: Artifact{Path: path}, want: Want{SHA256: good, Signature: sig1, TrustedKeys: keys2}, wantErr: "does not verify with any of the 1 trusted keys"},
		{name: "signature over other bytes", give: Artifact{Path: path}, want: Want{SHA256: good, Signature: otherSig, TrustedKeys: keys1}, wantErr: "does not verify"},
		{name: "missing signature with keys", give: Artifact{Path: path}, want: Want{SHA256: good, TrustedKeys: keys1}, wantErr: "carries no signature"},
		{name: "garbage signature", give: Artifact{Path: path}, want: Want{SHA256: good, Signature: "!!", TrustedKeys: keys1}, wantErr: "not valid base64"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := Verify(t.Context(), tt.give, tt.want)
			if tt.wantErr == "" {
				if err != nil {
					t.Fatal(err)
				}
				return
			}
			if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
				t.Fatalf("err = %v, want containing %q", err, tt.wantErr)
			}
		})
	}
}

func TestKeygenFiles(t *testing.T) {
	dir := t.TempDir()
	priv, pub := filepath.Join(dir, "k"), filepath.Join(dir, "k.pub")
	if _, err := Keygen(priv, pub); err != nil {
		t.Fatal(err)
	}
	st, err := os.Stat(priv)
	if err != nil {
		t.Fatal(err)
	}
	if st.Mode().Perm() != 0o600 {
		t.Errorf("private key mode %v, want 0600", st.Mode().Perm())
	}
	if _, err := Keygen(priv, filepath.Join(dir, "other.pub")); err == nil {
		t.Fatal("Keygen overwrote an existing private key")
	}
	if _, err := LoadPublicKeys(priv); err == nil {
		t.Fatal("a private key was accepted as a public key")
	}
	empty := filepath.Join(dir, "empty")
	os.WriteFile(empty, nil, 0o644)
	sig, err := Sign(priv, empty)
	if err != nil {
		t.Fatal(err)
	}
	keys, _ := LoadPublicKeys(pub)
	if err := Verify(t.Context(), Artifact{Path: empty}, Want{SHA256: sum(nil), Signature: sig, TrustedKeys: keys}); err != nil {
		t.Fatalf("empty artifact: %v", err)
	}
}
