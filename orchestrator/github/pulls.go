package github

import (
	"context"
	"fmt"
	"net/http"
	"regexp"
	"strings"

	gh "github.com/google/go-github/v60/github"

	"github.com/nightshift/nightshift/orchestrator"
)

// Marker returns the hidden marker Nightshift puts in everything it writes
// for task id (pull request bodies, progress comments), so it can find it again.
func Marker(id string) string { return "<!-- nightshift:task:" + id + " -->" }

// Plan implements orchestrator.PullRequests. For a task on a pull request
// (a comment on it, or its failing CI) the work goes onto the pull
// request's head branch when it lives in the same repository, or onto the
// task branch with a pull request against that head branch when it comes
// from a fork. Any other task pushes its own branch (force allowed: it is
// Nightshift's). For CI failures the failing checks' output and a bounded,
// redacted log excerpt become PromptContext.
func (c *Client) Plan(ctx context.Context, item orchestrator.WorkItem) (orchestrator.Plan, error) {
	r, ok := c.RepoOf(item.Repo)
	if !ok {
		return orchestrator.Plan{Force: true}, nil
	}
	auth, err := c.PushAuth(ctx, r)
	if err != nil {
		return orchestrator.Plan{}, err
	}
	plan := orchestrator.Plan{Force: true, Auth: &auth}
	if !strings.HasPrefix(item.Repo, "https://") && !strings.HasPrefix(item.Repo, "http://") {
		plan.PushRemote = c.cloneURL(r)
	}
	pr, err := c.targetPR(ctx, r, item)
	if err != nil {
		return orchestrator.Plan{}, err
	}
	switch {
	case pr != nil && !isFork(r, pr):
		ref := pr.GetHead().GetRef()
		plan.Base, plan.PushBranch, plan.Force = ref, ref, false
	case pr != nil:
		plan.Base = fmt.Sprintf("refs/pull/%d/head", pr.GetNumber())
	case item.Kind == orchestrator.KindCIFailed && item.Target.Branch != "":
		plan.Base = item.Target.Branch
	}
	if item.Kind == orchestrator.KindCIFailed {
		plan.PromptContext = c.ciContext(ctx, r, item, pr)
	}
	return plan, nil
}

// isFork reports whether pr's head lives outside r (a fork, or a fork
// that was deleted).
func isFork(r Repo, pr *gh.PullRequest) bool {
	return !strings.EqualFold(pr.GetHead().GetRepo().GetFullName(), r.FullName())
}

// targetPR returns the open pull request a task works on: its target when
// that is a pull request, or for a CI failure on a branch the open pull
// request of that branch. It returns nil when there is none (a closed
// pull request gets a new one).
func (c *Client) targetPR(ctx context.Context, r Repo, item orchestrator.WorkItem) (*gh.PullRequest, error) {
	t := item.Target
	switch {
	case t.Type == "pull_request" && t.Number != 0:
	case t.Type == "branch" && t.Branch != "" && item.Kind == orchestrator.KindCIFailed:
	default:
		return nil, nil
	}
	api, err := c.apiFor(ctx, r, Permissions{"pull_requests": "read"})
	if err != nil {
		return nil, err
	}
	if t.Number != 0 {
		pr, _, err := api.PullRequests.Get(ctx, r.Owner, r.Name, t.Number)
		if err != nil {
			return nil, wrap(fmt.Sprintf("get pull request #%d", t.Number), r, err)
		}
		if pr.GetState() != "open" {
			return nil, nil
		}
		return pr, nil
	}
	prs, _, err := api.PullRequests.List(ctx, r.Owner, r.Name, &gh.PullRequestListOptions{
		State: "open", Head: r.Owner + ":" + t.Branch})
	if err != nil {
		return nil, wrap("list pull requests of "+t.Branch, r, err)
	}
	if len(prs) == 0 {
		return nil, nil
	}
	return prs[0], nil
}

// Open implements orchestrator.PullRequests: it finds the pull request of
// the pushed branch (by head owner:branch, in any state) and updates it, or
// creates it (a draft unless configured otherwise). Work pushed onto an
// existing pull request's head branch returns that pull request.
func (c *Client) Open(ctx context.Context, item orchestrator.WorkItem, plan orchestrator.Plan, res orchestrator.RunResult) (string, error) {
	r, ok := c.RepoOf(item.Repo)
	if !ok {
		return "", nil
	}
	target, err := c.targetPR(ctx, r, item)
	if err != nil {
		return "", err
	}
	if target != nil && !isFork(r, target) {
		return target.GetHTMLURL(), nil
	}
	prRepo, base := r, ""
	if target != nil {
		if owner, name, ok := strings.Cut(target.GetHead().GetRepo().GetFullName(), "/"); ok {
			prRepo, base = Repo{Owner: owner, Name: name}, target.GetHead().GetRef()
		} else {
			base = target.GetBase().GetRef() // the fork is gone: propose to the pull request's base
		}
	}
	api, err := c.apiFor(ctx, prRepo, Permissions{"pull_requests": "write", "contents": "read"})
	if err != nil {
		return "", err
	}
	if base == "" {
		base = firstBranch(plan.Base, item.Base)
	}
	if base == "" {
		repo, _, err := api.Repositories.Get(ctx, r.Owner, r.Name)
		if err != nil {
			return "", wrap("get repository", r, err)
		}
		base = repo.GetDefaultBranch()
	}
	title, body := c.describe(ctx, api, r, item, res)
	head := r.Owner + ":" + res.Branch
	if pr, err := c.findPR(ctx, api, prRepo, head); err != nil {
		return "", err
	} else if pr != nil {
		return c.updatePR(ctx, api, prRepo, pr, title, body)
	}
	draft := c.cfg.Draft(item.Repo)
	pr, _, err := api.PullRequests.Create(ctx, prRepo.Owner, prRepo.Name, &gh.NewPullRequest{
		Title: &title, Head: &head, Base: &base, Body: &body, Draft: &draft})
	if err == nil {
		return pr.GetHTMLURL(), nil
	}
	if !isStatus(err, http.StatusUnprocessableEntity) {
		return "", wrap("create pull request", prRepo, err)
	}
	// Someone (a concurrent run) created it first.
	pr, ferr := c.findPR(ctx, api, prRepo, head)
	if ferr != nil || pr == nil {
		return "", wrap("create pull request", prRepo, err)
	}
	return c.updatePR(ctx, api, prRepo, pr, title, body)
}

// findPR returns the pull request with head owner:branch: an open one
// first, else a closed unmerged one; nil when none.
func (c *Client) findPR(ctx context.Context, api *gh.Client, r Repo, head string) (*gh.PullRequest, error) {
	prs, _, err := api.PullRequests.List(ctx, r.Owner, r.Name, &gh.PullRequestListOptions{State: "all", Head: head})
	if err != nil {
		return nil, wrap("list pull requests of "+head, r, err)
	}
	var closed *gh.PullRequest
	for _, pr := range prs {
		switch {
		case pr.GetState() == "open":
			return pr, nil
		case closed == nil && pr.MergedAt == nil && !pr.GetMerged():
			closed = pr
		}
	}
	return closed, nil
}

func (c *Client) updatePR(ctx context.Context, api *gh.Client, r Repo, pr *gh.PullRequest, title, body string) (string, error) {
	edit := &gh.PullRequest{Title: &title, Body: &body}
	if pr.GetState() != "open" {
		edit.State = gh.String("open")
	}
	if pr.GetTitle() == title && pr.GetBody() == body && edit.State == nil {
		return pr.GetHTMLURL(), nil
	}
	got, _, err := api.PullRequests.Edit(ctx, r.Owner, r.Name, pr.GetNumber(), edit)
	if err != nil {
		return "", wrap(fmt.Sprintf("update pull request #%d", pr.GetNumber()), r, err)
	}
	return got.GetHTMLURL(), nil
}

var shaRe = regexp.MustCompile(`^[0-9a-f]{40}$`)

// firstBranch returns the first candidate that names a branch (not a SHA or
// a full ref).
func firstBranch(cands ...string) string {
	for _, b := range cands {
		if b != "" && !shaRe.MatchString(b) && !strings.HasPrefix(b, "refs/") {
			return b
		}
	}
	return ""
}

// templatePaths are where a repository's pull request template may live.
var templatePaths = []string{".github/pull_request_template.md", ".github/PULL_REQUEST_TEMPLATE.md", "pull_request_template.md"}

// maxBody is GitHub's limit on pull request and comment bodies.
const maxBody = 65536

// describe builds the pull request title and body: the agent's summary,
// the repository's template, the task link, the trigger and the diff stats.
func (c *Client) describe(ctx context.Context, api *gh.Client, r Repo, item orchestrator.WorkItem, res orchestrator.RunResult) (string, string) {
	summary := strings.TrimSpace(res.Summary)
	prompt := item.Prompt
	if item.FollowUp && len(item.Messages) > 0 {
		prompt = item.Messages[len(item.Messages)-1].Text
	}
	title := firstLine(summary)
	rest := strings.TrimSpace(strings.TrimPrefix(summary, title))
	if title == "" {
		title = firstLine(prompt)
	}
	title = strings.TrimSpace(strings.TrimLeft(title, "#*- "))
	if title == "" {
		title = "Nightshift task " + orchestrator.ShortID(item.TaskID)
	}
	if len(title) > 100 {
		title = title[:97] + "..."
	}
	var b strings.Builder
	if rest != "" {
		b.WriteString(rest + "\n\n")
	} else if summary == "" && prompt != "" {
		b.WriteString("> " + strings.ReplaceAll(strings.TrimSpace(prompt), "\n", "\n> ") + "\n\n")
	}
	if tpl := c.template(ctx, api, r, res.Commit); tpl != "" {
		b.WriteString(tpl + "\n\n")
	}
	b.WriteString("---\n")
	if item.Target.Type == "issue" && item.Target.Number != 0 && item.Source == orchestrator.SourceGitHub {
		fmt.Fprintf(&b, "Closes #%d\n\n", item.Target.Number)
	}
	task := "`" + orchestrator.ShortID(item.TaskID) + "`"
	if u := c.TaskURL(item.TaskID); u != "" {
		task = "[" + task + "](" + u + ")"
	}
	fmt.Fprintf(&b, "🌙 Nightshift task %s", task)
	if item.Actor.Login != "" && item.Source == orchestrator.SourceGitHub {
		fmt.Fprintf(&b, ", asked by @%s", item.Actor.Login)
	}
	if item.Target.URL != "" {
		fmt.Fprintf(&b, " ([trigger](%s))", item.Target.URL)
	}
	fmt.Fprintf(&b, "\n\n%d files changed, +%d −%d\n", res.Diff.Files, res.Diff.Added, res.Diff.Deleted)
	if len(res.Files) > 0 {
		b.WriteString("\n<details><summary>Files</summary>\n\n")
		for i, f := range res.Files {
			if i == 50 {
				fmt.Fprintf(&b, "- … and %d more\n", len(res.Files)-50)
				break
			}
			b.WriteString("- `" + f + "`\n")
		}
		b.WriteString("\n</details>\n")
	}
	marker := "\n" + Marker(item.TaskID)
	body := c.cfg.Redact(b.String())
	if len(body)+len(marker) > maxBody {
		body = body[:maxBody-len(marker)-20] + "\n\n[truncated]"
	}
	return c.cfg.Redact(title), body + marker
}

// template returns the repository's pull request template at commit, or "".
func (c *Client) template(ctx context.Context, api *gh.Client, r Repo, commit string) string {
	for _, p := range templatePaths {
		f, _, _, err := api.Repositories.GetContents(ctx, r.Owner, r.Name, p, &gh.RepositoryContentGetOptions{Ref: commit})
		if err != nil {
			if !isStatus(err, http.StatusNotFound) {
				c.log.Warn("read pull request template", "repo", r.FullName(), "path", p, "err", err)
				return ""
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
		s = strings.TrimSpace(s)
		if len(s) > 16<<10 {
			s = s[:16<<10]
		}
		return s
	}
	return ""
}

func firstLine(s string) string {
	s = strings.TrimSpace(s)
	if i := strings.IndexByte(s, '\n'); i >= 0 {
		s = s[:i]
	}
	return strings.TrimSpace(s)
}
