// Package sandbox runs untrusted commands (coding agents, setup and test
// scripts) with nothing of the host visible unless a Spec grants it.
//
// A Manager wraps a small Driver interface, in the style of database/sql over
// driver.Conn: the Manager owns what every driver shares (spec defaults, the
// explicit environment, the wall-clock timeout, the output cap, the egress
// proxy, loopback forwards, the reason of death) and the driver owns how the
// process tree is isolated, limited and killed. Every driver runs the
// conformance suite in package sandboxtest.
//
// Drivers:
//
//   - sandbox/bwrap (default on Linux): bubblewrap with all namespaces
//     unshared, an allow-list mount profile, a seccomp filter, a non-root uid
//     inside that is never host root either (as root, bubblewrap runs as a
//     dedicated unprivileged host uid), and limits through a cgroup (v2 when
//     delegated, v1 when the hierarchy is writable) or prlimit otherwise.
//   - sandbox/process: a plain process group. It scrubs the environment and
//     enforces timeouts, but it isolates NOTHING: the command can read every
//     file and reach every address the host user can. Use it only when the
//     operator opted in explicitly.
//   - Remote sandboxes (a VM or container service) implement Driver outside
//     this module: Start receives a Launch whose Spec says what to mount and
//     run; Listeners name the loopback ports that must reach the given host
//     unix sockets (a remote driver tunnels them, e.g. over its control
//     channel); Wait and Kill map onto the remote API. No implementation
//     ships here.
//
// Guarantees, whatever the driver: the command's environment is exactly
// Spec.Env plus PATH, HOME, TMPDIR and LANG defaults (nothing is inherited);
// when Run returns, the command and every process it started are gone (for
// the process driver: every process that stayed in its process group); the
// Result says why it ended.
//
// Network egress goes only through a host-side HTTP/CONNECT proxy that
// matches the requested name and port against Spec.AllowHosts (an entry
// without a port allows 443 and 80 only), resolves DNS itself,
// refuses loopback, private, link-local and metadata addresses and IP
// literals, and logs every decision.
package sandbox
