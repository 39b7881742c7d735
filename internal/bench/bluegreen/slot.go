package bluegreen

import (
	"fmt"
	"net/http"
	"path/filepath"
	"strconv"
	"time"

	"github.com/golive/golive/internal/bench/benchkit"
	"github.com/golive/golive/internal/router"
)

// slot is one blue-green slot: a sampleapp process on its own port.
type slot struct {
	name router.Slot
	port int
	bin  string
	dir  string
	proc *benchkit.Proc
	// starts numbers the log files.
	starts int
}

func (s *slot) running() bool { return s.proc != nil && !s.proc.Exited() }

// start runs the app on the slot's port reporting version, and waits until
// its health check answers 200 on the port (10s at most).
func (s *slot) start(version string) error {
	s.starts++
	p, err := benchkit.Start(benchkit.ProcSpec{Name: "sampleapp " + string(s.name), Bin: s.bin,
		Args:    []string{"--port", strconv.Itoa(s.port), "--version", version},
		Dir:     s.dir,
		LogPath: filepath.Join(s.dir, fmt.Sprintf("%s-%d.log", s.name, s.starts))})
	if err != nil {
		return err
	}
	s.proc = p
	c := &http.Client{Timeout: time.Second}
	defer c.CloseIdleConnections()
	url := "http://" + benchkit.LoopbackAddr(s.port) + "/healthz"
	deadline := time.Now().Add(10 * time.Second)
	for {
		resp, err := c.Get(url)
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return nil
			}
		}
		if s.proc.Exited() {
			return fmt.Errorf("slot %s: %v\n%s", s.name, s.proc.Err(), s.proc.LogTail(10))
		}
		if time.Now().After(deadline) {
			s.stop()
			return fmt.Errorf("slot %s on :%d not healthy within 10s (last error %v)", s.name, s.port, err)
		}
		select {
		case <-time.After(20 * time.Millisecond):
		case <-s.proc.Context().Done():
		}
	}
}

// stop stops the app gracefully (SIGTERM: it finishes requests in flight),
// killing it after 10s.
func (s *slot) stop() {
	if s.proc != nil {
		s.proc.Stop(10 * time.Second)
		s.proc = nil
	}
}
