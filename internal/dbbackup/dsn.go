package dbbackup

import (
	"errors"
	"fmt"
	"net/url"
	"os"
	"sort"
	"strings"
)

// libpqEnv maps libpq connection keywords to the environment variables that
// carry them, so nothing secret goes on a command line (argv is world
// readable in /proc).
var libpqEnv = map[string]string{
	"host":                 "PGHOST",
	"hostaddr":             "PGHOSTADDR",
	"port":                 "PGPORT",
	"dbname":               "PGDATABASE",
	"user":                 "PGUSER",
	"password":             "PGPASSWORD",
	"passfile":             "PGPASSFILE",
	"options":              "PGOPTIONS",
	"application_name":     "PGAPPNAME",
	"sslmode":              "PGSSLMODE",
	"sslcert":              "PGSSLCERT",
	"sslkey":               "PGSSLKEY",
	"sslrootcert":          "PGSSLROOTCERT",
	"sslcrl":               "PGSSLCRL",
	"sslcompression":       "PGSSLCOMPRESSION",
	"requiressl":           "PGREQUIRESSL",
	"connect_timeout":      "PGCONNECT_TIMEOUT",
	"target_session_attrs": "PGTARGETSESSIONATTRS",
	"channel_binding":      "PGCHANNELBINDING",
	"gssencmode":           "PGGSSENCMODE",
	"krbsrvname":           "PGKRBSRVNAME",
	"service":              "PGSERVICE",
	"client_encoding":      "PGCLIENTENCODING",
}

// conn is a parsed DSN: libpq keywords and values. Its String never shows
// the password.
type conn struct {
	params map[string]string
}

// parseDSN reads a URL ("postgres://user:pw@host:port/db?sslmode=...") or
// keyword/value ("host=h port=5432 dbname=d password='x y'") DSN. Errors
// never quote the DSN.
func parseDSN(dsn string) (conn, error) {
	c := conn{params: map[string]string{}}
	s := strings.TrimSpace(dsn)
	if s == "" {
		return c, fmt.Errorf("database DSN is empty")
	}
	if strings.HasPrefix(s, "postgres://") || strings.HasPrefix(s, "postgresql://") {
		u, err := url.Parse(s)
		if err != nil {
			return c, fmt.Errorf("database DSN is not a valid URL")
		}
		if u.User != nil {
			c.params["user"] = u.User.Username()
			if pw, ok := u.User.Password(); ok {
				c.params["password"] = pw
			}
		}
		if h := u.Hostname(); h != "" {
			c.params["host"] = h
		}
		if p := u.Port(); p != "" {
			c.params["port"] = p
		}
		if db := strings.TrimPrefix(u.Path, "/"); db != "" {
			c.params["dbname"] = db
		}
		for k, vs := range u.Query() {
			if len(vs) > 0 {
				c.params[k] = vs[len(vs)-1]
			}
		}
	} else {
		if err := parseKeywords(s, c.params); err != nil {
			return c, err
		}
	}
	for k := range c.params {
		if _, ok := libpqEnv[k]; !ok {
			return c, fmt.Errorf("database DSN: unsupported parameter %q", k)
		}
	}
	if c.params["dbname"] == "" {
		return c, fmt.Errorf("database DSN names no database (dbname)")
	}
	return c, nil
}

func parseKeywords(s string, out map[string]string) error {
	i := 0
	for {
		for i < len(s) && (s[i] == ' ' || s[i] == '\t' || s[i] == '\n') {
			i++
		}
		if i >= len(s) {
			return nil
		}
		eq := strings.IndexByte(s[i:], '=')
		if eq < 0 {
			return fmt.Errorf("database DSN: expected keyword=value")
		}
		key := strings.TrimSpace(s[i : i+eq])
		i += eq + 1
		for i < len(s) && s[i] == ' ' {
			i++
		}
		var v strings.Builder
		if i < len(s) && s[i] == '\'' {
			i++
			closed := false
			for i < len(s) {
				ch := s[i]
				if ch == '\\' && i+1 < len(s) {
					v.WriteByte(s[i+1])
					i += 2
					continue
				}
				if ch == '\'' {
					i++
					closed = true
					break
				}
				v.WriteByte(ch)
				i++
			}
			if !closed {
				return fmt.Errorf("database DSN: unterminated quote in value of %q", key)
			}
		} else {
			for i < len(s) && s[i] != ' ' && s[i] != '\t' && s[i] != '\n' {
				if s[i] == '\\' && i+1 < len(s) {
					i++
				}
				v.WriteByte(s[i])
				i++
			}
		}
		if key == "" {
			return fmt.Errorf("database DSN: empty keyword")
		}
		out[key] = v.String()
	}
}

// database is the database the DSN names.
func (c conn) database() string { return c.params["dbname"] }

// withDatabase is c pointed at another database on the same server.
func (c conn) withDatabase(db string) conn {
	p := make(map[string]string, len(c.params))
	for k, v := range c.params {
		p[k] = v
	}
	p["dbname"] = db
	return conn{params: p}
}

// env is the process environment for a libpq tool: ours without any PG*
// variable, plus the DSN's parameters.
func (c conn) env() []string {
	var env []string
	for _, kv := range os.Environ() {
		if !strings.HasPrefix(kv, "PG") {
			env = append(env, kv)
		}
	}
	keys := make([]string, 0, len(c.params))
	for k := range c.params {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	for _, k := range keys {
		env = append(env, libpqEnv[k]+"="+c.params[k])
	}
	if _, ok := c.params["connect_timeout"]; !ok {
		env = append(env, "PGCONNECT_TIMEOUT=10")
	}
	if _, ok := c.params["application_name"]; !ok {
		env = append(env, "PGAPPNAME=golive-dbbackup")
	}
	return env
}

// redactor replaces every secret in text with [redacted].
type redactor struct{ secrets []string }

func newRedactor(dsn string, c conn) redactor {
	var r redactor
	add := func(s string) {
		if s != "" {
			r.secrets = append(r.secrets, s)
		}
	}
	add(strings.TrimSpace(dsn))
	add(dsn)
	if pw := c.params["password"]; pw != "" {
		add(pw)
		add(url.QueryEscape(pw))
		add(url.PathEscape(pw))
	}
	// Longest first so a DSN is replaced whole before its password.
	sort.Slice(r.secrets, func(i, j int) bool { return len(r.secrets[i]) > len(r.secrets[j]) })
	return r
}

func (r redactor) string(s string) string {
	for _, sec := range r.secrets {
		s = strings.ReplaceAll(s, sec, "[redacted]")
	}
	return s
}

// err is err with every secret removed from its text. The chain is dropped
// on purpose: a wrapped error could print the secret again.
func (r redactor) err(err error) error {
	if err == nil {
		return nil
	}
	return redactedError{msg: r.string(err.Error()), cause: err}
}

type redactedError struct {
	msg   string
	cause error
}

func (e redactedError) Error() string { return e.msg }

// Is lets callers test for context.Canceled and friends without Unwrap
// exposing the unredacted text.
func (e redactedError) Is(target error) bool {
	return errors.Is(e.cause, target)
}

// Redactor removes a DSN, its password (raw and URL-escaped) and any extra
// secret from text, e.g. the output of a migration that was given the DSN.
type Redactor struct{ r redactor }

// NewRedactor returns the Redactor for dsn ("" : none) and extra secrets.
func NewRedactor(dsn string, extra ...string) Redactor {
	var r redactor
	if dsn != "" {
		c, _ := parseDSN(dsn) // a DSN that does not parse is still removed whole
		r = newRedactor(dsn, c)
	}
	for _, e := range extra {
		if e != "" {
			r.secrets = append(r.secrets, e, url.QueryEscape(e))
		}
	}
	sort.Slice(r.secrets, func(i, j int) bool { return len(r.secrets[i]) > len(r.secrets[j]) })
	return Redactor{r}
}

// String is s with every secret replaced by [redacted].
func (r Redactor) String(s string) string { return r.r.string(s) }
