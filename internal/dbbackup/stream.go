package dbbackup

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"strings"
)

// BackupAndVerify takes a backup and proves it restorable in one pass, then
// saves its record (<id>.json) next to the dump:
//
//	pg_dump -Fc --snapshot=S ──► tee ──► <id>.dump.tmp (sha256 as it goes)
//	                              └────► pg_restore into golive_verify_<random>
//
// pg_dump writes to a pipe; every byte goes to the .tmp file and, at the
// same time, to pg_restore restoring into a scratch database, so the restore
// costs little more than the dump. Then the file is fsynced, every table's
// row count in the scratch copy is compared with the count in the dump's
// snapshot, the scratch database is dropped (always, also on failure or
// cancellation), the file is renamed to <id>.dump and the record saved.
//
// On any failure (pg_dump or pg_restore failing or killed, counts that
// differ, ctx cancelled) neither the dump nor a record is left and the error
// says why, without the DSN: a backup that was not verified is not a backup.
// The dump is the same pg_dump -Fc archive Backup writes (without the data
// offsets a seekable output gets); Verify and Restore read it.
func BackupAndVerify(ctx context.Context, opts Options) (Record, error) {
	if err := opts.validate(); err != nil {
		return Record{}, err
	}
	c, red, err := opts.connect()
	if err != nil {
		return Record{}, red.err(err)
	}
	rec, err := backupAndVerify(ctx, opts, c)
	if err != nil {
		return Record{}, red.err(fmt.Errorf("backup and verify database %s: %w", c.database(), whenStopped(ctx, err)))
	}
	opts.logger().Info("database backed up and verified", "backup_id", rec.ID, "size", rec.Size, "tables", len(rec.Tables))
	return rec, nil
}

func backupAndVerify(ctx context.Context, opts Options, c conn) (_ Record, err error) {
	df, err := opts.newDumpFile()
	if err != nil {
		return Record{}, err
	}
	tmp := df.f.Name()
	renamed := false
	defer func() {
		if err == nil {
			return
		}
		df.f.Close()
		os.Remove(tmp)
		if renamed {
			os.Remove(df.final)
			os.Remove(df.final[:len(df.final)-len(".dump")] + recordSuffix)
			syncDir(opts.Dir)
		}
	}()

	snap, err := openSnapshot(ctx, opts, c)
	if err != nil {
		return Record{}, err
	}
	defer snap.close()
	tables, err := snap.counts()
	if err != nil {
		return Record{}, err
	}

	scratch, drop, err := createScratch(ctx, opts, c)
	defer func() {
		if derr := drop(); derr != nil {
			err = errors.Join(err, derr)
		}
	}()
	if err != nil {
		return Record{}, err
	}

	size, sum, err := streamDump(ctx, opts, c, c.withDatabase(scratch), snap.id, df.f)
	if err != nil {
		return Record{}, err
	}
	if err := snap.close(); err != nil {
		return Record{}, err
	}
	if err := df.f.Sync(); err != nil {
		return Record{}, err
	}
	if err := df.f.Close(); err != nil {
		return Record{}, err
	}
	if err := compareRestored(ctx, opts, c.withDatabase(scratch), tables); err != nil {
		return Record{}, err
	}
	if err := drop(); err != nil {
		return Record{}, err
	}
	if err := ctx.Err(); err != nil {
		return Record{}, fmt.Errorf("stopped: %w", err)
	}
	if err := os.Rename(tmp, df.final); err != nil {
		return Record{}, err
	}
	renamed = true
	if err := syncDir(opts.Dir); err != nil {
		return Record{}, err
	}
	rec := opts.record(df, size, sum, c, tables)
	rec.VerifiedAt = opts.now()
	if err := SaveRecord(opts.Dir, &rec); err != nil {
		return Record{}, err
	}
	return rec, nil
}

// streamDump runs pg_dump -Fc of src in snapshot and pg_restore into dst
// concurrently, copying pg_dump's output to both out and pg_restore's
// stdin. It returns the size and sha256 of what it wrote to out. A failure
// of either process stops the other.
//
// The error is the root cause, whatever the timing: the first failure is
// recorded as the cause of cancelling the other process, and what that
// cancellation does to the other (killed, "context canceled" from a start
// that came too late) is never reported instead. Each failure is recorded
// before the other side can see any effect of it: a failed pg_restore
// before it stops pg_dump; a failed pg_dump (or a failed write of the file)
// before pg_restore's input is closed.
func streamDump(ctx context.Context, opts Options, src, dst conn, snapshot string, out *os.File) (int64, string, error) {
	db := dst.database()
	if strings.ContainsAny(db, "= ") || strings.Contains(db, "://") {
		return 0, "", fmt.Errorf("database name %q is not a plain name", db)
	}
	sctx, stop := context.WithCancelCause(ctx)
	defer stop(nil)

	pr, pw, err := os.Pipe()
	if err != nil {
		return 0, "", err
	}
	defer pw.Close()
	growPipe(pw)
	restore := exec.CommandContext(sctx, opts.bin("pg_restore"),
		append([]string{"--no-password", "-d", db}, restoreVerifyArgs...)...)
	restore.Env = dst.env()
	restore.Stdin = pr
	restoreOut := &lockedBuffer{}
	restore.Stdout, restore.Stderr = restoreOut, restoreOut
	err = restore.Start()
	pr.Close()
	if err != nil {
		return 0, "", fmt.Errorf("start pg_restore: %w", err)
	}
	restoreDone := make(chan struct{})
	go func() {
		defer close(restoreDone)
		if err := restore.Wait(); err != nil {
			stop(toolError("pg_restore", err, restoreOut))
		}
	}()

	dump := exec.CommandContext(sctx, opts.bin("pg_dump"), "-Fc", "--no-password", "--snapshot="+snapshot)
	dump.Env = src.env()
	dumpErr := &lockedBuffer{}
	dump.Stderr = dumpErr
	var size int64
	var sum string
	dumpOut, err := dump.StdoutPipe()
	if err == nil {
		err = dump.Start()
	}
	if err != nil {
		stop(fmt.Errorf("start pg_dump: %w", err))
	} else {
		if f, ok := dumpOut.(*os.File); ok {
			growPipe(f)
		}
		var copyErr error
		size, sum, copyErr = tee(dumpOut, out, pw)
		if copyErr != nil {
			stop(copyErr)
		}
		if err := dump.Wait(); err != nil {
			stop(toolError("pg_dump", err, dumpErr))
		}
	}
	pw.Close()
	<-restoreDone

	if ctx.Err() != nil {
		return 0, "", fmt.Errorf("stopped: %w", ctx.Err())
	}
	if sctx.Err() != nil {
		return 0, "", context.Cause(sctx)
	}
	return size, sum, nil
}

// toolError is "<tool>: <exit status>[: <its output>]".
func toolError(tool string, err error, out *lockedBuffer) error {
	if msg := strings.TrimSpace(out.String()); msg != "" {
		return fmt.Errorf("%s: %w: %s", tool, err, msg)
	}
	return fmt.Errorf("%s: %w", tool, err)
}

// tee copies r to file and to restore until r ends. A write error on
// restore (pg_restore gone) stops only that copy: pg_restore's exit status
// and the row counts say whether it restored everything.
func tee(r io.Reader, file *os.File, restore *os.File) (int64, string, error) {
	h := sha256.New()
	buf := make([]byte, 1<<20)
	var n int64
	toRestore := true
	for {
		k, rerr := r.Read(buf)
		if k > 0 {
			h.Write(buf[:k])
			if _, err := file.Write(buf[:k]); err != nil {
				return 0, "", fmt.Errorf("write dump: %w", err)
			}
			if toRestore {
				if _, err := restore.Write(buf[:k]); err != nil {
					toRestore = false
				}
			}
			n += int64(k)
		}
		if rerr == io.EOF {
			return n, hex.EncodeToString(h.Sum(nil)), nil
		}
		if rerr != nil {
			return 0, "", fmt.Errorf("read pg_dump output: %w", rerr)
		}
	}
}
