// Package artifact owns getting a release artifact onto an agent's disk and
// proving it is the artifact the controller approved.
//
// It has two halves, used by two stages of a deploy step:
//
//	fetch:  URL (http, https, file) --stream--> <dir>/<name>
//	        sha256 computed while writing, size capped, retried on transient errors
//	verify: sha256 == expected (mandatory) and, when trusted keys are configured,
//	        an ed25519 signature over the artifact bytes by one of them
//
// Invariants:
//   - Fetch never leaves a partial file behind: on any error (size cap, network,
//     cancellation) the file it was writing is removed before it returns.
//   - Fetch never holds the artifact in memory; it streams to disk. It does not
//     fsync the download: it is scratch, fetched and verified again after a crash.
//   - Verify fails closed: an empty expected sha256 is an error, and so is a
//     missing signature when trusted keys are configured.
//   - Errors that will not go away by trying again (4xx, size cap, checksum
//     mismatch, TLS verification) are not retried.
//
// Keys are stored as PEM files: the private key as PKCS #8 ("PRIVATE KEY",
// mode 0600), the public key as PKIX ("PUBLIC KEY"), the same encoding
// `openssl genpkey -algorithm ed25519` uses. Signatures travel as standard
// base64 of the 64-byte raw ed25519 signature. See Keygen, Sign and Verify.
package artifact
