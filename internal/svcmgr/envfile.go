package svcmgr

import (
	"bufio"
	"bytes"
	"fmt"
	"io"
	"os"
	"sort"
	"strings"

	"github.com/golive/golive/internal/atomicfile"
)

// maxEnvLine bounds one env file line; longer lines are an error.
const maxEnvLine = 1 << 20

// ValidEnvKey reports whether k is a portable environment variable name
// ([A-Za-z_][A-Za-z0-9_]*).
func ValidEnvKey(k string) bool {
	if k == "" {
		return false
	}
	for i, c := range k {
		switch {
		case c == '_', c >= 'A' && c <= 'Z', c >= 'a' && c <= 'z':
		case c >= '0' && c <= '9' && i > 0:
		default:
			return false
		}
	}
	return true
}

// ParseEnvFile parses KEY=VALUE lines:
//
//   - blank lines and lines starting with # are ignored; an optional
//     "export " prefix is accepted;
//   - VALUE may be unquoted (surrounding spaces trimmed, a " #" starts a
//     comment), 'single quoted' (literal) or "double quoted" (escapes \\ \"
//     \$ \n \t \r; a trailing # comment is allowed after the closing quote);
//   - a key defined twice keeps its last value.
//
// Errors name the line number and key but never the value, so they are safe
// to log.
func ParseEnvFile(r io.Reader) (map[string]string, error) {
	env := make(map[string]string)
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 0, 4096), maxEnvLine)
	n := 0
	for sc.Scan() {
		n++
		line := strings.TrimSpace(strings.TrimSuffix(sc.Text(), "\r"))
		if line == "" || line[0] == '#' {
			continue
		}
		line = strings.TrimPrefix(line, "export ")
		key, raw, ok := strings.Cut(line, "=")
		key = strings.TrimSpace(key)
		if !ok {
			return nil, fmt.Errorf("env file line %d: missing '=' (its text is not shown in errors)", n)
		}
		if !ValidEnvKey(key) {
			return nil, fmt.Errorf("env file line %d: invalid key %q", n, truncate(key))
		}
		val, err := parseEnvValue(strings.TrimSpace(raw))
		if err != nil {
			return nil, fmt.Errorf("env file line %d: key %s: %w", n, key, err)
		}
		if strings.ContainsRune(val, 0) {
			return nil, fmt.Errorf("env file line %d: key %s: value contains a NUL byte", n, key)
		}
		env[key] = val
	}
	if err := sc.Err(); err != nil {
		return nil, fmt.Errorf("env file line %d: %w", n+1, err)
	}
	return env, nil
}

func truncate(s string) string {
	if len(s) > 40 {
		return s[:40] + "..."
	}
	return s
}

func parseEnvValue(raw string) (string, error) {
	if raw == "" {
		return "", nil
	}
	switch raw[0] {
	case '\'':
		end := strings.IndexByte(raw[1:], '\'')
		if end < 0 {
			return "", fmt.Errorf("unterminated single quote")
		}
		if err := checkTrailer(raw[end+2:]); err != nil {
			return "", err
		}
		return raw[1 : end+1], nil
	case '"':
		var b strings.Builder
		for i := 1; i < len(raw); i++ {
			c := raw[i]
			switch c {
			case '"':
				if err := checkTrailer(raw[i+1:]); err != nil {
					return "", err
				}
				return b.String(), nil
			case '\\':
				if i+1 >= len(raw) {
					return "", fmt.Errorf("unterminated double quote")
				}
				i++
				switch e := raw[i]; e {
				case 'n':
					b.WriteByte('\n')
				case 't':
					b.WriteByte('\t')
				case 'r':
					b.WriteByte('\r')
				case '\\', '"', '$', '\'', '`':
					b.WriteByte(e)
				default:
					b.WriteByte('\\')
					b.WriteByte(e)
				}
			default:
				b.WriteByte(c)
			}
		}
		return "", fmt.Errorf("unterminated double quote")
	default:
		if i := strings.Index(raw, " #"); i >= 0 {
			raw = raw[:i]
		}
		if i := strings.Index(raw, "\t#"); i >= 0 {
			raw = raw[:i]
		}
		return strings.TrimSpace(raw), nil
	}
}

// checkTrailer accepts only whitespace or a comment after a closing quote.
func checkTrailer(rest string) error {
	rest = strings.TrimSpace(rest)
	if rest != "" && rest[0] != '#' {
		return fmt.Errorf("unexpected text after closing quote")
	}
	return nil
}

// ReadEnvFile parses the env file at path (see ParseEnvFile).
func ReadEnvFile(path string) (map[string]string, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, fmt.Errorf("open env file: %w", err)
	}
	defer f.Close()
	env, err := ParseEnvFile(f)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	return env, nil
}

// FormatEnvFile renders env as sorted KEY="VALUE" lines that both
// ParseEnvFile and systemd's EnvironmentFile= read back unchanged. Values
// with control characters other than tab are rejected, as systemd would not
// read them back identically.
func FormatEnvFile(env map[string]string) ([]byte, error) {
	keys := make([]string, 0, len(env))
	for k := range env {
		if !ValidEnvKey(k) {
			return nil, fmt.Errorf("env key %q is not a valid name", truncate(k))
		}
		keys = append(keys, k)
	}
	sort.Strings(keys)
	var buf bytes.Buffer
	buf.WriteString("# Written by golive; edits are overwritten on the next deploy.\n")
	for _, k := range keys {
		v := env[k]
		for _, c := range v {
			if c < 0x20 && c != '\t' || c == 0x7f {
				return nil, fmt.Errorf("env %s: value contains a control character", k)
			}
		}
		v = strings.NewReplacer(`\`, `\\`, `"`, `\"`).Replace(v)
		fmt.Fprintf(&buf, "%s=\"%s\"\n", k, v)
	}
	return buf.Bytes(), nil
}

// WriteEnvFile atomically replaces path with FormatEnvFile(env), mode 0600:
// temp file in the same directory, fsync, rename, fsync the directory.
func WriteEnvFile(path string, env map[string]string) error {
	data, err := FormatEnvFile(env)
	if err != nil {
		return err
	}
	if err := atomicfile.WriteFile(path, data, 0o600); err != nil {
		return fmt.Errorf("write env file: %w", err)
	}
	return nil
}
