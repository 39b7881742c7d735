package rolloutbench

import (
	"context"
	"os"
	"strconv"
	"testing"
	"time"
)

func TestManual(t *testing.T) {
	n, _ := strconv.Atoi(os.Getenv("RB_HOSTS"))
	if n == 0 {
		t.Skip()
	}
	hb, _ := time.ParseDuration(os.Getenv("RB_HB"))
	res, err := Run(context.Background(), Options{Hosts: n, ControllerBin: "/work/main/bin/golive-controller", AgentBin: "/work/main/bin/golive-agent",
		HeartbeatInterval: hb, WorkDir: os.Getenv("RB_DIR"), Log: os.Stderr})
	PrintTable(os.Stdout, res)
	if err != nil {
		t.Fatal(err)
	}
}
