package benchkit

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

func TestFreePortsDistinct(t *testing.T) {
	ports, err := FreePorts(8)
	if err != nil {
		t.Fatal(err)
	}
	seen := map[int]bool{}
	for _, p := range ports {
		if p <= 0 || seen[p] {
			t.Fatalf("ports %v: not distinct and positive", ports)
		}
		seen[p] = true
	}
}

func TestSelfProc(t *testing.T) {
	if _, err := ProcCPU(os.Getpid()); err != nil {
		t.Fatal(err)
	}
	if b, err := RSS(os.Getpid()); err != nil || b <= 0 {
		t.Fatalf("RSS: %d, %v", b, err)
	}
}

func TestStartStop(t *testing.T) {
	dir := t.TempDir()
	p, err := Start(ProcSpec{Name: "sleeper", Bin: "/bin/sh", Args: []string{"-c", "echo one; echo two; exec sleep 60"},
		Dir: dir, LogPath: filepath.Join(dir, "out.log")})
	if err != nil {
		t.Fatal(err)
	}
	if p.Exited() {
		t.Fatal("exited at once")
	}
	deadline := time.Now().Add(10 * time.Second)
	for p.LogTail(1) != "two" && time.Now().Before(deadline) {
		time.Sleep(10 * time.Millisecond)
	}
	if got := p.LogTail(1); got != "two" {
		t.Fatalf("LogTail(1) = %q", got)
	}
	p.Stop(5 * time.Second)
	if !p.Exited() || p.Context().Err() == nil || !strings.HasPrefix(p.Err().Error(), "sleeper exited") {
		t.Fatalf("after Stop: exited %v, err %v", p.Exited(), p.Err())
	}
}

func TestFormat(t *testing.T) {
	if Ms(1500*time.Microsecond) != "1.5" || Sec(1234*time.Millisecond) != "1.23" || MetWord(false) != "not met" || FirstLine("a\nb") != "a" {
		t.Fatal("formatting changed")
	}
}
