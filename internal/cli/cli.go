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

// UsageError marks a wrong command line (exit 2).
type UsageError struct{ Err error }

func (u UsageError) Error() string { return u.Err.Error() }
func (u UsageError) Unwrap() error { return u.Err }

// Usagef returns a usage error (exit 2).
func Usagef(format string, args ...any) error { return UsageError{fmt.Errorf(format, args...)} }

// ExactArgs is cobra.ExactArgs that returns a usage error.
func ExactArgs(n int, what string) cobra.PositionalArgs {
	return func(cmd *cobra.Command, args []string) error {
		if len(args) != n {
			return Usagef("%s takes %s (got %d arguments); see `%s --help`", cmd.CommandPath(), what, len(args), cmd.CommandPath())
		}
		return nil
	}
}

// NoArgs refuses positional arguments with a usage error.
func NoArgs(cmd *cobra.Command, args []string) error {
	if len(args) != 0 {
		return Usagef("%s takes no arguments (got %q); see `%s --help`", cmd.CommandPath(), strings.Join(args, " "), cmd.CommandPath())
	}
	return nil
}

// Execute runs root with args and maps the outcome to an exit code.
func Execute(ctx context.Context, root *cobra.Command, args []string, stdout, stderr io.Writer) int {
	root.SetArgs(args)
	root.SetOut(stdout)
	root.SetErr(stderr)
	root.SilenceErrors = true
	root.SilenceUsage = true
	root.SetFlagErrorFunc(func(c *cobra.Command, err error) error {
		return UsageError{fmt.Errorf("%w; see `%s --help`", err, c.CommandPath())}
	})
	err := root.ExecuteContext(ctx)
	if err == nil {
		return 0
	}
	var ue UsageError
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

// LogFlags are the daemons' --log-level and --log-json.
type LogFlags struct {
	level string
	json  bool
}

// Add registers the flags on cmd.
func (l *LogFlags) Add(cmd *cobra.Command) {
	cmd.Flags().StringVar(&l.level, "log-level", "info", "log level: trace, debug, info, warn, error")
	cmd.Flags().BoolVar(&l.json, "log-json", false, "log as JSON lines")
}

// Logger builds the hclog logger.
func (l *LogFlags) Logger(name string, w io.Writer) (hclog.Logger, error) {
	lvl := hclog.LevelFromString(l.level)
	if lvl == hclog.NoLevel {
		return nil, Usagef("--log-level %q: want trace, debug, info, warn or error", l.level)
	}
	if w == nil {
		w = os.Stderr
	}
	return hclog.New(&hclog.LoggerOptions{Name: name, Level: lvl, JSONFormat: l.json, Output: w}), nil
}
