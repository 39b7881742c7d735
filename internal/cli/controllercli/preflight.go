package controllercli

import (
	"errors"

	"github.com/spf13/cobra"

	"github.com/golive/golive/internal/cli"
)

// TODO(issue 5): the preflight command.
func newPreflightCmd(co *clientOpts) *cobra.Command {
	return &cobra.Command{
		Use:    "preflight",
		Short:  "not implemented yet",
		Hidden: true,
		Args:   cli.NoArgs,
		RunE:   func(*cobra.Command, []string) error { return errors.New("not implemented yet") },
	}
}
