package embedetcd_test

import (
	"testing"

	"github.com/golive/golive/internal/etcdtest"
)

func TestSingleAndClusterServe(t *testing.T) {
	for _, n := range []int{1, 3} {
		c := etcdtest.Start(t, n)
		cli := c.Client(t)
		if _, err := cli.Put(t.Context(), "k", "v"); err != nil {
			t.Fatalf("%d members: put: %v", n, err)
		}
		resp, err := cli.Get(t.Context(), "k")
		if err != nil || len(resp.Kvs) != 1 || string(resp.Kvs[0].Value) != "v" {
			t.Fatalf("%d members: get = %v, %v", n, resp, err)
		}
	}
}
