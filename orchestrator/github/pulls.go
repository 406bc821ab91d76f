package github

import (
	"context"
	"fmt"
	"net/http"
	"strings"

	gh "github.com/google/go-github/v60/github"

	"github.com/nightshift/nightshift/orchestrator"
	"github.com/nightshift/nightshift/orchestrator/forge"
)

// Marker returns the hidden marker Nightshift puts in everything it writes
// for task id (pull request bodies, progress comments), so it can find it again.
func Marker(id string) string { return forge.Marker(id) }

// Plan implements orchestrator.PullRequests through forge.Publisher: for a
// task on a pull request (a comment on it, or its failing CI) the work goes
// onto the pull request's head branch when it lives in the same repository,
// or onto the task branch with a pull request against that head branch
// when it comes from a fork. Any other task pushes its own branch (force
// allowed: it is Nightshift's). For CI failures the failing checks' output
// and a bounded, redacted log excerpt become PromptContext.
func (c *Client) Plan(ctx context.Context, item orchestrator.WorkItem) (orchestrator.Plan, error) {
	return c.pub.Plan(ctx, item)
}

// Open implements orchestrator.PullRequests through forge.Publisher: it
// finds the pull request of the pushed branch (by head owner:branch, in any
// state) and updates it, or creates it (a draft unless configured
// otherwise). Work pushed onto an existing pull request's head branch
// returns that pull request.
func (c *Client) Open(ctx context.Context, item orchestrator.WorkItem, plan orchestrator.Plan, res orchestrator.RunResult) (string, error) {
	return c.pub.Open(ctx, item, plan, res)
}

// Token permissions of the pull request calls.
var (
	readPulls  = Permissions{"pull_requests": "read"}
	writePulls = Permissions{"pull_requests": "write", "contents": "read"}
)

// change converts a pull request.
func (c *Client) change(pr *gh.PullRequest) forge.ChangeRequest {
	st := forge.StateOpen
	if pr.GetState() != "open" {
		st = forge.StateClosed
		if pr.MergedAt != nil || pr.GetMerged() {
			st = forge.StateMerged
		}
	}
	head := forge.Branch{Name: pr.GetHead().GetRef()}
	if owner, name, ok := strings.Cut(pr.GetHead().GetRepo().GetFullName(), "/"); ok {
		head.Repo = Repo{Host: c.Host(), Owner: owner, Name: name}
	}
	return forge.ChangeRequest{Number: pr.GetNumber(), URL: pr.GetHTMLURL(), State: st, Draft: pr.GetDraft(),
		Title: pr.GetTitle(), Body: pr.GetBody(), Head: head, HeadSHA: pr.GetHead().GetSHA(),
		HeadRef: fmt.Sprintf("refs/pull/%d/head", pr.GetNumber()), Base: pr.GetBase().GetRef()}
}

// ChangeRequest implements forge.Driver (pull_requests:read).
func (c *Client) ChangeRequest(ctx context.Context, r Repo, number int) (forge.ChangeRequest, error) {
	api, err := c.apiFor(ctx, r, readPulls)
	if err != nil {
		return forge.ChangeRequest{}, err
	}
	pr, _, err := api.PullRequests.Get(ctx, r.Owner, r.Name, number)
	if err != nil {
		return forge.ChangeRequest{}, wrap(fmt.Sprintf("get pull request #%d", number), r, err)
	}
	return c.change(pr), nil
}

// FindChangeRequests implements forge.Driver: the pull requests of r whose
// head is owner:branch (pull_requests:read).
func (c *Client) FindChangeRequests(ctx context.Context, r Repo, head forge.Branch, all bool) ([]forge.ChangeRequest, error) {
	api, err := c.apiFor(ctx, r, readPulls)
	if err != nil {
		return nil, err
	}
	state := "open"
	if all {
		state = "all"
	}
	label := head.Repo.Owner + ":" + head.Name
	prs, _, err := api.PullRequests.List(ctx, r.Owner, r.Name, &gh.PullRequestListOptions{State: state, Head: label})
	if err != nil {
		return nil, wrap("list pull requests of "+label, r, err)
	}
	out := make([]forge.ChangeRequest, 0, len(prs))
	for _, pr := range prs {
		out = append(out, c.change(pr))
	}
	return out, nil
}

// OpenChangeRequest implements forge.Driver (pull_requests:write). GitHub's
// 422 (a pull request for the head exists, or the head is not there yet)
// wraps forge.ErrConflict.
func (c *Client) OpenChangeRequest(ctx context.Context, r Repo, req forge.NewChangeRequest) (forge.ChangeRequest, error) {
	api, err := c.apiFor(ctx, r, writePulls)
	if err != nil {
		return forge.ChangeRequest{}, err
	}
	head := req.Head.Repo.Owner + ":" + req.Head.Name
	pr, _, err := api.PullRequests.Create(ctx, r.Owner, r.Name, &gh.NewPullRequest{
		Title: &req.Title, Head: &head, Base: &req.Base, Body: &req.Body, Draft: &req.Draft})
	if isStatus(err, http.StatusUnprocessableEntity) {
		return forge.ChangeRequest{}, fmt.Errorf("github: create pull request on %s: %w: %w", r.FullName(), forge.ErrConflict, err)
	}
	if err != nil {
		return forge.ChangeRequest{}, wrap("create pull request", r, err)
	}
	return c.change(pr), nil
}

// EditChangeRequest implements forge.Driver (pull_requests:write).
func (c *Client) EditChangeRequest(ctx context.Context, r Repo, number int, e forge.ChangeEdit) (forge.ChangeRequest, error) {
	api, err := c.apiFor(ctx, r, writePulls)
	if err != nil {
		return forge.ChangeRequest{}, err
	}
	edit := &gh.PullRequest{}
	if e.Title != "" {
		edit.Title = &e.Title
	}
	if e.Body != "" {
		edit.Body = &e.Body
	}
	if e.Reopen {
		edit.State = gh.String("open")
	}
	pr, _, err := api.PullRequests.Edit(ctx, r.Owner, r.Name, number, edit)
	if err != nil {
		return forge.ChangeRequest{}, wrap(fmt.Sprintf("update pull request #%d", number), r, err)
	}
	return c.change(pr), nil
}

// DefaultBranch implements forge.Driver (metadata:read).
func (c *Client) DefaultBranch(ctx context.Context, r Repo) (string, error) {
	api, err := c.apiFor(ctx, r, Permissions{"metadata": "read"})
	if err != nil {
		return "", err
	}
	repo, _, err := api.Repositories.Get(ctx, r.Owner, r.Name)
	if err != nil {
		return "", wrap("get repository", r, err)
	}
	return repo.GetDefaultBranch(), nil
}

// templatePaths are where a repository's pull request template may live.
var templatePaths = []string{".github/pull_request_template.md", ".github/PULL_REQUEST_TEMPLATE.md", "pull_request_template.md"}

// Template implements forge.Driver: the first of templatePaths at ref
// (contents:read).
func (c *Client) Template(ctx context.Context, r Repo, ref string) (string, error) {
	api, err := c.apiFor(ctx, r, Permissions{"contents": "read"})
	if err != nil {
		return "", err
	}
	for _, p := range templatePaths {
		f, _, _, err := api.Repositories.GetContents(ctx, r.Owner, r.Name, p, &gh.RepositoryContentGetOptions{Ref: ref})
		if err != nil {
			if !isStatus(err, http.StatusNotFound) {
				return "", wrap("read "+p, r, err)
			}
			continue
		}
		if f == nil {
			continue
		}
		s, err := f.GetContent()
		if err != nil {
			continue
		}
		return strings.TrimSpace(s), nil
	}
	return "", nil
}
