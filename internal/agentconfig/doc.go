// Package agentconfig owns the golive agent's configuration file: its HCL
// schema, its defaults, and the checks that make a config safe to run.
//
// A config is built in four layers, each overriding the one before:
//
//	Default()  -->  file (Parse / Load)  -->  flags (the caller)  -->  Validate()
//
// Parse only decodes: it rejects what cannot be read at all (HCL syntax,
// unknown blocks or attributes, wrong types, malformed durations such as "2x"
// or sizes such as "2XB"). Validate judges the whole, after flags: names,
// enums, ranges, and combinations (a blue-green service needs two distinct
// slot ports, a migration needs a database to back up first, ...).
//
// Invariants:
//
//   - Every error names the field, and carries the file:line it came from
//     when the value (or the block that lacks it) came from a file:
//     `agent.hcl:12: service "app": health.timeout: invalid duration "2x"`.
//     Errors are returned as Errors, a list of *FieldError, sorted by line.
//   - Nothing here touches the filesystem beyond reading the config file
//     itself (and the hostname for the default host id): trusted keys, env
//     files, units and directories are checked for shape, never existence.
//   - Secret values never pass through this package; the config names env
//     files and the keys to look up in them.
//   - Durations and byte sizes are strings in the file ("30s", "2GiB") and
//     time.Duration / int64 in Config. A zero duration in Config means "not
//     set" only for the few fields documented so; a value set in the file
//     must be positive.
//
// Paths under the state dir that have defaults (a service's log file and
// backup dir) are left empty in Config and resolved by Config.LogFile and
// Config.BackupDir, so a state dir given by flag is honoured.
package agentconfig
