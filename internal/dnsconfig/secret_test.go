package dnsconfig

import (
	"encoding/base64"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// canary is a secret whose appearance anywhere but Secret.Base64 is a leak.
const canaryRaw = "CANARY-tsig-secret-must-never-leak"

var canary = base64.StdEncoding.EncodeToString([]byte(canaryRaw))

func assertNoCanary(t *testing.T, what, s string) {
	t.Helper()
	for _, c := range []string{canary, canaryRaw, strings.TrimRight(canary, "=")} {
		if strings.Contains(s, c) {
			t.Errorf("%s leaks the secret: %s", what, s)
		}
	}
}

// TestSecretNeverPrinted loads a config whose key file holds the canary and
// formats every value, and every error a key file can cause, looking for it.
func TestSecretNeverPrinted(t *testing.T) {
	dir := t.TempDir()
	key := filepath.Join(dir, "golive.key")
	writeFile(t, key, "key \"golive\" {\n\talgorithm hmac-sha256;\n\tsecret \""+canary+"\";\n};\n", 0o600)
	path := filepath.Join(dir, "dns.hcl")
	writeFile(t, path, `zone "example.test" {
  server   = "127.0.0.1:53"
  key_name = "golive"
  key_file = "golive.key"
}
`, 0o600)
	c, err := Load(path)
	if err != nil {
		t.Fatal(err)
	}
	z := c.Zones[0]
	if z.Key.Secret.Base64() != canary {
		t.Fatal("the secret was not loaded")
	}
	type hidden struct{ s Secret } // fmt cannot call methods on unexported fields
	values := map[string]any{
		"config": c, "zone": z, "*zone": *z, "key": z.Key, "&key": &z.Key, "secret": z.Key.Secret,
		"&secret": &z.Key.Secret, "unexported": hidden{z.Key.Secret}, "slice": c.Zones,
	}
	for name, v := range values {
		for _, verb := range []string{"%v", "%+v", "%#v", "%s", "%q", "%x", "%X", "%d", "%T"} {
			assertNoCanary(t, name+" "+verb, fmt.Sprintf(verb, v))
		}
		b, err := json.Marshal(v)
		if err == nil {
			assertNoCanary(t, name+" json", string(b))
		}
	}
	if got := fmt.Sprint(z.Key.Secret); got != "[redacted]" {
		t.Errorf("Secret prints %q", got)
	}

	// Every error about a key file that holds the canary.
	bad := map[string]string{
		"wrong algorithm": "key \"golive\" { algorithm hmac-sha512; secret \"" + canary + "\"; };",
		"other key":       "key \"other\" { algorithm hmac-sha256; secret \"" + canary + "\"; };",
		"not base64":      canaryRaw,
		"bad clause":      "key \"golive\" { algorithm hmac-sha256; secret \"" + canaryRaw + "!\"; };",
		"broken clause":   "secret " + canary,
		"raw plus junk":   canary + " " + canaryRaw,
	}
	for name, content := range bad {
		writeFile(t, key, content, 0o600)
		_, err := Load(path)
		if err == nil {
			t.Errorf("%s: loaded", name)
			continue
		}
		assertNoCanary(t, name+" error", err.Error())
		assertNoCanary(t, name+" error %+v", fmt.Sprintf("%+v %#v", err, err))
	}
	writeFile(t, key, canary, 0o644)
	if err := os.Chmod(key, 0o644); err != nil {
		t.Fatal(err)
	}
	if _, err := Load(path); err == nil {
		t.Error("a world-readable key file was accepted")
	} else {
		assertNoCanary(t, "permissions error", err.Error())
	}
	if _, err := NewSecret(canaryRaw); err == nil {
		t.Error("NewSecret accepted non-base64")
	} else {
		assertNoCanary(t, "NewSecret error", err.Error())
	}
}
