package orchestrator

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"

	"github.com/nightshift/nightshift/orchestrator/agent"
	"github.com/nightshift/nightshift/worktree"
)

// publish commits what the agent left as the task identity, checks and
// publishes the diff, pushes, and opens the pull request.
func (w *Worker) publish(ctx context.Context, r *run, out agent.Outcome) error {
	item, rep := r.item, r.rep
	if err := r.unredacted(); err != nil {
		return err
	}
	// The summary goes into the commit and the PR: no secret may ride along.
	summary := rep.redact.String(out.Summary)
	var coAuthors []worktree.Signature
	if item.Actor.Email != "" {
		name := item.Actor.Name
		if name == "" {
			name = item.Actor.Login
		}
		coAuthors = append(coAuthors, worktree.Signature{Name: name, Email: item.Actor.Email})
	}
	commit, err := w.worktrees.Commit(ctx, r.wt, worktree.CommitRequest{
		Author: worktree.Signature{Name: r.ident.Name, Email: r.ident.Email}, Message: commitMessage(item, summary),
		Trailers:  []worktree.Trailer{{Key: "Nightshift-Run", Value: fmt.Sprint(item.Run)}},
		CoAuthors: coAuthors, AllowProtected: r.repo.AllowProtected, Protected: r.repo.Protected, When: w.cfg.Clock()})
	if err != nil {
		var pe *worktree.ProtectedPathError
		if errors.As(err, &pe) {
			return &StepError{Reason: "protected_path", Err: err}
		}
		// commit_too_large, tree_too_deep: the work tree is over a limit.
		var le *worktree.LimitError
		if errors.As(err, &le) {
			return &StepError{Reason: le.Reason, Err: err}
		}
		return remoteErr("commit", "commit: %w", err) // a full disk passes
	}
	// Nothing new since the base or the task's last pushed commit, and an
	// answer: a question. The answer is the result; a task that owns a
	// pull request keeps it in review, any other task is done.
	answer := strings.TrimSpace(summary)
	if unchanged := !commit.Changed || (item.Commit != "" && commit.SHA == item.Commit); unchanged && answer != "" {
		to := StateDone
		if item.PRURL != "" {
			to = StateReview
		}
		rep.line(ctx, "system", "no changes; the agent answered")
		rep.state(ctx, to, "answered", Patch{Answer: &answer})
		return nil
	}
	if !commit.Changed {
		return stepErr("no_changes", "the agent made no changes")
	}
	result := RunResult{Commit: commit.SHA, Branch: item.Branch, Summary: summary, Files: commit.Files}
	// The diff is published (redacted) for the API and the board, and is
	// the last check before anything leaves: a change that contains the
	// value of a secret the task could read is never pushed.
	d, err := w.worktrees.Diff(ctx, r.wt)
	if err != nil {
		return remoteErr("diff", "diff against the base: %w", err)
	}
	result.Diff = DiffStat{Files: len(d.Files), Added: d.Added, Deleted: d.Deleted}
	patch := rep.redact.String(d.Patch)
	if patch != d.Patch {
		names := secretNames(patch)
		rep.line(ctx, "system", "the change contains the value of "+names+"; not pushing it")
		return stepErr("secret_in_diff", "the change contains the value of %s; nothing was pushed", names)
	}
	if len(patch) > 2<<20 {
		patch = patch[:2<<20] + "\n[diff truncated]\n"
	}
	if err := w.bus.publishDiff(ctx, DiffReport{TaskID: item.TaskID, Run: item.Run, Stat: result.Diff, Patch: patch}); err != nil {
		rep.log.Warn("publish diff", "err", err)
	}

	rep.state(ctx, StatePushing, "commit "+short(commit.SHA), Patch{Diff: &result.Diff})
	result.Branch = r.pushBranch()
	in := PushIntent{Branch: result.Branch, Commit: commit.SHA, Summary: summary, Diff: result.Diff, Files: result.Files}
	if leaked, where, err := w.push(ctx, r, in); leaked != "" {
		rep.line(ctx, "system", "the change contains the value of "+leaked+" (in "+where+"); not pushing it")
		return stepErr("secret_in_diff", "the change contains the value of %s; nothing was pushed", leaked)
	} else if err != nil {
		w.cfg.Metrics.pushFailed()
		return remoteErr("push_rejected", "push %s: %w", result.Branch, err)
	}
	rep.line(ctx, "system", fmt.Sprintf("pushed %s to %s", short(commit.SHA), result.Branch))
	return w.review(ctx, r, result, "pushed")
}

// review opens (or finds) the pull request of a pushed run and rests the
// task in review with its commit.
func (w *Worker) review(ctx context.Context, r *run, result RunResult, reason string) error {
	item, rep := r.item, r.rep
	review := item.Repo + "#" + result.Branch
	p := Patch{Review: &review, Commit: &result.Commit}
	if w.cfg.PullRequests != nil {
		url, err := w.cfg.PullRequests.Open(ctx, item, r.plan, result)
		if err != nil {
			w.cfg.Metrics.pushFailed()
			return remoteErr("pull_request", "open pull request: %w", err)
		}
		if url != "" {
			p.PRURL, p.Review = &url, &url
			rep.line(ctx, "system", "pull request: "+url)
		}
	}
	rep.state(ctx, StateReview, reason, p)
	return nil
}

// landed returns the push an earlier delivery of this run made before it
// was lost (its worker killed, or the run handed back after pushing): an
// announced push whose commit the branch now points at. Such a run is
// finished from there (finishLanded), not run again: running the agent a
// second time would stack a second commit for the same work.
func (w *Worker) landed(ctx context.Context, r *run) (*PushIntent, error) {
	branch := r.pushBranch()
	i := slices.IndexFunc(r.rep.landing, func(in PushIntent) bool { return in.Branch == branch })
	if i < 0 {
		return nil, nil // no delivery of this run announced a push there
	}
	remote := cmp.Or(r.plan.PushRemote, r.item.Repo)
	head, err := w.worktrees.BranchHead(ctx, remote, branch, r.auth)
	if err != nil {
		return nil, remoteErr("provision", "read where %s is: %w", branch, err)
	}
	for _, in := range r.rep.landing[i:] {
		if in.Branch == branch && in.Commit == head {
			return &in, nil
		}
	}
	return nil, nil
}

// finishLanded ends a run whose push an earlier delivery made: the pull
// request is opened or found and the task rests in review with that
// commit, as that delivery would have done.
func (w *Worker) finishLanded(ctx context.Context, r *run, in PushIntent) error {
	r.rep.line(ctx, "system", fmt.Sprintf("an earlier delivery of run %d pushed %s to %s before it stopped: finishing the run from there",
		r.item.Run, short(in.Commit), in.Branch))
	return w.review(ctx, r, RunResult{Commit: in.Commit, Branch: in.Branch, Summary: in.Summary, Diff: in.Diff, Files: in.Files}, "pushed")
}

// pushBranch is the remote branch the run's work goes to.
func (r *run) pushBranch() string {
	if r.plan.PushBranch != "" {
		return r.plan.PushBranch
	}
	return r.item.Branch
}

// checkpoint commits what the agent has left so far and pushes the task
// branch, so work survives a run stopped by its budget. It runs only once
// the agent's sandbox is gone.
func (w *Worker) checkpoint(ctx context.Context, r *run) {
	rep := r.rep
	if err := r.unredacted(); err != nil {
		rep.line(ctx, "system", "checkpoint: "+err.Error())
		return
	}
	c, err := w.worktrees.Commit(ctx, r.wt, worktree.CommitRequest{Author: worktree.Signature{Name: r.ident.Name, Email: r.ident.Email},
		Message:   "nightshift: checkpoint of task " + r.item.TaskID,
		Trailers:  []worktree.Trailer{{Key: "Nightshift-Run", Value: fmt.Sprint(r.item.Run)}, {Key: "Nightshift-Checkpoint", Value: "true"}},
		Protected: r.repo.Protected, AllowProtected: r.repo.AllowProtected, When: w.cfg.Clock()})
	if err != nil {
		rep.line(ctx, "system", "checkpoint: "+err.Error())
		return
	}
	if !c.Changed {
		rep.line(ctx, "system", "checkpoint: nothing to commit")
		return
	}
	rep.line(ctx, "system", "checkpoint commit "+short(c.SHA))
	branch := r.pushBranch()
	if leaked, where, err := w.push(ctx, r, PushIntent{Branch: branch, Commit: c.SHA, Checkpoint: true}); leaked != "" {
		rep.line(ctx, "system", "checkpoint: the change contains the value of "+leaked+" (in "+where+"); not pushing it")
		return
	} else if err != nil {
		rep.line(ctx, "system", "checkpoint push: "+err.Error())
		return
	}
	sha := c.SHA
	rep.state(ctx, StatePushing, "checkpoint "+short(sha), Patch{Commit: &sha})
	rep.line(ctx, "system", fmt.Sprintf("pushed checkpoint %s to %s", short(sha), branch))
}

// push pushes the run's commit to branch. The patch is not all that leaves:
// every object the push sends (binary and large files whole, file names,
// the commit message and identities) goes through the run's redactor first,
// and one carrying a secret's value stops the push; leaked then names the
// secrets and where says in which object.
//
// The push is fenced: the run first records its intent under its lease
// (refused once another delivery took the run over), and a push to the
// task's own branch goes ahead only while the branch is where the task's
// record says (or where an older delivery announced it would put it), as a
// compare-and-swap: a stale run cannot move a branch a newer one pushed.
func (w *Worker) push(ctx context.Context, r *run, in PushIntent) (leaked, where string, err error) {
	branch := in.Branch
	red := r.rep.redact
	if red == nil {
		return "", "", errors.New("no redactor for the run: not pushing")
	}
	var expect []string
	if r.rep.recs != nil {
		olds, err := r.rep.recs.Intend(ctx, r.item.TaskID, r.rep.fence, in)
		if err != nil {
			if errors.Is(err, ErrFenced) {
				r.rep.fenced.Store(true)
				r.rep.stop(errFenced)
			}
			return "", "", fmt.Errorf("record push intent: %w", err)
		}
		// Where the record says the branch is, where an older delivery
		// said it would put it, or where this run found it (a person may
		// push to the task's branch between runs: the run builds on their
		// commit; on a pull request's own head branch, the head the run
		// started from). A fast-forward push is fenced the same way.
		expect = append(olds, r.wt.BaseCommit)
	}
	req := worktree.PushRequest{Remote: r.plan.PushRemote, Branch: branch, Auth: r.auth, Force: r.plan.Force, Expect: expect,
		Scan: func(what string, data []byte) error {
			if s := string(data); red.String(s) != s {
				leaked = secretNames(red.String(s))
				return errors.New("contains the value of " + leaked)
			}
			return nil
		}}
	_, err = w.worktrees.Push(ctx, r.wt, req)
	var sf *worktree.SecretFoundError
	if errors.As(err, &sf) {
		return leaked, sf.What, err
	}
	return "", "", err
}

func commitMessage(item WorkItem, summary string) string {
	title := firstLine(item.Prompt)
	if item.FollowUp && len(item.Messages) > 0 {
		title = firstLine(item.Messages[len(item.Messages)-1].Text)
	}
	if len(title) > 72 {
		title = title[:69] + "..."
	}
	if title == "" {
		title = "nightshift task " + item.TaskID
	}
	body := strings.TrimSpace(summary)
	if body == "" {
		return title
	}
	return title + "\n\n" + body
}

func firstLine(s string) string {
	s = strings.TrimSpace(s)
	if i := strings.IndexByte(s, '\n'); i >= 0 {
		s = s[:i]
	}
	return strings.TrimSpace(s)
}

func kindPrefix(kind string) string {
	switch kind {
	case "", agent.KindText:
		return ""
	}
	return "[" + kind + "] "
}

func short(sha string) string {
	if len(sha) > 12 {
		return sha[:12]
	}
	return sha
}
