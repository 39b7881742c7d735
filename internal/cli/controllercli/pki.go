package controllercli

import (
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/spf13/cobra"

	"github.com/golive/golive/internal/artifact"
	"github.com/golive/golive/internal/cli"
	"github.com/golive/golive/internal/pki"
)

func newPKICmd() *cobra.Command {
	var dir string
	cmd := &cobra.Command{
		Use:   "pki",
		Short: "make a CA and mutual-TLS certificates for agents, operators and controllers (small installs; any CA works the same)",
		Long: "Certificates for golive's mutual TLS. An agent certificate's name is its host id (OU=agent);\n" +
			"an operator certificate's name is the audit identity and its OUs its roles (viewer, deployer,\n" +
			"approver). A bring-your-own CA works the same way: issue certificates with these names and units.",
	}
	cmd.PersistentFlags().StringVar(&dir, "dir", "golive-pki", "directory of the CA (ca.pem, ca-key.pem) and the certificates issued")
	var validity time.Duration
	issueFlags := func(c *cobra.Command) {
		c.Flags().DurationVar(&validity, "validity", 365*24*time.Hour, "how long the certificate is valid")
	}
	load := func() (*pki.CA, error) { return pki.Load(dir) }
	report := func(c *cobra.Command, what, cert, key string) {
		fmt.Fprintf(c.OutOrStdout(), "%s\n  certificate %s\n  key         %s (keep it secret)\n  CA          %s\n", what, cert, key, filepath.Join(dir, pki.CAFile))
	}

	initCmd := &cobra.Command{
		Use: "init", Short: "make a new CA in --dir (refuses to overwrite one)", Args: cli.NoArgs,
		RunE: func(c *cobra.Command, _ []string) error {
			if _, err := pki.Init(dir, "golive CA", 10*365*24*time.Hour); err != nil {
				return err
			}
			fmt.Fprintf(c.OutOrStdout(), "CA made in %s: %s (give to every agent and operator), %s (keep it offline)\n", dir, pki.CAFile, pki.CAKeyFile)
			return nil
		},
	}
	agentCmd := &cobra.Command{
		Use: "issue-agent HOST", Short: "issue an agent certificate named after its host id", Args: cobra.ExactArgs(1),
		RunE: func(c *cobra.Command, args []string) error {
			ca, err := load()
			if err != nil {
				return err
			}
			cert, key, err := ca.Issue(pki.Request{Name: args[0], Agent: true, Validity: validity}, dir, "agent-"+args[0])
			if err != nil {
				return cli.UsageError{Err: err}
			}
			report(c, "agent "+args[0], cert, key)
			return nil
		},
	}
	var roles string
	opCmd := &cobra.Command{
		Use: "issue-operator NAME --role ROLE[,ROLE]", Short: "issue an operator certificate with roles viewer, deployer, approver", Args: cobra.ExactArgs(1),
		RunE: func(c *cobra.Command, args []string) error {
			rs, err := pki.ParseRoles(roles)
			if err != nil {
				return cli.UsageError{Err: fmt.Errorf("--role: %w", err)}
			}
			ca, err := load()
			if err != nil {
				return err
			}
			cert, key, err := ca.Issue(pki.Request{Name: args[0], Roles: rs, Validity: validity}, dir, "operator-"+args[0])
			if err != nil {
				return cli.UsageError{Err: err}
			}
			report(c, fmt.Sprintf("operator %s (%s)", args[0], roles), cert, key)
			return nil
		},
	}
	opCmd.Flags().StringVar(&roles, "role", "", "viewer, deployer, approver (comma-separated)")
	var dnsNames, ips []string
	ctlCmd := &cobra.Command{
		Use: "issue-controller NAME", Short: "issue a controller (server) certificate for the names and addresses agents dial", Args: cobra.ExactArgs(1),
		RunE: func(c *cobra.Command, args []string) error {
			req := pki.Request{Name: args[0], Server: true, Validity: validity}
			for _, d := range splitList(strings.Join(dnsNames, ",")) {
				req.DNSNames = append(req.DNSNames, d)
			}
			for _, s := range splitList(strings.Join(ips, ",")) {
				ip := net.ParseIP(s)
				if ip == nil {
					return cli.Usagef("--ip %q: not an IP address", s)
				}
				req.IPs = append(req.IPs, ip)
			}
			ca, err := load()
			if err != nil {
				return err
			}
			cert, key, err := ca.Issue(req, dir, "controller-"+args[0])
			if err != nil {
				return cli.UsageError{Err: err}
			}
			report(c, "controller "+args[0], cert, key)
			return nil
		},
	}
	ctlCmd.Flags().StringSliceVar(&dnsNames, "dns", nil, "DNS names in the certificate: repeat the flag or comma-separate (default: NAME)")
	ctlCmd.Flags().StringSliceVar(&ips, "ip", nil, "IP addresses in the certificate: repeat the flag or comma-separate")
	for _, c := range []*cobra.Command{agentCmd, opCmd, ctlCmd} {
		issueFlags(c)
	}
	cmd.AddCommand(initCmd, agentCmd, opCmd, ctlCmd)
	return cmd
}

func splitList(s string) []string {
	var out []string
	for _, f := range strings.Split(s, ",") {
		if f = strings.TrimSpace(f); f != "" {
			out = append(out, f)
		}
	}
	return out
}

func newKeygenCmd() *cobra.Command {
	var out string
	cmd := &cobra.Command{
		Use:   "keygen",
		Short: "make an ed25519 key pair for signing releases (agents list the .pub in trusted_keys)",
		Args:  cli.NoArgs,
		RunE: func(c *cobra.Command, _ []string) error {
			priv, pub := out+".key", out+".pub"
			if _, err := artifact.Keygen(priv, pub); err != nil {
				return err
			}
			fmt.Fprintf(c.OutOrStdout(), "signing key %s (keep it secret)\npublic key  %s (add to the agents' trusted_keys)\n", priv, pub)
			return nil
		},
	}
	cmd.Flags().StringVar(&out, "out", "release", "path prefix of the key files: PREFIX.key and PREFIX.pub")
	return cmd
}

func newSignCmd() *cobra.Command {
	var key string
	cmd := &cobra.Command{
		Use:   "sign FILE",
		Short: "sign a release artifact with an ed25519 key: writes FILE.sig (base64), for deploy --signature-file",
		Args:  cobra.ExactArgs(1),
		RunE: func(c *cobra.Command, args []string) error {
			if key == "" {
				return cli.Usagef("sign needs --key (made by `golive-controller keygen`)")
			}
			sig, err := artifact.Sign(key, args[0])
			if err != nil {
				return err
			}
			if err := os.WriteFile(args[0]+".sig", []byte(sig+"\n"), 0o644); err != nil {
				return err
			}
			fmt.Fprintf(c.OutOrStdout(), "%s\n", sig)
			return nil
		},
	}
	cmd.Flags().StringVar(&key, "key", "", "ed25519 signing key (PEM)")
	return cmd
}
