// Package worktree owns the git side of a task: a bare mirror cache per
// repository, an isolated per-task clone created from the mirror without
// copying objects, commits made on behalf of the agent, diffs against the
// task's base, authenticated pushes and garbage collection of finished
// clones.
//
// Guarantees:
//
//   - One fetch at a time per repository: concurrent provisions of the same
//     repository wait for the fetch in flight (and see its progress) rather
//     than starting their own; across processes sharing MirrorDir a file lock
//     serializes fetches.
//   - A task clone is a standalone repository at TaskDir/<task-id>/work whose
//     .git/objects/info/alternates points at the mirror's object directory.
//     The agent writes only its own object directory and refs; the paths a
//     sandbox must bind read-only are listed in Worktree.ReadOnlyPaths (the
//     mirror's objects) and Worktree.ProtectedGitPaths (hooks, config,
//     alternates). Task metadata lives outside the worktree, out of the
//     agent's reach.
//   - Nothing in this package runs git hooks in a task clone: commits, diffs
//     and pushes are done with go-git plumbing and hand-written object walks;
//     the only native git processes it starts are the remote side of file://
//     transports (git-upload-pack / git-receive-pack in the remote).
//   - Commits made on behalf of the agent carry the task identity and a
//     Nightshift-Task trailer; changes to protected paths (default
//     .github/workflows/**) fail with *ProtectedPathError unless allowed.
//   - Pushes send only the objects reachable from the task's new commits and
//     not from its base (or the remote branch's old value), and failures are
//     reported as *PushError with a machine-readable Reason.
package worktree
