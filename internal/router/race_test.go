//go:build race

package router_test

// The race detector slows the in-process backends and load generator
// several times: the load tests offer less so the client keeps up.
const raceEnabled = true
