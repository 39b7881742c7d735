package main

import (
	"context"
	"io"

	"github.com/golive/golive/internal/bench/dnsbench"
)

func runDNS(ctx context.Context, w io.Writer, cfg config) error {
	o := dnsbench.Options{ControllerBin: cfg.controller, Log: cfg.progress}
	if cfg.quick {
		o.Reps, o.Updates = 3, 50
	}
	if cfg.rounds > 0 {
		o.Reps = cfg.rounds
	}
	res, err := dnsbench.Run(ctx, o)
	if perr := dnsbench.PrintTable(w, res); perr != nil && err == nil {
		err = perr
	}
	return err
}
