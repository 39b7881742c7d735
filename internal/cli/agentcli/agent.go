// Package agentcli is golive-agent's command line: `run` and `check`.
package agentcli

import (
	"context"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/spf13/cobra"

	"github.com/golive/golive/internal/cli"
	"github.com/golive/golive/internal/pki"

	"github.com/golive/golive/internal/agent"
	"github.com/golive/golive/internal/agentconfig"
)

// Main runs golive-agent with args and returns the exit code.
func Main(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	root := &cobra.Command{Use: "golive-agent", Short: "golive agent: `run` is the daemon on each production host; `check` validates its config",
		Example: "  golive-agent check --config /etc/golive/agent.hcl\n  golive-agent run --config /etc/golive/agent.hcl --controller ctl-1:7400,ctl-2:7400"}
	root.AddCommand(newAgentRunCmd(stderr), newAgentCheckCmd())
	cli.AddVersion(root)
	return cli.Execute(ctx, root, args, stdout, stderr)
}

// loadAgentConfig reads the optional config file and applies flags over it.
func loadAgentConfig(path, hostID, stateDir string, hostSet, stateSet bool) (*agentconfig.Config, error) {
	cfg := agentconfig.Default()
	if path != "" {
		c, err := agentconfig.Load(path)
		if err != nil {
			return nil, err
		}
		cfg = c
	}
	if hostSet || cfg.HostID == "" {
		cfg.SetHostID(hostID)
	}
	if stateSet || cfg.StateDir == "" {
		abs, err := filepath.Abs(stateDir)
		if err != nil {
			return nil, fmt.Errorf("--state-dir %q: %w", stateDir, err)
		}
		cfg.SetStateDir(abs)
	}
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	return cfg, nil
}

func newAgentRunCmd(stderr io.Writer) *cobra.Command {
	var lf cli.LogFlags
	var controllers, hostID, stateDir, configPath, metricsAddr, grpcAddr string
	var labels []string
	host, _ := os.Hostname()
	cmd := &cobra.Command{
		Use:   "run",
		Short: "run the agent daemon (one per --state-dir: a second one exits 1, naming the holder's pid)",
		Example: "  golive-agent run --config /etc/golive/agent.hcl\n" +
			"  golive-agent run --controller 127.0.0.1:7400 --host-id web-1 --state-dir /tmp/web-1 --label role=web",
		Args: cli.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			cfg, err := loadAgentConfig(configPath, hostID, stateDir, cmd.Flags().Changed("host-id"), cmd.Flags().Changed("state-dir"))
			if err != nil {
				return cli.UsageError{Err: err}
			}
			lbl := map[string]string{}
			for k, v := range cfg.Labels {
				lbl[k] = v
			}
			for _, l := range labels {
				k, v, ok := strings.Cut(l, "=")
				if !ok || k == "" {
					return cli.Usagef("--label %q: want key=value", l)
				}
				lbl[k] = v
			}
			addrs := controllers
			if addrs == "" {
				addrs = cfg.Controller.Address
			}
			if addrs == "" {
				addrs = "127.0.0.1:7400"
			}
			acfg := agent.Config{
				Controllers: strings.Split(addrs, ","), HostID: cfg.HostID, StateDir: cfg.StateDir,
				MetricsAddr: metricsAddr, GRPCAddr: grpcAddr, Labels: lbl,
			}
			log, err := lf.Logger("golive-agent", stderr)
			if err != nil {
				return err
			}
			tf := pki.Files{CA: cfg.Controller.CAFile, Cert: cfg.Controller.CertFile, Key: cfg.Controller.KeyFile}
			if tf.Set() {
				if acfg.TLS, err = tf.ClientConfig(""); err != nil {
					return fmt.Errorf("controller TLS: %w", err)
				}
			} else {
				log.Warn("NO TLS to the controller: plaintext, for a loopback trial only; set controller { ca_file, cert_file, key_file } in production")
			}
			// One agent per state dir, taken before recovery touches it.
			lock, err := agent.LockStateDir(cfg.StateDir)
			if err != nil {
				return err
			}
			defer lock.Unlock()
			acfg.Registry = prometheus.NewRegistry()
			if acfg.Services, err = agent.ServicesFromConfig(cmd.Context(), cfg, log, acfg.Registry); err != nil {
				return err
			}
			return agent.Run(cmd.Context(), acfg, log)
		},
	}
	f := cmd.Flags()
	f.StringVar(&controllers, "controller", "", "controller address(es), comma-separated: any replica (default: config, else 127.0.0.1:7400)")
	f.StringVar(&hostID, "host-id", host, "this host's id (the host's name unless set)")
	f.StringVar(&stateDir, "state-dir", "/var/lib/golive", "state directory (releases, journals, backups)")
	f.StringVar(&configPath, "config", "", "agent config file (HCL)")
	f.StringVar(&metricsAddr, "metrics-addr", "127.0.0.1:7402", "HTTP address for /metrics and /status")
	f.StringVar(&grpcAddr, "grpc-addr", "127.0.0.1:7403", "gRPC address for grpc.health.v1 (empty: off)")
	f.StringArrayVar(&labels, "label", nil, "extra label key=value (repeatable)")
	lf.Add(cmd)
	return cmd
}

func newAgentCheckCmd() *cobra.Command {
	var configPath string
	cmd := &cobra.Command{
		Use:     "check",
		Short:   "validate an agent config file; errors name file:line",
		Example: "  golive-agent check --config /etc/golive/agent.hcl",
		Args:    cli.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if configPath == "" {
				return cli.Usagef("check needs --config FILE")
			}
			// A bad config is a usage error (exit 2), as it is for `run`.
			cfg, err := agentconfig.Load(configPath)
			if err != nil {
				return cli.UsageError{Err: err}
			}
			if err := cfg.Validate(); err != nil {
				return cli.UsageError{Err: err}
			}
			fmt.Fprintf(cmd.OutOrStdout(), "%s: ok (host %s, %d services)\n", configPath, cfg.HostID, len(cfg.Services))
			return nil
		},
	}
	cmd.Flags().StringVar(&configPath, "config", "", "agent config file (HCL)")
	return cmd
}
