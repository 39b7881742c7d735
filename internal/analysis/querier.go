package analysis

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"math"
	"net/http"
	"net/url"
	"os"
	"strings"
	"time"

	"github.com/prometheus/client_golang/api"
	promv1 "github.com/prometheus/client_golang/api/prometheus/v1"
	"github.com/prometheus/common/model"
)

// Querier runs an instant PromQL query at a time. The evaluator needs
// nothing else; tests and the leader may pass their own.
type Querier interface {
	Query(ctx context.Context, query string, at time.Time) (Result, error)
}

// ErrRefused wraps a query error that retrying cannot fix: Prometheus
// answered that the query itself is wrong (bad_data: a syntax error, an
// unknown function). The evaluator fails the run at once on it.
var ErrRefused = errors.New("query refused")

// ResultType is the type of a query's result.
type ResultType string

// The result types of the Prometheus HTTP API.
const (
	TypeScalar ResultType = "scalar"
	TypeVector ResultType = "vector"
	TypeMatrix ResultType = "matrix"
	TypeString ResultType = "string"
)

// Result is an instant query's answer.
type Result struct {
	Type ResultType
	// Samples holds a scalar's one value (no labels) or a vector's series.
	// A matrix or string result keeps only its series count in Series.
	Samples []Sample
	Series  int
	// Warnings are Prometheus's warnings, kept for the measurement message.
	Warnings []string
}

// Sample is one series of a vector result (or a scalar's value).
type Sample struct {
	Labels map[string]string
	Value  float64
	// Histogram marks a native histogram sample, which has no float value.
	Histogram bool
}

// PrometheusConfig is how to reach the user's Prometheus.
type PrometheusConfig struct {
	// URL is the server's base URL, e.g. http://127.0.0.1:9090 (the
	// controller's `serve --prometheus-url`).
	URL string
	// BearerTokenFile, if set, is read at every query (so a rotated token
	// is picked up) and sent as "Authorization: Bearer <token>".
	BearerTokenFile string
	// CAFile, if set, is the PEM bundle that verifies an https server
	// instead of the system roots.
	CAFile string
	// Timeout bounds each query, on the client and (as the timeout
	// parameter) on the server. Default 30s.
	Timeout time.Duration
}

// DefaultQueryTimeout is PrometheusConfig.Timeout's default.
const DefaultQueryTimeout = 30 * time.Second

// Prometheus is the Querier of a Prometheus server's HTTP API.
type Prometheus struct {
	api     promv1.API
	tr      *http.Transport
	timeout time.Duration
}

var _ Querier = (*Prometheus)(nil)

// NewPrometheus checks cfg and builds the client. It does not connect.
func NewPrometheus(cfg PrometheusConfig) (*Prometheus, error) {
	u, err := url.Parse(cfg.URL)
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		return nil, fmt.Errorf("prometheus url %q: want http(s)://host[:port][/path]", cfg.URL)
	}
	if cfg.Timeout < 0 {
		return nil, fmt.Errorf("prometheus timeout %s: must be positive", cfg.Timeout)
	}
	if cfg.Timeout == 0 {
		cfg.Timeout = DefaultQueryTimeout
	}
	tr := http.DefaultTransport.(*http.Transport).Clone()
	if cfg.CAFile != "" {
		pem, err := os.ReadFile(cfg.CAFile)
		if err != nil {
			return nil, fmt.Errorf("prometheus ca file: %w", err)
		}
		pool := x509.NewCertPool()
		if !pool.AppendCertsFromPEM(pem) {
			return nil, fmt.Errorf("prometheus ca file %s: no PEM certificate in it", cfg.CAFile)
		}
		tr.TLSClientConfig = &tls.Config{RootCAs: pool, MinVersion: tls.VersionTLS12}
	}
	var rt http.RoundTripper = tr
	if cfg.BearerTokenFile != "" {
		if _, err := readToken(cfg.BearerTokenFile); err != nil {
			return nil, err
		}
		rt = &bearerFile{path: cfg.BearerTokenFile, next: tr}
	}
	c, err := api.NewClient(api.Config{Address: cfg.URL, RoundTripper: rt})
	if err != nil {
		return nil, fmt.Errorf("prometheus client: %w", err)
	}
	return &Prometheus{api: promv1.NewAPI(c), tr: tr, timeout: cfg.Timeout}, nil
}

// Close drops the client's idle connections. The Prometheus may still be
// used after it (and opens new ones).
func (p *Prometheus) Close() { p.tr.CloseIdleConnections() }

// Query runs an instant query at the time at.
func (p *Prometheus) Query(ctx context.Context, query string, at time.Time) (Result, error) {
	ctx, cancel := context.WithTimeout(ctx, p.timeout)
	defer cancel()
	v, warnings, _, err := p.api.Query(ctx, query, at, promv1.WithTimeout(p.timeout))
	if err != nil {
		var perr *promv1.Error
		if errors.As(err, &perr) && perr.Type == promv1.ErrBadData {
			return Result{}, fmt.Errorf("%w by Prometheus: %s", ErrRefused, perr.Msg)
		}
		return Result{}, fmt.Errorf("prometheus query: %w", err)
	}
	res := convertValue(v)
	res.Warnings = warnings
	return res, nil
}

func convertValue(v model.Value) Result {
	switch v := v.(type) {
	case *model.Scalar:
		return Result{Type: TypeScalar, Series: 1, Samples: []Sample{{Value: float64(v.Value)}}}
	case model.Vector:
		res := Result{Type: TypeVector, Series: len(v), Samples: make([]Sample, 0, len(v))}
		for _, s := range v {
			labels := make(map[string]string, len(s.Metric))
			for k, val := range s.Metric {
				labels[string(k)] = string(val)
			}
			res.Samples = append(res.Samples, Sample{Labels: labels, Value: float64(s.Value), Histogram: s.Histogram != nil})
		}
		return res
	case model.Matrix:
		return Result{Type: TypeMatrix, Series: len(v)}
	case *model.String:
		return Result{Type: TypeString, Series: 1}
	case nil:
		return Result{Type: TypeVector}
	}
	return Result{Type: ResultType(v.Type().String()), Samples: nil, Series: 0}
}

// bearerFile adds the token read from path to every request.
type bearerFile struct {
	path string
	next http.RoundTripper
}

func (b *bearerFile) RoundTrip(r *http.Request) (*http.Response, error) {
	tok, err := readToken(b.path)
	if err != nil {
		return nil, err
	}
	r = r.Clone(r.Context())
	r.Header.Set("Authorization", "Bearer "+tok)
	return b.next.RoundTrip(r)
}

func readToken(path string) (string, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return "", fmt.Errorf("prometheus bearer token file: %w", err)
	}
	tok := strings.TrimSpace(string(b))
	if tok == "" || strings.ContainsAny(tok, "\r\n") {
		return "", fmt.Errorf("prometheus bearer token file %s: want one line with the token", path)
	}
	return tok, nil
}

// finite reports whether x is neither NaN nor an infinity.
func finite(x float64) bool { return !math.IsNaN(x) && !math.IsInf(x, 0) }
