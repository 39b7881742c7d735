//go:build !faultpoints

package deploystep

// faultpoint is a no-op without the faultpoints build tag.
func faultpoint(string) {}
