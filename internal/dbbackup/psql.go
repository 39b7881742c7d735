package dbbackup

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os/exec"
	"sort"
	"strings"
	"sync"
)

// countSQL returns every ordinary table's exact row count as one JSON
// object {"schema.table": rows}. query_to_xml runs count(*) per table inside
// the one statement, so the counts share the statement's snapshot.
const countSQL = `SELECT coalesce(json_object_agg(t.name, t.n ORDER BY t.name), '{}')
FROM (
  SELECT format('%I.%I', n.nspname, c.relname) AS name,
         (xpath('/row/n/text()', query_to_xml(format('SELECT count(*) AS n FROM ONLY %I.%I', n.nspname, c.relname), false, true, '')))[1]::text::bigint AS n
  FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
  WHERE c.relkind = 'r'
    AND n.nspname <> 'information_schema' AND n.nspname NOT LIKE 'pg\_%'
    AND NOT EXISTS (SELECT 1 FROM pg_depend d WHERE d.classid = 'pg_class'::regclass AND d.objid = c.oid AND d.deptype = 'e')
) t;`

const endMarker = "__golive_dbbackup_end__"

// session is a psql process we feed statements one at a time, so a
// transaction (and the snapshot it exported) stays open between them.
type session struct {
	cmd    *exec.Cmd
	in     io.WriteCloser
	out    *bufio.Reader
	stderr *lockedBuffer
	closed bool
}

type lockedBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *lockedBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *lockedBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

func startSession(ctx context.Context, psql string, c conn) (*session, error) {
	cmd := exec.CommandContext(ctx, psql, "-X", "-q", "-A", "-t", "-v", "ON_ERROR_STOP=1")
	cmd.Env = c.env()
	in, err := cmd.StdinPipe()
	if err != nil {
		return nil, err
	}
	out, err := cmd.StdoutPipe()
	if err != nil {
		return nil, err
	}
	s := &session{cmd: cmd, in: in, out: bufio.NewReader(out), stderr: &lockedBuffer{}}
	cmd.Stderr = s.stderr
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("start psql: %w", err)
	}
	return s, nil
}

// query runs sql and returns its output lines.
func (s *session) query(sql string) ([]string, error) {
	if _, err := fmt.Fprintf(s.in, "%s\n\\echo %s\n", sql, endMarker); err != nil {
		return nil, s.fail(err)
	}
	var lines []string
	for {
		line, err := s.out.ReadString('\n')
		if err != nil {
			return nil, s.fail(err)
		}
		line = strings.TrimRight(line, "\n")
		if line == endMarker {
			return lines, nil
		}
		lines = append(lines, line)
	}
}

// fail waits for psql to exit and reports why it stopped talking.
func (s *session) fail(err error) error {
	if s.closed {
		return fmt.Errorf("psql: %w", err)
	}
	s.closed = true
	s.in.Close()
	werr := s.cmd.Wait()
	if werr != nil {
		err = werr
	}
	msg := strings.TrimSpace(s.stderr.String())
	if msg == "" {
		return fmt.Errorf("psql: %w", err)
	}
	return fmt.Errorf("psql: %w: %s", err, msg)
}

// close ends the session (an open transaction is rolled back).
func (s *session) close() error {
	if s.closed {
		return nil
	}
	s.closed = true
	s.in.Close()
	if err := s.cmd.Wait(); err != nil {
		return fmt.Errorf("psql: %w: %s", err, strings.TrimSpace(s.stderr.String()))
	}
	return nil
}

// runPSQL runs one psql -c command.
func runPSQL(ctx context.Context, psql string, c conn, sql string) (string, error) {
	cmd := exec.CommandContext(ctx, psql, "-X", "-q", "-A", "-t", "-v", "ON_ERROR_STOP=1", "-c", sql)
	cmd.Env = c.env()
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		return "", fmt.Errorf("psql: %w: %s", err, strings.TrimSpace(stderr.String()))
	}
	return strings.TrimSpace(string(out)), nil
}

func parseCounts(out string) ([]TableCount, error) {
	m := map[string]int64{}
	if err := json.Unmarshal([]byte(strings.TrimSpace(out)), &m); err != nil {
		return nil, fmt.Errorf("parse row counts: %w", err)
	}
	tables := make([]TableCount, 0, len(m))
	for name, n := range m {
		tables = append(tables, TableCount{Name: name, Rows: n})
	}
	sort.Slice(tables, func(i, j int) bool { return tables[i].Name < tables[j].Name })
	return tables, nil
}

// Ping runs SELECT 1 with psql (from binDir, "" = PATH) on the database dsn
// names. The DSN reaches psql only through PG* variables; errors never
// contain it or its password.
func Ping(ctx context.Context, dsn, binDir string) error {
	c, err := parseDSN(dsn)
	red := newRedactor(dsn, c)
	if err != nil {
		return red.err(err)
	}
	out, err := runPSQL(ctx, Options{BinDir: binDir}.bin("psql"), c, "SELECT 1")
	if err != nil {
		if ctx.Err() != nil {
			return fmt.Errorf("no answer: %w", ctx.Err())
		}
		return red.err(err)
	}
	if out != "1" {
		return errors.New("SELECT 1 returned an unexpected answer")
	}
	return nil
}
