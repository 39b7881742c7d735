//go:build !unix

package agent

import (
	"errors"
	"os"
)

var errLocked = errors.New("locked by another process")

// flock is not implemented off unix: the agent runs on Linux hosts.
func flock(*os.File) error { return nil }
