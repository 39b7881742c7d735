package router

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"time"

	"github.com/golive/golive/internal/atomicfile"
)

// None is the router of kind "none": traffic goes wherever the operator's
// own setup sends it. It records the last split asked for in a JSON state
// file so Active reports it; Drain has nothing to wait for.
type None struct {
	file string
}

var _ Router = (*None)(nil)

// NewNone returns a None router recording its split in file.
func NewNone(file string) *None { return &None{file: file} }

// Switch records the split.
func (n *None) Switch(ctx context.Context, to Slot, weight int) error {
	t, err := Split(to, weight)
	if err != nil {
		return fmt.Errorf("router none: %w", err)
	}
	data, _ := json.Marshal(t)
	if err := atomicfile.WriteFile(n.file, append(data, '\n'), 0o644); err != nil {
		return fmt.Errorf("router none: record split: %w", err)
	}
	return nil
}

// Active reports the last recorded split.
func (n *None) Active(ctx context.Context) (Traffic, error) {
	data, err := os.ReadFile(n.file)
	if errors.Is(err, fs.ErrNotExist) {
		return Traffic{}, fmt.Errorf("router none: %w", ErrNoState)
	}
	if err != nil {
		return Traffic{}, fmt.Errorf("router none: %w", err)
	}
	var t Traffic
	if err := json.Unmarshal(data, &t); err != nil || t.Blue+t.Green != 100 || t.Blue < 0 || t.Green < 0 {
		return Traffic{}, fmt.Errorf("router none: state file %s is corrupt", n.file)
	}
	return t, nil
}

// Drain returns at once: the none router cannot see requests.
func (n *None) Drain(ctx context.Context, slot Slot, timeout time.Duration) error {
	if !slot.Valid() {
		return fmt.Errorf("router none: slot %q: want %q or %q", slot, Blue, Green)
	}
	return nil
}
