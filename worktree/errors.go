package worktree

import (
	"errors"
	"fmt"
	"strings"
)

var (
	// ErrNotFound is returned when no worktree exists for a task.
	ErrNotFound = errors.New("worktree: not found")
	// ErrBaseNotFound is returned when the requested base branch, ref or
	// commit does not exist in the repository.
	ErrBaseNotFound = errors.New("worktree: base not found")
	// ErrProtectedPath is matched (errors.Is) by *ProtectedPathError.
	ErrProtectedPath = errors.New("worktree: protected path changed")
	// ErrUnsafeRepository is returned when a repository or task clone holds
	// something this package refuses to handle (a tree path escaping the
	// worktree, a symlink inside .git).
	ErrUnsafeRepository = errors.New("worktree: unsafe repository content")
	// ErrFileTooLarge is returned by Commit and Diff when the worktree
	// holds a new or changed file over Config.MaxFileSize.
	ErrFileTooLarge = errors.New("worktree: file too large")
	// ErrCommitTooLarge is matched by the *LimitError Commit and Diff
	// return when the new files of a change add up to more than
	// Config.MaxCommitBytes.
	ErrCommitTooLarge = errors.New("worktree: change too large")
	// ErrTreeTooDeep is matched by the *LimitError Commit and Diff return
	// when the work tree nests directories deeper than MaxTreeDepth.
	ErrTreeTooDeep = errors.New("worktree: directory tree too deep")
	// ErrForbiddenRepo is returned when a local repository resolves under
	// one of Config.ForbiddenDirs (or MirrorDir or TaskDir).
	ErrForbiddenRepo = errors.New("worktree: repository in a forbidden directory")
	// ErrInvalidTaskID is returned for task IDs that cannot be used as a
	// directory name.
	ErrInvalidTaskID = errors.New("worktree: invalid task id")
)

// ProtectedPathError reports protected paths that a task changed.
type ProtectedPathError struct {
	// Paths are the changed paths that matched a protected pattern, sorted.
	Paths []string
}

func (e *ProtectedPathError) Error() string {
	const show = 20
	paths := make([]string, 0, min(len(e.Paths), show)+1)
	for _, p := range e.Paths[:min(len(e.Paths), show)] {
		paths = append(paths, shortPath(p))
	}
	if len(e.Paths) > show {
		paths = append(paths, fmt.Sprintf("and %d more", len(e.Paths)-show))
	}
	return fmt.Sprintf("worktree: protected paths changed: %s", strings.Join(paths, ", "))
}

// Is makes errors.Is(err, ErrProtectedPath) true.
func (e *ProtectedPathError) Is(target error) bool { return target == ErrProtectedPath }

// Limit reasons carried by LimitError.Reason.
const (
	// LimitCommitBytes: the new files add up to more than
	// Config.MaxCommitBytes.
	LimitCommitBytes = "commit_too_large"
	// LimitTreeDepth: directories nest deeper than MaxTreeDepth.
	LimitTreeDepth = "tree_too_deep"
)

// LimitError reports a work tree over one of the limits Commit and Diff
// enforce; nothing was committed. It matches ErrCommitTooLarge or
// ErrTreeTooDeep (errors.Is) by Reason.
type LimitError struct {
	// Reason is LimitCommitBytes or LimitTreeDepth.
	Reason string
	// Path is where the walk was when the limit was hit, shortened to at
	// most about 120 bytes.
	Path string
	// Limit is the limit in bytes or directory levels.
	Limit int64
}

func (e *LimitError) Error() string {
	switch e.Reason {
	case LimitCommitBytes:
		return fmt.Sprintf("worktree: the change adds more than %d bytes of new files (at %s), the most one commit may add", e.Limit, e.Path)
	case LimitTreeDepth:
		return fmt.Sprintf("worktree: directories nest deeper than %d levels (at %s)", e.Limit, e.Path)
	}
	return fmt.Sprintf("worktree: limit %s exceeded at %s", e.Reason, e.Path)
}

// Is matches the sentinel of the limit.
func (e *LimitError) Is(target error) bool {
	return e.Reason == LimitCommitBytes && target == ErrCommitTooLarge ||
		e.Reason == LimitTreeDepth && target == ErrTreeTooDeep
}

// shortPath shortens a path for an error message: an agent can make one
// tens of kilobytes long.
func shortPath(p string) string {
	const keep = 56
	if len(p) <= 2*keep+8 {
		return p
	}
	return fmt.Sprintf("%s...[%d bytes]...%s", p[:keep], len(p)-2*keep, p[len(p)-keep:])
}

// Push failure reasons carried by PushError.Reason.
const (
	// PushRejected: the remote refused the update (a hook, a protected
	// branch rule, a policy).
	PushRejected = "rejected"
	// PushNonFastForward: the remote branch has commits the task does not
	// build on, and Force was not set.
	PushNonFastForward = "non_fast_forward"
	// PushLeaseLost: the remote branch is not where the pusher expected
	// it (PushRequest.Expect): another run moved it.
	PushLeaseLost = "lease_lost"
	// PushAuth: the remote wants credentials, or refused the ones given (401).
	PushAuth = "auth"
	// PushForbidden: the credentials are valid but may not push (403).
	PushForbidden = "forbidden"
	// PushNotFound: the remote repository does not exist (404).
	PushNotFound = "not_found"
	// PushHostKey: the SSH server's host key is not the known one.
	PushHostKey = "host_key"
	// PushTransport: any other failure talking to the remote.
	PushTransport = "transport"
)

// PushError is returned by Push when the remote did not accept the update.
type PushError struct {
	Reason  string // one of the Push* reason constants
	Remote  string // the remote URL or path, without credentials
	Ref     string // the remote ref, e.g. refs/heads/nightshift/t1
	Message string // what the remote said, when it said something
	Err     error  // the underlying error, if any
}

func (e *PushError) Error() string {
	msg := fmt.Sprintf("worktree: push %s to %s: %s", e.Ref, e.Remote, e.Reason)
	if e.Message != "" {
		msg += ": " + e.Message
	}
	if e.Err != nil && e.Message == "" {
		msg += ": " + e.Err.Error()
	}
	return msg
}

func (e *PushError) Unwrap() error { return e.Err }
