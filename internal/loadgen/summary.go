package loadgen

import (
	"slices"
	"time"
)

// Stats summarise latencies (exact, from the sorted sample).
type Stats struct {
	P50, P90, P99, Max time.Duration
	Samples            int
}

// Latencies summarises ds; nearest-rank percentiles.
func Latencies(ds []time.Duration) Stats {
	if len(ds) == 0 {
		return Stats{}
	}
	s := slices.Clone(ds)
	slices.Sort(s)
	rank := func(p float64) time.Duration {
		i := int(p*float64(len(s))+0.999999) - 1
		return s[min(max(i, 0), len(s)-1)]
	}
	return Stats{P50: rank(0.50), P90: rank(0.90), P99: rank(0.99), Max: s[len(s)-1], Samples: len(s)}
}

// Summary describes a set of records.
type Summary struct {
	// Requests is how many were offered; OK and Failed how many succeeded
	// and failed (Class.Failed); the rest were cancelled.
	Requests, OK, Failed int
	// ByClass counts the records of each class (classes with none absent).
	ByClass map[Class]int
	// Latency is over the requests that got an HTTP answer (any status):
	// failures without one would otherwise pull the percentiles down.
	Latency Stats
	// FirstFailure and LastFailure are the due times of the first and last
	// failed requests (zero without failures).
	FirstFailure, LastFailure time.Time
	// Span is the time from the first to the last due time.
	Span time.Duration
}

// FailureWindow is the time from the first failed request's due time to the
// last's (0 with fewer than two failures).
func (s Summary) FailureWindow() time.Duration {
	if s.Failed == 0 {
		return 0
	}
	return s.LastFailure.Sub(s.FirstFailure)
}

// Summarize describes recs.
func Summarize(recs []Record) Summary {
	s := Summary{Requests: len(recs), ByClass: map[Class]int{}}
	var lat []time.Duration
	for i, r := range recs {
		s.ByClass[r.Class]++
		switch {
		case r.Class == ClassOK:
			s.OK++
		case r.Class.Failed():
			s.Failed++
			if s.FirstFailure.IsZero() || r.Due.Before(s.FirstFailure) {
				s.FirstFailure = r.Due
			}
			if r.Due.After(s.LastFailure) {
				s.LastFailure = r.Due
			}
		}
		if r.Status != 0 {
			lat = append(lat, r.Latency)
		}
		if i > 0 {
			s.Span = max(s.Span, r.Due.Sub(recs[0].Due))
		}
	}
	s.Latency = Latencies(lat)
	return s
}

// Summary describes the whole run.
func (r Result) Summary() Summary { return Summarize(r.Records) }

// Phase describes the requests due in the named phase (every phase of that
// name, if it was marked more than once).
func (r Result) Phase(name string) Summary {
	return Summarize(r.filter(func(rec Record) bool { return rec.Phase == name }))
}

// Between describes the requests due in [from, to).
func (r Result) Between(from, to time.Time) Summary {
	return Summarize(r.filter(func(rec Record) bool { return !rec.Due.Before(from) && rec.Due.Before(to) }))
}

// Failures returns the failed requests' records, in schedule order.
func (r Result) Failures() []Record {
	return r.filter(func(rec Record) bool { return rec.Class.Failed() })
}

func (r Result) filter(keep func(Record) bool) []Record {
	var out []Record
	for _, rec := range r.Records {
		if keep(rec) {
			out = append(out, rec)
		}
	}
	return out
}

// OfferedRate is the requests offered per second over the schedule's span.
func (s Summary) OfferedRate() float64 {
	if s.Requests < 2 || s.Span <= 0 {
		return 0
	}
	return float64(s.Requests-1) / s.Span.Seconds()
}
