// Package pkgdoc holds no code, only a test that reads every package of the
// module and checks that each one (but package main and generated code) has
// a doc comment starting "Package <name>", the way `go doc` shows it: a doc
// comment is the comment block right above the package clause, so a blank
// line inside it cuts off everything above the blank line.
package pkgdoc
