package artifact

import (
	"crypto/ed25519"
	"crypto/rand"
	"crypto/x509"
	"encoding/base64"
	"encoding/pem"
	"errors"
	"fmt"
	"os"
)

// Keygen creates a new ed25519 key pair and writes the private key to
// privPath (PKCS #8 PEM, mode 0600) and the public key to pubPath (PKIX PEM,
// mode 0644). It refuses to overwrite existing files.
func Keygen(privPath, pubPath string) (ed25519.PublicKey, error) {
	pub, priv, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		return nil, fmt.Errorf("keygen: %w", err)
	}
	privDER, err := x509.MarshalPKCS8PrivateKey(priv)
	if err != nil {
		return nil, fmt.Errorf("keygen: encode private key: %w", err)
	}
	pubDER, err := x509.MarshalPKIXPublicKey(pub)
	if err != nil {
		return nil, fmt.Errorf("keygen: encode public key: %w", err)
	}
	if err := writeNew(privPath, pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: privDER}), 0o600); err != nil {
		return nil, fmt.Errorf("keygen: write private key: %w", err)
	}
	if err := writeNew(pubPath, pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: pubDER}), 0o644); err != nil {
		os.Remove(privPath)
		return nil, fmt.Errorf("keygen: write public key: %w", err)
	}
	return pub, nil
}

func writeNew(path string, data []byte, perm os.FileMode) error {
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_EXCL, perm)
	if err != nil {
		return err
	}
	if _, err := f.Write(data); err != nil {
		f.Close()
		os.Remove(path)
		return err
	}
	if err := f.Sync(); err != nil {
		f.Close()
		os.Remove(path)
		return err
	}
	return f.Close()
}

// Sign signs the file at artifactPath with the private key in privPath and
// returns the signature as standard base64, the form Want.Signature takes.
func Sign(privPath, artifactPath string) (string, error) {
	priv, err := LoadPrivateKey(privPath)
	if err != nil {
		return "", fmt.Errorf("sign: %w", err)
	}
	msg, release, err := mapFile(artifactPath)
	if err != nil {
		return "", fmt.Errorf("sign: read artifact: %w", err)
	}
	defer release()
	return base64.StdEncoding.EncodeToString(ed25519.Sign(priv, msg)), nil
}

// LoadPrivateKey reads a PKCS #8 PEM ed25519 private key as written by Keygen.
func LoadPrivateKey(path string) (ed25519.PrivateKey, error) {
	der, err := readPEM(path, "PRIVATE KEY")
	if err != nil {
		return nil, err
	}
	k, err := x509.ParsePKCS8PrivateKey(der)
	if err != nil {
		return nil, fmt.Errorf("private key %s: %w", path, err)
	}
	priv, ok := k.(ed25519.PrivateKey)
	if !ok {
		return nil, fmt.Errorf("private key %s: is %T, want ed25519", path, k)
	}
	return priv, nil
}

// LoadPublicKeys reads PKIX PEM ed25519 public keys as written by Keygen; a
// file may hold several PEM blocks.
func LoadPublicKeys(paths ...string) ([]ed25519.PublicKey, error) {
	var keys []ed25519.PublicKey
	for _, path := range paths {
		data, err := os.ReadFile(path)
		if err != nil {
			return nil, fmt.Errorf("public key: %w", err)
		}
		found := 0
		for {
			var b *pem.Block
			b, data = pem.Decode(data)
			if b == nil {
				break
			}
			if b.Type != "PUBLIC KEY" {
				return nil, fmt.Errorf("public key %s: PEM block %q, want \"PUBLIC KEY\"", path, b.Type)
			}
			k, err := x509.ParsePKIXPublicKey(b.Bytes)
			if err != nil {
				return nil, fmt.Errorf("public key %s: %w", path, err)
			}
			pub, ok := k.(ed25519.PublicKey)
			if !ok {
				return nil, fmt.Errorf("public key %s: is %T, want ed25519", path, k)
			}
			keys = append(keys, pub)
			found++
		}
		if found == 0 {
			return nil, fmt.Errorf("public key %s: no PEM block found", path)
		}
	}
	return keys, nil
}

func readPEM(path, typ string) ([]byte, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("read key: %w", err)
	}
	b, _ := pem.Decode(data)
	if b == nil {
		return nil, fmt.Errorf("key %s: no PEM block found", path)
	}
	if b.Type != typ {
		return nil, fmt.Errorf("key %s: PEM block %q, want %q", path, b.Type, typ)
	}
	return b.Bytes, nil
}

var errNotRegular = errors.New("not a regular file")
