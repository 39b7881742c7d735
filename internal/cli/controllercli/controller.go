// Package controllercli is golive-controller's command line: `serve` and
// the operator commands.
package controllercli

import (
	"context"
	"fmt"
	"io"
	"os"
	"os/user"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"

	"github.com/golive/golive/internal/artifact"
	"github.com/golive/golive/internal/cli"
	"github.com/golive/golive/internal/pki"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/durationpb"

	"github.com/golive/golive/internal/analysis"
	"github.com/golive/golive/internal/approval"
	"github.com/golive/golive/internal/controller"
	"github.com/golive/golive/internal/notify"
	"github.com/golive/golive/internal/preflight"
	"github.com/golive/golive/internal/rollout"
	"github.com/golive/golive/internal/version"
	golivev1 "github.com/golive/golive/proto/golive/v1"
)

// Main runs golive-controller with args and returns the exit code.
func Main(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	return cli.Execute(ctx, newControllerCmd(stdout, stderr), args, stdout, stderr)
}

type clientOpts struct {
	addr       string
	output     string
	actor      string
	timeout    time.Duration
	tls        pki.Files
	serverName string
	// warn receives warnings about an answer (a stale one while etcd has
	// no quorum).
	warn io.Writer
}

func defaultActor() string {
	if u, err := user.Current(); err == nil && u.Username != "" {
		return u.Username
	}
	return "unknown"
}

func newControllerCmd(stdout, stderr io.Writer) *cobra.Command {
	root := &cobra.Command{
		Use:   "golive-controller",
		Short: "golive controller: `serve` runs the daemon; the other commands operate it",
	}
	co := &clientOpts{warn: stderr}
	addr := os.Getenv("GOLIVE_ADDR")
	if addr == "" {
		addr = "127.0.0.1:7400"
	}
	root.PersistentFlags().StringVar(&co.addr, "addr", addr, "controller gRPC address (env GOLIVE_ADDR)")
	root.PersistentFlags().StringVarP(&co.output, "output", "o", "text", "output format: text or json")
	root.PersistentFlags().StringVar(&co.actor, "as", defaultActor(), "who you are, for the audit log (without TLS; with mutual TLS your certificate names you)")
	root.PersistentFlags().DurationVar(&co.timeout, "timeout", 15*time.Second, "RPC timeout")
	root.PersistentFlags().StringVar(&co.tls.CA, "tls-ca", os.Getenv("GOLIVE_TLS_CA"), "CA certificate for mutual TLS (env GOLIVE_TLS_CA)")
	root.PersistentFlags().StringVar(&co.tls.Cert, "tls-cert", os.Getenv("GOLIVE_TLS_CERT"), "your operator certificate; its name is your audit identity (env GOLIVE_TLS_CERT)")
	root.PersistentFlags().StringVar(&co.tls.Key, "tls-key", os.Getenv("GOLIVE_TLS_KEY"), "your operator key (env GOLIVE_TLS_KEY)")
	root.PersistentFlags().StringVar(&co.serverName, "tls-server-name", "", "name expected in the controller's certificate (default: the --addr host)")
	root.PersistentPreRunE = func(cmd *cobra.Command, _ []string) error {
		if co.output != "text" && co.output != "json" {
			return cli.Usagef("-o %q: want text or json", co.output)
		}
		return nil
	}
	root.AddCommand(newServeCmd(stderr),
		newAuthorizeCmd(co), newRevokeCmd(co, "revoke"), newRevokeCmd(co, "stop"), newApprovalCmd(co), newStatusCmd(co), newAgentsCmd(co),
		newDeployCmd(co), newRollbackCmd(co), newRolloutCmd(co),
		newHistoryCmd(co), newWatchCmd(co), newPauseCmd(co), newResumeCmd(co), newAbortCmd(co),
		newDashboardCmd(co), newPreflightCmd(co), newBackupsCmd(co), newAuditCmd(co), newPKICmd(), newKeygenCmd(), newSignCmd())
	root.AddCommand(newDNSCmd(co))
	root.AddCommand(newScaleCmd(co))
	cli.AddVersion(root)
	root.RegisterFlagCompletionFunc("output", completeOutput)
	setExamples(root)
	return root
}

func newServeCmd(stderr io.Writer) *cobra.Command {
	cfg := controller.DefaultConfig()
	var lf cli.LogFlags
	var endpoints string
	var webhooks, defaultAnalysis []string
	var configFile string
	cmd := &cobra.Command{
		Use:   "serve",
		Short: "run the controller daemon",
		Args:  cli.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if configFile != "" {
				if err := applyServeConfig(cmd, configFile); err != nil {
					return cli.UsageError{Err: err}
				}
			}
			if endpoints != "" {
				cfg.EtcdEndpoints = strings.Split(endpoints, ",")
			}
			for _, w := range webhooks {
				r, err := notify.ParseReceiverFlag(w)
				if err != nil {
					return cli.Usagef("--webhook: %v", err)
				}
				cfg.Webhooks = append(cfg.Webhooks, r)
			}
			for _, d := range defaultAnalysis {
				svc, file, ok := strings.Cut(d, "=")
				if !ok || svc == "" || file == "" {
					return cli.Usagef("--default-analysis %q: want SERVICE=FILE", d)
				}
				if cfg.DefaultAnalysis == nil {
					cfg.DefaultAnalysis = map[string][]string{}
				}
				cfg.DefaultAnalysis[svc] = append(cfg.DefaultAnalysis[svc], file)
			}
			if err := cfg.Validate(); err != nil {
				return cli.UsageError{Err: err}
			}
			log, err := lf.Logger("golive-controller", stderr)
			if err != nil {
				return err
			}
			log.Info("golive-controller starting", "version", version.Version, "replica_id", cfg.ReplicaID)
			return controller.Run(cmd.Context(), cfg, log)
		},
	}
	f := cmd.Flags()
	f.StringVar(&configFile, configFlag, "", "HCL file of serve's settings (keys: these flags' names with _ for -, e.g. max_approval_ttl); flags given here win over it")
	f.StringVar(&cfg.Listen, "listen", cfg.Listen, "gRPC listen address (agents and operators)")
	f.StringVar(&cfg.MetricsAddr, "metrics-addr", cfg.MetricsAddr, "HTTP listen address for /metrics (and /artifacts/)")
	f.StringVar(&cfg.DashboardAddr, "dashboard-addr", "127.0.0.1:7404", "web dashboard listen address (empty: none; without TLS loopback only); sign in with golive-controller dashboard login")
	f.StringVar(&cfg.DataDir, "data-dir", cfg.DataDir, "data directory (embedded etcd lives here)")
	f.StringVar(&endpoints, "etcd-endpoints", "", "external etcd endpoints, comma-separated (default: run an embedded etcd)")
	f.StringVar(&cfg.EtcdPrefix, "etcd-prefix", cfg.EtcdPrefix, "prefix of every etcd key")
	f.StringVar(&cfg.EmbeddedClient, "embedded-etcd-client", cfg.EmbeddedClient, "embedded etcd client address")
	f.StringVar(&cfg.EmbeddedPeer, "embedded-etcd-peer", cfg.EmbeddedPeer, "embedded etcd peer address")
	f.DurationVar(&cfg.MaxApprovalTTL, "max-approval-ttl", cfg.MaxApprovalTTL, "longest approval an operator may grant")
	f.StringVar(&cfg.ReplicaID, "replica-id", cfg.ReplicaID, "this replica's name (the host's name unless set)")
	f.StringVar(&cfg.ArtifactsDir, "artifacts-dir", "", "serve this directory at http://METRICS-ADDR/artifacts/")
	f.DurationVar(&cfg.LeaderTTL, "leader-ttl", cfg.LeaderTTL, "leader session TTL: a dead leader is replaced within about this long")
	f.DurationVar(&cfg.HeartbeatInterval, "heartbeat-interval", cfg.HeartbeatInterval, "how often agents send heartbeats; 3 missed = lost")
	f.StringArrayVar(&webhooks, "webhook", nil, "send approval and rollout events to json=URL or slack=URL (repeatable)")
	f.StringVar(&cfg.Prometheus.URL, "prometheus-url", "", "the Prometheus that gates' PromQL analysis queries (e.g. http://127.0.0.1:9090)")
	f.StringVar(&cfg.Prometheus.BearerTokenFile, "prometheus-bearer-token-file", "", "file with a bearer token for --prometheus-url (read at every query)")
	f.StringVar(&cfg.Prometheus.CAFile, "prometheus-ca-file", "", "PEM CA bundle that verifies an https --prometheus-url")
	f.StringArrayVar(&defaultAnalysis, "default-analysis", nil, "SERVICE=FILE: an analysis every deploy of SERVICE runs (repeatable)")
	f.StringVar(&cfg.TLS.CA, "tls-ca", "", "`FILE` of the CA that signs agent and operator certificates (mutual TLS 1.3; see golive-controller pki)")
	f.StringVar(&cfg.TLS.Cert, "tls-cert", "", "the controller's certificate")
	f.StringVar(&cfg.TLS.Key, "tls-key", "", "the controller's key")
	f.BoolVar(&cfg.TwoPersonRule, "two-person-rule", false, "the identity that authorized may not start or resume a deploy under that approval")
	f.Float64Var(&cfg.RateLimit, "rate-limit", cfg.RateLimit, "control calls per second per identity (0: no limit; revoke, pause and abort are never limited)")
	f.IntVar(&cfg.RateBurst, "rate-burst", cfg.RateBurst, "burst of control calls per identity")
	f.Float64Var(&cfg.AcceptRate, "accept-rate", cfg.AcceptRate, "new connections accepted per second, to absorb reconnect storms (0: no pacing)")
	f.StringVar(&cfg.PprofAddr, "pprof-addr", "", "serve net/http/pprof on this address (e.g. 127.0.0.1:7402; keep it private)")
	f.StringVar(&cfg.DNSConfig, "dns-config", "", "HCL `FILE` of the DNS zones (TSIG keys), pools and failovers the controller manages (see deploy/examples/dns.hcl)")
	lf.Add(cmd)
	hideClientFlags(cmd)
	return cmd
}

func (co *clientOpts) dial() (*grpc.ClientConn, error) {
	creds := insecure.NewCredentials()
	if co.tls.Set() {
		if err := co.tls.Validate(); err != nil {
			return nil, cli.UsageError{Err: fmt.Errorf("--tls-ca/--tls-cert/--tls-key: %w", err)}
		}
		tc, err := co.tls.ClientConfig(co.serverName)
		if err != nil {
			return nil, err
		}
		creds = credentials.NewTLS(tc)
	}
	conn, err := grpc.NewClient(co.addr, grpc.WithTransportCredentials(creds), grpc.WithChainUnaryInterceptor(co.staleWarning))
	if err != nil {
		return nil, fmt.Errorf("controller address %q: %w", co.addr, err)
	}
	return conn, nil
}

// call dials the controller and runs f with a deadline and the actor.
func (co *clientOpts) call(ctx context.Context, f func(context.Context, golivev1.ControlServiceClient) error) error {
	conn, err := co.dial()
	if err != nil {
		return err
	}
	defer conn.Close()
	ctx, cancel := context.WithTimeout(ctx, co.timeout)
	defer cancel()
	ctx = metadata.AppendToOutgoingContext(ctx, controller.ActorMetadataKey, co.actor)
	err = f(ctx, golivev1.NewControlServiceClient(conn))
	if err != nil && ctx.Err() == context.DeadlineExceeded {
		return fmt.Errorf("no answer from the controller at %s within %s: is `golive-controller serve` running there? (set --addr or GOLIVE_ADDR)", co.addr, co.timeout)
	}
	return co.connError(err)
}

// connError turns a failure to reach the controller (refused, unresolvable,
// a bad address, a TLS handshake it refused) into one sentence that says what
// to do; any other error is returned as it is.
func (co *clientOpts) connError(err error) error {
	st, ok := status.FromError(err)
	if !ok || err == nil || st.Code() != codes.Unavailable || !isTransportFailure(st.Message()) {
		return err
	}
	msg := st.Message()
	if !co.tls.Set() && (strings.Contains(msg, "EOF") || strings.Contains(msg, "connection closed") || strings.Contains(msg, "http2")) {
		// A mutual-TLS controller hangs up on a plaintext client.
		return fmt.Errorf("the controller at %s closed the connection (%s): it likely requires mutual TLS: give your operator certificate with --tls-ca, --tls-cert and --tls-key (or GOLIVE_TLS_*)", co.addr, lastPart(msg))
	}
	hungUp := strings.Contains(msg, "broken pipe") || strings.Contains(msg, "connection reset") || strings.Contains(msg, "EOF")
	if strings.Contains(msg, "tls:") || strings.Contains(msg, "certificate") || strings.Contains(msg, "handshake") || co.tls.Set() && hungUp {
		hint := "give your operator certificate with --tls-ca, --tls-cert and --tls-key (or GOLIVE_TLS_*)"
		if co.tls.Set() {
			hint = "check that --tls-ca signed the controller's certificate and the controller's CA signed yours"
		}
		return fmt.Errorf("the controller at %s refused the TLS connection (%s): %s", co.addr, lastPart(msg), hint)
	}
	return fmt.Errorf("cannot reach the controller at %s (%s): is `golive-controller serve` running there? (set --addr or GOLIVE_ADDR)", co.addr, lastPart(msg))
}

// isTransportFailure tells a connection that could not be made from an
// Unavailable answer of the controller itself (e.g. etcd down).
func isTransportFailure(msg string) bool {
	for _, s := range []string{"connection error", "dial", "name resolver", "produced zero addresses", "transport:", "missing port", "tls:", "handshake", "connection closed", "EOF", "broken pipe", "connection reset"} {
		if strings.Contains(msg, s) {
			return true
		}
	}
	return false
}

func lastPart(msg string) string {
	if i := strings.LastIndex(msg, ": "); i >= 0 {
		return strings.TrimSuffix(msg[i+2:], "\"")
	}
	return msg
}

// run calls the controller with f and prints its answer: as JSON (of
// jsonOf: a proto message or a value from jsonValue) with -o json, else as
// text.
func run[T any](cmd *cobra.Command, co *clientOpts, f func(context.Context, golivev1.ControlServiceClient) (T, error),
	jsonOf func(T) any, text func(io.Writer, T) error) error {
	var resp T
	err := co.call(cmd.Context(), func(ctx context.Context, c golivev1.ControlServiceClient) (err error) {
		resp, err = f(ctx, c)
		return err
	})
	if err != nil {
		return err
	}
	if co.output == "json" {
		return co.printJSON(cmd.OutOrStdout(), jsonOf(resp))
	}
	return text(cmd.OutOrStdout(), resp)
}

// printJSON prints v (a proto message, or a value built by jsonValue) as one
// indented JSON document.
func (co *clientOpts) printJSON(w io.Writer, v any) error {
	if m, ok := v.(proto.Message); ok {
		v = jsonValue(m)
	}
	return writeJSON(w, v, false)
}

func newAuthorizeCmd(co *clientOpts) *cobra.Command {
	var ttl time.Duration
	var reason string
	var extend bool
	cmd := &cobra.Command{
		Use:   "authorize PHRASE",
		Short: "turn automation on for a bounded time with an accepted phrase",
		Long: "Turn automation on. PHRASE must be one of: " + strings.Join(quoteAll(approval.AcceptedPhrases()), ", ") +
			" (case and spacing do not matter).\n\n" +
			"With --extend, the live approval lasts --ttl from now instead (same phrase rule, bounded by the\n" +
			"controller's --max-approval-ttl, audited, --reason required): it keeps its fencing token, so\n" +
			"rollouts running under it go on. Without --extend a live approval is never replaced.",
		Args: cli.ExactArgs(1, `one PHRASE (quote it: authorize "start automation now")`),
		RunE: func(cmd *cobra.Command, args []string) error {
			if ttl <= 0 {
				return cli.Usagef("--ttl %s: want a positive duration (e.g. 30m or 1h)", ttl)
			}
			if extend && strings.TrimSpace(reason) == "" {
				return cli.Usagef("--extend needs --reason TEXT: say why automation stays on longer")
			}
			return run(cmd, co, func(ctx context.Context, c golivev1.ControlServiceClient) (*golivev1.AuthorizeResponse, error) {
				resp, err := c.Authorize(ctx, &golivev1.AuthorizeRequest{Phrase: args[0], Ttl: durationpb.New(ttl), Reason: reason, Extend: extend})
				if st, ok := status.FromError(err); ok && st.Code() == codes.FailedPrecondition && !extend && strings.Contains(st.Message(), "already authorized") {
					return nil, fmt.Errorf("%s; or make it last longer: golive-controller authorize %q --extend --ttl %s --reason TEXT", st.Message(), args[0], ttl)
				}
				return resp, err
			}, func(resp *golivev1.AuthorizeResponse) any { return resp.Approval }, func(w io.Writer, resp *golivev1.AuthorizeResponse) error {
				a := resp.Approval
				if extend {
					fmt.Fprintf(w, "automation EXTENDED until %s (granted by %s, fencing token %d unchanged)\nstop it at any moment: golive-controller revoke\n",
						a.ExpiresAt.AsTime().Local().Format(time.RFC3339), a.GrantedBy, a.FencingToken)
					return nil
				}
				fmt.Fprintf(w, "automation AUTHORIZED by %s until %s (fencing token %d)\nstop it at any moment: golive-controller revoke\n",
					a.GrantedBy, a.ExpiresAt.AsTime().Local().Format(time.RFC3339), a.FencingToken)
				return nil
			})
		},
	}
	cmd.Flags().DurationVar(&ttl, "ttl", time.Hour, "how long the approval lasts (bounded by the controller's --max-approval-ttl); with --extend, from now")
	cmd.Flags().BoolVar(&extend, "extend", false, "extend the live approval to --ttl from now, keeping its fencing token (needs --reason; audited)")
	cmd.Flags().StringVar(&reason, "reason", "", "why, for the audit log")
	return cmd
}

func quoteAll(ss []string) []string {
	out := make([]string, len(ss))
	for i, s := range ss {
		out[i] = fmt.Sprintf("%q", s)
	}
	return out
}

// newRevokeCmd is `revoke`, and `stop` (the same command under the word an
// operator reaches for first; its own command, so its help says stop).
func newRevokeCmd(co *clientOpts, use string) *cobra.Command {
	var reason string
	short := "turn automation off now, everywhere"
	if use != "revoke" {
		short += " (same as revoke)"
	}
	cmd := &cobra.Command{
		Use:   use,
		Short: short,
		Args:  cli.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			return run(cmd, co, func(ctx context.Context, c golivev1.ControlServiceClient) (*golivev1.RevokeResponse, error) {
				return c.Revoke(ctx, &golivev1.RevokeRequest{Reason: reason})
			}, func(resp *golivev1.RevokeResponse) any { return resp }, func(w io.Writer, resp *golivev1.RevokeResponse) error {
				if resp.Deferred {
					fmt.Fprintf(w, "automation REVOKED on this controller (fencing token %d): %s\n", resp.FencingToken, resp.Note)
				} else if resp.Revoked {
					fmt.Fprintf(w, "automation REVOKED (fencing token %d is void on every agent)\n", resp.FencingToken)
				} else {
					fmt.Fprintln(w, "automation was already off")
				}
				return nil
			})
		},
	}
	cmd.Flags().StringVar(&reason, "reason", "", "why, for the audit log")
	return cmd
}

func printApproval(w io.Writer, a *golivev1.Approval) {
	if !a.GetActive() {
		fmt.Fprintln(w, "automation: OFF (authorize with: golive-controller authorize \"start automation now\" --ttl 1h --reason TEXT)")
		return
	}
	left := time.Until(a.ExpiresAt.AsTime()).Round(time.Second)
	fmt.Fprintf(w, "automation: ON  token=%d  by=%s  until=%s (%s left)  reason=%q\n",
		a.FencingToken, a.GrantedBy, a.ExpiresAt.AsTime().Local().Format(time.RFC3339), left, a.Reason)
}

func newApprovalCmd(co *clientOpts) *cobra.Command {
	return &cobra.Command{
		Use:   "approval",
		Short: "show the automation approval",
		Args:  cli.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			return run(cmd, co, func(ctx context.Context, c golivev1.ControlServiceClient) (*golivev1.GetApprovalResponse, error) {
				return c.GetApproval(ctx, &golivev1.GetApprovalRequest{})
			}, func(resp *golivev1.GetApprovalResponse) any { return resp.Approval }, func(w io.Writer, resp *golivev1.GetApprovalResponse) error {
				printApproval(w, resp.Approval)
				return nil
			})
		},
	}
}

func newStatusCmd(co *clientOpts) *cobra.Command {
	return &cobra.Command{
		Use:   "status",
		Short: "approval, leader and agents at a glance",
		Args:  cli.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			return run(cmd, co, func(ctx context.Context, c golivev1.ControlServiceClient) (*golivev1.StatusResponse, error) {
				return c.Status(ctx, &golivev1.StatusRequest{})
			}, func(resp *golivev1.StatusResponse) any { return resp }, func(w io.Writer, resp *golivev1.StatusResponse) error {
				printApproval(w, resp.Approval)
				fmt.Fprintf(w, "leader: %s   (answered by replica %s, version %s; this client %s)\n", orDash(resp.Leader), resp.Replica, orDash(resp.ControllerVersion), version.Version)
				fmt.Fprintf(w, "agents: %d connected, %d lost\n", resp.AgentsConnected, resp.AgentsLost)
				for _, r := range resp.Rollouts {
					fmt.Fprintf(w, "rollout %s: %s %s@%s by %s, %d hosts: %s\n", r.Id, r.Kind, r.Service, orDash(r.Release), r.CreatedBy, len(r.Hosts), displayState(r))
					if next := nextStep(r); next != "" {
						fmt.Fprintf(w, "  %s\n", next)
					}
				}
				printDNSStatus(w, resp.Dns, 0)
				return nil
			})
		},
	}
}

func orDash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}

// parseWeight parses a canary weight: "10%" or "10", 1 to 99.
func parseWeight(s string) (uint32, error) {
	n, err := strconv.Atoi(strings.TrimSpace(strings.TrimSuffix(strings.TrimSpace(s), "%")))
	if err != nil {
		return 0, fmt.Errorf("%q: want a percentage such as 10%%", s)
	}
	if n < 1 || n > 99 {
		return 0, fmt.Errorf("%q: want 1%% to 99%%", s)
	}
	return uint32(n), nil
}

func newDeployCmd(co *clientOpts) *cobra.Command {
	req := &golivev1.DeployRequest{}
	var hosts, selector, maxErr string
	var wait bool
	var minHealthy, maxLat, deadline time.Duration
	var sigFile, weight string
	var analysisFiles []string
	cmd := &cobra.Command{
		Use:   "deploy",
		Short: "deploy a release of a service (needs a live approval, except --dry-run)",
		Args:  cli.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if req.Service == "" || req.Release == "" {
				return cli.Usagef("deploy needs --service and --release")
			}
			if err := validateDeployFlags(req, hosts, selector, minHealthy, maxLat, deadline); err != nil {
				return err
			}
			if sigFile != "" {
				b, err := os.ReadFile(sigFile)
				if err != nil {
					return cli.Usagef("--signature-file: %v", err)
				}
				if req.Signature, err = artifact.ParseSignature(string(b)); err != nil {
					return cli.Usagef("--signature-file %s: %v", sigFile, err)
				}
			}
			for _, p := range analysisFiles {
				b, err := os.ReadFile(p)
				if err != nil {
					return cli.Usagef("--analysis: %v", err)
				}
				if _, err := analysis.Parse(b, p); err != nil {
					return cli.Usagef("--analysis: %v", err)
				}
				req.Analysis = append(req.Analysis, &golivev1.AnalysisFile{Name: p, Hcl: string(b)})
			}
			if weight != "" {
				w, err := parseWeight(weight)
				if err != nil {
					return cli.Usagef("--weight: %v", err)
				}
				req.WeightPercent = w
			}
			if hosts != "" {
				req.Hosts = splitList(hosts)
			}
			if selector != "" {
				sel, err := rollout.ParseSelector(selector)
				if err != nil {
					return cli.Usagef("--selector %q: want key=value pairs separated by commas (e.g. role=web,zone=a)", selector)
				}
				req.Selector = sel
			}
			rate, err := rollout.ParseRate(maxErr)
			if err != nil {
				return cli.Usagef("--max-error-rate %q: want a percentage below 100%% (e.g. 0.1%%) or a fraction below 1 (e.g. 0.001)", maxErr)
			}
			req.MaxErrorRate = rate
			req.MinHealthy, req.MaxAvgLatency, req.ProgressDeadline = durationpb.New(minHealthy), durationpb.New(maxLat), durationpb.New(deadline)
			var id string
			err = run(cmd, co, func(ctx context.Context, c golivev1.ControlServiceClient) (*golivev1.DeployResponse, error) {
				if req.WeightPercent > 0 {
					if err := co.checkWeight(ctx, c, req); err != nil {
						return nil, err
					}
				}
				resp, err := c.Deploy(ctx, req)
				if err == nil {
					id = resp.Rollout.GetId()
				}
				return resp, err
			}, func(resp *golivev1.DeployResponse) any {
				if req.DryRun {
					// A plan is not a rollout yet: no id, no creation time.
					return object{{"rollout", jsonValue(resp.Rollout).(object).without("id", "created_at", "updated_at", "fencing_token")}}
				}
				return resp
			}, func(w io.Writer, resp *golivev1.DeployResponse) error {
				if req.DryRun {
					fmt.Fprintf(w, "plan for %s@%s (dry run: nothing written):\n", req.Service, req.Release)
					for _, wv := range resp.Rollout.Waves {
						fmt.Fprintf(w, "  wave %d %-7s %s\n", wv.Index, wv.Name, strings.Join(wv.Hosts, ","))
					}
					return nil
				}
				fmt.Fprintf(w, "rollout %s started: %s@%s on %d hosts in %d waves (follow it: golive-controller watch %s)\n",
					resp.Rollout.Id, req.Service, req.Release, len(resp.Rollout.Hosts), len(resp.Rollout.Waves), resp.Rollout.Id)
				return nil
			})
			if err != nil || !wait || req.DryRun {
				return err
			}
			return co.waitRollout(cmd, id)
		},
	}
	f := cmd.Flags()
	f.StringVar(&req.Service, "service", "", "service name")
	f.StringVar(&req.Release, "release", "", "release id")
	f.StringVar(&req.ArtifactUrl, "artifact", "", "artifact URL (http, https, file)")
	f.StringVar(&req.Sha256, "sha256", "", "artifact sha256 (64 hex digits, as sha256sum prints)")
	f.StringVar(&sigFile, "signature-file", "", "`FILE` of the artifact's ed25519 signature (the FILE.sig golive-controller sign writes); agents with trusted_keys require one")
	f.StringVar(&hosts, "hosts", "", "comma-separated host ids (default: every host that runs the service, or --selector)")
	f.StringVar(&selector, "selector", "", "agent labels key=value,... (all must match)")
	f.Uint32Var(&req.Canary, "canary", 0, "hosts in the first wave (0: no canary)")
	f.StringVar(&req.Batch, "batch", "", "hosts per later wave: N or P% (default: all the rest at once)")
	f.DurationVar(&minHealthy, "min-healthy", rollout.DefaultMinHealthy, "bake time per wave: its hosts must stay within the limits this long")
	f.StringVar(&maxErr, "max-error-rate", "0.1%", "highest error rate a wave's hosts may show (e.g. 0.1% or 0.001)")
	f.DurationVar(&maxLat, "max-avg-latency", rollout.DefaultMaxAvgLatency, "highest average latency a wave's hosts may show")
	f.BoolVar(&req.PauseAfterCanary, "pause-after-canary", false, "halt after the canary passes until golive-controller resume ID")
	f.DurationVar(&deadline, "progress-deadline", rollout.DefaultProgressDeadline, "longest a wave (or the fleet rollback) may take")
	f.StringVar(&weight, "weight", "", "blue-green hosts: send this share of each host's traffic (e.g. 10%) to the new slot for the --min-healthy bake before the full switch")
	f.BoolVar(&req.DryRun, "dry-run", false, "print the waves and their hosts only (needs no approval)")
	f.BoolVar(&wait, "wait", false, "wait until the rollout ends, showing its progress on stderr, then print the outcome (exit 1 unless it succeeded)")
	f.StringSliceVar(&req.SkipChecks, "skip-check", nil, "pre-live check to skip (repeat or comma-separate; audited): "+strings.Join(preflight.Names, ", "))
	f.StringArrayVar(&analysisFiles, "analysis", nil, "PromQL analysis `FILE` (HCL metric blocks) every wave's gate runs on the controller's Prometheus (repeatable)")
	f.Uint64Var(&req.MinRequests, "min-requests", rollout.DefaultMinRequests, "real requests (load balancer counts) a bake must see; fewer pauses the rollout as inconclusive")
	f.Float64Var(&req.MaxErrorRatioVsStable, "max-error-ratio-vs-stable", 0, "also fail a new slot whose error rate is over this many times the stable slot's (0: off)")
	f.StringArrayVar(&req.Dns, "dns", nil, "NAME=POOL: after the last wave passed, point NAME's records at the pool's addresses (a pool of serve --dns-config; repeatable; a rollback of the service restores them)")
	cmd.RegisterFlagCompletionFunc("service", co.completeServices)
	cmd.RegisterFlagCompletionFunc("hosts", co.completeHosts)
	cmd.RegisterFlagCompletionFunc("skip-check", completeSkipChecks)
	return cmd
}

// validateDeployFlags refuses a wrong deploy command line before the
// controller sees it (exit 2), naming the flag and what it wants.
func validateDeployFlags(req *golivev1.DeployRequest, hosts, selector string, minHealthy, maxLat, deadline time.Duration) error {
	if !req.DryRun && req.ArtifactUrl == "" {
		return cli.Usagef("deploy needs --artifact URL (http, https or file) of the release's tarball")
	}
	if !req.DryRun && req.Sha256 == "" {
		return cli.Usagef("deploy needs --sha256 HEX: the artifact's sha256, 64 hex digits (sha256sum FILE)")
	}
	if req.Sha256 != "" && !isSHA256Hex(req.Sha256) {
		return cli.Usagef("--sha256 %q: want the artifact's sha256, 64 hex digits (sha256sum FILE); got %d characters", req.Sha256, len(req.Sha256))
	}
	if hosts != "" && selector != "" {
		return cli.Usagef("use --hosts or --selector, not both")
	}
	if err := preflight.ValidateSkips(req.SkipChecks); err != nil {
		return cli.Usagef("--skip-check: %v", err)
	}
	if _, err := rollout.ParseBatch(req.Batch); err != nil {
		return cli.Usagef("--batch %q: want a host count of 1 or more (e.g. 5) or a whole percentage from 1%% to 100%% (e.g. 25%%)", req.Batch)
	}
	for _, d := range []struct {
		flag string
		v    time.Duration
	}{{"--min-healthy", minHealthy}, {"--max-avg-latency", maxLat}, {"--progress-deadline", deadline}} {
		if d.v < 0 {
			return cli.Usagef("%s %s: want a duration of 0 or more (e.g. 30s)", d.flag, d.v)
		}
	}
	return nil
}

func isSHA256Hex(s string) bool {
	if len(s) != 64 {
		return false
	}
	for _, r := range s {
		if !strings.ContainsRune("0123456789abcdefABCDEF", r) {
			return false
		}
	}
	return true
}

// waitRollout polls the rollout until it ends and prints its hosts. While
// it runs it shows progress on stderr (stdout stays the answer, JSON or
// text): a line per wave and state change on a pipe, a bar on a terminal.
func (co *clientOpts) waitRollout(cmd *cobra.Command, id string) error {
	progress := cmd.ErrOrStderr()
	tty := isTerminal(progress)
	last := ""
	for {
		var r *golivev1.Rollout
		err := co.call(cmd.Context(), func(ctx context.Context, c golivev1.ControlServiceClient) error {
			resp, err := c.GetRollout(ctx, &golivev1.GetRolloutRequest{Id: id})
			if err == nil {
				r = resp.Rollout
			}
			return err
		})
		if err != nil {
			if cmd.Context().Err() != nil {
				return cli.Interrupted{Note: fmt.Sprintf("stopped waiting; rollout %s continues (follow it: golive-controller watch %s)", id, id)}
			}
			return err
		}
		if line := waitProgress(r); line != last {
			if tty {
				fmt.Fprintf(progress, "\r\033[K[%s] %s", progressBar(hostsDone(r), len(r.Hosts), 30), truncate(line, termWidth(progress)-34))
			} else {
				fmt.Fprintln(progress, line)
			}
			last = line
		}
		if rollout.TerminalState(r.State) {
			if tty {
				fmt.Fprintln(progress)
			}
			if co.output == "json" {
				co.printJSON(cmd.OutOrStdout(), r)
			} else {
				printRollout(cmd.OutOrStdout(), r)
			}
			if r.State != "succeeded" {
				return fmt.Errorf("rollout %s %s: %s", r.Id, r.State, r.Reason)
			}
			return nil
		}
		select {
		case <-cmd.Context().Done():
			return cli.Interrupted{Note: fmt.Sprintf("stopped waiting; rollout %s continues (follow it: golive-controller watch %s)", id, id)}
		case <-time.After(200 * time.Millisecond):
		}
	}
}

// waitProgress is one line of a --wait: the rollout's state and its current
// wave's.
func waitProgress(r *golivev1.Rollout) string {
	line := fmt.Sprintf("rollout %s %s: %d/%d hosts done", r.Id, strings.ToLower(displayState(r)), hostsDone(r), len(r.Hosts))
	for _, wv := range r.Waves {
		if int(wv.Index) == int(r.CurrentWave) {
			name := wv.Name
			if name == "" {
				name = fmt.Sprintf("wave %d", wv.Index)
			}
			line += fmt.Sprintf(", %s %s (%s)", name, orDash(wv.State), strings.Join(wv.Hosts, ","))
		}
	}
	if next := nextStep(r); next != "" {
		line += "; " + next
	}
	return line
}

func printRollout(w io.Writer, r *golivev1.Rollout) {
	fmt.Fprintf(w, "rollout %s: %s %s@%s by %s: %s %s\n", r.Id, r.Kind, r.Service, orDash(r.Release), r.CreatedBy, displayState(r), r.Reason)
	if next := nextStep(r); next != "" {
		fmt.Fprintln(w, next)
	}
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "HOST\tSTATE\tSTAGE\tERROR")
	for _, h := range r.Hosts {
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\n", h.HostId, h.State, orDash(h.Stage), orDash(h.Error))
	}
	tw.Flush()
	printRolloutDNS(w, r)
	printRolloutPreflight(w, r)
	printJudged(w, r)
	printAnalysis(w, r, 0)
}

// printRolloutDNS lists the records the rollout sets or restores: before,
// after, and when the zone's primary answered.
func printRolloutDNS(w io.Writer, r *golivev1.Rollout) {
	if len(r.Dns) == 0 {
		return
	}
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "DNS\tACTION\tSTATE\tBEFORE\tAFTER\tCONFIRMED\tERROR")
	for _, d := range r.Dns {
		fmt.Fprintf(tw, "%s %s\t%s\t%s\t%s\t%s\t%s\t%s\n", d.Name, d.Type, dnsAction(d), dnsState(d), orDash(strings.Join(d.Before, " ")),
			orDash(strings.Join(d.After, " ")), dnsWhen(d), orDash(d.Error))
	}
	tw.Flush()
}

func dnsAction(d *golivev1.RolloutDns) string {
	if d.Action == "restore" {
		return "restore (" + d.FromRollout + ")"
	}
	return "set -> " + d.Pool
}

func dnsState(d *golivev1.RolloutDns) string {
	if d.RestoreState != "" {
		return d.State + ", restore " + d.RestoreState
	}
	return d.State
}

func dnsWhen(d *golivev1.RolloutDns) string {
	at := "-"
	if d.ConfirmedAt != nil {
		at = d.ConfirmedAt.AsTime().UTC().Format(time.RFC3339)
	}
	if d.RestoredAt != nil {
		at += ", restored " + d.RestoredAt.AsTime().UTC().Format(time.RFC3339)
	}
	return at
}

// dnsLine is the rollout's DNS changes in one line (watch).
func dnsLine(r *golivev1.Rollout) string {
	var parts []string
	for _, d := range r.Dns {
		p := fmt.Sprintf("%s/%s:%s[%s]->[%s]", strings.TrimSuffix(d.Name, "."), d.Type, dnsState(d), strings.Join(d.Before, ","), strings.Join(d.After, ","))
		if d.ConfirmedAt != nil {
			p += "@" + d.ConfirmedAt.AsTime().UTC().Format("15:04:05")
		}
		parts = append(parts, p)
	}
	return strings.Join(parts, " ")
}

// printJudged says what each wave's gate judged (traffic, probe, promql).
func printJudged(w io.Writer, r *golivev1.Rollout) {
	for _, wv := range r.Waves {
		if wv.JudgedOn != "" {
			fmt.Fprintf(w, "wave %d (%s) judged on %s\n", wv.Index, wv.Name, wv.JudgedOn)
		}
	}
}

// printAnalysis lists the PromQL analysis's measurements (the last n; 0:
// all): query as sent, time, value, verdict.
func printAnalysis(w io.Writer, r *golivev1.Rollout, n int) {
	a := r.Analysis
	if a == nil {
		return
	}
	fmt.Fprintf(w, "PromQL analysis of wave %d: %s: %s\n", a.Wave, a.Phase, a.Summary)
	for _, note := range a.Notes {
		fmt.Fprintln(w, "  note: "+note)
	}
	ms := a.Measurements
	if n > 0 && len(ms) > n {
		ms = ms[len(ms)-n:]
	}
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "  METRIC\tAT\tVALUE\tVERDICT\tQUERY / MESSAGE")
	for _, m := range ms {
		fmt.Fprintf(tw, "  %s\t%s\t%s\t%s\t%s: %s\n", m.Metric, m.At.AsTime().Local().Format("15:04:05"), orDash(m.Value), m.Verdict, m.Query, m.Message)
	}
	tw.Flush()
}

// printRolloutPreflight sums up the rollout's pre-live checks and lists the
// ones that did not pass.
func printRolloutPreflight(w io.Writer, r *golivev1.Rollout) {
	if len(r.Preflight) == 0 && len(r.SkippedChecks) == 0 {
		return
	}
	counts := map[string]int{}
	var notPassed [][4]string
	for _, h := range r.Preflight {
		if h.Error != "" {
			counts["error"]++
			notPassed = append(notPassed, [4]string{h.HostId, "-", "error", h.Error})
		}
		for _, c := range h.Checks {
			counts[c.Status]++
			if c.Status == "warn" || c.Status == "fail" {
				notPassed = append(notPassed, [4]string{h.HostId, c.Name, c.Status, c.Detail})
			}
		}
	}
	fmt.Fprintf(w, "preflight: %d hosts, %d pass, %d warn, %d fail", len(r.Preflight), counts["pass"], counts["warn"], counts["fail"])
	if counts["error"] > 0 {
		fmt.Fprintf(w, ", %d hosts unchecked", counts["error"])
	}
	if len(r.SkippedChecks) > 0 {
		fmt.Fprintf(w, "; skipped (audited): %s", strings.Join(r.SkippedChecks, ", "))
	}
	fmt.Fprintln(w)
	if len(notPassed) == 0 {
		return
	}
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	for _, row := range notPassed {
		fmt.Fprintf(tw, "  %s\t%s\t%s\t%s\n", row[0], row[1], strings.ToUpper(row[2]), row[3])
	}
	tw.Flush()
}

func newRolloutCmd(co *clientOpts) *cobra.Command {
	return &cobra.Command{
		Use:               "rollout ID",
		Short:             "show one rollout and each host's outcome",
		Args:              cli.ExactArgs(1, "one rollout ID"),
		ValidArgsFunction: co.completeRolloutIDs(false),
		RunE: func(cmd *cobra.Command, args []string) error {
			return run(cmd, co, func(ctx context.Context, c golivev1.ControlServiceClient) (*golivev1.GetRolloutResponse, error) {
				return c.GetRollout(ctx, &golivev1.GetRolloutRequest{Id: args[0]})
			}, func(resp *golivev1.GetRolloutResponse) any { return resp.Rollout }, func(w io.Writer, resp *golivev1.GetRolloutResponse) error {
				printRollout(w, resp.Rollout)
				return nil
			})
		},
	}
}

func newRollbackCmd(co *clientOpts) *cobra.Command {
	req := &golivev1.RollbackRequest{}
	var hosts string
	var wait bool
	cmd := &cobra.Command{
		Use:   "rollback",
		Short: "put the previous (or --to) release back on hosts: the safety path, allowed without approval, audited",
		Long: "Put the previous (or --to) release back on hosts: allowed without approval, audited.\n\n" +
			"A binary rollback leaves the database as it is: after a release that ran a migration the schema\n" +
			"stays migrated (the answer warns). --restore-db BACKUP_ID --yes also restores that database backup\n" +
			"(see `golive-controller backups`) on the host that holds it: the agent stops the service, takes a\n" +
			"safety backup of the current database, restores, puts back the release the backup was taken on\n" +
			"(or --to) and health-checks.",
		Args: cli.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if req.Service == "" {
				return cli.Usagef("rollback needs --service")
			}
			if req.RestoreDbBackupId != "" && !req.ConfirmRestore {
				return cli.Usagef("--restore-db %s replaces the database of %s with that backup's contents, losing every write made since "+
					"(the agent takes a safety backup of the current database first): add --yes to confirm", req.RestoreDbBackupId, req.Service)
			}
			if req.ConfirmRestore && req.RestoreDbBackupId == "" {
				return cli.Usagef("--yes confirms a database restore: name the backup with --restore-db BACKUP_ID (see `golive-controller backups --service %s`)", req.Service)
			}
			if hosts != "" {
				req.Hosts = strings.Split(hosts, ",")
			}
			var id string
			err := run(cmd, co, func(ctx context.Context, c golivev1.ControlServiceClient) (*golivev1.RollbackResponse, error) {
				if req.ToRelease != "" && req.RestoreDbBackupId == "" {
					if err := co.checkRollbackTarget(ctx, c, req); err != nil {
						return nil, err
					}
				}
				resp, err := c.Rollback(ctx, req)
				if err == nil {
					id = resp.Rollout.GetId()
					for _, w := range resp.Warnings {
						fmt.Fprintf(cmd.ErrOrStderr(), "warning: %s\n", w)
					}
				}
				return resp, err
			}, func(resp *golivev1.RollbackResponse) any { return resp }, func(w io.Writer, resp *golivev1.RollbackResponse) error {
				r := resp.Rollout
				if req.RestoreDbBackupId != "" {
					fmt.Fprintf(w, "rollback %s started on %s: safety backup, restore of database backup %s, then release %s\n",
						r.GetId(), strings.Join(rolloutHosts(r), ","), req.RestoreDbBackupId, orPrevious(r.GetRelease()))
					return nil
				}
				fmt.Fprintf(w, "rollback %s started on %d hosts\n", r.GetId(), len(r.GetHosts()))
				return nil
			})
			if err != nil || !wait {
				return err
			}
			return co.waitRollout(cmd, id)
		},
	}
	f := cmd.Flags()
	f.StringVar(&req.Service, "service", "", "service name")
	f.StringVar(&hosts, "hosts", "", "comma-separated host ids (default: every host that runs the service; with --restore-db, the backup's host)")
	f.StringVar(&req.ToRelease, "to", "", "release to put back (default: the previous one; with --restore-db, the one the backup was taken on)")
	f.StringVar(&req.RestoreDbBackupId, "restore-db", "", "also restore database backup `BACKUP_ID` (listed by golive-controller backups) on its host; needs --yes")
	f.BoolVar(&req.ConfirmRestore, "yes", false, "confirm the database restore of --restore-db")
	f.BoolVar(&wait, "wait", false, "wait until every host reported, print the outcome")
	cmd.RegisterFlagCompletionFunc("service", co.completeServices)
	cmd.RegisterFlagCompletionFunc("hosts", co.completeHosts)
	return cmd
}

func rolloutHosts(r *golivev1.Rollout) []string {
	var out []string
	for _, h := range r.GetHosts() {
		out = append(out, h.HostId)
	}
	return out
}

func orPrevious(release string) string {
	if release == "" {
		return "(previous)"
	}
	return release
}

func newHistoryCmd(co *clientOpts) *cobra.Command {
	var service, since string
	var limit uint32
	cmd := &cobra.Command{
		Use:   "history",
		Short: "past rollouts: when, who, release, outcome, duration, reason",
		Args:  cli.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			from, err := parseWhen("since", since)
			if err != nil {
				return err
			}
			req := &golivev1.ListRolloutsRequest{Service: service, Limit: limit}
			if from != nil && !cmd.Flags().Changed("limit") {
				req.Limit = 0 // every rollout since then, not the newest 20
			}
			return run(cmd, co, func(ctx context.Context, c golivev1.ControlServiceClient) (*golivev1.ListRolloutsResponse, error) {
				resp, err := c.ListRollouts(ctx, req)
				if err == nil && from != nil {
					// Newest first: keep those created since.
					kept := resp.Rollouts[:0]
					for _, r := range resp.Rollouts {
						if r.CreatedAt != nil && !r.CreatedAt.AsTime().Before(from.AsTime()) {
							kept = append(kept, r)
						}
					}
					resp.Rollouts = kept
				}
				return resp, err
			}, func(resp *golivev1.ListRolloutsResponse) any { return resp }, func(w io.Writer, resp *golivev1.ListRolloutsResponse) error {
				tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
				fmt.Fprintln(tw, "ROLLOUT\tSTARTED\tKIND\tSERVICE\tRELEASE\tBY\tSTATE\tHOSTS\tDURATION\tREASON")
				for _, r := range resp.Rollouts {
					dur := "-"
					if r.FinishedAt != nil && r.CreatedAt != nil {
						dur = r.FinishedAt.AsTime().Sub(r.CreatedAt.AsTime()).Round(100 * time.Millisecond).String()
					} else if r.UpdatedAt != nil && r.CreatedAt != nil && rollout.TerminalState(r.State) {
						dur = r.UpdatedAt.AsTime().Sub(r.CreatedAt.AsTime()).Round(100 * time.Millisecond).String()
					}
					started := "-"
					if r.CreatedAt != nil {
						started = stamp(r.CreatedAt.AsTime())
					}
					fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\t%s\t%d\t%s\t%s\n", r.Id, started, r.Kind, r.Service, orDash(r.Release), r.CreatedBy,
						strings.ToLower(displayState(r)), len(r.Hosts), dur, orDash(r.Reason))
				}
				return tw.Flush()
			})
		},
	}
	cmd.Flags().StringVar(&service, "service", "", "only this service")
	cmd.Flags().Uint32Var(&limit, "limit", 20, "at most this many (newest first; with --since, all unless set)")
	cmd.Flags().StringVar(&since, "since", "", "only rollouts started since: a duration ago (24h) or an RFC 3339 time")
	cmd.RegisterFlagCompletionFunc("service", co.completeServices)
	return cmd
}

func rolloutActionCmd(co *clientOpts, use, short string, call func(ctx context.Context, c golivev1.ControlServiceClient, id, reason string) (*golivev1.Rollout, error)) *cobra.Command {
	var reason string
	cmd := &cobra.Command{
		Use:               use + " ROLLOUT_ID",
		Short:             short,
		Args:              cli.ExactArgs(1, "one ROLLOUT_ID"),
		ValidArgsFunction: co.completeRolloutIDs(true),
		RunE: func(cmd *cobra.Command, args []string) error {
			return run(cmd, co, func(ctx context.Context, c golivev1.ControlServiceClient) (*golivev1.Rollout, error) {
				return call(ctx, c, args[0], reason)
			}, func(r *golivev1.Rollout) any { return r }, func(w io.Writer, r *golivev1.Rollout) error {
				_, err := fmt.Fprintln(w, actionAnswer(use, r))
				return err
			})
		},
	}
	cmd.Flags().StringVar(&reason, "reason", "", "why, for the audit log")
	return cmd
}

// actionAnswer says what a pause, resume or abort request does to r (the
// rollout as it was when the request was recorded; the leader acts on it).
func actionAnswer(use string, r *golivev1.Rollout) string {
	halted := r.State == string(rollout.PhaseHalted)
	follow := "follow it: golive-controller watch " + r.Id
	switch {
	case use == "pause" && halted:
		return fmt.Sprintf("pause: rollout %s is already stopped (%s: %s); %s", r.Id, displayState(r), orDash(r.Reason), nextStep(r))
	case use == "pause":
		return fmt.Sprintf("pause requested: rollout %s stops before its next wave (%s)", r.Id, follow)
	case use == "abort":
		return fmt.Sprintf("abort requested: rollout %s (%s) stops and rolls back every host it touched (%s)", r.Id, displayState(r), follow)
	case use == "resume" && r.State == string(rollout.PhaseHalted):
		return fmt.Sprintf("resume requested: rollout %s continues from wave %d (%s)", r.Id, r.CurrentWave, follow)
	}
	return fmt.Sprintf("%s requested: rollout %s is %s (%s)", use, r.Id, displayState(r), follow)
}

func newPauseCmd(co *clientOpts) *cobra.Command {
	return rolloutActionCmd(co, "pause", "stop a rollout before its next wave", func(ctx context.Context, c golivev1.ControlServiceClient, id, reason string) (*golivev1.Rollout, error) {
		resp, err := c.PauseRollout(ctx, &golivev1.PauseRolloutRequest{Id: id, Reason: reason})
		return resp.GetRollout(), err
	})
}

func newResumeCmd(co *clientOpts) *cobra.Command {
	return rolloutActionCmd(co, "resume", "continue a paused or halted rollout where it stopped (needs a live approval)", func(ctx context.Context, c golivev1.ControlServiceClient, id, _ string) (*golivev1.Rollout, error) {
		resp, err := c.ResumeRollout(ctx, &golivev1.ResumeRolloutRequest{Id: id})
		return resp.GetRollout(), err
	})
}

func newAbortCmd(co *clientOpts) *cobra.Command {
	return rolloutActionCmd(co, "abort", "stop a rollout and roll back every host it touched", func(ctx context.Context, c golivev1.ControlServiceClient, id, reason string) (*golivev1.Rollout, error) {
		resp, err := c.AbortRollout(ctx, &golivev1.AbortRolloutRequest{Id: id, Reason: reason})
		return resp.GetRollout(), err
	})
}
