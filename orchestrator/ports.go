package orchestrator

import (
	"context"
	"io"
	"net/http"
	"time"

	"github.com/nightshift/nightshift/identity"
	"github.com/nightshift/nightshift/orchestrator/agent"
	"github.com/nightshift/nightshift/orchestrator/gateway"
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
	// BranchHead says where branch is on remote ("" when it is not there).
	BranchHead(ctx context.Context, remote, branch string, auth worktree.Auth) (string, error)
}

// Identities gives each task its own agent identity and the short-lived
// token its tools use to act as it (identity.Service).
type Identities interface {
	ForTask(ctx context.Context, taskID string) (identity.Identity, error)
	Release(ctx context.Context, taskID string) error
	IssueTokenTTL(ctx context.Context, identityID string, scope identity.Scope, ttl time.Duration) (string, error)
	RevokeToken(ctx context.Context, token string) error
	RevokeTaskTokens(ctx context.Context, taskID string) error
	Authenticate(ctx context.Context, token string) (identity.Identity, identity.Scope, error)
}

// Gateway meters and budgets a task's model traffic (gateway.Gateway).
// TaskHandler serves the gateway to one task: any other token is refused.
type Gateway interface {
	RegisterTTL(taskID string, b gateway.Budget, hooks gateway.Hooks, ttl time.Duration) string
	Unregister(taskID string)
	Usage(taskID string) gateway.Usage
	TaskHandler(taskID string) http.Handler
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
	_ Gateway    = (*gateway.Gateway)(nil)
)

// Plan is how a run publishes its work, decided before the agent starts.
type Plan struct {
	// Base overrides the work item's base (e.g. a pull request's head).
	Base string
	// PushRemote is where the branch is pushed; "" means the task's repo.
	PushRemote string
	// PushBranch is the remote branch to push; "" means the task branch.
	PushBranch string
	// Force allows a non-fast-forward push (only for Nightshift's own branches).
	Force bool
	// Auth fetches and pushes (a narrowed installation token for GitHub).
	Auth *worktree.Auth
	// PromptContext is appended to the agent's prompt (e.g. a failing CI log excerpt).
	PromptContext string
}

// PullRequests publishes a run's work where the task came from: it plans the
// branches before the run and finds or creates the pull request after the
// push. Implementations must be idempotent per task (a retried run updates
// its pull request instead of opening another).
type PullRequests interface {
	Plan(ctx context.Context, item WorkItem) (Plan, error)
	Open(ctx context.Context, item WorkItem, plan Plan, result RunResult) (url string, err error)
}

// RunResult is what a run produced, for the pull request.
type RunResult struct {
	Commit  string
	Branch  string
	Summary string
	Diff    DiffStat
	// Files are the changed paths.
	Files []string
}
