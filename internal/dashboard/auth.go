package dashboard

import (
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/golive/golive/internal/atomicfile"
	"github.com/golive/golive/internal/pki"
)

// KeyFile is the signing key's name in the controller's data directory.
const KeyFile = "dashboard.key"

// LoadKey reads the dashboard's signing key from dir, making one (32 random
// bytes, mode 0600) the first time. Deleting the file and restarting the
// controller ends every session and link.
func LoadKey(dir string) ([]byte, error) {
	path := filepath.Join(dir, KeyFile)
	b, err := os.ReadFile(path)
	if err == nil {
		k, derr := hex.DecodeString(strings.TrimSpace(string(b)))
		if derr != nil || len(k) < 32 {
			return nil, fmt.Errorf("dashboard key %s is not 32+ bytes of hex: delete it to make a new one", path)
		}
		return k, nil
	}
	if !errors.Is(err, os.ErrNotExist) {
		return nil, fmt.Errorf("dashboard key: %w", err)
	}
	k := make([]byte, 32)
	rand.Read(k)
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, fmt.Errorf("dashboard key: %w", err)
	}
	if err := atomicfile.WriteFile(path, []byte(hex.EncodeToString(k)+"\n"), 0o600); err != nil {
		return nil, fmt.Errorf("dashboard key: %w", err)
	}
	return k, nil
}

const (
	kindLink    = "link"
	kindSession = "session"
	kindCSRF    = "csrf"

	sessionCookie = "golive_session"
	flashCookie   = "golive_flash"
)

// claims is what a link or a session cookie says: who, with which roles,
// until when; Nonce makes each one unique (a link is spent once).
type claims struct {
	Sub   string     `json:"sub"`
	Roles []pki.Role `json:"roles"`
	Exp   int64      `json:"exp"`
	Nonce string     `json:"nonce"`
}

// signer makes and checks HMAC-SHA256 tokens: base64url(claims JSON) "."
// base64url(mac), the mac over the token's kind and the claims, so that a
// link is never a session and a session never a link.
type signer struct {
	key []byte
	now func() time.Time

	mu    sync.Mutex
	spent map[string]time.Time // link nonces used, until they expire
}

func newSigner(key []byte, now func() time.Time) *signer {
	return &signer{key: key, now: now, spent: map[string]time.Time{}}
}

func (s *signer) mac(kind string, msg []byte) []byte {
	h := hmac.New(sha256.New, s.key)
	h.Write([]byte("golive-dashboard-v1\x00" + kind + "\x00"))
	h.Write(msg)
	return h.Sum(nil)
}

func (s *signer) sign(kind string, c claims) (string, error) {
	if c.Nonce == "" {
		n := make([]byte, 16)
		rand.Read(n)
		c.Nonce = hex.EncodeToString(n)
	}
	b, err := json.Marshal(c)
	if err != nil {
		return "", err
	}
	enc := base64.RawURLEncoding
	return enc.EncodeToString(b) + "." + enc.EncodeToString(s.mac(kind, b)), nil
}

var errBadToken = errors.New("the link or session is invalid or has expired: run `golive-controller dashboard login` for a new link")

func (s *signer) verify(kind, tok string) (claims, error) {
	p, m, ok := strings.Cut(tok, ".")
	if !ok || len(tok) > 4096 {
		return claims{}, errBadToken
	}
	enc := base64.RawURLEncoding
	b, err1 := enc.DecodeString(p)
	mac, err2 := enc.DecodeString(m)
	if err1 != nil || err2 != nil || !hmac.Equal(mac, s.mac(kind, b)) {
		return claims{}, errBadToken
	}
	var c claims
	if err := json.Unmarshal(b, &c); err != nil || c.Sub == "" || len(c.Roles) == 0 {
		return claims{}, errBadToken
	}
	if !s.now().Before(time.Unix(c.Exp, 0)) {
		return claims{}, errBadToken
	}
	return c, nil
}

// spend marks a link's nonce used; false if it already was.
func (s *signer) spend(c claims) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	now := s.now()
	for n, exp := range s.spent {
		if now.After(exp) {
			delete(s.spent, n)
		}
	}
	if _, used := s.spent[c.Nonce]; used {
		return false
	}
	s.spent[c.Nonce] = time.Unix(c.Exp, 0)
	return true
}

// csrf is the token a form must carry: a MAC of what binds the caller to
// this browser (the session's nonce, the certificate, or dev mode).
func (s *signer) csrf(binding string) string {
	return base64.RawURLEncoding.EncodeToString(s.mac(kindCSRF, []byte(binding)))
}

// viewer is an authenticated request's caller.
type viewer struct {
	Caller
	// Via is how it authenticated: "certificate", "link" or "dev".
	Via     string
	binding string
	expires time.Time // a session's end (zero otherwise)
}

func (v viewer) has(r pki.Role) bool { return slices.Contains(v.Roles, r) }

// Has is has for the templates.
func (v viewer) Has(r string) bool { return v.has(pki.Role(r)) }

// Actions and who may take them: the API's roles, and anyone with a role
// may pull the brake.
const (
	actStop      = "stop"
	actAuthorize = "authorize"
	actPause     = "pause"
	actAbort     = "abort"
)

var actionRoles = map[string][]pki.Role{
	actStop:      {pki.RoleViewer, pki.RoleDeployer, pki.RoleApprover},
	actAuthorize: {pki.RoleApprover},
	actPause:     {pki.RoleDeployer},
	actAbort:     {pki.RoleDeployer},
}

func (v viewer) may(action string) bool {
	for _, r := range actionRoles[action] {
		if v.has(r) {
			return true
		}
	}
	return false
}

// authError is why a request was not let in, with its status.
type authError struct {
	code int
	msg  string
}

func (e *authError) Error() string { return e.msg }

// authenticate names the caller of r, or says why it may not see anything.
func (s *Server) authenticate(r *http.Request) (viewer, error) {
	src := "dashboard " + r.RemoteAddr
	if s.DevMode() {
		if !loopbackAddr(r.RemoteAddr) || !loopbackHost(r.Host) {
			return viewer{}, &authError{http.StatusForbidden, "the dashboard serves without TLS (dev mode): only from this host, at http://127.0.0.1 or http://localhost"}
		}
		if v, ok := s.session(r, src); ok {
			return v, nil
		}
		return viewer{Caller: Caller{Name: s.cfg.DevIdentity, Roles: pki.Roles, Source: src}, Via: "dev", binding: "dev"}, nil
	}
	if r.TLS != nil && len(r.TLS.VerifiedChains) > 0 && len(r.TLS.VerifiedChains[0]) > 0 {
		leaf := r.TLS.VerifiedChains[0][0]
		id, err := pki.IdentityOf(leaf)
		if err != nil {
			return viewer{}, &authError{http.StatusForbidden, err.Error()}
		}
		if id.Agent {
			return viewer{}, &authError{http.StatusForbidden, "an agent certificate may not open the dashboard"}
		}
		if len(id.Roles) == 0 {
			return viewer{}, &authError{http.StatusForbidden, fmt.Sprintf("certificate %s has no role (viewer, deployer or approver)", id.Name)}
		}
		fp := sha256.Sum256(leaf.Raw)
		return viewer{Caller: Caller{Name: id.Name, Roles: id.Roles, Source: src}, Via: "certificate", binding: "cert:" + hex.EncodeToString(fp[:])}, nil
	}
	if v, ok := s.session(r, src); ok {
		return v, nil
	}
	return viewer{}, &authError{http.StatusUnauthorized, "sign in: present your operator certificate, or run `golive-controller dashboard login` and open the link it prints"}
}

func (s *Server) session(r *http.Request, src string) (viewer, bool) {
	ck, err := r.Cookie(sessionCookie)
	if err != nil {
		return viewer{}, false
	}
	c, err := s.signer.verify(kindSession, ck.Value)
	if err != nil {
		return viewer{}, false
	}
	return viewer{Caller: Caller{Name: c.Sub, Roles: c.Roles, Source: src}, Via: "link", binding: "session:" + c.Nonce,
		expires: time.Unix(c.Exp, 0)}, true
}

// sameOrigin checks a POST's Origin against the dashboard's own.
func (s *Server) sameOrigin(r *http.Request) bool {
	o := r.Header.Get("Origin")
	if o == "" || o == "null" {
		return false
	}
	scheme := "http"
	if s.cfg.TLS != nil {
		scheme = "https"
	}
	return o == scheme+"://"+r.Host
}

func loopbackAddr(addr string) bool {
	h, _, err := net.SplitHostPort(addr)
	if err != nil {
		h = addr
	}
	ip := net.ParseIP(h)
	return ip != nil && ip.IsLoopback()
}

// loopbackHost refuses a Host that is not loopback: a page elsewhere whose
// name was rebound to 127.0.0.1 does not get to read the dev dashboard.
func loopbackHost(host string) bool {
	h, _, err := net.SplitHostPort(host)
	if err != nil {
		h = host
	}
	h = strings.Trim(h, "[]")
	if h == "localhost" {
		return true
	}
	ip := net.ParseIP(h)
	return ip != nil && ip.IsLoopback()
}
