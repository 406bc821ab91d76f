package github

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"strings"

	gh "github.com/google/go-github/v60/github"

	"github.com/nightshift/nightshift/orchestrator"
	"github.com/nightshift/nightshift/orchestrator/forge"
	"github.com/nightshift/nightshift/orchestrator/notify"
)

// Reporter reports a task's life on the GitHub issue or pull request it
// came from (a forge.Reporter over this client alone): a 👀 reaction on the
// triggering comment when the task is accepted, and one progress comment
// per task (found again through its hidden marker) updated in place up to
// the final state with the pull request link. It also answers refused
// triggers (webhook.Replier).
type Reporter struct {
	rep *forge.Reporter
}

var _ orchestrator.Notifier = (*Reporter)(nil)

// NewReporter returns a Reporter keeping its state in store.
func NewReporter(c *Client, store *notify.Store) (*Reporter, error) {
	if c == nil || store == nil {
		return nil, errors.New("github: NewReporter needs a client and a store")
	}
	rep, err := forge.NewReporter(c.reg, store, c.Options())
	if err != nil {
		return nil, err
	}
	return &Reporter{rep: rep}, nil
}

// Notify implements orchestrator.Notifier. Tasks that did not come from a
// GitHub issue or pull request are ignored.
func (rp *Reporter) Notify(ctx context.Context, t orchestrator.Task) error {
	return rp.rep.Notify(ctx, t)
}

// Reply answers a refused trigger with a short comment on its issue or pull
// request, mentioning the author (it implements webhook.Replier).
func (rp *Reporter) Reply(ctx context.Context, ev *orchestrator.Event, message string) error {
	return rp.rep.Reply(ctx, ev, message)
}

// permsFor is what commenting on a thread needs: issues:write on issues,
// pull_requests:write on pull requests.
func permsFor(th forge.Thread) Permissions {
	if th.Kind == forge.ThreadChange {
		return Permissions{"pull_requests": "write"}
	}
	return Permissions{"issues": "write"}
}

// React implements forge.Driver. A review comment (its URL has a
// #discussion_r anchor) gets its reaction through the pulls API. GitHub
// answers a repeated reaction with the existing one.
func (c *Client) React(ctx context.Context, cm forge.CommentRef, reaction string) error {
	r := cm.Thread.Repo
	api, err := c.apiFor(ctx, r, permsFor(cm.Thread))
	if err != nil {
		return err
	}
	if strings.Contains(cm.URL, "#discussion_r") {
		_, _, err = api.Reactions.CreatePullRequestCommentReaction(ctx, r.Owner, r.Name, cm.ID, reaction)
	} else {
		_, _, err = api.Reactions.CreateIssueCommentReaction(ctx, r.Owner, r.Name, cm.ID, reaction)
	}
	if err != nil {
		return wrap(fmt.Sprintf("react to comment %d", cm.ID), r, err)
	}
	return nil
}

// Comment implements forge.Driver.
func (c *Client) Comment(ctx context.Context, th forge.Thread, body string) (int64, error) {
	api, err := c.apiFor(ctx, th.Repo, permsFor(th))
	if err != nil {
		return 0, err
	}
	cm, _, err := api.Issues.CreateComment(ctx, th.Repo.Owner, th.Repo.Name, th.Number, &gh.IssueComment{Body: &body})
	if err != nil {
		return 0, wrap(fmt.Sprintf("comment on #%d", th.Number), th.Repo, err)
	}
	return cm.GetID(), nil
}

// EditComment implements forge.Driver.
func (c *Client) EditComment(ctx context.Context, th forge.Thread, id int64, body string) error {
	api, err := c.apiFor(ctx, th.Repo, permsFor(th))
	if err != nil {
		return err
	}
	if _, _, err := api.Issues.EditComment(ctx, th.Repo.Owner, th.Repo.Name, id, &gh.IssueComment{Body: &body}); err != nil {
		return wrap(fmt.Sprintf("update comment %d on #%d", id, th.Number), th.Repo, err)
	}
	return nil
}

// FindComment implements forge.Driver: it pages through the thread's
// comments (at most 2000).
func (c *Client) FindComment(ctx context.Context, th forge.Thread, marker string) (int64, error) {
	api, err := c.apiFor(ctx, th.Repo, permsFor(th))
	if err != nil {
		return 0, err
	}
	opts := &gh.IssueListCommentsOptions{ListOptions: gh.ListOptions{PerPage: 100}}
	for page := 0; page < 20; page++ {
		cs, resp, err := api.Issues.ListComments(ctx, th.Repo.Owner, th.Repo.Name, th.Number, opts)
		if err != nil {
			return 0, wrap(fmt.Sprintf("list comments of #%d", th.Number), th.Repo, err)
		}
		for _, cm := range cs {
			if strings.Contains(cm.GetBody(), marker) {
				return cm.GetID(), nil
			}
		}
		if resp.NextPage == 0 {
			break
		}
		opts.Page = resp.NextPage
	}
	return 0, nil
}

// Permission implements forge.Driver (metadata:read): GitHub's
// collaborator permission; a login GitHub does not know on r has none.
func (c *Client) Permission(ctx context.Context, r Repo, login string) (forge.Access, error) {
	api, err := c.apiFor(ctx, r, Permissions{"metadata": "read"})
	if err != nil {
		return forge.AccessNone, err
	}
	level, _, err := api.Repositories.GetPermissionLevel(ctx, r.Owner, r.Name, login)
	if isStatus(err, http.StatusNotFound) {
		return forge.AccessNone, nil
	}
	if err != nil {
		return forge.AccessNone, wrap("check permission of "+login, r, err)
	}
	return AccessOf(level.GetPermission()), nil
}

// AccessOf maps a GitHub permission or role name to a forge.Access.
func AccessOf(perm string) forge.Access {
	switch strings.ToLower(perm) {
	case "admin":
		return forge.AccessAdmin
	case "maintain":
		return forge.AccessMaintain
	case "write", "push":
		return forge.AccessWrite
	case "triage":
		return forge.AccessTriage
	case "read", "pull":
		return forge.AccessRead
	}
	return forge.AccessNone
}
