package controllercli

import (
	"context"
	"fmt"

	"google.golang.org/grpc"
	"google.golang.org/grpc/metadata"

	"github.com/golive/golive/internal/controller"
)

// staleWarning tells the operator when an answer is the replica's last
// known state (etcd has no quorum): the controller marks such answers with
// controller.StaleMetadataKey.
func (co *clientOpts) staleWarning(ctx context.Context, method string, req, reply any, cc *grpc.ClientConn, invoker grpc.UnaryInvoker, opts ...grpc.CallOption) error {
	var md metadata.MD
	err := invoker(ctx, method, req, reply, cc, append(opts, grpc.Header(&md))...)
	if age := md.Get(controller.StaleMetadataKey); err == nil && len(age) == 1 && co.warn != nil {
		why := "etcd has no quorum"
		if v := md.Get(controller.EtcdMetadataKey); len(v) == 1 {
			why = "etcd: " + v[0]
		}
		fmt.Fprintf(co.warn, "warning: %s; this is the controller's last known state, %ss old\n", why, age[0])
	}
	return err
}
