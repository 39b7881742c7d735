package watchdog

import (
	"context"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// TestPingsSystemd: with WATCHDOG_USEC set, Run sends WATCHDOG=1 to the
// notify socket while alive() holds, and nothing once it does not.
func TestPingsSystemd(t *testing.T) {
	sock := filepath.Join(t.TempDir(), "notify")
	conn, err := net.ListenUnixgram("unixgram", &net.UnixAddr{Name: sock, Net: "unixgram"})
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	t.Setenv("NOTIFY_SOCKET", sock)
	t.Setenv("WATCHDOG_USEC", "150000")
	t.Setenv("WATCHDOG_PID", "")
	os.Unsetenv("WATCHDOG_PID")
	ch := make(chan bool, 1)
	ch <- true
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		defer close(done)
		Run(ctx, func() bool { v := <-ch; ch <- v; return v })
	}()
	buf := make([]byte, 64)
	conn.SetReadDeadline(time.Now().Add(10 * time.Second))
	n, err := conn.Read(buf)
	if err != nil || !strings.Contains(string(buf[:n]), "WATCHDOG=1") {
		t.Fatalf("read %q, %v; want WATCHDOG=1", buf[:n], err)
	}
	<-ch
	ch <- false
	// Drain what was sent before alive turned false, then expect silence
	// for several intervals.
	conn.SetReadDeadline(time.Now().Add(120 * time.Millisecond))
	for {
		if _, err := conn.Read(buf); err != nil {
			break
		}
	}
	conn.SetReadDeadline(time.Now().Add(500 * time.Millisecond))
	if n, err := conn.Read(buf); err == nil {
		t.Fatalf("pinged %q while not alive", buf[:n])
	}
	cancel()
	<-done
}

// TestNoWatchdogNoPing: without WATCHDOG_USEC, Run returns at once.
func TestNoWatchdogNoPing(t *testing.T) {
	t.Setenv("WATCHDOG_USEC", "")
	os.Unsetenv("WATCHDOG_USEC")
	done := make(chan struct{})
	go func() { Run(context.Background(), nil); close(done) }()
	select {
	case <-done:
	case <-time.After(5 * time.Second):
		t.Fatal("Run did not return without a watchdog")
	}
}
