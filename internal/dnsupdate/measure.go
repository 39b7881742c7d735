package dnsupdate

import (
	"context"
	"fmt"
	"slices"
	"time"
)

// Latencies are the confirmed-update latencies of a Measure run, sorted.
type Latencies []time.Duration

// Quantile returns the q-quantile (0 <= q <= 1), nearest rank.
func (l Latencies) Quantile(q float64) time.Duration {
	if len(l) == 0 {
		return 0
	}
	i := int(q*float64(len(l))+0.5) - 1
	return l[min(max(i, 0), len(l)-1)]
}

// Measure makes n confirmed updates of name's type typ records (A or
// AAAA), alternating between two values, each starting from the values the
// previous one confirmed; it returns each update's latency (UPDATE sent to
// the server first answering the new data). It is for benchmarks
// (internal/bench): the record must be one nothing else uses.
func Measure(ctx context.Context, c *Client, name, typ string, n int) (Latencies, error) {
	a, err := c.Query(ctx, name, typ)
	if err != nil {
		return nil, err
	}
	values := [2][]string{{"192.0.2.201"}, {"192.0.2.202"}}
	if typ == "AAAA" {
		values = [2][]string{{"2001:db8::201"}, {"2001:db8::202"}}
	}
	old := a.Values
	out := make(Latencies, 0, n)
	for i := range n {
		res, err := c.Apply(ctx, Change{Name: name, Type: typ, TTL: 30 * time.Second, Old: old, New: values[i%2]})
		if err != nil {
			return out, fmt.Errorf("update %d of %d: %w", i+1, n, err)
		}
		out = append(out, res.Latency)
		old = res.Change.New
	}
	slices.Sort(out)
	return out, nil
}
