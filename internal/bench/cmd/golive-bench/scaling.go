package main

import (
	"context"
	"io"
	"time"

	"github.com/golive/golive/internal/bench/scalebench"
)

func runScaling(ctx context.Context, w io.Writer, cfg config) error {
	o := scalebench.Options{ControllerBin: cfg.controller, AgentBin: cfg.agent, Log: cfg.progress}
	if cfg.quick {
		o.Base, o.Peak, o.Target, o.Hold, o.Window = 50, 250, 60, 5*time.Second, 10*time.Second
	}
	res, err := scalebench.Run(ctx, o)
	if res.Before.Requests > 0 {
		if perr := scalebench.PrintTable(w, res); perr != nil && err == nil {
			err = perr
		}
	}
	return err
}
