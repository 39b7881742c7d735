// Package cli is the command line of both golive binaries: the controller's
// `serve` daemon and operator commands, and the agent's `run` and `check`.
//
// Exit codes: 0 ok, 1 the operation failed, 2 the command line is wrong.
// Errors are one sentence on stderr that says what to do next.
package cli

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"strings"

	"github.com/hashicorp/go-hclog"
	"github.com/spf13/cobra"
	"google.golang.org/grpc/status"
)

// usageError marks a wrong command line (exit 2).
type usageError struct{ err error }

func (u usageError) Error() string { return u.err.Error() }
func (u usageError) Unwrap() error { return u.err }

func usagef(format string, args ...any) error { return usageError{fmt.Errorf(format, args...)} }

// exactArgs is cobra.ExactArgs that returns a usage error.
func exactArgs(n int, what string) cobra.PositionalArgs {
	return func(cmd *cobra.Command, args []string) error {
		if len(args) != n {
			return usagef("%s takes %s (got %d arguments); see `%s --help`", cmd.CommandPath(), what, len(args), cmd.CommandPath())
		}
		return nil
	}
}

func noArgs(cmd *cobra.Command, args []string) error {
	if len(args) != 0 {
		return usagef("%s takes no arguments (got %q); see `%s --help`", cmd.CommandPath(), strings.Join(args, " "), cmd.CommandPath())
	}
	return nil
}

// execute runs root with args and maps the outcome to an exit code.
func execute(ctx context.Context, root *cobra.Command, args []string, stdout, stderr io.Writer) int {
	root.SetArgs(args)
	root.SetOut(stdout)
	root.SetErr(stderr)
	root.SilenceErrors = true
	root.SilenceUsage = true
	root.SetFlagErrorFunc(func(c *cobra.Command, err error) error {
		return usageError{fmt.Errorf("%w; see `%s --help`", err, c.CommandPath())}
	})
	err := root.ExecuteContext(ctx)
	if err == nil {
		return 0
	}
	var ue usageError
	if errors.As(err, &ue) || strings.HasPrefix(err.Error(), "unknown command") || strings.HasPrefix(err.Error(), "unknown flag") {
		fmt.Fprintf(stderr, "%s: %v\n", root.Name(), err)
		return 2
	}
	if st, ok := status.FromError(err); ok {
		fmt.Fprintf(stderr, "%s: %s\n", root.Name(), st.Message())
		return 1
	}
	fmt.Fprintf(stderr, "%s: %v\n", root.Name(), err)
	return 1
}

type logFlags struct {
	level string
	json  bool
}

func (l *logFlags) add(cmd *cobra.Command) {
	cmd.Flags().StringVar(&l.level, "log-level", "info", "log level: trace, debug, info, warn, error")
	cmd.Flags().BoolVar(&l.json, "log-json", false, "log as JSON lines")
}

func (l *logFlags) logger(name string, w io.Writer) (hclog.Logger, error) {
	lvl := hclog.LevelFromString(l.level)
	if lvl == hclog.NoLevel {
		return nil, usagef("--log-level %q: want trace, debug, info, warn or error", l.level)
	}
	if w == nil {
		w = os.Stderr
	}
	return hclog.New(&hclog.LoggerOptions{Name: name, Level: lvl, JSONFormat: l.json, Output: w}), nil
}
