package main

import (
	"context"
	"io"

	"github.com/golive/golive/internal/bench/simrollout"
)

func runRollout1000(ctx context.Context, w io.Writer, cfg config) error {
	opts := simrollout.Options{ControllerBin: cfg.controller, ControllerEnv: cfg.env, Log: cfg.progress}
	if cfg.pprofAddr != "" {
		opts.ControllerArgs = append(opts.ControllerArgs, "--pprof-addr", cfg.pprofAddr)
	}
	if cfg.quick {
		opts.Hosts = 100
	}
	if len(cfg.agents) > 0 {
		opts.Hosts = cfg.agents[0]
	}
	res, err := simrollout.Run(ctx, opts)
	if len(res.Phases) > 0 {
		if perr := simrollout.PrintTable(w, res); perr != nil && err == nil {
			err = perr
		}
	}
	return err
}
