package controllercli

import (
	"strings"

	"github.com/spf13/cobra"
)

// examples are each command's Example, by command path less the binary's
// name; TestEveryCommandHasAnExample keeps the table complete.
var examples = map[string]string{
	"": "  golive-controller serve --config /etc/golive/controller.hcl\n" +
		"  golive-controller authorize \"start automation now\" --ttl 1h --reason \"release day\"\n" +
		"  golive-controller deploy --service app --release v2 --artifact URL --sha256 HEX --canary 1 --wait",
	"serve": "  golive-controller serve --config /etc/golive/controller.hcl\n" +
		"  golive-controller serve --listen 0.0.0.0:7400 --data-dir /var/lib/golive-controller --two-person-rule",
	"authorize": "  golive-controller authorize \"start automation now\" --ttl 1h --reason \"release day\"\n" +
		"  golive-controller authorize \"start automation now\" --extend --ttl 30m --reason \"canary is slow\"",
	"revoke":        "  golive-controller revoke --reason \"error rate rising\"",
	"stop":          "  golive-controller stop --reason \"error rate rising\"",
	"approval":      "  golive-controller approval\n  golive-controller approval -o json",
	"status":        "  golive-controller status\n  golive-controller --addr ctl-1:7400 status -o json",
	"agents":        "  golive-controller agents\n  golive-controller agents -o json | jq '.agents[].host_id'",
	"agents forget": "  golive-controller agents forget web-7 --reason \"host decommissioned\"",
	"deploy": "  golive-controller deploy --service app --release v2 --dry-run --canary 1 --batch 25%\n" +
		"  golive-controller deploy --service app --release v2 --artifact https://dist/app-v2.tar.gz \\\n" +
		"      --sha256 \"$(awk '$2 == \"app-v2.tar.gz\" {print $1}' SHA256SUMS)\" --canary 1 --batch 25% --wait",
	"rollback": "  golive-controller rollback --service app\n" +
		"  golive-controller rollback --service app --to v1 --hosts web-1,web-2 --wait\n" +
		"  golive-controller rollback --service app --restore-db BACKUP_ID --yes",
	"rollout":         "  golive-controller rollout r-20261202-0001\n  golive-controller rollout r-20261202-0001 -o json",
	"history":         "  golive-controller history --service app --since 24h\n  golive-controller history --limit 5",
	"watch":           "  golive-controller watch r-20261202-0001\n  golive-controller watch --service app",
	"pause":           "  golive-controller pause r-20261202-0001 --reason \"checking the canary's logs\"",
	"resume":          "  golive-controller resume r-20261202-0001",
	"abort":           "  golive-controller abort r-20261202-0001 --reason \"bad release\"",
	"preflight":       "  golive-controller preflight --service app --release v2\n  golive-controller preflight --service app --host web-1 --skip-check disk",
	"backups":         "  golive-controller backups --service app\n  golive-controller backups --service app --host web-1 --limit 3",
	"audit":           "  golive-controller audit --since 24h\n  golive-controller audit --jsonl > audit.jsonl",
	"audit verify":    "  golive-controller audit verify\n  golive-controller audit verify --file audit.jsonl",
	"pki":             "  golive-controller pki init --dir pki\n  golive-controller pki issue-operator alice --role deployer,approver --dir pki",
	"pki init":        "  golive-controller pki init --dir pki",
	"pki issue-agent": "  golive-controller pki issue-agent web-1 --dir pki",
	"pki issue-operator": "  golive-controller pki issue-operator alice --role deployer,approver --dir pki\n" +
		"  golive-controller pki issue-operator bob --role viewer --dir pki",
	"pki issue-controller": "  golive-controller pki issue-controller ctl-1 --dir pki",
	"keygen":               "  golive-controller keygen --out release-key",
	"sign":                 "  golive-controller sign --key release-key dist/app-v2.tar.gz",
	"version":              "  golive-controller version\n  golive-controller --version",
	"dashboard":            "  golive-controller dashboard login",
	"dashboard login":      "  golive-controller dashboard login\n  golive-controller --addr ctl-1:7400 dashboard login",
}

// setExamples fills in every command's Example from the table.
func setExamples(c *cobra.Command) {
	path := strings.TrimSpace(strings.TrimPrefix(c.CommandPath(), c.Root().Name()))
	if ex, ok := examples[path]; ok && c.Example == "" {
		c.Example = ex
	}
	for _, sub := range c.Commands() {
		setExamples(sub)
	}
}

// clientFlags are the root's persistent flags that only operator commands
// use: `serve --help` does not list them.
var clientFlags = []string{"addr", "output", "as", "timeout", "tls-server-name"}

// hideClientFlags hides the client-only flags from serve's help.
func hideClientFlags(serve *cobra.Command) {
	defaultHelp := serve.HelpFunc()
	serve.SetHelpFunc(func(c *cobra.Command, args []string) {
		for _, name := range clientFlags {
			if f := c.Root().PersistentFlags().Lookup(name); f != nil {
				f.Hidden = true
			}
		}
		defaultHelp(c, args)
	})
}
