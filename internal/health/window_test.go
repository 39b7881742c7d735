package health

import (
	"errors"
	"testing"
	"time"
)

func TestWindowReset(t *testing.T) {
	w := NewWindow(time.Minute, 0, nil)
	w.Observe(time.Millisecond, errors.New("refused"))
	w.Observe(time.Millisecond, nil)
	w.Reset()
	if s := w.Snapshot(); s.Requests != 0 || s.Errors != 0 {
		t.Fatalf("after Reset: %+v", s)
	}
	w.Observe(2*time.Millisecond, nil)
	if s := w.Snapshot(); s.Requests != 1 || s.Errors != 0 {
		t.Fatalf("after Reset and one sample: %+v", s)
	}
}
