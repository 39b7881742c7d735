// Package version holds the build's version string, set by the Makefile.
package version

// Version is overridden at link time with -X.
var Version = "dev"
