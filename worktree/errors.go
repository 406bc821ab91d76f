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
	return fmt.Sprintf("worktree: protected paths changed: %s", strings.Join(e.Paths, ", "))
}

// Is makes errors.Is(err, ErrProtectedPath) true.
func (e *ProtectedPathError) Is(target error) bool { return target == ErrProtectedPath }

// Push failure reasons carried by PushError.Reason.
const (
	// PushRejected: the remote refused the update (a hook, a protected
	// branch rule, a policy).
	PushRejected = "rejected"
	// PushNonFastForward: the remote branch has commits the task does not
	// build on, and Force was not set.
	PushNonFastForward = "non_fast_forward"
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
