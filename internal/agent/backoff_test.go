package agent

import (
	"testing"
	"time"
)

// Backoff stays within [d/2, d], d = 200ms*2^n capped at max.
func TestBackoffBounds(t *testing.T) {
	for n := range 10 {
		d := min(200*time.Millisecond<<n, 10*time.Second)
		for range 200 {
			if b := Backoff(n, 10*time.Second); b < d/2 || b > d {
				t.Fatalf("Backoff(%d) = %s, want within [%s, %s]", n, b, d/2, d)
			}
		}
	}
}
