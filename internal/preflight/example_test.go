package preflight_test

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/golive/golive/internal/preflight"
)

// downDB stands in for the agent's driver-backed connection.
type downDB struct{}

func (downDB) Ping(context.Context) error {
	return errors.New(`connect "postgres://app:hunter2@db:5432/app": connection refused`)
}

// The agent builds its checks, runs them together and refuses the rollout
// when Summary says no. The database check gets a Pinger from the agent's
// driver and the DSN only to keep it out of the report.
func Example() {
	dsn := "postgres://app:hunter2@db:5432/app"
	checks := []preflight.Check{
		{Name: preflight.NameDatabase, Timeout: 5 * time.Second, Fn: func(ctx context.Context) preflight.Result {
			return preflight.DatabaseReachable(ctx, dsn, downDB{})
		}},
		{Name: preflight.NameBackup, Fn: func(context.Context) preflight.Result {
			return preflight.BackupFresh(time.Time{}, false, 24*time.Hour, time.Time{})
		}},
	}
	results := preflight.Run(context.Background(), checks, []string{preflight.NameBackup})
	for _, r := range results {
		fmt.Printf("%s %s: %s\n", r.Status, r.Name, r.Detail)
	}
	fmt.Println("go live:", preflight.Summary(results))
	// Output:
	// fail database: Database is not reachable (connect "[redacted]": connection refused); check the DSN key in the service's env file and that PostgreSQL is up.
	// skip backup: Check backup was skipped on request; make sure the skip is intended, it is audited.
	// go live: false
}
