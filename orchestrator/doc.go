// Package orchestrator owns the task domain of Nightshift: normalized events,
// tasks and their state machine, the NATS subjects and JetStream streams they
// travel on, the SQLite store that records every transition, the scheduler that
// turns each event into exactly one task, and the worker that drives a task
// through provision → agent → test → commit → push.
//
// Guarantees:
//   - An event is acknowledged to JetStream only after the task row derived
//     from it is stored; a task row is created at most once per idempotency key.
//   - Every state transition is stored in SQLite before it is published on
//     nightshift.tasks.<id>.state.
//   - Scheduler and workers talk only through NATS, so they can run in
//     separate processes against one NATS cluster.
//   - A run's sandbox reaches only that run's MCP endpoint and model
//     gateway, on listeners of their own that accept only the task's
//     tokens; those tokens expire and are revoked when the run ends,
//     whatever its outcome, and are redacted from all the task emits.
//   - The worker touches the worktree and the agent's home only while no
//     process of the run's sandbox lives, and never follows a link the
//     agent left in its home.
//
// The orchestrator declares the narrow interfaces it consumes (Sandboxes,
// Worktrees, Identities, Secrets, Notifier, Agents); the leaf packages
// (sandbox, worktree, identity, vault, config) satisfy them without importing
// this package.
package orchestrator
