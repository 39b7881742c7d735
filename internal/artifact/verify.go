package artifact

import (
	"context"
	"crypto/ed25519"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/base64"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"os"
	"strings"
)

// ErrSignature is wrapped by errors from Verify about a missing or invalid signature.
var ErrSignature = errors.New("signature check failed")

// Want is what the controller says an artifact must be.
type Want struct {
	// SHA256 is the expected lowercase or uppercase hex sha256. Mandatory.
	SHA256 string
	// Signature is the standard base64 encoding of an ed25519 signature over
	// the artifact bytes. Mandatory when TrustedKeys is not empty.
	Signature string
	// TrustedKeys are the public keys any one of which may have signed the
	// artifact. Empty means signatures are not checked.
	TrustedKeys []ed25519.PublicKey
}

// Verify checks a fetched artifact against want. It uses a.SHA256 when Fetch
// filled it in (the digest was computed while the bytes were written) and
// hashes a.Path otherwise. When trusted keys are configured it reads the file
// once more to check the signature.
func Verify(ctx context.Context, a Artifact, want Want) error {
	_, err := VerifySigner(ctx, a, want)
	return err
}

// VerifySigner is Verify that also returns the KeyID of the trusted key whose
// signature verified ("" when no trusted keys are configured).
func VerifySigner(ctx context.Context, a Artifact, want Want) (keyID string, err error) {
	if strings.TrimSpace(want.SHA256) == "" {
		return "", errors.New("verify artifact: no expected sha256 given; refusing an unverifiable artifact")
	}
	got := a.SHA256
	if got == "" {
		sum, err := FileSHA256(ctx, a.Path)
		if err != nil {
			return "", fmt.Errorf("verify artifact: %w", err)
		}
		got = sum
	}
	if err := compareSHA256(got, want.SHA256); err != nil {
		return "", fmt.Errorf("verify artifact %s: %w", a.Path, err)
	}
	if len(want.TrustedKeys) == 0 {
		return "", nil
	}
	k, err := verifySignature(ctx, a.Path, want.Signature, want.TrustedKeys)
	if err != nil {
		return "", fmt.Errorf("verify artifact %s: %w", a.Path, err)
	}
	return KeyID(k), nil
}

// KeyID names a public key in records and messages: the first 16 hex digits
// of the sha256 of its raw bytes.
func KeyID(k ed25519.PublicKey) string {
	s := sha256.Sum256(k)
	return hex.EncodeToString(s[:8])
}

func compareSHA256(got, want string) error {
	w, err := hex.DecodeString(strings.TrimSpace(want))
	if err != nil || len(w) != sha256.Size {
		return fmt.Errorf("expected sha256 %q is not 64 hex digits", want)
	}
	g, err := hex.DecodeString(got)
	if err != nil || len(g) != sha256.Size {
		return fmt.Errorf("computed sha256 %q is not 64 hex digits", got)
	}
	if subtle.ConstantTimeCompare(g, w) != 1 {
		return fmt.Errorf("%w: artifact has %s, expected %s", ErrChecksum, got, strings.ToLower(strings.TrimSpace(want)))
	}
	return nil
}

// FileSHA256 returns the lowercase hex sha256 of the file at path.
func FileSHA256(ctx context.Context, path string) (string, error) {
	f, err := os.Open(path)
	if err != nil {
		return "", fmt.Errorf("hash artifact: %w", err)
	}
	defer f.Close()
	h := sha256.New()
	if _, err := io.CopyBuffer(h, ctxReader{ctx, f}, make([]byte, copyBufSize)); err != nil {
		return "", fmt.Errorf("hash artifact %s: %w", path, err)
	}
	return hex.EncodeToString(h.Sum(nil)), nil
}

type ctxReader struct {
	ctx context.Context
	r   io.Reader
}

func (c ctxReader) Read(p []byte) (int, error) {
	if err := c.ctx.Err(); err != nil {
		return 0, err
	}
	return c.r.Read(p)
}

// verifySignature returns the trusted key that verifies the signature.
func verifySignature(ctx context.Context, path, sigB64 string, keys []ed25519.PublicKey) (ed25519.PublicKey, error) {
	if strings.TrimSpace(sigB64) == "" {
		return nil, fmt.Errorf("%w: trusted keys are configured but the release carries no signature", ErrSignature)
	}
	sig, err := ParseSignature(sigB64)
	if err != nil {
		return nil, fmt.Errorf("%w: %w", ErrSignature, err)
	}
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	msg, release, err := mapFile(path)
	if err != nil {
		return nil, fmt.Errorf("read artifact for signature check: %w", err)
	}
	defer release()
	for _, k := range keys {
		if len(k) == ed25519.PublicKeySize && ed25519.Verify(k, msg, sig) {
			return k, nil
		}
	}
	return nil, fmt.Errorf("%w: signature does not verify with any of the %d trusted keys", ErrSignature, len(keys))
}

// ParseSignature decodes a standard base64 ed25519 signature.
func ParseSignature(s string) ([]byte, error) {
	sig, err := base64.StdEncoding.DecodeString(strings.TrimSpace(s))
	if err != nil {
		return nil, fmt.Errorf("signature is not valid base64: %w", err)
	}
	if len(sig) != ed25519.SignatureSize {
		return nil, fmt.Errorf("signature is %d bytes, want %d", len(sig), ed25519.SignatureSize)
	}
	return sig, nil
}
