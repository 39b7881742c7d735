package dbbackup

import (
	"context"
	"fmt"
	"io"
	"os/exec"
	"regexp"
	"strings"
)

// Restore makes the service database equal to rec's dump, in one
// transaction:
//
//	pg_restore --clean --if-exists --single-transaction -f - <dump>
//	    │ the dump as an SQL script (BEGIN; ... COMMIT;)
//	    ▼
//	psql  ◄── first: BEGIN; note the transaction id; drop what the user
//	          schemas hold; then the script, whose COMMIT ends it
//
// Before the script, in the same transaction, it drops every large object,
// every extension installed in a user schema, every user schema but public,
// and every object in public (tables, views, sequences, functions, types
// and the rest); the script then creates what the dump holds. A table,
// view, sequence, function, type or schema created after the backup (by a
// migration that ran, or half ran) is gone afterwards. public itself stays:
// it belongs to initdb, its owner and privileges are initdb's, and no dump
// creates it. Objects outside schemas that the dump lacks (an event
// trigger, a publication, an extension in pg_catalog) are not touched.
//
// A failure (pg_restore, psql, any statement, ctx cancelled) leaves the
// database as it was: the transaction commits only with the script's last
// statement, psql is stopped before it can see the end of a script
// pg_restore did not finish, and Restore asks the server whether the
// transaction committed. The error names the root cause: pg_restore's when
// the script ended early, psql's when psql stopped reading.
//
// The caller takes a safety backup first (BackupAndVerify with ReleaseAfter
// "pre-restore"; the agent journals between the two). Restore needs
// PostgreSQL 13 or later (pg_current_xact_id).
func Restore(ctx context.Context, rec *Record, opts Options) (err error) {
	if err := opts.validate(); err != nil {
		return err
	}
	c, red, err := opts.connect()
	if err != nil {
		return red.err(err)
	}
	defer func() {
		if err != nil {
			err = red.err(fmt.Errorf("restore backup %s into %s: %w", rec.ID, c.database(), whenStopped(ctx, err)))
		}
	}()
	if err := checkFile(rec); err != nil {
		return err
	}
	if err := restoreExact(ctx, opts, c, rec.Path); err != nil {
		return err
	}
	opts.logger().Info("database restored", "backup_id", rec.ID)
	return nil
}

// xidMarker starts the line on which restorePrelude prints its transaction
// id.
const xidMarker = "golive_restore_xid="

// restorePrelude starts Restore's transaction and empties the user schemas
// in it. Notices (one per object a CASCADE drops, and the warning for the
// script's own BEGIN inside ours) are off; once the id is printed, query
// output is discarded (the script's SELECTs print rows).
//
// The last loop drops what DROP SCHEMA public CASCADE would, keeping the
// schema: every object with a normal dependency on public, except members
// of an extension and objects that exist only as part of another (a range
// type's multirange and constructors), each only if an earlier CASCADE has
// not already dropped it.
const restorePrelude = `SET client_min_messages = error;
BEGIN;
SELECT '` + xidMarker + `' || pg_catalog.pg_current_xact_id();
\o /dev/null
DO $golive_restore$
DECLARE
	r record;
	present boolean;
	kind text;
	ident text;
BEGIN
	PERFORM pg_catalog.lo_unlink(l.oid) FROM pg_catalog.pg_largeobject_metadata l;
	FOR r IN
		SELECT e.extname FROM pg_catalog.pg_extension e
		JOIN pg_catalog.pg_namespace n ON n.oid = e.extnamespace
		WHERE n.nspname <> 'information_schema' AND n.nspname NOT LIKE 'pg\_%'
	LOOP
		EXECUTE pg_catalog.format('DROP EXTENSION IF EXISTS %I CASCADE', r.extname);
	END LOOP;
	FOR r IN
		SELECT n.nspname FROM pg_catalog.pg_namespace n
		WHERE n.nspname <> 'public' AND n.nspname <> 'information_schema' AND n.nspname NOT LIKE 'pg\_%'
	LOOP
		EXECUTE pg_catalog.format('DROP SCHEMA IF EXISTS %I CASCADE', r.nspname);
	END LOOP;
	FOR r IN
		SELECT d.classid, d.objid FROM pg_catalog.pg_depend d
		JOIN pg_catalog.pg_namespace n ON n.oid = d.refobjid
		WHERE d.refclassid = 'pg_catalog.pg_namespace'::pg_catalog.regclass AND n.nspname = 'public' AND d.deptype = 'n'
		  AND NOT EXISTS (SELECT FROM pg_catalog.pg_depend i
		                  WHERE i.classid = d.classid AND i.objid = d.objid AND i.deptype IN ('i', 'e')
		                    AND (i.refclassid, i.refobjid) <> (d.classid, d.objid))
		ORDER BY d.classid, d.objid
	LOOP
		EXECUTE pg_catalog.format('SELECT EXISTS (SELECT FROM %s WHERE oid = $1)', r.classid::pg_catalog.regclass)
			INTO present USING r.objid;
		CONTINUE WHEN NOT present;
		SELECT o.type, o.identity INTO kind, ident FROM pg_catalog.pg_identify_object(r.classid, r.objid, 0) o;
		IF kind = 'statistics object' THEN
			kind := 'statistics';
		END IF;
		EXECUTE pg_catalog.format('DROP %s IF EXISTS %s CASCADE', kind, ident);
	END LOOP;
END
$golive_restore$;
`

// restoreExact feeds restorePrelude and then pg_restore's script of the
// dump at path to psql on c, and checks that the transaction committed.
//
// Which side failed first is read from the data flow, not from timing: a
// write to psql that fails means psql stopped reading (its error is the
// cause; pg_restore is then stopped); pg_restore's output ending means
// pg_restore is done, and if it failed, psql is stopped before its input
// is closed, so it never runs a script's end that was not written.
func restoreExact(ctx context.Context, opts Options, c conn, path string) error {
	rctx, cancel := context.WithCancel(ctx)
	defer cancel()

	psql := exec.CommandContext(rctx, opts.bin("psql"), "-X", "-q", "-A", "-t", "-v", "ON_ERROR_STOP=1")
	psql.Env = c.env()
	in, err := psql.StdinPipe()
	if err != nil {
		return err
	}
	psqlOut, psqlErr := &lockedBuffer{}, &lockedBuffer{}
	psql.Stdout, psql.Stderr = psqlOut, psqlErr

	dump := exec.CommandContext(rctx, opts.bin("pg_restore"), "--clean", "--if-exists", "--single-transaction", "-f", "-", path)
	dump.Env = c.env()
	dumpErr := &lockedBuffer{}
	dump.Stderr = dumpErr
	script, err := dump.StdoutPipe()
	if err != nil {
		return err
	}

	if err := psql.Start(); err != nil {
		return fmt.Errorf("start psql: %w", err)
	}
	if err := dump.Start(); err != nil {
		cancel()
		psql.Wait()
		return fmt.Errorf("start pg_restore: %w", err)
	}
	readErr, writeErr := feed(in, restorePrelude, script)
	stopped := func() error { return fmt.Errorf("stopped: %w", ctx.Err()) }
	if writeErr != nil {
		// psql stopped reading: it has exited (a statement failed, it
		// could not connect). pg_restore, blocked on its output, goes.
		perr := psql.Wait()
		cancel()
		dump.Wait()
		switch {
		case ctx.Err() != nil:
			return stopped()
		case perr != nil:
			return toolError("psql", perr, psqlErr)
		}
		return fmt.Errorf("psql stopped reading the restore script: %w", writeErr)
	}
	if derr := dump.Wait(); derr != nil || readErr != nil {
		cancel()
		psql.Wait()
		switch {
		case ctx.Err() != nil:
			return stopped()
		case derr != nil:
			return toolError("pg_restore", derr, dumpErr)
		}
		return fmt.Errorf("read pg_restore's script: %w", readErr)
	}
	in.Close()
	if err := psql.Wait(); err != nil {
		if ctx.Err() != nil {
			return stopped()
		}
		return toolError("psql", err, psqlErr)
	}
	return checkCommitted(ctx, opts, c, psqlOut.String())
}

// feed writes prelude and then all of script to in. It tells a write error
// (the reader is gone) from a read error.
func feed(in io.WriteCloser, prelude string, script io.Reader) (readErr, writeErr error) {
	if _, err := io.WriteString(in, prelude); err != nil {
		return nil, err
	}
	buf := make([]byte, 1<<20)
	for {
		n, rerr := script.Read(buf)
		if n > 0 {
			if _, err := in.Write(buf[:n]); err != nil {
				return nil, err
			}
		}
		if rerr == io.EOF {
			return nil, nil
		}
		if rerr != nil {
			return rerr, nil
		}
	}
}

var xidRE = regexp.MustCompile(`(?m)^` + xidMarker + `([0-9]+)$`)

// checkCommitted asks the server whether the transaction whose id psql
// printed (in out) committed. psql exits 0 also when its input ended
// without a COMMIT; the server then rolls the transaction back.
func checkCommitted(ctx context.Context, opts Options, c conn, out string) error {
	m := xidRE.FindStringSubmatch(out)
	if m == nil {
		return fmt.Errorf("psql did not print the restore's transaction id; whether it committed is unknown")
	}
	status, err := runPSQL(ctx, opts.bin("psql"), c, "SELECT pg_catalog.pg_xact_status('"+m[1]+"'::pg_catalog.xid8)")
	if err != nil {
		return fmt.Errorf("ask whether the restore's transaction %s committed: %w", m[1], err)
	}
	if status = strings.TrimSpace(status); status != "committed" {
		return fmt.Errorf("the restore script ended without committing (transaction %s is %s): the database was not changed", m[1], status)
	}
	return nil
}
