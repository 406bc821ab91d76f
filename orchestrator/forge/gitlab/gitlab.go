package gitlab

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/url"
	"regexp"
	"slices"
	"strings"
	"sync"

	gl "gitlab.com/gitlab-org/api/client-go/v2"

	"github.com/nightshift/nightshift/orchestrator/forge"
	"github.com/nightshift/nightshift/worktree"
)

// Driver is the forge.Driver of one GitLab instance.
type Driver struct {
	cfg  Config
	api  *gl.Client
	git  *url.URL
	host string
	log  *slog.Logger

	mu       sync.Mutex
	self     string           // the token's username, once looked up
	projects map[int64]string // project id → path_with_namespace
}

var _ forge.Driver = (*Driver)(nil)

// New returns a driver for the GitLab instance cfg names. It makes no
// call: a wrong token shows at the first use.
func New(cfg Config) (*Driver, error) {
	cfg, err := cfg.withDefaults()
	if err != nil {
		return nil, err
	}
	api, err := gl.NewAuthSourceClient(tokenAuth{cfg.TokenFunc},
		gl.WithBaseURL(cfg.APIURL), gl.WithHTTPClient(cfg.HTTPClient), gl.WithCustomRetryMax(2),
		gl.WithURLWarningLogger(cfg.Logger), gl.WithUserAgent("nightshift"))
	if err != nil {
		return nil, fmt.Errorf("gitlab: client: %w", err)
	}
	git, _ := url.Parse(cfg.GitURL)
	return &Driver{cfg: cfg, api: api, git: git, host: strings.ToLower(git.Host), log: cfg.Logger,
		projects: map[int64]string{}}, nil
}

// tokenAuth is the client library's AuthSource: the PRIVATE-TOKEN header
// with the token resolved at each request.
type tokenAuth struct {
	token func(ctx context.Context) (string, error)
}

func (tokenAuth) Init(context.Context, *gl.Client) error { return nil }

func (a tokenAuth) Header(ctx context.Context) (string, string, error) {
	tok, err := a.token(ctx)
	if err != nil {
		return "", "", err
	}
	if tok == "" {
		return "", "", errNoToken
	}
	return gl.AccessTokenHeaderName, tok, nil
}

// Kind implements forge.Driver.
func (d *Driver) Kind() forge.Kind { return forge.KindGitLab }

// Host implements forge.Driver.
func (d *Driver) Host() string { return d.host }

// GitURL returns the clone base (with a trailing slash).
func (d *Driver) GitURL() string { return d.cfg.GitURL }

// RepoOf implements forge.Driver: https://host/group/sub/name(.git),
// ssh://git@host/group/name.git and git@host:group/name.git name projects
// on this instance (under GitURL's path when GitLab runs under one).
func (d *Driver) RepoOf(cloneURL string) (forge.Repo, bool) {
	s := strings.TrimSpace(cloneURL)
	var host, path string
	switch {
	case strings.Contains(s, "://"):
		u, err := url.Parse(s)
		if err != nil || u.RawQuery != "" || u.Fragment != "" {
			return forge.Repo{}, false
		}
		switch strings.ToLower(u.Scheme) {
		case "http", "https":
			if !strings.EqualFold(u.Host, d.git.Host) {
				return forge.Repo{}, false
			}
			prefix := strings.TrimSuffix(d.git.Path, "/")
			p, ok := strings.CutPrefix(u.Path, prefix+"/")
			if !ok {
				return forge.Repo{}, false
			}
			host, path = u.Host, p
		case "ssh":
			host, path = u.Hostname(), strings.TrimPrefix(u.Path, "/")
		default:
			return forge.Repo{}, false
		}
	case strings.Contains(s, "@") && strings.Contains(s, ":"):
		// git@host:group/name.git
		at := strings.Index(s, "@")
		rest := s[at+1:]
		h, p, ok := strings.Cut(rest, ":")
		if !ok || strings.Contains(h, "/") {
			return forge.Repo{}, false
		}
		host, path = h, p
	default:
		return forge.Repo{}, false
	}
	if !strings.EqualFold(host, d.git.Host) && !strings.EqualFold(host, d.git.Hostname()) {
		return forge.Repo{}, false
	}
	parts := strings.Split(strings.TrimSuffix(strings.Trim(path, "/"), ".git"), "/")
	if len(parts) < 2 || slices.ContainsFunc(parts, func(p string) bool { return !segment(p) }) {
		return forge.Repo{}, false
	}
	n := len(parts) - 1
	return forge.Repo{Host: d.host, Owner: strings.Join(parts[:n], "/"), Name: parts[n]}, true
}

// segment reports whether s may be one element of a project path.
func segment(s string) bool { return forge.PathSegment(s, 255) }

// CloneURL implements forge.Driver.
func (d *Driver) CloneURL(r forge.Repo) string {
	return strings.TrimSuffix(d.cfg.GitURL, "/") + "/" + r.FullName() + ".git"
}

// pid is the project id the API takes: its full path (URL-escaped by the
// client).
func pid(r forge.Repo) string { return r.FullName() }

// PushAuth implements forge.Driver: the token as HTTP basic auth with the
// user name oauth2, which GitLab accepts for personal, project and group
// access tokens.
func (d *Driver) PushAuth(ctx context.Context, r forge.Repo) (worktree.Auth, error) {
	tok, err := d.cfg.TokenFunc(ctx)
	if err != nil {
		return worktree.Auth{}, fmt.Errorf("gitlab: token for %s: %w", r.FullName(), err)
	}
	if tok == "" {
		return worktree.Auth{}, errNoToken
	}
	return worktree.Auth{Username: "oauth2", Password: tok}, nil
}

// DefaultBranch implements forge.Driver.
func (d *Driver) DefaultBranch(ctx context.Context, r forge.Repo) (string, error) {
	p, _, err := d.api.Projects.GetProject(pid(r), nil, gl.WithContext(ctx))
	if err != nil {
		return "", wrap("get project", r, err)
	}
	d.remember(p.ID, p.PathWithNamespace)
	return p.DefaultBranch, nil
}

// templatePaths are where GitLab looks for the default merge request
// description template.
var templatePaths = []string{".gitlab/merge_request_templates/Default.md", ".gitlab/merge_request_templates/default.md"}

// maxTemplate bounds a template's size.
const maxTemplate = 16 << 10

// Template implements forge.Driver.
func (d *Driver) Template(ctx context.Context, r forge.Repo, ref string) (string, error) {
	opt := &gl.GetRawFileOptions{}
	if ref != "" {
		opt.Ref = gl.Ptr(ref)
	}
	for _, p := range templatePaths {
		b, _, err := d.api.RepositoryFiles.GetRawFile(pid(r), p, opt, gl.WithContext(ctx))
		if errors.Is(err, gl.ErrNotFound) {
			continue
		}
		if err != nil {
			return "", wrap("read merge request template "+p, r, err)
		}
		s := strings.TrimSpace(string(b))
		if len(s) > maxTemplate {
			s = s[:maxTemplate]
		}
		return s, nil
	}
	return "", nil
}

// draftPrefixes are the title prefixes GitLab reads as "draft".
var draftPrefixRe = regexp.MustCompile(`(?i)^\s*(draft:|\[draft\]|\(draft\)|wip:|\[wip\])\s*`)

// DraftPrefix is the prefix that makes a merge request a draft.
const DraftPrefix = "Draft: "

func stripDraft(title string) (string, bool) {
	if loc := draftPrefixRe.FindStringIndex(title); loc != nil {
		return title[loc[1]:], true
	}
	return title, false
}

// ChangeRequest implements forge.Driver.
func (d *Driver) ChangeRequest(ctx context.Context, r forge.Repo, number int) (forge.ChangeRequest, error) {
	mr, _, err := d.api.MergeRequests.GetMergeRequest(pid(r), int64(number), nil, gl.WithContext(ctx))
	if err != nil {
		return forge.ChangeRequest{}, wrap(fmt.Sprintf("get merge request !%d", number), r, err)
	}
	return d.change(ctx, r, &mr.BasicMergeRequest), nil
}

// change converts a merge request of r.
func (d *Driver) change(ctx context.Context, r forge.Repo, mr *gl.BasicMergeRequest) forge.ChangeRequest {
	title, draft := stripDraft(mr.Title)
	cr := forge.ChangeRequest{
		Number: int(mr.IID), URL: mr.WebURL, Draft: draft || mr.Draft, Title: title, Body: mr.Description,
		Head:    forge.Branch{Repo: r, Name: mr.SourceBranch},
		HeadSHA: mr.SHA, HeadRef: fmt.Sprintf("refs/merge-requests/%d/head", mr.IID), Base: mr.TargetBranch,
	}
	switch mr.State {
	case "opened":
		cr.State = forge.StateOpen
	case "merged":
		cr.State = forge.StateMerged
	default: // closed, locked
		cr.State = forge.StateClosed
	}
	if mr.SourceProjectID != 0 && mr.TargetProjectID != 0 && mr.SourceProjectID != mr.TargetProjectID {
		cr.Head.Repo = d.repoByID(ctx, mr.SourceProjectID)
	}
	return cr
}

func (d *Driver) remember(id int64, path string) {
	if id == 0 || path == "" {
		return
	}
	d.mu.Lock()
	defer d.mu.Unlock()
	if len(d.projects) > 10000 {
		clear(d.projects)
	}
	d.projects[id] = path
}

// repoByID returns project id as a Repo, or the zero Repo when it is gone.
func (d *Driver) repoByID(ctx context.Context, id int64) forge.Repo {
	d.mu.Lock()
	path, ok := d.projects[id]
	d.mu.Unlock()
	if !ok {
		p, _, err := d.api.Projects.GetProject(id, nil, gl.WithContext(ctx))
		if err != nil {
			if !errors.Is(err, gl.ErrNotFound) {
				d.log.Warn("gitlab: look up source project", "project_id", id, "err", err)
			}
			return forge.Repo{}
		}
		path = p.PathWithNamespace
		d.remember(id, path)
	}
	i := strings.LastIndex(path, "/")
	if i <= 0 {
		return forge.Repo{}
	}
	return forge.Repo{Host: d.host, Owner: path[:i], Name: path[i+1:]}
}

// projectID returns r's numeric id.
func (d *Driver) projectID(ctx context.Context, r forge.Repo) (int64, error) {
	p, _, err := d.api.Projects.GetProject(pid(r), nil, gl.WithContext(ctx))
	if err != nil {
		return 0, wrap("get project", r, err)
	}
	d.remember(p.ID, p.PathWithNamespace)
	return p.ID, nil
}

// FindChangeRequests implements forge.Driver: merge requests of r whose
// source branch is head.Name in head.Repo, newest first.
func (d *Driver) FindChangeRequests(ctx context.Context, r forge.Repo, head forge.Branch, all bool) ([]forge.ChangeRequest, error) {
	state := "opened"
	if all {
		state = "all"
	}
	var sourceID int64
	if !head.Repo.IsZero() && !head.Repo.Same(r) {
		id, err := d.projectID(ctx, head.Repo)
		if err != nil {
			return nil, err
		}
		sourceID = id
	}
	opt := &gl.ListProjectMergeRequestsOptions{ListOptions: gl.ListOptions{PerPage: 100},
		SourceBranch: gl.Ptr(head.Name), State: gl.Ptr(state), OrderBy: gl.Ptr("created_at"), Sort: gl.Ptr("desc")}
	mrs, _, err := d.api.MergeRequests.ListProjectMergeRequests(pid(r), opt, gl.WithContext(ctx))
	if err != nil {
		return nil, wrap("list merge requests of "+head.Name, r, err)
	}
	var out []forge.ChangeRequest
	for _, mr := range mrs {
		if mr.SourceBranch != head.Name {
			continue
		}
		switch {
		case sourceID != 0 && mr.SourceProjectID != sourceID:
			continue
		case sourceID == 0 && mr.SourceProjectID != 0 && mr.TargetProjectID != 0 && mr.SourceProjectID != mr.TargetProjectID:
			continue
		}
		out = append(out, d.change(ctx, r, mr))
	}
	return out, nil
}

// OpenChangeRequest implements forge.Driver. A head in another project
// (a fork of r) is proposed from that project with r as the target.
func (d *Driver) OpenChangeRequest(ctx context.Context, r forge.Repo, req forge.NewChangeRequest) (forge.ChangeRequest, error) {
	title, _ := stripDraft(req.Title)
	if req.Draft {
		title = DraftPrefix + title
	}
	opt := &gl.CreateMergeRequestOptions{Title: gl.Ptr(title), Description: gl.Ptr(req.Body),
		SourceBranch: gl.Ptr(req.Head.Name), TargetBranch: gl.Ptr(req.Base)}
	in := r
	if !req.Head.Repo.IsZero() && !req.Head.Repo.Same(r) {
		id, err := d.projectID(ctx, r)
		if err != nil {
			return forge.ChangeRequest{}, err
		}
		in, opt.TargetProjectID = req.Head.Repo, gl.Ptr(id)
	}
	mr, _, err := d.api.MergeRequests.CreateMergeRequest(pid(in), opt, gl.WithContext(ctx))
	if err != nil {
		return forge.ChangeRequest{}, wrap("create merge request from "+req.Head.Name, in, err)
	}
	return d.change(ctx, r, &mr.BasicMergeRequest), nil
}

// EditChangeRequest implements forge.Driver. A draft stays a draft: its
// new title gets the "Draft: " prefix back.
func (d *Driver) EditChangeRequest(ctx context.Context, r forge.Repo, number int, edit forge.ChangeEdit) (forge.ChangeRequest, error) {
	cur, _, err := d.api.MergeRequests.GetMergeRequest(pid(r), int64(number), nil, gl.WithContext(ctx))
	if err != nil {
		return forge.ChangeRequest{}, wrap(fmt.Sprintf("get merge request !%d", number), r, err)
	}
	opt := &gl.UpdateMergeRequestOptions{}
	if edit.Title != "" {
		title, _ := stripDraft(edit.Title)
		if _, draft := stripDraft(cur.Title); draft || cur.Draft {
			title = DraftPrefix + title
		}
		opt.Title = gl.Ptr(title)
	}
	if edit.Body != "" {
		opt.Description = gl.Ptr(edit.Body)
	}
	if edit.Reopen && cur.State == "closed" {
		opt.StateEvent = gl.Ptr("reopen")
	}
	mr, _, err := d.api.MergeRequests.UpdateMergeRequest(pid(r), int64(number), opt, gl.WithContext(ctx))
	if err != nil {
		return forge.ChangeRequest{}, wrap(fmt.Sprintf("update merge request !%d", number), r, err)
	}
	return d.change(ctx, r, &mr.BasicMergeRequest), nil
}

// Self returns the username of the token's user (a project or group
// access token's bot user): Nightshift's own login on this instance.
func (d *Driver) Self(ctx context.Context) (string, error) { return d.whoami(ctx) }

// whoami returns the token's username (cached).
func (d *Driver) whoami(ctx context.Context) (string, error) {
	d.mu.Lock()
	self := d.self
	d.mu.Unlock()
	if self != "" {
		return self, nil
	}
	u, _, err := d.api.Users.CurrentUser(gl.WithContext(ctx))
	if err != nil {
		return "", fmt.Errorf("gitlab: current user: %w", err)
	}
	d.mu.Lock()
	d.self = u.Username
	d.mu.Unlock()
	return u.Username, nil
}

// React implements forge.Driver: an award emoji on the note, added once
// (an existing award of ours is left alone).
func (d *Driver) React(ctx context.Context, c forge.CommentRef, reaction string) error {
	self, err := d.whoami(ctx)
	if err != nil {
		return err
	}
	th := c.Thread
	mine := func() (bool, error) {
		var (
			list []*gl.AwardEmoji
			err  error
		)
		opt := &gl.ListAwardEmojiOptions{ListOptions: gl.ListOptions{PerPage: 100}}
		if th.Kind == forge.ThreadChange {
			list, _, err = d.api.AwardEmoji.ListMergeRequestAwardEmojiOnNote(pid(th.Repo), int64(th.Number), c.ID, opt, gl.WithContext(ctx))
		} else {
			list, _, err = d.api.AwardEmoji.ListIssuesAwardEmojiOnNote(pid(th.Repo), int64(th.Number), c.ID, opt, gl.WithContext(ctx))
		}
		if err != nil {
			return false, wrap(fmt.Sprintf("list award emoji of note %d", c.ID), th.Repo, err)
		}
		return slices.ContainsFunc(list, func(a *gl.AwardEmoji) bool {
			return a.Name == reaction && strings.EqualFold(a.User.Username, self)
		}), nil
	}
	if ok, err := mine(); err != nil || ok {
		return err
	}
	opt := &gl.CreateAwardEmojiOptions{Name: reaction}
	if th.Kind == forge.ThreadChange {
		_, _, err = d.api.AwardEmoji.CreateMergeRequestAwardEmojiOnNote(pid(th.Repo), int64(th.Number), c.ID, opt, gl.WithContext(ctx))
	} else {
		_, _, err = d.api.AwardEmoji.CreateIssuesAwardEmojiOnNote(pid(th.Repo), int64(th.Number), c.ID, opt, gl.WithContext(ctx))
	}
	if err != nil {
		// A concurrent award of ours ("has already been taken") is fine.
		if ok, lerr := mine(); lerr == nil && ok {
			return nil
		}
		return wrap(fmt.Sprintf("award %s to note %d", reaction, c.ID), th.Repo, err)
	}
	return nil
}

// Comment implements forge.Driver.
func (d *Driver) Comment(ctx context.Context, th forge.Thread, body string) (int64, error) {
	var (
		n   *gl.Note
		err error
	)
	if th.Kind == forge.ThreadChange {
		n, _, err = d.api.Notes.CreateMergeRequestNote(pid(th.Repo), int64(th.Number), &gl.CreateMergeRequestNoteOptions{Body: gl.Ptr(body)}, gl.WithContext(ctx))
	} else {
		n, _, err = d.api.Notes.CreateIssueNote(pid(th.Repo), int64(th.Number), &gl.CreateIssueNoteOptions{Body: gl.Ptr(body)}, gl.WithContext(ctx))
	}
	if err != nil {
		return 0, wrap(fmt.Sprintf("add a note to %s %d", th.Kind, th.Number), th.Repo, err)
	}
	return n.ID, nil
}

// EditComment implements forge.Driver.
func (d *Driver) EditComment(ctx context.Context, th forge.Thread, id int64, body string) error {
	var err error
	if th.Kind == forge.ThreadChange {
		_, _, err = d.api.Notes.UpdateMergeRequestNote(pid(th.Repo), int64(th.Number), id, &gl.UpdateMergeRequestNoteOptions{Body: gl.Ptr(body)}, gl.WithContext(ctx))
	} else {
		_, _, err = d.api.Notes.UpdateIssueNote(pid(th.Repo), int64(th.Number), id, &gl.UpdateIssueNoteOptions{Body: gl.Ptr(body)}, gl.WithContext(ctx))
	}
	if err != nil {
		return wrap(fmt.Sprintf("edit note %d", id), th.Repo, err)
	}
	return nil
}

// maxNotePages bounds how many pages of notes FindComment reads.
const maxNotePages = 20

// FindComment implements forge.Driver: the oldest note of ours (written
// with the driver's token) whose body contains marker.
func (d *Driver) FindComment(ctx context.Context, th forge.Thread, marker string) (int64, error) {
	self, err := d.whoami(ctx)
	if err != nil {
		return 0, err
	}
	lo := gl.ListOptions{PerPage: 100, Page: 1}
	for range maxNotePages {
		var (
			notes []*gl.Note
			resp  *gl.Response
		)
		if th.Kind == forge.ThreadChange {
			notes, resp, err = d.api.Notes.ListMergeRequestNotes(pid(th.Repo), int64(th.Number),
				&gl.ListMergeRequestNotesOptions{ListOptions: lo, OrderBy: gl.Ptr("created_at"), Sort: gl.Ptr("asc")}, gl.WithContext(ctx))
		} else {
			notes, resp, err = d.api.Notes.ListIssueNotes(pid(th.Repo), int64(th.Number),
				&gl.ListIssueNotesOptions{ListOptions: lo, OrderBy: gl.Ptr("created_at"), Sort: gl.Ptr("asc")}, gl.WithContext(ctx))
		}
		if err != nil {
			return 0, wrap(fmt.Sprintf("list notes of %s %d", th.Kind, th.Number), th.Repo, err)
		}
		for _, n := range notes {
			if !n.System && strings.EqualFold(n.Author.Username, self) && strings.Contains(n.Body, marker) {
				return n.ID, nil
			}
		}
		if resp == nil || resp.NextPage == 0 {
			return 0, nil
		}
		lo.Page = resp.NextPage
	}
	return 0, nil
}

var shaRe = regexp.MustCompile(`^[0-9a-f]{40}([0-9a-f]{24})?$`)

// CIFailures implements forge.Driver: the failed jobs (not allowed to
// fail) of the latest pipeline of q.Ref, q.Prefer first, with the end of
// the first q.MaxLogs traces; then the commit's other failed statuses
// (external CI reporting through the commit status API).
func (d *Driver) CIFailures(ctx context.Context, r forge.Repo, q forge.CIQuery) ([]forge.CIFailure, error) {
	popt := &gl.ListProjectPipelinesOptions{ListOptions: gl.ListOptions{PerPage: 1}, OrderBy: gl.Ptr("id"), Sort: gl.Ptr("desc")}
	sha := ""
	if shaRe.MatchString(q.Ref) {
		sha = q.Ref
		popt.SHA = gl.Ptr(q.Ref)
	} else {
		popt.Ref = gl.Ptr(q.Ref)
	}
	pls, _, err := d.api.Pipelines.ListProjectPipelines(pid(r), popt, gl.WithContext(ctx))
	if err != nil {
		return nil, wrap("list pipelines of "+q.Ref, r, err)
	}
	var out []forge.CIFailure
	jobs := map[string]bool{}
	if len(pls) > 0 {
		pl := pls[0]
		if sha == "" {
			sha = pl.SHA
		}
		list, _, err := d.api.Jobs.ListPipelineJobs(pid(r), pl.ID, &gl.ListJobsOptions{ListOptions: gl.ListOptions{PerPage: 100},
			Scope: &[]gl.BuildStateValue{gl.Failed}}, gl.WithContext(ctx))
		if err != nil {
			return nil, wrap(fmt.Sprintf("list jobs of pipeline %d", pl.ID), r, err)
		}
		var failed []*gl.Job
		for _, j := range list {
			jobs[j.Name] = true
			if j.Status == "failed" && !j.AllowFailure {
				failed = append(failed, j)
			}
		}
		slices.SortStableFunc(failed, func(a, b *gl.Job) int {
			return boolInt(b.Name == q.Prefer) - boolInt(a.Name == q.Prefer)
		})
		for i, j := range failed {
			f := forge.CIFailure{Kind: forge.CICheck, Name: j.Name, Conclusion: j.Status, URL: j.WebURL}
			if j.FailureReason != "" {
				f.Output = []string{"failure reason: " + j.FailureReason}
			}
			if i < q.MaxLogs {
				f.Log = d.trace(ctx, r, j.ID, q.LogBytes)
			}
			out = append(out, f)
		}
	}
	if sha == "" {
		return out, nil
	}
	sts, _, err := d.api.Commits.GetCommitStatuses(pid(r), sha, &gl.GetCommitStatusesOptions{ListOptions: gl.ListOptions{PerPage: 100}}, gl.WithContext(ctx))
	if err != nil {
		return nil, wrap("list statuses of "+sha, r, err)
	}
	seen := map[string]bool{}
	for _, s := range sts {
		if s.Status != "failed" || s.AllowFailure || jobs[s.Name] || seen[s.Name] {
			continue
		}
		seen[s.Name] = true
		out = append(out, forge.CIFailure{Kind: forge.CIStatus, Name: s.Name, Conclusion: s.Status, URL: s.TargetURL, Description: s.Description})
	}
	return out, nil
}

func boolInt(b bool) int {
	if b {
		return 1
	}
	return 0
}

// maxTraceRead bounds how much of a job trace is read.
const maxTraceRead = 4 << 20

// trace returns the end of job id's trace (whole lines, at most n bytes,
// control sequences and GitLab section markers removed), or "" when it
// cannot be read.
func (d *Driver) trace(ctx context.Context, r forge.Repo, id int64, n int) string {
	if n <= 0 {
		n = 8 << 10
	}
	rd, _, err := d.api.Jobs.GetTraceFile(pid(r), id, gl.WithContext(ctx))
	if err != nil {
		d.log.Warn("gitlab: read job trace", "repo", r.FullName(), "job_id", id, "err", err)
		return ""
	}
	if rd.Size() > maxTraceRead {
		rd.Seek(rd.Size()-maxTraceRead, io.SeekStart)
	}
	b, _ := io.ReadAll(rd)
	return TraceTail(string(b), n)
}

var (
	ansiRe      = regexp.MustCompile(`\x1b\[[0-9;?]*[A-Za-z]`)
	sectionRe   = regexp.MustCompile(`section_(start|end):[0-9]+:[A-Za-z0-9_.\-\[\]=,]*`)
	timestampRe = regexp.MustCompile(`^[0-9]{4}-[0-9]{2}-[0-9]{2}T[0-9:.]+Z [0-9]{2}[OE]\+? ?`)
)

// TraceTail cleans a GitLab job trace (ANSI colours, section markers,
// carriage-return progress, per-line timestamps) and returns its last n
// bytes of whole lines.
func TraceTail(trace string, n int) string {
	lines := strings.Split(strings.ReplaceAll(trace, "\r\n", "\n"), "\n")
	out := make([]string, 0, len(lines))
	for _, l := range lines {
		l = ansiRe.ReplaceAllString(l, "")
		l = sectionRe.ReplaceAllString(l, "")
		if i := strings.LastIndex(l, "\r"); i >= 0 {
			// Keep what the terminal would show: the text after the
			// last carriage return, unless that is empty.
			if rest := l[i+1:]; strings.TrimSpace(rest) != "" {
				l = rest
			} else {
				l = strings.ReplaceAll(l, "\r", "")
			}
		}
		l = timestampRe.ReplaceAllString(l, "")
		out = append(out, strings.TrimRight(l, " \t"))
	}
	for len(out) > 0 && out[len(out)-1] == "" {
		out = out[:len(out)-1]
	}
	s := strings.Join(out, "\n")
	if len(s) <= n {
		return s
	}
	s = s[len(s)-n:]
	if i := strings.IndexByte(s, '\n'); i >= 0 {
		s = s[i+1:]
	}
	return s
}

// Permission implements forge.Driver: login's member access level on r,
// inherited from groups included. Guest, Planner and Reporter read;
// Developer writes; Maintainer maintains; Owner administers. A level at or
// above Config.TriggerLevel is at least write (may trigger), a level below
// it less than write.
func (d *Driver) Permission(ctx context.Context, r forge.Repo, login string) (forge.Access, error) {
	if !segment(login) {
		return forge.AccessNone, nil
	}
	users, _, err := d.api.Users.ListUsers(&gl.ListUsersOptions{Username: gl.Ptr(login)}, gl.WithContext(ctx))
	if err != nil {
		return forge.AccessNone, wrap("look up user "+login, r, err)
	}
	var uid int64
	for _, u := range users {
		if strings.EqualFold(u.Username, login) {
			uid = u.ID
		}
	}
	if uid == 0 {
		return forge.AccessNone, nil
	}
	m, _, err := d.api.ProjectMembers.GetInheritedProjectMember(pid(r), uid, gl.WithContext(ctx))
	if errors.Is(err, gl.ErrNotFound) {
		return forge.AccessNone, nil
	}
	if err != nil {
		return forge.AccessNone, wrap("get member "+login, r, err)
	}
	if m.State != "" && m.State != "active" {
		return forge.AccessNone, nil
	}
	return access(int(m.AccessLevel), d.cfg.TriggerLevel), nil
}

// access maps a GitLab access level to forge.Access, moved across the
// write line by trigger (Config.TriggerLevel).
func access(level, trigger int) forge.Access {
	var a forge.Access
	switch {
	case level >= LevelOwner:
		a = forge.AccessAdmin
	case level >= LevelMaintainer:
		a = forge.AccessMaintain
	case level >= LevelDeveloper:
		a = forge.AccessWrite
	case level >= LevelGuest:
		a = forge.AccessRead
	default:
		return forge.AccessNone
	}
	switch {
	case level >= trigger && !a.CanTrigger():
		a = forge.AccessWrite
	case level < trigger && a.CanTrigger():
		a = forge.AccessTriage
	}
	return a
}

// wrap adds what failed and where, and maps GitLab's 404 and 409 to
// forge.ErrNotFound and forge.ErrConflict.
func wrap(op string, r forge.Repo, err error) error {
	var er *gl.ErrorResponse
	switch {
	case errors.Is(err, gl.ErrNotFound):
		return fmt.Errorf("gitlab: %s on %s: %w", op, r.FullName(), forge.ErrNotFound)
	case errors.As(err, &er) && er.StatusCode == http.StatusConflict:
		return fmt.Errorf("gitlab: %s on %s: %w (%s)", op, r.FullName(), forge.ErrConflict, er.Message)
	case errors.As(err, &er):
		return fmt.Errorf("gitlab: %s on %s: HTTP %d: %s", op, r.FullName(), er.StatusCode, er.Message)
	}
	return fmt.Errorf("gitlab: %s on %s: %w", op, r.FullName(), err)
}
