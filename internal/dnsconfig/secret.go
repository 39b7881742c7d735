package dnsconfig

import (
	"bytes"
	"crypto/subtle"
	"encoding/base64"
	"fmt"
	"io"
	"os"
	"regexp"
	"strings"
)

// redacted is what every printer shows of a Secret.
const redacted = "[redacted]"

// Secret is a TSIG key's shared secret. Its zero value is "no secret". It
// prints as "[redacted]" however it is formatted or marshalled; only
// Base64 reveals it, for the DNS client that signs with it.
type Secret struct {
	// v returns the base64 secret. A closure, because a printer that does
	// not call Secret's methods (fmt on an unexported field, even through
	// its bad-verb path) can only show a func's address.
	v func() string
}

// NewSecret wraps a base64 secret (as written by tsig-keygen). Tests and
// callers that hold a secret already use it; the file path goes through
// LoadSecrets.
func NewSecret(b64 string) (Secret, error) {
	b64 = strings.TrimSpace(b64)
	raw, err := base64.StdEncoding.DecodeString(b64)
	if err != nil || len(raw) == 0 {
		// The error of base64 names a byte offset only; still, say nothing
		// about the content.
		return Secret{}, fmt.Errorf("not a base64 TSIG secret")
	}
	canon := base64.StdEncoding.EncodeToString(raw)
	return Secret{v: func() string { return canon }}, nil
}

// IsZero reports whether s holds no secret.
func (s Secret) IsZero() bool { return s.v == nil }

// Base64 returns the secret in base64, the form DNS libraries take. Never
// log it or put it in an error.
func (s Secret) Base64() string {
	if s.v == nil {
		return ""
	}
	return s.v()
}

// Equal reports whether two secrets are the same key.
func (s Secret) Equal(o Secret) bool {
	return subtle.ConstantTimeCompare([]byte(s.Base64()), []byte(o.Base64())) == 1
}

// String returns "[redacted]" (or "" for no secret).
func (s Secret) String() string {
	if s.v == nil {
		return ""
	}
	return redacted
}

// GoString returns what %#v prints.
func (s Secret) GoString() string { return `dnsconfig.Secret("` + s.String() + `")` }

// Format makes every verb (%v %+v %s %q %x %d ...) print the redaction.
func (s Secret) Format(f fmt.State, verb rune) {
	if verb == 'v' && f.Flag('#') {
		io.WriteString(f, s.GoString())
		return
	}
	io.WriteString(f, s.String())
}

// MarshalText keeps the secret out of JSON, YAML and text encodings.
func (s Secret) MarshalText() ([]byte, error) { return []byte(s.String()), nil }

// MarshalJSON keeps the secret out of JSON.
func (s Secret) MarshalJSON() ([]byte, error) { return []byte(`"` + s.String() + `"`), nil }

// maxKeyFileSize bounds a key file: a BIND key clause is a few hundred bytes.
const maxKeyFileSize = 64 << 10

var (
	bindKeyRe       = regexp.MustCompile(`(?s)key\s+"?([^"\s{]+)"?\s*\{(.*?)\}\s*;`)
	bindAlgorithmRe = regexp.MustCompile(`algorithm\s+"?([A-Za-z0-9.-]+)"?\s*;`)
	bindSecretRe    = regexp.MustCompile(`secret\s+"([^"]*)"\s*;`)
)

// readKeyFile reads the secret of key name from path: either the base64
// secret alone, or a BIND key clause (tsig-keygen's output) for that name,
// whose algorithm must be alg. Errors name the file and the key, never what
// the file holds.
func readKeyFile(path, name, alg string) (Secret, error) {
	f, err := os.Open(path)
	if err != nil {
		return Secret{}, err
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		return Secret{}, err
	}
	if fi.Mode().Perm()&0o004 != 0 {
		return Secret{}, fmt.Errorf("%s is readable by every user: chmod 600 it", path)
	}
	src, err := io.ReadAll(io.LimitReader(f, maxKeyFileSize+1))
	if err != nil {
		return Secret{}, fmt.Errorf("read %s: %w", path, err)
	}
	if len(src) > maxKeyFileSize {
		return Secret{}, fmt.Errorf("%s: larger than %d bytes: not a key file", path, maxKeyFileSize)
	}
	if !bytes.Contains(src, []byte("secret")) {
		s, err := NewSecret(string(src))
		if err != nil {
			return Secret{}, fmt.Errorf("%s: neither a base64 secret nor a BIND key clause", path)
		}
		return s, nil
	}
	for _, m := range bindKeyRe.FindAllSubmatch(src, -1) {
		if canonicalKeyName(string(m[1])) != canonicalKeyName(name) {
			continue
		}
		body := m[2]
		if am := bindAlgorithmRe.FindSubmatch(body); am != nil {
			if got := strings.ToLower(string(am[1])); got != alg {
				return Secret{}, fmt.Errorf("%s: key %q has algorithm %s, the config says %s", path, name, got, alg)
			}
		}
		sm := bindSecretRe.FindSubmatch(body)
		if sm == nil {
			return Secret{}, fmt.Errorf("%s: key %q has no secret", path, name)
		}
		s, err := NewSecret(string(sm[1]))
		if err != nil {
			return Secret{}, fmt.Errorf("%s: key %q: the secret is not base64", path, name)
		}
		return s, nil
	}
	return Secret{}, fmt.Errorf("%s: no key clause for key %q", path, name)
}

// canonicalKeyName compares key names as DNS names.
func canonicalKeyName(n string) string {
	return strings.TrimSuffix(strings.ToLower(n), ".")
}
