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
//   - Nothing in this package runs git hooks or reads git config from a
//     repository an agent could have written: commits, diffs and pushes
//     are done with go-git plumbing and hand-written object walks, and
//     local repositories (paths and file:// URLs) are fetched from and
//     pushed to in this process, never through git-upload-pack or
//     git-receive-pack. A local repository that resolves under
//     Config.ForbiddenDirs (or MirrorDir or TaskDir) is refused with
//     ErrForbiddenRepo.
//   - Reads of a task clone never follow the agent's links: every file is
//     opened relative to a directory descriptor (os.Root, or openat with
//     O_NOFOLLOW), non-blocking, and refused unless it is a regular file,
//     so a FIFO or a link to a host file in place of .git/index, a ref or
//     a work file can neither hang the host nor show it another file.
//     Symlinks in the work tree are committed as symlinks. The clone's
//     alternates, config and refs are never trusted: the mirror comes from
//     task metadata kept outside the clone. A nested repository (a
//     directory with its own .git) is committed as files, without its
//     .git; no entry named .git is ever read.
//   - What the agent leaves costs the host bounded memory and descriptors:
//     files are hashed and stored as loose objects in chunks, never read
//     whole; a change whose new files (those the mirror lacks, sparse ones
//     at their apparent size) add up to more than Config.MaxCommitBytes
//     (1 GiB), or whose directories nest deeper than MaxTreeDepth (256),
//     is refused with a *LimitError before the walk reads past the limit;
//     the walk holds one open directory per level; paths in errors are
//     shortened.
//   - Commit squashes whatever the agent did into one commit made by
//     Nightshift (parent: the last commit a push of the task delivered, or
//     the base; tree: the work tree's files), carrying the task identity
//     and a Nightshift-Task trailer; the agent's own commits, messages and
//     branches never leave. Changes to protected paths (default
//     .github/workflows/**) fail with *ProtectedPathError unless allowed;
//     so does a symlink added, changed or removed at a protected path or
//     at a directory above a pattern's literal prefix (.github -> ci).
//   - Push sends that commit, whatever the clone's refs say, and only the
//     objects the remote does not have (not reachable from the base or the
//     remote branch's old value). Every object it sends is read once, as a
//     stream, into a pack file in the task's directory (out of the
//     agent's reach), checked against its hash and offered to
//     PushRequest.Scan (blobs, in overlapping 4 MiB windows when larger;
//     commit messages and identities; tree entry names) before any of the
//     pack is sent, so a scan sees exactly what leaves and no object is
//     held in memory whole (except by go-git's HTTP client, which holds
//     the compressed pack while it sends it). Failures are *PushError with
//     a machine-readable Reason, or *SecretFoundError.
package worktree
