package orchestrator

import (
	"context"
	"io"

	"github.com/nightshift/nightshift/identity"
	"github.com/nightshift/nightshift/orchestrator/agent"
	"github.com/nightshift/nightshift/sandbox"
	"github.com/nightshift/nightshift/worktree"
)

// The orchestrator declares what it consumes; the leaf packages satisfy these
// interfaces without importing the orchestrator.

// Sandboxes runs commands in isolation (sandbox.Manager).
type Sandboxes interface {
	Run(ctx context.Context, spec sandbox.Spec) (sandbox.Result, error)
}

// Worktrees provisions task clones, commits, pushes and diffs them
// (worktree.Manager).
type Worktrees interface {
	Provision(ctx context.Context, ref worktree.Ref, progress io.Writer) (*worktree.Worktree, error)
	Commit(ctx context.Context, wt *worktree.Worktree, req worktree.CommitRequest) (worktree.Commit, error)
	Push(ctx context.Context, wt *worktree.Worktree, req worktree.PushRequest) (worktree.PushResult, error)
	Diff(ctx context.Context, wt *worktree.Worktree) (worktree.Diff, error)
	Remove(ctx context.Context, taskID string) error
}

// Identities gives each task its own agent identity (identity.Service).
type Identities interface {
	ForTask(ctx context.Context, taskID string) (identity.Identity, error)
	Release(ctx context.Context, taskID string) error
}

// Agents builds the adapter for an agent name.
type Agents interface {
	Adapter(name string) (agent.Adapter, error)
}

// Notifier hears about every recorded task change (GitHub, Linear and
// Slack reporters). It must be idempotent: a change can be delivered twice.
type Notifier interface {
	Notify(ctx context.Context, t Task) error
}

// Redactor removes secret values from text a task produces.
type Redactor interface {
	String(s string) string
}

var (
	_ Identities = (*identity.Service)(nil)
	_ Sandboxes  = (*sandbox.Manager)(nil)
)
