package deploystep

import (
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"sort"
	"time"

	"github.com/golive/golive/internal/atomicfile"
)

// Journal is the on-disk record of a step in progress.
type Journal struct {
	CommandID string `json:"command_id"`
	Kind      Kind   `json:"kind"`
	Release   string `json:"release"`
	// Previous is the release current pointed at when the step began ("" on a
	// first deploy).
	Previous string `json:"previous,omitempty"`
	// PreviousLink is the release the previous link named when the step
	// began ("" if none): swap's undo restores it (releasedir.SwapBack).
	PreviousLink string `json:"previous_link,omitempty"`
	// Completed lists the stages done, in order.
	Completed []string `json:"completed"`
	// Stage is the stage about to run (or being undone when RollingBack).
	Stage string `json:"stage"`
	// RollingBack is set once a stage failed and undo has begun.
	RollingBack bool `json:"rolling_back,omitempty"`
	// FailedStage and Reason describe the failure that started the undo.
	FailedStage string    `json:"failed_stage,omitempty"`
	Reason      string    `json:"reason,omitempty"`
	Download    string    `json:"download,omitempty"`
	Started     time.Time `json:"started"`
	// RestoreBackupID is the backup a rollback restores (restore_db).
	RestoreBackupID string `json:"restore_backup_id,omitempty"`
	// BackupID is the verified backup this step took: before the
	// migration (backup), or the safety backup (restore_db). Written as
	// soon as the backup is recorded.
	BackupID string `json:"backup_id,omitempty"`
	// Migration is "started" once the migration command is about to run
	// (written before it starts) and "done" once it exited successfully;
	// "" when no migration ran. Recover never reruns a migration.
	Migration string `json:"migration,omitempty"`
	// Restoring is set (and written) just before restore_db replaces the
	// database's contents.
	Restoring bool `json:"restoring,omitempty"`
	// OldSlot and NewSlot, for a blue-green service: the slot serving
	// when the step began and the one getting the release.
	OldSlot string `json:"old_slot,omitempty"`
	NewSlot string `json:"new_slot,omitempty"`
	// Warm: the new slot already ran the release (a rollback within
	// keep_warm) and was not restarted.
	Warm bool `json:"warm,omitempty"`
	// Weight and WeightBake are the command's canary weight.
	Weight     int           `json:"weight,omitempty"`
	WeightBake time.Duration `json:"weight_bake,omitempty"`
}

// Journal.Migration values.
const (
	migrationStarted = "started"
	migrationDone    = "done"
)

const (
	journalName  = "journal.json"
	downloadsDir = "downloads"
	doneDir      = "done"
)

// removeDurable removes path (if present) and fsyncs its directory.
func removeDurable(path string) error {
	if err := os.Remove(path); err != nil && !errors.Is(err, fs.ErrNotExist) {
		return err
	}
	return atomicfile.SyncDir(filepath.Dir(path))
}

func writeJSON(path string, v any) error {
	b, err := json.MarshalIndent(v, "", "  ")
	if err != nil {
		return err
	}
	return atomicfile.WriteFile(path, append(b, '\n'), 0o644)
}

// readJSON reads path into v; ok is false when the file does not exist.
func readJSON(path string, v any) (ok bool, err error) {
	b, err := os.ReadFile(path)
	if errors.Is(err, fs.ErrNotExist) {
		return false, nil
	}
	if err != nil {
		return false, err
	}
	if err := json.Unmarshal(b, v); err != nil {
		return false, fmt.Errorf("%s: %w", path, err)
	}
	return true, nil
}

func (r *Runner) journalPath() string { return filepath.Join(r.dir.Path(), journalName) }

func (r *Runner) donePath(id string) string {
	return filepath.Join(r.dir.Path(), doneDir, id+".json")
}

// ReadJournal returns the journal of an unfinished step, or nil when there is
// none.
func (r *Runner) ReadJournal() (*Journal, error) {
	var j Journal
	ok, err := readJSON(r.journalPath(), &j)
	if !ok || err != nil {
		return nil, err
	}
	return &j, nil
}

// Done returns the stored result of command id, or nil when it has not
// finished on this host.
func (r *Runner) Done(id string) (*Result, error) {
	if err := validateID(id); err != nil {
		return nil, err
	}
	var res Result
	ok, err := readJSON(r.donePath(id), &res)
	if !ok || err != nil {
		return nil, err
	}
	return &res, nil
}

// finish records res as the result of its command, then removes the journal:
// in that order, so a crash in between leaves a result Recover finds.
func (r *Runner) finish(res *Result) error {
	if err := os.MkdirAll(filepath.Join(r.dir.Path(), doneDir), 0o755); err != nil {
		return err
	}
	if err := writeJSON(r.donePath(res.CommandID), res); err != nil {
		return fmt.Errorf("record result: %w", err)
	}
	if err := removeDurable(r.journalPath()); err != nil {
		return fmt.Errorf("remove journal: %w", err)
	}
	r.pruneDone()
	return nil
}

// pruneDone keeps the newest DoneRecords result records.
func (r *Runner) pruneDone() {
	keep := r.cfg.DoneRecords
	if keep <= 0 {
		keep = DefaultDoneRecords
	}
	dir := filepath.Join(r.dir.Path(), doneDir)
	ents, err := os.ReadDir(dir)
	if err != nil || len(ents) <= keep {
		return
	}
	type rec struct {
		name string
		mod  time.Time
	}
	var recs []rec
	for _, e := range ents {
		if info, err := e.Info(); err == nil {
			recs = append(recs, rec{e.Name(), info.ModTime()})
		}
	}
	sort.Slice(recs, func(i, j int) bool { return recs[i].mod.After(recs[j].mod) })
	for _, rc := range recs[min(keep, len(recs)):] {
		_ = os.Remove(filepath.Join(dir, rc.name))
	}
}

// validateID checks a command id for use as a file name.
func validateID(id string) error {
	if id == "" || len(id) > 128 || id[0] == '.' {
		return fmt.Errorf("invalid command id %q", id)
	}
	for _, c := range id {
		ok := c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '-' || c == '_' || c == '.'
		if !ok {
			return fmt.Errorf("invalid command id %q: only letters, digits, '-', '_' and '.'", id)
		}
	}
	return nil
}
