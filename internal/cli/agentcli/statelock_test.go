package agentcli_test

import (
	"bytes"
	"context"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/golive/golive/internal/cli/agentcli"
)

// syncBuffer is a bytes.Buffer safe for the daemon's log writes.
type syncBuffer struct {
	mu chan struct{}
	b  bytes.Buffer
}

func newSyncBuffer() *syncBuffer { return &syncBuffer{mu: make(chan struct{}, 1)} }

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu <- struct{}{}
	defer func() { <-s.mu }()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu <- struct{}{}
	defer func() { <-s.mu }()
	return s.b.String()
}

// The run function twice on one state dir: the second returns exit code 1
// at once, naming the first's pid; once the first stops, run starts again.
func TestRunTwiceOnOneStateDir(t *testing.T) {
	state := t.TempDir()
	args := func(host string) []string {
		return []string{"run", "--state-dir", state, "--controller", "127.0.0.1:1", "--metrics-addr", "127.0.0.1:0", "--grpc-addr", "", "--host-id", host}
	}
	ctx, cancel := context.WithCancel(t.Context())
	first := make(chan int, 1)
	firstErr := newSyncBuffer()
	go func() { first <- agentcli.Main(ctx, args("h1"), &bytes.Buffer{}, firstErr) }()
	t.Cleanup(func() {
		cancel()
		<-first
	})
	lock := filepath.Join(state, "agent.lock")
	deadline := time.Now().Add(20 * time.Second)
	for {
		if pid, held := lockHolder(lock); held && pid == os.Getpid() {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("first agent does not hold %s; its stderr:\n%s", lock, firstErr.String())
		}
		time.Sleep(20 * time.Millisecond)
	}

	var stderr bytes.Buffer
	if code := agentcli.Main(t.Context(), args("h2"), &bytes.Buffer{}, &stderr); code != 1 {
		t.Fatalf("second run: exit code %d, want 1; stderr:\n%s", code, stderr.String())
	}
	want := "is held by another golive-agent (pid " + strconv.Itoa(os.Getpid()) + ", lock file " + lock + ")"
	if !strings.Contains(stderr.String(), want) {
		t.Fatalf("second run's stderr does not say %q:\n%s", want, stderr.String())
	}
	select {
	case code := <-first:
		first <- code // for the cleanup
		t.Fatalf("first agent exited (%d) when the second was refused", code)
	default:
	}

	cancel()
	if code := <-first; code != 0 {
		t.Fatalf("first agent: exit code %d; stderr:\n%s", code, firstErr.String())
	}
	first <- 0 // for the cleanup
	if pid, held := lockHolder(lock); held {
		t.Fatalf("lock still held (pid %d) after the agent stopped", pid)
	}
}
