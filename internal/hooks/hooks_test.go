package hooks

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"go.uber.org/goleak"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

func TestRun(t *testing.T) {
	dir := t.TempDir()
	tests := []struct {
		name     string
		give     Hook
		wantOut  string
		wantCode int
		wantErr  string
	}{
		{
			name: "env and dir",
			give: Hook{
				Command: []string{"sh", "-c", `echo "$GOLIVE_SERVICE $GOLIVE_RELEASE $GOLIVE_PREVIOUS_RELEASE $EXTRA home=$HOME"; pwd; echo err >&2`},
				Service: "app", Release: "v2", PreviousRelease: "v1", Env: map[string]string{"EXTRA": "x"},
			},
			wantOut: "app v2 v1 x home=\n" + dir + "\nerr\n",
		},
		{
			name:     "non-zero exit",
			give:     Hook{Command: []string{"sh", "-c", "echo migrating; exit 7"}},
			wantOut:  "migrating\n",
			wantCode: 7,
			wantErr:  "hook pre_swap: sh failed: exit status 7",
		},
		{
			name:     "missing command",
			give:     Hook{Command: []string{"./nope"}},
			wantCode: -1,
			wantErr:  "hook pre_swap: ./nope",
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			tt.give.Name, tt.give.Dir = "pre_swap", dir
			res, err := Run(t.Context(), tt.give)
			if tt.wantErr == "" {
				if err != nil {
					t.Fatal(err)
				}
			} else if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
				t.Fatalf("err = %v, want %q", err, tt.wantErr)
			}
			if string(res.Output) != tt.wantOut || res.ExitCode != tt.wantCode {
				t.Fatalf("output %q code %d, want %q code %d", res.Output, res.ExitCode, tt.wantOut, tt.wantCode)
			}
		})
	}
}

func TestRunRelativeCommand(t *testing.T) {
	dir := t.TempDir()
	if err := os.WriteFile(filepath.Join(dir, "migrate.sh"), []byte("#!/bin/sh\necho \"args $*\"\n"), 0o755); err != nil {
		t.Fatal(err)
	}
	res, err := Run(t.Context(), Hook{Name: "migrate", Command: []string{"./migrate.sh", "up"}, Dir: dir})
	if err != nil || string(res.Output) != "args up\n" || res.ExitCode != 0 {
		t.Fatalf("res = %+v, err = %v", res, err)
	}
}

// alive reports whether pid exists and is not a zombie.
func alive(pid int) bool {
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
	if err != nil {
		return false
	}
	s := string(b)
	i := strings.LastIndexByte(s, ')')
	return i < 0 || i+2 >= len(s) || s[i+2] != 'Z'
}

func TestTimeoutKillsGroup(t *testing.T) {
	dir := t.TempDir()
	start := time.Now()
	res, err := Run(t.Context(), Hook{
		Name: "slow", Dir: dir, Timeout: 300 * time.Millisecond,
		// The background sleep is a grandchild holding the output pipe.
		Command: []string{"sh", "-c", "sleep 60 & echo $! > child.pid; echo started; wait"},
	})
	if err == nil || !strings.Contains(err.Error(), "hook slow: timed out after 300ms (process group killed)") ||
		!strings.Contains(err.Error(), "killed") {
		t.Fatalf("err = %v", err)
	}
	if d := time.Since(start); d > 5*time.Second {
		t.Fatalf("Run took %s", d)
	}
	if string(res.Output) != "started\n" || res.ExitCode != -1 {
		t.Fatalf("res = %+v", res)
	}
	b, rerr := os.ReadFile(filepath.Join(dir, "child.pid"))
	if rerr != nil {
		t.Fatal(rerr)
	}
	pid, _ := strconv.Atoi(strings.TrimSpace(string(b)))
	if pid == 0 {
		t.Fatal("no grandchild pid")
	}
	// SIGKILL was sent; the kernel finishes the exit asynchronously.
	deadline := time.Now().Add(5 * time.Second)
	for alive(pid) {
		if time.Now().After(deadline) {
			t.Fatalf("grandchild %d survived the timeout", pid)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

func TestCanceled(t *testing.T) {
	ctx, cancel := context.WithTimeout(t.Context(), 100*time.Millisecond)
	defer cancel()
	_, err := Run(ctx, Hook{Name: "h", Dir: t.TempDir(), Command: []string{"sleep", "60"}, Timeout: time.Minute})
	if !errors.Is(err, context.DeadlineExceeded) || !strings.Contains(err.Error(), "canceled") {
		t.Fatalf("err = %v", err)
	}
}

func TestOutputCapped(t *testing.T) {
	res, err := Run(t.Context(), Hook{
		Name: "noisy", Dir: t.TempDir(),
		Command: []string{"sh", "-c", "head -c 200000 /dev/zero | tr '\\0' a; echo; echo THE END"},
	})
	if err != nil {
		t.Fatal(err)
	}
	if !res.Truncated || len(res.Output) > MaxOutput+100 || !strings.HasSuffix(string(res.Output), "a\nTHE END\n") {
		t.Fatalf("truncated=%v len=%d tail=%q", res.Truncated, len(res.Output), res.Output[len(res.Output)-20:])
	}
	if !strings.HasPrefix(string(res.Output), "[... 134473 bytes of output dropped ...]\n") {
		t.Fatalf("head = %q", res.Output[:60])
	}
}

func TestTailBuffer(t *testing.T) {
	b := &tailBuffer{max: 5}
	for _, s := range []string{"ab", "cd", "efg", "0123456789", "x"} {
		b.Write([]byte(s))
	}
	got, trunc := b.bytes()
	if string(got) != "[... 13 bytes of output dropped ...]\n6789x" || !trunc {
		t.Fatalf("got %q", got)
	}
}

func TestValidate(t *testing.T) {
	tests := []struct {
		give    Hook
		wantErr string
	}{
		{give: Hook{Command: []string{"x"}, Dir: "/"}, wantErr: "name is required"},
		{give: Hook{Name: "h", Dir: "/"}, wantErr: "command is required"},
		{give: Hook{Name: "h", Command: []string{"x"}, Dir: "rel"}, wantErr: "must be an absolute path"},
		{give: Hook{Name: "h", Command: []string{"x"}, Dir: "/", Env: map[string]string{"A=B": ""}}, wantErr: "not a valid variable"},
	}
	for _, tt := range tests {
		if _, err := Run(t.Context(), tt.give); err == nil || !strings.Contains(err.Error(), tt.wantErr) {
			t.Errorf("Run(%+v) = %v, want %q", tt.give, err, tt.wantErr)
		}
	}
}
