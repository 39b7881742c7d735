package metrics

import (
	"context"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	clientv3 "go.etcd.io/etcd/client/v3"
)

// EtcdCollector exports the size of every etcd member's database, asked at
// scrape time (no goroutine, no cost between scrapes):
//
//	golive_controller_etcd_db_bytes{endpoint}         the backend file (what --quota-backend-bytes bounds)
//	golive_controller_etcd_db_in_use_bytes{endpoint}  the part holding live data and uncompacted history
//	golive_controller_etcd_quota_bytes                the quota, when the controller knows it (embedded etcd)
//
// A member that does not answer within a second is left out of the scrape.
type EtcdCollector struct {
	cli   *clientv3.Client
	quota float64
	db    *prometheus.Desc
	inUse *prometheus.Desc
	qd    *prometheus.Desc
}

// NewEtcdCollector returns the collector; quota is the backend quota in
// bytes (0: unknown, not exported).
func NewEtcdCollector(cli *clientv3.Client, quota int64) *EtcdCollector {
	return &EtcdCollector{
		cli: cli, quota: float64(quota),
		db: prometheus.NewDesc("golive_controller_etcd_db_bytes",
			"Size of the etcd member's backend database file (bounded by its quota).", []string{"endpoint"}, nil),
		inUse: prometheus.NewDesc("golive_controller_etcd_db_in_use_bytes",
			"Bytes of the etcd member's database in use (live keys and uncompacted history).", []string{"endpoint"}, nil),
		qd: prometheus.NewDesc("golive_controller_etcd_quota_bytes",
			"The etcd backend quota the controller started its embedded etcd with.", nil, nil),
	}
}

// Describe implements prometheus.Collector.
func (c *EtcdCollector) Describe(ch chan<- *prometheus.Desc) {
	ch <- c.db
	ch <- c.inUse
	ch <- c.qd
}

// Collect implements prometheus.Collector.
func (c *EtcdCollector) Collect(ch chan<- prometheus.Metric) {
	if c.quota > 0 {
		ch <- prometheus.MustNewConstMetric(c.qd, prometheus.GaugeValue, c.quota)
	}
	for _, ep := range c.cli.Endpoints() {
		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		st, err := c.cli.Status(ctx, ep)
		cancel()
		if err != nil {
			continue
		}
		ch <- prometheus.MustNewConstMetric(c.db, prometheus.GaugeValue, float64(st.DbSize), ep)
		ch <- prometheus.MustNewConstMetric(c.inUse, prometheus.GaugeValue, float64(st.DbSizeInUse), ep)
	}
}
