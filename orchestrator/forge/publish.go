package forge

import (
	"context"
	"errors"
	"fmt"
	"strings"

	"github.com/nightshift/nightshift/orchestrator"
)

// Publisher publishes a run's work on the forge of its repository, through
// the registry's drivers. It implements orchestrator.PullRequests. A
// repository no driver serves (a local path, another host) gets the
// default plan and no change request.
type Publisher struct {
	reg  *Registry
	opts Options
}

var _ orchestrator.PullRequests = (*Publisher)(nil)

// NewPublisher returns a Publisher over reg.
func NewPublisher(reg *Registry, opts Options) *Publisher {
	return &Publisher{reg: reg, opts: opts.withDefaults()}
}

// Plan implements orchestrator.PullRequests. For a task on a change request
// (a comment on it, or its failing CI) the work goes onto the change
// request's head branch when it lives in the same repository, or onto the
// task branch with a change request against that head branch when it comes
// from a fork. Any other task pushes its own branch (force allowed: it is
// Nightshift's). For CI failures the failing checks' output and a bounded,
// redacted log excerpt become PromptContext.
func (p *Publisher) Plan(ctx context.Context, item orchestrator.WorkItem) (orchestrator.Plan, error) {
	d, r, ok := p.reg.ForRepo(item.Repo)
	if !ok {
		return orchestrator.Plan{Force: true}, nil
	}
	auth, err := d.PushAuth(ctx, r)
	if err != nil {
		return orchestrator.Plan{}, err
	}
	plan := orchestrator.Plan{Force: true, Auth: &auth}
	if !strings.HasPrefix(item.Repo, "https://") && !strings.HasPrefix(item.Repo, "http://") {
		plan.PushRemote = d.CloneURL(r)
	}
	cr, err := p.target(ctx, d, r, item)
	if err != nil {
		return orchestrator.Plan{}, err
	}
	switch {
	case cr != nil && cr.Head.Repo.Same(r):
		plan.Base, plan.PushBranch, plan.Force = cr.Head.Name, cr.Head.Name, false
	case cr != nil:
		plan.Base = cr.HeadRef
	case item.Kind == orchestrator.KindCIFailed && item.Target.Branch != "":
		plan.Base = item.Target.Branch
	}
	switch {
	case item.Kind == orchestrator.KindCIFailed:
		plan.PromptContext = p.ciContext(ctx, d, r, item, cr)
	case lastMessageKind(item) == orchestrator.KindCIFailed:
		// A CI failure on the change request a task owns is a follow-up
		// of that task: the run reads the failure of the branch it pushes.
		ci := item
		ci.Kind = orchestrator.KindCIFailed
		branch := plan.PushBranch
		if branch == "" {
			branch = item.Branch
		}
		ci.Target = orchestrator.Target{Type: "branch", Branch: branch}
		ciCR := cr
		if ciCR == nil {
			if found, err := p.target(ctx, d, r, ci); err == nil {
				ciCR = found
			}
		}
		plan.PromptContext = p.ciContext(ctx, d, r, ci, ciCR)
	}
	return plan, nil
}

// lastMessageKind is the kind of the event behind a follow-up run's newest
// message ("" for a first run).
func lastMessageKind(item orchestrator.WorkItem) string {
	if !item.FollowUp || len(item.Messages) == 0 {
		return ""
	}
	return item.Messages[len(item.Messages)-1].Kind
}

// target returns the open change request a task works on: its target when
// that is a change request, or for a CI failure on a branch the open change
// request of that branch. It returns nil when there is none (a closed one
// gets a new one).
func (p *Publisher) target(ctx context.Context, d Driver, r Repo, item orchestrator.WorkItem) (*ChangeRequest, error) {
	t := item.Target
	switch {
	case t.Type == "pull_request" && t.Number != 0:
	case t.Type == "branch" && t.Branch != "" && item.Kind == orchestrator.KindCIFailed:
	default:
		return nil, nil
	}
	if t.Number != 0 {
		cr, err := d.ChangeRequest(ctx, r, t.Number)
		if err != nil {
			return nil, err
		}
		if cr.State != StateOpen {
			return nil, nil
		}
		return &cr, nil
	}
	crs, err := d.FindChangeRequests(ctx, r, Branch{Repo: r, Name: t.Branch}, false)
	if err != nil {
		return nil, err
	}
	if len(crs) == 0 {
		return nil, nil
	}
	return &crs[0], nil
}

// Open implements orchestrator.PullRequests: it finds the change request
// of the pushed branch (in any state) and updates it, or creates it (a
// draft unless configured otherwise). Work pushed onto an existing change
// request's head branch returns that change request.
func (p *Publisher) Open(ctx context.Context, item orchestrator.WorkItem, plan orchestrator.Plan, res orchestrator.RunResult) (string, error) {
	d, r, ok := p.reg.ForRepo(item.Repo)
	if !ok {
		return "", nil
	}
	target, err := p.target(ctx, d, r, item)
	if err != nil {
		return "", err
	}
	if target != nil && target.Head.Repo.Same(r) {
		return target.URL, nil
	}
	in, base := r, ""
	if target != nil {
		if !target.Head.Repo.IsZero() {
			in, base = target.Head.Repo, target.Head.Name
		} else {
			base = target.Base // the fork is gone: propose to the change request's base
		}
	}
	if base == "" {
		base = firstBranch(plan.Base, item.Base)
	}
	if base == "" {
		if base, err = d.DefaultBranch(ctx, r); err != nil {
			return "", err
		}
	}
	title, body := p.describe(ctx, d, r, item, res)
	head := Branch{Repo: r, Name: res.Branch}
	if cr, err := p.find(ctx, d, in, head); err != nil {
		return "", err
	} else if cr != nil {
		return p.update(ctx, d, in, cr, title, body)
	}
	cr, err := d.OpenChangeRequest(ctx, in, NewChangeRequest{Head: head, Base: base, Title: title, Body: body, Draft: p.opts.Draft(item.Repo)})
	if err == nil {
		return cr.URL, nil
	}
	if !errors.Is(err, ErrConflict) {
		return "", err
	}
	// Someone (a concurrent run) created it first.
	found, ferr := p.find(ctx, d, in, head)
	if ferr != nil || found == nil {
		return "", err
	}
	return p.update(ctx, d, in, found, title, body)
}

// find returns the change request of head in r: an open one first, else a
// closed unmerged one; nil when none.
func (p *Publisher) find(ctx context.Context, d Driver, r Repo, head Branch) (*ChangeRequest, error) {
	crs, err := d.FindChangeRequests(ctx, r, head, true)
	if err != nil {
		return nil, err
	}
	var closed *ChangeRequest
	for i := range crs {
		switch {
		case crs[i].State == StateOpen:
			return &crs[i], nil
		case closed == nil && crs[i].State == StateClosed:
			closed = &crs[i]
		}
	}
	return closed, nil
}

func (p *Publisher) update(ctx context.Context, d Driver, r Repo, cr *ChangeRequest, title, body string) (string, error) {
	edit := ChangeEdit{Title: title, Body: body, Reopen: cr.State != StateOpen}
	if cr.Title == title && cr.Body == body && !edit.Reopen {
		return cr.URL, nil
	}
	got, err := d.EditChangeRequest(ctx, r, cr.Number, edit)
	if err != nil {
		return "", err
	}
	return got.URL, nil
}

// maxBody is the most Nightshift writes in one body (GitHub's limit on pull
// request and comment bodies, the smallest of the forges').
const maxBody = 65536

// maxTemplate bounds the template quoted in a change request body.
const maxTemplate = 16 << 10

// describe builds the change request title and body: the agent's summary,
// the repository's template, the task link, the trigger and the diff stats.
func (p *Publisher) describe(ctx context.Context, d Driver, r Repo, item orchestrator.WorkItem, res orchestrator.RunResult) (string, string) {
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
	if tpl := p.template(ctx, d, r, res.Commit); tpl != "" {
		b.WriteString(tpl + "\n\n")
	}
	b.WriteString("---\n")
	fromHere := string(item.Source) == string(d.Kind())
	if item.Target.Type == "issue" && item.Target.Number != 0 && fromHere {
		fmt.Fprintf(&b, "Closes #%d\n\n", item.Target.Number)
	}
	task := "`" + orchestrator.ShortID(item.TaskID) + "`"
	if u := p.opts.taskURL(item.TaskID); u != "" {
		task = "[" + task + "](" + u + ")"
	}
	fmt.Fprintf(&b, "🌙 Nightshift task %s", task)
	if item.Actor.Login != "" && fromHere {
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
	body := p.opts.Redact(b.String())
	if len(body)+len(marker) > maxBody {
		body = body[:maxBody-len(marker)-20] + "\n\n[truncated]"
	}
	return p.opts.Redact(title), body + marker
}

// template returns the repository's change request template at commit, or
// "" (a lookup failure is logged).
func (p *Publisher) template(ctx context.Context, d Driver, r Repo, commit string) string {
	s, err := d.Template(ctx, r, commit)
	if err != nil {
		p.opts.Logger.Warn("read change request template", "repo", r.Key(), "err", err)
		return ""
	}
	s = strings.TrimSpace(s)
	if len(s) > maxTemplate {
		s = s[:maxTemplate]
	}
	return s
}

// maxShownChecks is how many failing checks the CI context describes.
const maxShownChecks = 3

// ciContext describes the failing checks of the commit a CI-failure task is
// about: each failing check's output and the tail of its log, and failing
// statuses. The result is bounded by Options.LogExcerpt and redacted.
// Lookup failures are logged and leave what was found.
func (p *Publisher) ciContext(ctx context.Context, d Driver, r Repo, item orchestrator.WorkItem, cr *ChangeRequest) string {
	ref := item.Target.HeadSHA
	if cr != nil && cr.HeadSHA != "" {
		ref = cr.HeadSHA // the latest head: a follow-up fixes the newest failure
	}
	if ref == "" {
		ref = item.Target.Branch
	}
	if ref == "" {
		return ""
	}
	budget := p.opts.LogExcerpt
	fs, err := d.CIFailures(ctx, r, CIQuery{Ref: ref, Prefer: item.Target.Check, MaxLogs: maxShownChecks, LogBytes: budget / 2})
	if err != nil {
		p.opts.Logger.Warn("ci context", "repo", r.Key(), "err", err)
		if len(fs) == 0 {
			return ""
		}
	}
	return p.opts.Redact(clip(RenderCI(r, ref, fs, budget), budget))
}

// RenderCI is the CI context of failures of ref in r as a CI-fix prompt
// reads it (before clipping to budget and redaction).
func RenderCI(r Repo, ref string, fs []CIFailure, budget int) string {
	var b strings.Builder
	fmt.Fprintf(&b, "## CI failure\nChecks failed on %s of %s. Fix the cause so they pass; do not disable or skip them.\n", short(ref), r.FullName())
	var checks, statuses []CIFailure
	for _, f := range fs {
		if f.Kind == CIStatus {
			statuses = append(statuses, f)
		} else {
			checks = append(checks, f)
		}
	}
	for i, f := range checks {
		if i == maxShownChecks {
			fmt.Fprintf(&b, "\n(%d more failing checks not shown)\n", len(checks)-maxShownChecks)
			break
		}
		fmt.Fprintf(&b, "\n### Check %q: %s\n", f.Name, f.Conclusion)
		if f.URL != "" {
			b.WriteString(f.URL + "\n")
		}
		for _, s := range f.Output {
			if s = strings.TrimSpace(s); s != "" {
				b.WriteString(clip(s, budget/4) + "\n")
			}
		}
		if f.Log != "" {
			b.WriteString("Log excerpt (end of the job log):\n```text\n" + f.Log + "\n```\n")
		}
	}
	for _, f := range statuses {
		fmt.Fprintf(&b, "\n### Status %q: %s\n%s %s\n", f.Name, f.Conclusion, f.Description, f.URL)
	}
	return b.String()
}
