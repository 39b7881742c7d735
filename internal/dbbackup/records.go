package dbbackup

import (
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strings"

	"github.com/golive/golive/internal/atomicfile"
)

// recordSuffix names a backup's record, next to its dump: <id>.json. A dump
// without a record was never verified and is not offered for restore.
const recordSuffix = ".json"

// SaveRecord writes rec to <dir>/<id>.json atomically.
func SaveRecord(dir string, rec *Record) error {
	if err := validID(rec.ID); err != nil {
		return err
	}
	b, err := json.MarshalIndent(rec, "", "  ")
	if err != nil {
		return err
	}
	if err := atomicfile.WriteFile(filepath.Join(dir, rec.ID+recordSuffix), b, 0o600); err != nil {
		return fmt.Errorf("save backup record %s: %w", rec.ID, err)
	}
	return nil
}

// ErrNoBackup is returned by LoadRecord for an id with no verified backup.
var ErrNoBackup = errors.New("no such verified backup")

// LoadRecord reads the record of backup id from dir.
func LoadRecord(dir, id string) (*Record, error) {
	if err := validID(id); err != nil {
		return nil, err
	}
	b, err := os.ReadFile(filepath.Join(dir, id+recordSuffix))
	if errors.Is(err, os.ErrNotExist) {
		return nil, fmt.Errorf("backup %s: %w", id, ErrNoBackup)
	}
	if err != nil {
		return nil, err
	}
	var rec Record
	if err := json.Unmarshal(b, &rec); err != nil {
		return nil, fmt.Errorf("backup record %s: %w", id, err)
	}
	if rec.ID != id {
		return nil, fmt.Errorf("backup record %s names backup %q", id, rec.ID)
	}
	return &rec, nil
}

// Records lists the verified backups in dir, newest first. A missing dir
// holds none.
func Records(dir string) ([]*Record, error) {
	entries, err := os.ReadDir(dir)
	if errors.Is(err, os.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	var out []*Record
	for _, e := range entries {
		name := e.Name()
		if !e.Type().IsRegular() || !strings.HasSuffix(name, recordSuffix) {
			continue
		}
		rec, err := LoadRecord(dir, strings.TrimSuffix(name, recordSuffix))
		if err != nil {
			return nil, err
		}
		out = append(out, rec)
	}
	sort.Slice(out, func(i, j int) bool {
		if !out[i].CreatedAt.Equal(out[j].CreatedAt) {
			return out[i].CreatedAt.After(out[j].CreatedAt)
		}
		return out[i].ID > out[j].ID
	})
	return out, nil
}

func validID(id string) error {
	if id == "" || !releaseRE.MatchString(id) {
		return fmt.Errorf("backup id %q: want letters, digits, '.', '_' and '-'", id)
	}
	return nil
}
