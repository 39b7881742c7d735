package controllercli

import (
	"bytes"
	"io"
	"strings"
	"testing"
	"unicode"

	"github.com/spf13/cobra"
	"github.com/spf13/pflag"
)

func walk(c *cobra.Command, f func(*cobra.Command)) {
	f(c)
	for _, sub := range c.Commands() {
		walk(sub, f)
	}
}

func TestEveryCommandHasAnExample(t *testing.T) {
	walk(newControllerCmd(io.Discard, io.Discard), func(c *cobra.Command) {
		if c.Name() == "help" || c.Name() == "completion" || c.HasParent() && c.Parent().Name() == "completion" {
			return
		}
		if strings.TrimSpace(c.Example) == "" {
			t.Errorf("%s has no Example", c.CommandPath())
		}
	})
}

// TestFlagHelpReadsRight: pflag shows a flag's first `backquoted` word as
// its value's name (so "wait for `resume`" rendered as
// "--pause-after-canary resume"): only a placeholder in capitals may be
// backquoted; and a "(default: ...)" in the text next to pflag's own
// (default "vm") says it twice.
func TestFlagHelpReadsRight(t *testing.T) {
	walk(newControllerCmd(io.Discard, io.Discard), func(c *cobra.Command) {
		c.LocalFlags().VisitAll(func(f *pflag.Flag) {
			name, _ := pflag.UnquoteUsage(f)
			if strings.Contains(f.Usage, "`") && strings.IndexFunc(name, func(r rune) bool { return !unicode.IsUpper(r) && r != '_' }) >= 0 {
				t.Errorf("%s --%s: backquoted %q shows as the value's name", c.CommandPath(), f.Name, name)
			}
			if strings.Contains(f.Usage, "(default:") && f.DefValue != "" && f.DefValue != "false" && f.DefValue != "[]" {
				t.Errorf("%s --%s: says its default twice: %q and %q", c.CommandPath(), f.Name, f.Usage, f.DefValue)
			}
		})
	})
}

func help(t *testing.T, args ...string) string {
	t.Helper()
	var out bytes.Buffer
	if code := Main(t.Context(), append(args, "--help"), &out, &out); code != 0 {
		t.Fatalf("%v --help: exit %d: %s", args, code, out.String())
	}
	return out.String()
}

func TestServeHelpListsNoClientFlags(t *testing.T) {
	out := help(t, "serve")
	for _, f := range []string{"--addr", "--output", "--as ", "--timeout", "--tls-server-name"} {
		if strings.Contains(out, f) {
			t.Errorf("serve --help lists the client flag %s:\n%s", f, out)
		}
	}
	if !strings.Contains(out, "--tls-ca FILE") {
		t.Errorf("serve --help lacks --tls-ca FILE:\n%s", out)
	}
	if out := help(t, "status"); !strings.Contains(out, "--addr") {
		t.Errorf("status --help lacks --addr:\n%s", out)
	}
}

func TestStopHelpSaysStop(t *testing.T) {
	out := help(t, "stop")
	if !strings.Contains(out, "golive-controller stop [flags]") || strings.Contains(out, "revoke [flags]") {
		t.Errorf("stop --help:\n%s", out)
	}
}
