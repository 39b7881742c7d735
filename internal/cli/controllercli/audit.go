package controllercli

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/golive/golive/internal/audit"
	"github.com/golive/golive/internal/cli"
	golivev1 "github.com/golive/golive/proto/golive/v1"
)

// parseWhen reads "24h" (that long ago) or an RFC 3339 time.
func parseWhen(flag, s string) (*timestamppb.Timestamp, error) {
	if s == "" {
		return nil, nil
	}
	if d, err := time.ParseDuration(s); err == nil {
		return timestamppb.New(time.Now().Add(-d)), nil
	}
	t, err := time.Parse(time.RFC3339, s)
	if err != nil {
		return nil, cli.Usagef("--%s %q: want a duration ago (24h) or an RFC 3339 time (2026-11-30T12:00:00Z)", flag, s)
	}
	return timestamppb.New(t), nil
}

func entryOf(e *golivev1.AuditEntry) audit.Entry {
	return audit.Entry{Seq: e.Seq, At: e.At.AsTime(), Actor: e.Actor, Action: e.Action, Outcome: e.Outcome,
		Reason: e.Reason, Detail: e.Detail, Source: e.Source, PrevHash: e.PrevHash, Hash: e.Hash}
}

func newAuditCmd(co *clientOpts) *cobra.Command {
	var (
		req          golivev1.ListAuditRequest
		since, until string
		jsonl        bool
	)
	cmd := &cobra.Command{
		Use:   "audit",
		Short: "list audited control actions (who, when, what, outcome, from where); --jsonl exports; `audit verify` checks the hash chain",
		Args:  cli.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			var err error
			if req.Since, err = parseWhen("since", since); err != nil {
				return err
			}
			if req.Until, err = parseWhen("until", until); err != nil {
				return err
			}
			return run(cmd, co, func(ctx context.Context, c golivev1.ControlServiceClient) (*golivev1.ListAuditResponse, error) {
				return c.ListAudit(ctx, &req)
			}, func(resp *golivev1.ListAuditResponse) any { return resp }, func(w io.Writer, resp *golivev1.ListAuditResponse) error {
				if jsonl {
					// One entry per line, in the form its hash is computed
					// over: `audit verify --file` checks an export offline.
					enc := json.NewEncoder(w)
					for _, e := range resp.Entries {
						if err := enc.Encode(entryOf(e)); err != nil {
							return err
						}
					}
					return nil
				}
				tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
				fmt.Fprintln(tw, "SEQ\tTIME\tACTOR\tACTION\tOUTCOME\tREASON\tDETAIL\tSOURCE")
				for _, e := range resp.Entries {
					fmt.Fprintf(tw, "%d\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n", e.Seq, e.At.AsTime().Local().Format(time.RFC3339), e.Actor, e.Action, e.Outcome,
						orDash(e.Reason), e.Detail, orDash(e.Source))
				}
				return tw.Flush()
			})
		},
	}
	f := cmd.Flags()
	f.StringVar(&req.Action, "action", "", "only this action (authorize, revoke, deploy, rollback, approval_expired, ...)")
	f.StringVar(&req.Actor, "actor", "", "only this identity")
	f.StringVar(&since, "since", "", "only entries since: a duration ago (24h) or an RFC 3339 time")
	f.StringVar(&until, "until", "", "only entries before: a duration ago or an RFC 3339 time")
	f.Uint32Var(&req.Limit, "limit", 0, "only the newest N entries")
	f.BoolVar(&jsonl, "jsonl", false, "export JSON lines, one entry per line (for audit verify --file and log pipelines)")
	cmd.AddCommand(newAuditVerifyCmd(co))
	return cmd
}

// errChainBroken makes `audit verify` exit 1 after printing the break.
var errChainBroken = errors.New("audit chain broken")

func newAuditVerifyCmd(co *clientOpts) *cobra.Command {
	var file string
	cmd := &cobra.Command{
		Use:   "verify",
		Short: "recompute the audit hash chain (from the controller, or an export with --file) and name the first broken link",
		Long: "Recomputes every entry's sha256 and its link to the previous entry, here on your machine, so the\n" +
			"check does not trust the controller. Against the controller it also checks the newest entry against\n" +
			"the chain's head (a log cut short is caught). An export (--file) is checked from entry 1 to its last\n" +
			"line; entries cut off after its last line cannot be seen. Exit 0: intact; 1: broken.",
		Args: cli.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			var entries []audit.Entry
			var headSeq uint64
			var headHash, from string
			if file != "" {
				var err error
				if entries, err = readExport(file); err != nil {
					return err
				}
				if n := len(entries); n > 0 {
					headSeq, headHash = entries[n-1].Seq, entries[n-1].Hash
				}
				from = file
			} else {
				err := co.call(cmd.Context(), func(ctx context.Context, c golivev1.ControlServiceClient) error {
					resp, err := c.ListAudit(ctx, &golivev1.ListAuditRequest{})
					if err != nil {
						return err
					}
					for _, e := range resp.Entries {
						entries = append(entries, entryOf(e))
					}
					headSeq, headHash = resp.HeadSeq, resp.HeadHash
					return nil
				})
				if err != nil {
					return err
				}
				from = "the controller at " + co.addr
			}
			bad, why := audit.VerifyChain(entries, headSeq, headHash)
			w := cmd.OutOrStdout()
			if co.output == "json" {
				v := object{{"intact", bad == 0}, {"entries", len(entries)}, {"head_seq", headSeq}, {"head_hash", headHash}, {"source", from}}
				if bad != 0 {
					v = append(v, field{"broken_at", bad}, field{"why", why})
				}
				if err := writeJSON(w, v, false); err != nil {
					return err
				}
				if bad != 0 {
					return errChainBroken
				}
				return nil
			}
			if bad != 0 {
				fmt.Fprintf(w, "audit chain BROKEN at entry %d: %s (%d entries read from %s)\n", bad, why, len(entries), from)
				return errChainBroken
			}
			fmt.Fprintf(w, "audit chain intact: %d entries, head %d %s (read from %s)\n", len(entries), headSeq, orDash(headHash), from)
			return nil
		},
	}
	cmd.Flags().StringVar(&file, "file", "", "verify the export `FILE` (made with audit --jsonl) instead of the live log")
	return cmd
}

func readExport(path string) ([]audit.Entry, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	var out []audit.Entry
	sc := bufio.NewScanner(f)
	sc.Buffer(make([]byte, 64<<10), 16<<20)
	line := 0
	for sc.Scan() {
		line++
		if len(sc.Bytes()) == 0 {
			continue
		}
		var e audit.Entry
		dec := json.NewDecoder(bytes.NewReader(sc.Bytes()))
		dec.DisallowUnknownFields()
		if err := dec.Decode(&e); err != nil {
			return nil, fmt.Errorf("%s:%d: not an audit entry: %w", path, line, err)
		}
		out = append(out, e)
	}
	return out, sc.Err()
}
