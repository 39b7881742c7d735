package dnsupdate_test

import (
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/golive/golive/internal/dnsconfig"
	"github.com/golive/golive/internal/dnsupdate"
	"github.com/golive/golive/internal/dnsupdate/dnstest"
)

// TestSecretCanary loads a config whose key file holds a canary secret the
// server does not know, then formats the client and every error it causes
// (refused, unreachable), looking for the canary.
func TestSecretCanary(t *testing.T) {
	eachServer(t, func(t *testing.T, s *dnstest.Server) {
		canaryRaw := "CANARY-" + string(s.Kind) + "-tsig-secret-must-never-leak"
		canary := base64.StdEncoding.EncodeToString([]byte(canaryRaw))
		dir := t.TempDir()
		if err := os.WriteFile(filepath.Join(dir, "golive.key"), []byte(canary+"\n"), 0o600); err != nil {
			t.Fatal(err)
		}
		cfgFile := filepath.Join(dir, "dns.hcl")
		src := fmt.Sprintf("zone %q {\n  server = %q\n  key_name = \"golive\"\n  key_file = \"golive.key\"\n}\n", dnstest.Zone, s.Addr)
		if err := os.WriteFile(cfgFile, []byte(src), 0o600); err != nil {
			t.Fatal(err)
		}
		cfg, err := dnsconfig.Load(cfgFile)
		if err != nil {
			t.Fatal(err)
		}
		set, err := dnsupdate.NewSet(cfg, dnsupdate.Options{ConfirmTimeout: time.Second})
		if err != nil {
			t.Fatal(err)
		}
		c, err := set.For(www)
		if err != nil {
			t.Fatal(err)
		}
		check := func(what string, v any) {
			t.Helper()
			text := fmt.Sprintf("%v|%+v|%#v|%s", v, v, v, v)
			if b, err := json.Marshal(v); err == nil {
				text += string(b)
			}
			for _, leak := range []string{canary, canaryRaw, strings.TrimRight(canary, "=")} {
				if strings.Contains(text, leak) {
					t.Errorf("%s leaks the secret: %s", what, text)
				}
			}
		}
		check("client", c)
		check("set", set)
		check("config", cfg)
		ch := dnsupdate.Change{Name: www, Type: "A", TTL: 30 * time.Second, Old: dnstest.InitialRecords, New: []string{"203.0.113.9"}}
		_, err = c.Apply(t.Context(), ch)
		if !errors.Is(err, dnsupdate.ErrRefused) {
			t.Fatalf("update with an unknown secret: %v, want ErrRefused", err)
		}
		check("refused error", err)
		_, err = c.Query(t.Context(), www, "A")
		check("query error", err)
		if err := s.Stop(); err != nil {
			t.Fatal(err)
		}
		_, err = c.Apply(t.Context(), ch)
		if !errors.Is(err, dnsupdate.ErrUnreachable) {
			t.Fatalf("update with the server stopped: %v, want ErrUnreachable", err)
		}
		check("unreachable error", err)
	})
}
