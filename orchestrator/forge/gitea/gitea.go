// Package gitea is the forge driver of Gitea and Forgejo (their API v1 is
// the same where Nightshift needs it): pull requests, issue and pull
// request comments, reactions, commit statuses and Actions runs, and
// collaborator permissions, over plain HTTP with a personal access token.
//
// Guarantees:
//   - Every call carries the configured token (Authorization: token ...);
//     the token is resolved at each call (so a vault rotation applies) and
//     never logged or put in an error.
//   - Reacting twice leaves one reaction (Gitea answers 200 for an
//     existing one); a second pull request for the same head and base is
//     refused by Gitea with 409, which is forge.ErrConflict.
//   - Drafts are Gitea's work-in-progress pull requests: the title starts
//     with "WIP: ". Editing the title of a draft keeps the prefix.
//   - Permission needs a token of a repository administrator (or a site
//     administrator): Gitea shows other people's permissions only to them.
//
// Repositories are recognized by their clone URL on the configured git URL
// (https://host[:port]/[prefix/]owner/name(.git), ssh://git@host/owner/name.git,
// git@host:owner/name.git).
package gitea

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/url"
	"slices"
	"strings"
	"time"

	"github.com/nightshift/nightshift/orchestrator/forge"
	"github.com/nightshift/nightshift/worktree"
)

// Config configures a Driver. The zero value of a field means the default
// written next to it.
type Config struct {
	// APIURL is the API v1 base, e.g. https://git.example.com/api/v1/
	// (required; a URL without the /api/v1 suffix gets it).
	APIURL string
	// GitURL is the clone base, e.g. https://git.example.com/. Default:
	// APIURL without its api/v1/ suffix.
	GitURL string
	// Token is a personal access token of Nightshift's Gitea account with
	// the scopes write:repository, write:issue and read:user.
	Token string
	// TokenFunc, when set, returns the token at each call instead of Token
	// (a vault reference resolved at use).
	TokenFunc func(ctx context.Context) (string, error)
	// HTTPClient makes the API calls (default: a client with a 30s timeout).
	HTTPClient *http.Client
	// Logger receives warnings (default: discard).
	Logger *slog.Logger
}

// LogValue implements slog.LogValuer: the token prints as REDACTED.
func (c Config) LogValue() slog.Value {
	tok := ""
	if c.Token != "" || c.TokenFunc != nil {
		tok = "REDACTED"
	}
	return slog.GroupValue(slog.String("api_url", c.APIURL), slog.String("git_url", c.GitURL), slog.String("token", tok))
}

// Driver is a forge.Driver for one Gitea or Forgejo host.
type Driver struct {
	api    *url.URL // ends in /
	git    *url.URL // ends in /
	token  func(ctx context.Context) (string, error)
	client *http.Client
	log    *slog.Logger
}

var _ forge.Driver = (*Driver)(nil)

// New returns a Driver for cfg.
func New(cfg Config) (*Driver, error) {
	if strings.TrimSpace(cfg.APIURL) == "" {
		return nil, errors.New("gitea: config api_url is required")
	}
	api, err := url.Parse(strings.TrimSpace(cfg.APIURL))
	if err != nil || (api.Scheme != "http" && api.Scheme != "https") || api.Host == "" {
		return nil, fmt.Errorf("gitea: config api_url %q is not an absolute http(s) URL", cfg.APIURL)
	}
	api.Path = strings.TrimSuffix(api.Path, "/")
	if !strings.HasSuffix(api.Path, "/api/v1") {
		api.Path += "/api/v1"
	}
	api.Path += "/"
	gitRaw := strings.TrimSpace(cfg.GitURL)
	if gitRaw == "" {
		g := *api
		g.Path = strings.TrimSuffix(api.Path, "api/v1/")
		gitRaw = g.String()
	}
	git, err := url.Parse(gitRaw)
	if err != nil || (git.Scheme != "http" && git.Scheme != "https") || git.Host == "" || git.User != nil {
		return nil, fmt.Errorf("gitea: config git_url %q is not an absolute http(s) URL without credentials", cfg.GitURL)
	}
	if !strings.HasSuffix(git.Path, "/") {
		git.Path += "/"
	}
	git.Host = strings.ToLower(git.Host)
	tok := cfg.TokenFunc
	if tok == nil {
		static := cfg.Token
		tok = func(context.Context) (string, error) { return static, nil }
	}
	d := &Driver{api: api, git: git, token: tok, client: cfg.HTTPClient, log: cfg.Logger}
	if d.client == nil {
		d.client = &http.Client{Timeout: 30 * time.Second}
	}
	if d.log == nil {
		d.log = slog.New(slog.DiscardHandler)
	}
	return d, nil
}

// Kind implements forge.Driver.
func (d *Driver) Kind() forge.Kind { return forge.KindGitea }

// Host implements forge.Driver.
func (d *Driver) Host() string { return d.git.Host }

// GitURL returns the clone base (with a trailing slash).
func (d *Driver) GitURL() string { return d.git.String() }

// RepoOf implements forge.Driver.
func (d *Driver) RepoOf(cloneURL string) (forge.Repo, bool) {
	s := strings.TrimSpace(cloneURL)
	var host, p string
	switch {
	case strings.Contains(s, "://"):
		u, err := url.Parse(s)
		if err != nil || u.RawQuery != "" || u.Fragment != "" {
			return forge.Repo{}, false
		}
		switch u.Scheme {
		case "http", "https":
			// The clone URL must live under the git URL's path prefix.
			rest, ok := strings.CutPrefix(u.Path, d.git.Path)
			if !ok {
				return forge.Repo{}, false
			}
			host, p = u.Host, rest
		case "ssh":
			host, p = u.Hostname(), strings.TrimPrefix(u.Path, "/")
		default:
			return forge.Repo{}, false
		}
	case strings.Contains(s, "@") && strings.Contains(s, ":"):
		// scp-like git@host:owner/name.git
		at := strings.Index(s, "@")
		h, rest, _ := strings.Cut(s[at+1:], ":")
		host, p = h, rest
	default:
		return forge.Repo{}, false
	}
	if !strings.EqualFold(host, d.git.Host) && !strings.EqualFold(host, d.git.Hostname()) {
		return forge.Repo{}, false
	}
	parts := strings.Split(strings.TrimSuffix(strings.Trim(p, "/"), ".git"), "/")
	if len(parts) != 2 || !segment(parts[0]) || !segment(parts[1]) {
		return forge.Repo{}, false
	}
	return forge.Repo{Host: d.git.Host, Owner: parts[0], Name: parts[1]}, true
}

// segment reports whether s may be an owner or repository name.
func segment(s string) bool { return forge.PathSegment(s, 100) }

// CloneURL implements forge.Driver.
func (d *Driver) CloneURL(r forge.Repo) string {
	return d.git.String() + r.Owner + "/" + r.Name + ".git"
}

// PushAuth implements forge.Driver: the token as the basic-auth password
// (Gitea takes any user name with it). It is valid as long as the token.
func (d *Driver) PushAuth(ctx context.Context, r forge.Repo) (worktree.Auth, error) {
	tok, err := d.token(ctx)
	if err != nil {
		return worktree.Auth{}, fmt.Errorf("gitea: token for %s: %w", r.FullName(), err)
	}
	if tok == "" {
		return worktree.Auth{}, fmt.Errorf("gitea: no token configured to push to %s", r.FullName())
	}
	return worktree.Auth{Username: "nightshift", Password: tok}, nil
}

// APIError is a Gitea API call that did not answer 2xx. It unwraps to
// forge.ErrNotFound for 404 and forge.ErrConflict for 409.
type APIError struct {
	// What names the action ("create pull request in o/n").
	What   string
	Status int
	// Message is Gitea's message (from the JSON answer), clipped.
	Message string
}

func (e *APIError) Error() string {
	msg := e.Message
	if msg == "" {
		msg = http.StatusText(e.Status)
	}
	return fmt.Sprintf("gitea: %s: %d %s", e.What, e.Status, msg)
}

// Unwrap maps the status to the forge's errors.
func (e *APIError) Unwrap() error {
	switch e.Status {
	case http.StatusNotFound:
		return forge.ErrNotFound
	case http.StatusConflict:
		return forge.ErrConflict
	}
	return nil
}

// call does one API request: path is relative to the API base (its
// segments already escaped), in (if not nil) is sent as JSON and a 2xx
// answer is decoded into out (if not nil).
func (d *Driver) call(ctx context.Context, what, method, path string, in, out any) (*http.Response, error) {
	if _, ok := ctx.Deadline(); !ok {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, 30*time.Second)
		defer cancel()
	}
	var body io.Reader
	if in != nil {
		b, err := json.Marshal(in)
		if err != nil {
			return nil, fmt.Errorf("gitea: %s: %w", what, err)
		}
		body = bytes.NewReader(b)
	}
	u, err := d.api.Parse(path)
	if err != nil {
		return nil, fmt.Errorf("gitea: %s: bad path: %w", what, err)
	}
	req, err := http.NewRequestWithContext(ctx, method, u.String(), body)
	if err != nil {
		return nil, fmt.Errorf("gitea: %s: %w", what, err)
	}
	tok, err := d.token(ctx)
	if err != nil {
		return nil, fmt.Errorf("gitea: %s: token: %w", what, err)
	}
	if tok != "" {
		req.Header.Set("Authorization", "token "+tok)
	}
	req.Header.Set("Accept", "application/json")
	if in != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	resp, err := d.client.Do(req)
	if err != nil {
		// The URL carries no secret; the error names the action.
		return nil, fmt.Errorf("gitea: %s: %w", what, err)
	}
	defer resp.Body.Close()
	data, err := io.ReadAll(io.LimitReader(resp.Body, 16<<20))
	if err != nil {
		return nil, fmt.Errorf("gitea: %s: read answer: %w", what, err)
	}
	if resp.StatusCode/100 != 2 {
		var m struct {
			Message string `json:"message"`
		}
		_ = json.Unmarshal(data, &m)
		msg := m.Message
		if len(msg) > 300 {
			msg = msg[:300] + "…"
		}
		return resp, &APIError{What: what, Status: resp.StatusCode, Message: msg}
	}
	if out != nil && len(bytes.TrimSpace(data)) > 0 {
		if err := json.Unmarshal(data, out); err != nil {
			return resp, fmt.Errorf("gitea: %s: decode answer: %w", what, err)
		}
	}
	return resp, nil
}

// raw fetches a non-JSON body (a file, a log), at most limit bytes.
func (d *Driver) raw(ctx context.Context, what, path string, limit int64) ([]byte, error) {
	if _, ok := ctx.Deadline(); !ok {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, 30*time.Second)
		defer cancel()
	}
	u, err := d.api.Parse(path)
	if err != nil {
		return nil, fmt.Errorf("gitea: %s: bad path: %w", what, err)
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, u.String(), nil)
	if err != nil {
		return nil, fmt.Errorf("gitea: %s: %w", what, err)
	}
	tok, err := d.token(ctx)
	if err != nil {
		return nil, fmt.Errorf("gitea: %s: token: %w", what, err)
	}
	if tok != "" {
		req.Header.Set("Authorization", "token "+tok)
	}
	resp, err := d.client.Do(req)
	if err != nil {
		return nil, fmt.Errorf("gitea: %s: %w", what, err)
	}
	defer resp.Body.Close()
	if resp.StatusCode/100 != 2 {
		io.Copy(io.Discard, io.LimitReader(resp.Body, 64<<10))
		return nil, &APIError{What: what, Status: resp.StatusCode}
	}
	// Keep the end: logs are read for their tail.
	data, err := io.ReadAll(resp.Body)
	if err != nil {
		return nil, fmt.Errorf("gitea: %s: read answer: %w", what, err)
	}
	if int64(len(data)) > limit {
		data = data[int64(len(data))-limit:]
	}
	return data, nil
}

// repoPath is "repos/owner/name" with both escaped.
func repoPath(r forge.Repo) string {
	return "repos/" + url.PathEscape(r.Owner) + "/" + url.PathEscape(r.Name)
}

// DefaultBranch implements forge.Driver.
func (d *Driver) DefaultBranch(ctx context.Context, r forge.Repo) (string, error) {
	var out struct {
		DefaultBranch string `json:"default_branch"`
	}
	if _, err := d.call(ctx, "get repository "+r.FullName(), http.MethodGet, repoPath(r), nil, &out); err != nil {
		return "", err
	}
	if out.DefaultBranch == "" {
		return "", fmt.Errorf("gitea: repository %s has no default branch", r.FullName())
	}
	return out.DefaultBranch, nil
}

// templatePaths are where Gitea looks for a pull request template (its
// Markdown ones, in Gitea's order).
var templatePaths = []string{
	"PULL_REQUEST_TEMPLATE.md", "pull_request_template.md",
	".gitea/PULL_REQUEST_TEMPLATE.md", ".gitea/pull_request_template.md",
	".github/PULL_REQUEST_TEMPLATE.md", ".github/pull_request_template.md",
}

// maxTemplate bounds a template kept in a pull request body.
const maxTemplate = 16 << 10

// Template implements forge.Driver.
func (d *Driver) Template(ctx context.Context, r forge.Repo, ref string) (string, error) {
	for _, p := range templatePaths {
		path := repoPath(r) + "/raw/" + p
		if ref != "" {
			path += "?ref=" + url.QueryEscape(ref)
		}
		b, err := d.raw(ctx, "read "+p+" of "+r.FullName(), path, maxTemplate)
		if errors.Is(err, forge.ErrNotFound) {
			continue
		}
		if err != nil {
			return "", err
		}
		return strings.TrimSpace(string(b)), nil
	}
	return "", nil
}

// Pull request shapes of the API.
type (
	apiRepo struct {
		FullName string `json:"full_name"`
	}
	apiBranch struct {
		Ref  string   `json:"ref"`
		SHA  string   `json:"sha"`
		Repo *apiRepo `json:"repo"`
	}
	apiPR struct {
		Number  int        `json:"number"`
		HTMLURL string     `json:"html_url"`
		State   string     `json:"state"`
		Merged  bool       `json:"merged"`
		Draft   bool       `json:"draft"`
		Title   string     `json:"title"`
		Body    string     `json:"body"`
		Head    *apiBranch `json:"head"`
		Base    *apiBranch `json:"base"`
	}
)

func (d *Driver) changeRequest(p apiPR) forge.ChangeRequest {
	cr := forge.ChangeRequest{Number: p.Number, URL: p.HTMLURL, Draft: p.Draft || isWIP(p.Title), Title: p.Title, Body: p.Body,
		HeadRef: fmt.Sprintf("refs/pull/%d/head", p.Number)}
	switch {
	case p.Merged:
		cr.State = forge.StateMerged
	case p.State == "open":
		cr.State = forge.StateOpen
	default:
		cr.State = forge.StateClosed
	}
	if p.Head != nil {
		cr.Head.Name, cr.HeadSHA = p.Head.Ref, p.Head.SHA
		if p.Head.Repo != nil {
			if owner, name, ok := strings.Cut(p.Head.Repo.FullName, "/"); ok {
				cr.Head.Repo = forge.Repo{Host: d.git.Host, Owner: owner, Name: name}
			}
		}
	}
	if p.Base != nil {
		cr.Base = p.Base.Ref
	}
	return cr
}

// wipPrefix marks a draft (one of Gitea's default work-in-progress prefixes).
const wipPrefix = "WIP: "

func isWIP(title string) bool {
	t := strings.ToUpper(strings.TrimSpace(title))
	return strings.HasPrefix(t, "WIP:") || strings.HasPrefix(t, "[WIP]")
}

// ChangeRequest implements forge.Driver.
func (d *Driver) ChangeRequest(ctx context.Context, r forge.Repo, number int) (forge.ChangeRequest, error) {
	var p apiPR
	if _, err := d.call(ctx, fmt.Sprintf("get pull request #%d of %s", number, r.FullName()), http.MethodGet,
		fmt.Sprintf("%s/pulls/%d", repoPath(r), number), nil, &p); err != nil {
		return forge.ChangeRequest{}, err
	}
	return d.changeRequest(p), nil
}

// maxPages bounds listing walks (pull requests, comments, runs).
const maxPages = 20

// FindChangeRequests implements forge.Driver: it walks r's pull requests
// (open ones, or all) and keeps those whose head is head.
func (d *Driver) FindChangeRequests(ctx context.Context, r forge.Repo, head forge.Branch, all bool) ([]forge.ChangeRequest, error) {
	state := "open"
	if all {
		state = "all"
	}
	headRepo := head.Repo
	if headRepo.IsZero() {
		headRepo = r
	}
	return d.pullsWhere(ctx, r, state, func(cr forge.ChangeRequest) bool {
		return cr.Head.Name == head.Name && (cr.Head.Repo.IsZero() || cr.Head.Repo.Same(headRepo))
	})
}

// OpenChangeRequestsAt returns r's open pull requests whose head is
// commit sha, newest first. Gitea's status hook names only a commit; this
// finds the pull request it is about.
func (d *Driver) OpenChangeRequestsAt(ctx context.Context, r forge.Repo, sha string) ([]forge.ChangeRequest, error) {
	return d.pullsWhere(ctx, r, "open", func(cr forge.ChangeRequest) bool {
		return sha != "" && strings.EqualFold(cr.HeadSHA, sha)
	})
}

// pullsWhere walks r's pull requests in state (open, all) and returns those
// keep takes, newest first.
func (d *Driver) pullsWhere(ctx context.Context, r forge.Repo, state string, keep func(forge.ChangeRequest) bool) ([]forge.ChangeRequest, error) {
	var out []forge.ChangeRequest
	for page := 1; page <= maxPages; page++ {
		var ps []apiPR
		if _, err := d.call(ctx, "list pull requests of "+r.FullName(), http.MethodGet,
			fmt.Sprintf("%s/pulls?state=%s&limit=50&page=%d", repoPath(r), state, page), nil, &ps); err != nil {
			return nil, err
		}
		for _, p := range ps {
			if cr := d.changeRequest(p); keep(cr) {
				out = append(out, cr)
			}
		}
		if len(ps) < 50 {
			break
		}
	}
	slices.SortFunc(out, func(a, b forge.ChangeRequest) int { return b.Number - a.Number })
	return out, nil
}

// OpenChangeRequest implements forge.Driver.
func (d *Driver) OpenChangeRequest(ctx context.Context, r forge.Repo, req forge.NewChangeRequest) (forge.ChangeRequest, error) {
	head := req.Head.Name
	if !req.Head.Repo.IsZero() && !req.Head.Repo.Same(r) {
		head = req.Head.Repo.Owner + ":" + req.Head.Name
	}
	title := req.Title
	if req.Draft && !isWIP(title) {
		title = wipPrefix + title
	}
	var p apiPR
	_, err := d.call(ctx, fmt.Sprintf("create pull request %s → %s in %s", head, req.Base, r.FullName()), http.MethodPost,
		repoPath(r)+"/pulls", map[string]string{"head": head, "base": req.Base, "title": title, "body": req.Body}, &p)
	if err != nil {
		return forge.ChangeRequest{}, err
	}
	return d.changeRequest(p), nil
}

// EditChangeRequest implements forge.Driver. A draft keeps its WIP prefix
// when its title is replaced.
func (d *Driver) EditChangeRequest(ctx context.Context, r forge.Repo, number int, edit forge.ChangeEdit) (forge.ChangeRequest, error) {
	in := map[string]any{}
	if edit.Title != "" {
		title := edit.Title
		if !isWIP(title) {
			cur, err := d.ChangeRequest(ctx, r, number)
			if err != nil {
				return forge.ChangeRequest{}, err
			}
			if isWIP(cur.Title) {
				title = wipPrefix + title
			}
		}
		in["title"] = title
	}
	if edit.Body != "" {
		in["body"] = edit.Body
	}
	if edit.Reopen {
		in["state"] = "open"
	}
	var p apiPR
	if _, err := d.call(ctx, fmt.Sprintf("update pull request #%d of %s", number, r.FullName()), http.MethodPatch,
		fmt.Sprintf("%s/pulls/%d", repoPath(r), number), in, &p); err != nil {
		return forge.ChangeRequest{}, err
	}
	return d.changeRequest(p), nil
}

// React implements forge.Driver. Gitea keeps one reaction per user and
// kind (a second one answers 200), so reacting twice is harmless.
func (d *Driver) React(ctx context.Context, c forge.CommentRef, reaction string) error {
	_, err := d.call(ctx, fmt.Sprintf("react %s to comment %d in %s", reaction, c.ID, c.Thread.Repo.FullName()), http.MethodPost,
		fmt.Sprintf("%s/issues/comments/%d/reactions", repoPath(c.Thread.Repo), c.ID), map[string]string{"content": reaction}, nil)
	return err
}

// Comment implements forge.Driver.
func (d *Driver) Comment(ctx context.Context, th forge.Thread, body string) (int64, error) {
	var out struct {
		ID int64 `json:"id"`
	}
	if _, err := d.call(ctx, fmt.Sprintf("comment on #%d of %s", th.Number, th.Repo.FullName()), http.MethodPost,
		fmt.Sprintf("%s/issues/%d/comments", repoPath(th.Repo), th.Number), map[string]string{"body": body}, &out); err != nil {
		return 0, err
	}
	if out.ID == 0 {
		return 0, fmt.Errorf("gitea: comment on #%d of %s: answer has no id", th.Number, th.Repo.FullName())
	}
	return out.ID, nil
}

// EditComment implements forge.Driver.
func (d *Driver) EditComment(ctx context.Context, th forge.Thread, id int64, body string) error {
	_, err := d.call(ctx, fmt.Sprintf("update comment %d on #%d of %s", id, th.Number, th.Repo.FullName()), http.MethodPatch,
		fmt.Sprintf("%s/issues/comments/%d", repoPath(th.Repo), id), map[string]string{"body": body}, nil)
	return err
}

// FindComment implements forge.Driver.
func (d *Driver) FindComment(ctx context.Context, th forge.Thread, marker string) (int64, error) {
	var cs []struct {
		ID   int64  `json:"id"`
		Body string `json:"body"`
	}
	// Gitea answers every comment of the issue at once.
	if _, err := d.call(ctx, fmt.Sprintf("list comments of #%d of %s", th.Number, th.Repo.FullName()), http.MethodGet,
		fmt.Sprintf("%s/issues/%d/comments", repoPath(th.Repo), th.Number), nil, &cs); err != nil {
		return 0, err
	}
	for _, c := range cs {
		if strings.Contains(c.Body, marker) {
			return c.ID, nil
		}
	}
	return 0, nil
}

// Permission implements forge.Driver. Gitea's levels map to forge
// levels: owner and admin to admin, write to write, read to read.
func (d *Driver) Permission(ctx context.Context, r forge.Repo, login string) (forge.Access, error) {
	var out struct {
		Permission string `json:"permission"`
	}
	_, err := d.call(ctx, fmt.Sprintf("check permission of %s on %s", login, r.FullName()), http.MethodGet,
		fmt.Sprintf("%s/collaborators/%s/permission", repoPath(r), url.PathEscape(login)), nil, &out)
	var ae *APIError
	switch {
	case errors.Is(err, forge.ErrNotFound):
		return forge.AccessNone, nil
	case errors.As(err, &ae) && ae.Status == http.StatusForbidden:
		return forge.AccessNone, fmt.Errorf("%w (Nightshift's Gitea account must be an administrator of %s to read other people's permissions)", err, r.FullName())
	case err != nil:
		return forge.AccessNone, err
	}
	switch strings.ToLower(out.Permission) {
	case "owner", "admin":
		return forge.AccessAdmin, nil
	case "write":
		return forge.AccessWrite, nil
	case "read":
		return forge.AccessRead, nil
	}
	return forge.AccessNone, nil
}
