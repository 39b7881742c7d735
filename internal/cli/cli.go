// Package cli is the command line of both golive binaries: the controller's
// `serve` daemon and operator commands, and the agent's `run` and `check`.
//
// Exit codes: 0 ok, 1 the operation failed, 2 the command line is wrong
// (wherever it is found: here, or by the controller, which answers
// InvalidArgument), 130 interrupted (Ctrl-C). Errors are one sentence on
// stderr that says what to do next.
package cli

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"regexp"
	"strings"

	"github.com/golive/golive/internal/version"
	"github.com/hashicorp/go-hclog"
	"github.com/spf13/cobra"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

// UsageError marks a wrong command line (exit 2).
type UsageError struct{ Err error }

func (u UsageError) Error() string { return u.Err.Error() }
func (u UsageError) Unwrap() error { return u.Err }

// Usagef returns a usage error (exit 2).
func Usagef(format string, args ...any) error { return UsageError{fmt.Errorf(format, args...)} }

// Interrupted ends a command the operator stopped with Ctrl-C (exit 130):
// Note, if set, is printed instead of an error.
type Interrupted struct{ Note string }

func (i Interrupted) Error() string { return "interrupted" }

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
		return UsageError{fmt.Errorf("%s; see `%s --help`", flagError(c, err), c.CommandPath())}
	})
	err := root.ExecuteContext(ctx)
	if err == nil {
		return 0
	}
	var intr Interrupted
	if errors.As(err, &intr) {
		if intr.Note != "" {
			fmt.Fprintln(stderr, intr.Note)
		}
		return 130
	}
	var ue UsageError
	if errors.As(err, &ue) || strings.HasPrefix(err.Error(), "unknown command") || strings.HasPrefix(err.Error(), "unknown flag") {
		fmt.Fprintf(stderr, "%s: %v\n", root.Name(), err)
		return 2
	}
	if st, ok := status.FromError(err); ok {
		fmt.Fprintf(stderr, "%s: %s\n", root.Name(), st.Message())
		if st.Code() == codes.InvalidArgument {
			return 2
		}
		return 1
	}
	fmt.Fprintf(stderr, "%s: %v\n", root.Name(), err)
	return 1
}

// badFlagValue is pflag's `invalid argument "-1" for "-c, --canary" flag: strconv.ParseUint: ...`.
var badFlagValue = regexp.MustCompile(`^invalid argument (".*") for "(?:-\w, )?--([\w-]+)" flag: `)

// flagError rewrites pflag's parse errors as the flag's name, the value
// given and what the flag wants (no strconv text).
func flagError(c *cobra.Command, err error) string {
	m := badFlagValue.FindStringSubmatch(err.Error())
	if m == nil {
		return err.Error()
	}
	f := c.Flags().Lookup(m[2])
	if f == nil {
		return err.Error()
	}
	return fmt.Sprintf("--%s %s: want %s", m[2], m[1], wantOfType(f.Value.Type()))
}

func wantOfType(typ string) string {
	switch typ {
	case "uint", "uint8", "uint16", "uint32", "uint64":
		return "a whole number of 0 or more (e.g. 1)"
	case "int", "int8", "int16", "int32", "int64":
		return "a whole number (e.g. 5)"
	case "float32", "float64":
		return "a number (e.g. 0.5)"
	case "duration":
		return "a duration such as 200ms, 30s, 5m or 1h"
	case "bool":
		return "true or false"
	}
	return "a " + typ
}

// AddVersion gives root a `version` subcommand and a --version flag, both
// printing the build's stamped version.
func AddVersion(root *cobra.Command) {
	root.Version = version.Version
	root.SetVersionTemplate("{{.Name}} {{.Version}}\n")
	root.AddCommand(&cobra.Command{
		Use:     "version",
		Short:   "print this build's version",
		Example: "  " + root.Name() + " version",
		Args:    NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			_, err := fmt.Fprintf(cmd.OutOrStdout(), "%s %s\n", root.Name(), version.Version)
			return err
		},
	})
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
