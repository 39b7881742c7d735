package dashboard

import (
	"testing"

	"go.uber.org/goleak"
)

// TestMain fails the package's tests if any goroutine outlives them.
// Ignored: net/http's idle keep-alive connections (the shared transport's
// pool, closed by its own timers), and the approval manager's background
// lease revoke after a STOP, which ends once the controller's etcd client
// has closed.
func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m,
		goleak.IgnoreTopFunction("net/http.(*persistConn).readLoop"),
		goleak.IgnoreTopFunction("net/http.(*persistConn).writeLoop"),
		goleak.IgnoreAnyFunction("go.etcd.io/etcd/client/v3.(*lessor).Revoke"),
	)
}
