package controllercli_test

import (
	"bytes"
	"context"
	"io"
	"net/http"
	"regexp"
	"strings"
	"testing"

	"github.com/golive/golive/internal/cli/controllercli"
	"github.com/golive/golive/internal/etcdtest"
	"github.com/golive/golive/internal/testenv"
)

func TestDashboardLoginPrintsALinkThatSignsIn(t *testing.T) {
	cfg := testenv.ControllerConfig(t)
	cfg.DashboardAddr = etcdtest.FreeAddr(t)
	c := testenv.StartController(t, cfg)
	var out, errb bytes.Buffer
	if rc := controllercli.Main(context.Background(), []string{"--addr", c.GRPCAddr(), "--as", "erin", "dashboard", "login"}, &out, &errb); rc != 0 {
		t.Fatalf("dashboard login: exit %d\n%s", rc, errb.String())
	}
	link := regexp.MustCompile(`http://\S+/login\?t=\S+`).FindString(out.String())
	if link == "" || !strings.HasPrefix(link, c.DashboardURL()) || !strings.Contains(out.String(), "as erin") {
		t.Fatalf("output:\n%s", out.String())
	}
	resp, err := http.Get(link)
	if err != nil {
		t.Fatal(err)
	}
	b, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != 200 || !strings.Contains(string(b), "Sign in as erin") {
		t.Fatalf("the link's page: %d\n%s", resp.StatusCode, b)
	}

	errb.Reset()
	if rc := controllercli.Main(context.Background(), []string{"--addr", c.GRPCAddr(), "dashboard", "login", "--ttl", "1h"}, &out, &errb); rc == 0 || !strings.Contains(errb.String(), "up to 15m") {
		t.Fatalf("--ttl 1h: exit %d\n%s", rc, errb.String())
	}
}

func TestDashboardLoginWhenTheDashboardIsOff(t *testing.T) {
	c := testenv.StartController(t, testenv.ControllerConfig(t))
	var out, errb bytes.Buffer
	if rc := controllercli.Main(context.Background(), []string{"--addr", c.GRPCAddr(), "dashboard", "login"}, &out, &errb); rc == 0 || !strings.Contains(errb.String(), "--dashboard-addr") {
		t.Fatalf("exit %d\n%s", rc, errb.String())
	}
}
