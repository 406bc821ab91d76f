package orchestrator

import (
	"cmp"
	"context"
	"errors"
	"fmt"

	"github.com/nightshift/nightshift/identity"
	"github.com/nightshift/nightshift/orchestrator/agent"
	"github.com/nightshift/nightshift/sandbox"
	"github.com/nightshift/nightshift/worktree"
)

// provision gives the run its identity, its plan, its worktree and the
// sandbox its steps share.
func (w *Worker) provision(ctx context.Context, r *run) error {
	item, rep := r.item, r.rep
	var err error
	if r.ident, err = w.identities.ForTask(ctx, item.TaskID); err != nil {
		return remoteErr("identity", "acquire identity: %w", err)
	}
	r.plan = Plan{Force: true}
	if w.cfg.PullRequests != nil {
		if r.plan, err = w.cfg.PullRequests.Plan(ctx, item); err != nil {
			return remoteErr("plan", "plan pull request: %w", err)
		}
	}
	r.auth = r.repo.Auth
	if r.plan.Auth != nil {
		r.auth = *r.plan.Auth
	}
	if !r.readOnly() {
		// A run whose earlier delivery pushed before it was lost is
		// finished, not run again (execute): no worktree is needed.
		if r.landed, err = w.landed(ctx, r); err != nil || r.landed != nil {
			return err
		}
	}
	base := item.Base
	// A retry starts afresh from the task's pushed branch, so commits
	// earlier runs and follow-ups pushed are kept (unless FromBase).
	fromBranch := item.Retry && !item.FromBase
	if item.FollowUp || fromBranch {
		// A follow-up continues the task's pushed branch; its worktree is
		// reused when still there, else provisioned from that branch.
		base = item.Branch
	}
	if item.Retry && item.FromBase {
		rep.line(ctx, "system", "retry from base: starting over from "+orDefault(item.Base)+"; the commits on "+item.Branch+" are replaced")
	}
	if r.plan.Base != "" {
		base = r.plan.Base
	}
	progress := rep.writer(ctx, "system")
	ref := worktree.Ref{TaskID: item.TaskID, Repo: item.Repo, Base: base, Branch: item.Branch, Reuse: item.FollowUp, Auth: r.auth}
	if item.FollowUp && r.plan.PushBranch == "" {
		// Keep the worktree only while the branch is where the task left
		// it: a person's commit pushed meanwhile is built on, not pushed over.
		ref.ReuseAt = item.Commit
	}
	r.wt, err = w.worktrees.Provision(ctx, ref, progress)
	if err != nil && (item.FollowUp || fromBranch) && r.plan.Base == "" && errors.Is(err, worktree.ErrBaseNotFound) {
		// The earlier run never pushed and its worktree is gone: start
		// the follow-up from the task's own base.
		rep.line(ctx, "system", "no pushed branch to continue from; starting from "+orDefault(item.Base))
		ref.Base = item.Base
		r.wt, err = w.worktrees.Provision(ctx, ref, progress)
	}
	progress.Close()
	if err != nil {
		return remoteErr("provision", "provision worktree: %w", err)
	}
	rep.line(ctx, "system", fmt.Sprintf("worktree on %s from %s (%s)", r.wt.Branch, r.wt.BaseRef, short(r.wt.BaseCommit)))

	r.env = map[string]string{
		"NIGHTSHIFT_TASK_ID":  item.TaskID,
		"GIT_AUTHOR_NAME":     r.ident.Name,
		"GIT_AUTHOR_EMAIL":    r.ident.Email,
		"GIT_COMMITTER_NAME":  r.ident.Name,
		"GIT_COMMITTER_EMAIL": r.ident.Email,
	}
	extra, err := w.cfg.Env(ctx, item.TaskID, item.Agent, item.Repo)
	if err != nil {
		return remoteErr("agent_env", "agent environment: %w", err)
	}
	for k, v := range extra {
		r.env[k] = v
	}
	r.env["NIGHTSHIFT_MODE"] = cmp.Or(item.Mode, ModeChange)
	r.spec = sandbox.Spec{Dir: r.wt.Dir, DirReadOnly: r.readOnly(), ReadOnly: r.wt.ReadOnlyPaths, ReadOnlyInDir: r.wt.ProtectedGitPaths,
		Timeout: r.repo.Timeout, AllowHosts: r.repo.AllowHosts, Tools: w.cfg.Tools,
		Log: func(msg string, attrs ...any) { rep.line(ctx, "sandbox", fmtAttrs(msg, attrs)) }}
	if w.cfg.MCP != nil {
		// Tokens of earlier runs of this task (one that crashed and is
		// redelivered now) die before this run's token is issued.
		if err := w.identities.RevokeTaskTokens(ctx, item.TaskID); err != nil {
			return remoteErr("identity", "revoke earlier agent tokens: %w", err)
		}
		scope := identity.Scope{TaskID: item.TaskID, Repo: item.Repo, Agent: item.Agent}
		tok, err := w.identities.IssueTokenTTL(ctx, r.ident.ID, scope, w.tokenTTL(r.repo.Timeout))
		if err != nil {
			return remoteErr("identity", "issue agent token: %w", err)
		}
		r.mcpToken = tok
		rep.tokens.add("NIGHTSHIFT_MCP_TOKEN", tok)
		url, fwd, _, err := w.serveRunService(r, "mcp", MCPPort, taskMCP(w.cfg.MCP, w.identities, item.TaskID))
		if err != nil {
			return stepErr("provision", "serve MCP to the sandbox: %w", err)
		}
		if fwd != nil {
			r.spec.Forwards = append(r.spec.Forwards, *fwd)
		}
		r.mcpURL = url + "/mcp"
		r.env["NIGHTSHIFT_MCP_URL"], r.env["NIGHTSHIFT_MCP_TOKEN"] = r.mcpURL, r.mcpToken
	}
	return nil
}

// setup runs the repo's configured command, then the setup files users
// already have (.nightshift/setup.sh, Cursor's and 1Code's worktree
// configs), with network per the repo's allowlist. A follow-up reuses a
// worktree that is already set up.
func (w *Worker) setup(ctx context.Context, r *run) error {
	if r.item.FollowUp {
		return nil
	}
	setups, err := agent.SetupCommands(r.wt.Dir, r.repo.Setup)
	if err != nil {
		return stepErr("setup_failed", "read setup files: %w", err)
	}
	env := merge(r.env, agent.SetupEnv(r.wt.Dir))
	for i, argv := range setups {
		spec := r.spec
		spec.ID = fmt.Sprintf("%s-setup-%d-%d", r.item.TaskID, r.item.Run, i)
		spec.Command = argv
		spec.Env = env
		if err := w.runStep(ctx, r.rep, spec, "setup", "setup_failed"); err != nil {
			return err
		}
	}
	return nil
}

func orDefault(base string) string {
	if base == "" {
		return "the default branch"
	}
	return base
}
