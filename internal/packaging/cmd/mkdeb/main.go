// Command mkdeb builds dist/golive-controller_<ver>_amd64.deb and
// dist/golive-agent_<ver>_amd64.deb (see package packaging); `make package`
// runs it from the repository root.
package main

import (
	"context"
	"flag"
	"fmt"
	"os"
	"os/signal"
	"syscall"

	"github.com/golive/golive/internal/packaging"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	err := run(ctx, os.Args[1:])
	stop()
	if err != nil {
		fmt.Fprintln(os.Stderr, "mkdeb:", err)
		os.Exit(1)
	}
}

func run(ctx context.Context, args []string) error {
	fs := flag.NewFlagSet("mkdeb", flag.ContinueOnError)
	out := fs.String("out", "dist", "directory to write the .deb files to")
	version := fs.String("version", "", "Debian version (default: from git describe)")
	binVersion := fs.String("binary-version", "", "version stamped into the binaries (default: git describe --always --dirty)")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if fs.NArg() > 0 {
		return fmt.Errorf("unexpected arguments %q", fs.Args())
	}
	repo, err := os.Getwd()
	if err != nil {
		return err
	}
	debs, err := packaging.Build(ctx, packaging.Options{
		Repo: repo, Out: *out, Version: *version, BinaryVersion: *binVersion,
		Go:  os.Getenv("GO"),
		Log: func(format string, args ...any) { fmt.Fprintf(os.Stderr, "mkdeb: "+format+"\n", args...) },
	})
	if err != nil {
		return err
	}
	for _, d := range debs {
		fmt.Println(d)
	}
	return nil
}
