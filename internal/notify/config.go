package notify

import (
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"strings"
	"time"
)

// Format is the body a receiver gets.
type Format string

// The formats a receiver can ask for.
const (
	FormatJSON  Format = "json"  // the event as documented in the package doc
	FormatSlack Format = "slack" // {"text": "<one-line summary>"}, for Slack-compatible incoming webhooks
)

// Receiver is one webhook endpoint.
type Receiver struct {
	// Name identifies the receiver in logs and metrics (the receiver label).
	// Default: the URL's host, suffixed with "-2", "-3", ... when several
	// receivers share a host. The URL itself is never logged.
	Name string
	// URL is the http or https endpoint events are POSTed to.
	URL string
	// Format is FormatJSON (default) or FormatSlack.
	Format Format
	// Headers are added to every request, e.g. an Authorization header.
	// They are never logged.
	Headers map[string]string
	// Timeout bounds one delivery attempt. Default 5s.
	Timeout time.Duration
}

// Config configures a Notifier. Zero fields take the defaults below.
type Config struct {
	Receivers []Receiver
	// QueueSize is the number of events each receiver's queue holds before
	// the oldest is dropped. Default 256.
	QueueSize int
	// MaxAttempts bounds the attempts per event and receiver, the first
	// included. Default 5.
	MaxAttempts int
	// BackoffBase is the wait before the first retry; it doubles on every
	// retry up to BackoffMax, and a random half of it is jitter. Defaults
	// 500ms and 30s.
	BackoffBase time.Duration
	BackoffMax  time.Duration
	// DrainTimeout bounds how long Close keeps delivering queued events.
	// Default 5s.
	DrainTimeout time.Duration
}

// Defaults.
const (
	DefaultTimeout      = 5 * time.Second
	DefaultQueueSize    = 256
	DefaultMaxAttempts  = 5
	DefaultBackoffBase  = 500 * time.Millisecond
	DefaultBackoffMax   = 30 * time.Second
	DefaultDrainTimeout = 5 * time.Second
)

// withDefaults returns c with its zero fields set to the defaults and the
// receivers' names and formats filled in. It does not modify c.
func (c Config) withDefaults() Config {
	if c.QueueSize == 0 {
		c.QueueSize = DefaultQueueSize
	}
	if c.MaxAttempts == 0 {
		c.MaxAttempts = DefaultMaxAttempts
	}
	if c.BackoffBase == 0 {
		c.BackoffBase = DefaultBackoffBase
	}
	if c.BackoffMax == 0 {
		c.BackoffMax = DefaultBackoffMax
	}
	if c.DrainTimeout == 0 {
		c.DrainTimeout = DefaultDrainTimeout
	}
	rs := make([]Receiver, len(c.Receivers))
	seen := map[string]int{}
	for i, r := range c.Receivers {
		if r.Format == "" {
			r.Format = FormatJSON
		}
		if r.Timeout == 0 {
			r.Timeout = DefaultTimeout
		}
		if r.Name == "" {
			r.Name = "webhook"
			if u, err := url.Parse(r.URL); err == nil && u.Hostname() != "" {
				r.Name = u.Hostname()
			}
			if n := seen[r.Name]; n > 0 {
				r.Name = fmt.Sprintf("%s-%d", r.Name, n+1)
			}
		}
		seen[r.Name]++
		rs[i] = r
	}
	c.Receivers = rs
	return c
}

// Validate reports every invalid field, each by name. It checks c as given,
// with zero values standing for the defaults.
func (c Config) Validate() error {
	var errs []error
	if c.QueueSize < 0 {
		errs = append(errs, fmt.Errorf("queue_size: %d is negative", c.QueueSize))
	}
	if c.MaxAttempts < 0 {
		errs = append(errs, fmt.Errorf("max_attempts: %d is negative", c.MaxAttempts))
	}
	if c.BackoffBase < 0 || c.BackoffMax < 0 || c.DrainTimeout < 0 {
		errs = append(errs, errors.New("backoff_base, backoff_max, drain_timeout: must not be negative"))
	}
	if c.BackoffBase > 0 && c.BackoffMax > 0 && c.BackoffMax < c.BackoffBase {
		errs = append(errs, fmt.Errorf("backoff_max: %s is below backoff_base %s", c.BackoffMax, c.BackoffBase))
	}
	names := map[string]bool{}
	for i, r := range c.Receivers {
		field := fmt.Sprintf("receivers[%d]", i)
		if err := validateURL(r.URL); err != nil {
			errs = append(errs, fmt.Errorf("%s.url: %w", field, err))
		}
		switch r.Format {
		case "", FormatJSON, FormatSlack:
		default:
			errs = append(errs, fmt.Errorf("%s.format: %q is not %q or %q", field, r.Format, FormatJSON, FormatSlack))
		}
		if r.Timeout < 0 {
			errs = append(errs, fmt.Errorf("%s.timeout: %s is negative", field, r.Timeout))
		}
		for k := range r.Headers {
			if k == "" || strings.ContainsAny(k, " \t\r\n:") {
				errs = append(errs, fmt.Errorf("%s.headers: %q is not a valid header name", field, k))
			}
			if strings.EqualFold(k, "Content-Type") || strings.EqualFold(k, "Host") {
				errs = append(errs, fmt.Errorf("%s.headers: %s is set by the notifier", field, http.CanonicalHeaderKey(k)))
			}
		}
		if r.Name != "" {
			if names[r.Name] {
				errs = append(errs, fmt.Errorf("%s.name: %q is used by another receiver", field, r.Name))
			}
			names[r.Name] = true
		}
	}
	return errors.Join(errs...)
}

// validateURL checks u without ever quoting it: a webhook URL is often a
// credential.
func validateURL(raw string) error {
	if raw == "" {
		return errors.New("missing")
	}
	u, err := url.Parse(raw)
	if err != nil {
		return errors.New("not a valid URL")
	}
	if u.Scheme != "http" && u.Scheme != "https" {
		return errors.New("scheme must be http or https")
	}
	if u.Host == "" {
		return errors.New("has no host")
	}
	return nil
}

// ParseReceiverFlag parses the value of a repeatable --webhook flag,
// FORMAT=URL, where FORMAT is "json" or "slack":
//
//	--webhook slack=https://hooks.slack.com/services/T000/B000/XXXX
//	--webhook json=https://ops.example.com/golive-events
//
// The error never contains the URL.
func ParseReceiverFlag(s string) (Receiver, error) {
	format, rawURL, ok := strings.Cut(s, "=")
	if !ok || strings.ContainsAny(format, ":/?") { // a bare URL, maybe with a query: never quote it
		return Receiver{}, errors.New(`webhook: want FORMAT=URL, e.g. slack=https://hooks.slack.com/services/..., or json=https://...`)
	}
	f := Format(strings.ToLower(strings.TrimSpace(format)))
	if f != FormatJSON && f != FormatSlack {
		return Receiver{}, fmt.Errorf("webhook: format %q is not %q or %q", format, FormatJSON, FormatSlack)
	}
	rawURL = strings.TrimSpace(rawURL)
	if err := validateURL(rawURL); err != nil {
		return Receiver{}, fmt.Errorf("webhook: %s URL: %w", f, err)
	}
	return Receiver{URL: rawURL, Format: f}, nil
}
