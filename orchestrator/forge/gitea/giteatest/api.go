package giteatest

import (
	"context"
	"encoding/base64"
	"errors"
	"fmt"
	"maps"
	"net/http"
	"net/url"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"
)

// CreateToken makes an access token of login (whose password is
// AdminPassword) with scopes, through POST /users/{login}/tokens with
// basic auth, as a person does.
func (s *Server) CreateToken(ctx context.Context, login, name string, scopes ...string) (string, error) {
	var out struct {
		SHA1 string `json:"sha1"`
	}
	in := map[string]any{"name": name, "scopes": scopes}
	err := s.do(ctx, http.MethodPost, "users/"+url.PathEscape(login)+"/tokens", func(r *http.Request) {
		r.SetBasicAuth(login, AdminPassword)
	}, in, &out)
	if err != nil {
		return "", err
	}
	if out.SHA1 == "" {
		return "", fmt.Errorf("giteatest: token %s of %s: empty answer", name, login)
	}
	return out.SHA1, nil
}

// CreateUser makes a plain (non-admin) user with AdminPassword.
func (s *Server) CreateUser(ctx context.Context, login string) error {
	return s.Do(ctx, http.MethodPost, "admin/users", "", map[string]any{
		"username": login, "email": login + "@example.test", "password": AdminPassword,
		"must_change_password": false, "visibility": "public",
	}, nil)
}

// Repo is a repository as the API describes it (the fields tests read).
type Repo struct {
	ID            int64  `json:"id"`
	FullName      string `json:"full_name"`
	CloneURL      string `json:"clone_url"`
	HTMLURL       string `json:"html_url"`
	DefaultBranch string `json:"default_branch"`
}

// CreateRepo makes owner/name (owner is the admin or a user), initialized
// with a README on branch main.
func (s *Server) CreateRepo(ctx context.Context, owner, name string) (Repo, error) {
	in := map[string]any{"name": name, "auto_init": true, "default_branch": "main", "readme": "Default", "private": false}
	path := "admin/users/" + url.PathEscape(owner) + "/repos"
	if owner == s.Admin {
		path = "user/repos"
	}
	var r Repo
	err := s.Do(ctx, http.MethodPost, path, "", in, &r)
	return r, err
}

// AddCollaborator gives login permission ("read", "write" or "admin") on
// owner/name.
func (s *Server) AddCollaborator(ctx context.Context, owner, name, login, permission string) error {
	return s.Do(ctx, http.MethodPut, fmt.Sprintf("repos/%s/%s/collaborators/%s", owner, name, login), "",
		map[string]string{"permission": permission}, nil)
}

// Hook is a repository webhook.
type Hook struct {
	ID     int64    `json:"id"`
	Type   string   `json:"type"`
	Events []string `json:"events"`
	Active bool     `json:"active"`
}

// HookEvents are the events Nightshift's README asks a Gitea webhook to
// send: the API's names of the settings page's check boxes Issues, Issue
// Labeled, Issue Comment, Pull Request, Pull Request Comment, Pull Request
// Reviewed, Statuses and Workflow Run.
var HookEvents = []string{"issues_only", "issue_label", "issue_comment", "pull_request_only", "pull_request_comment",
	"pull_request_review", "status", "workflow_run"}

// CreateHook adds a Gitea-type webhook on owner/name posting JSON to
// target, signed with secret, for events (HookEvents when nil).
func (s *Server) CreateHook(ctx context.Context, owner, name, target, secret string, events []string) (Hook, error) {
	if events == nil {
		events = HookEvents
	}
	var h Hook
	err := s.Do(ctx, http.MethodPost, fmt.Sprintf("repos/%s/%s/hooks", owner, name), "", map[string]any{
		"type": "gitea", "active": true, "events": events, "branch_filter": "*",
		"config": map[string]string{"url": target, "content_type": "json", "secret": secret},
	}, &h)
	return h, err
}

// CreateIssue opens an issue on owner/name as login and returns its number.
func (s *Server) CreateIssue(ctx context.Context, as, owner, name, title, body string) (int, error) {
	var out struct {
		Number int `json:"number"`
	}
	err := s.Do(ctx, http.MethodPost, fmt.Sprintf("repos/%s/%s/issues", owner, name), s.sudo(as),
		map[string]any{"title": title, "body": body}, &out)
	return out.Number, err
}

// Comment posts body on issue or pull request number as login and returns
// the comment id.
func (s *Server) Comment(ctx context.Context, as, owner, name string, number int, body string) (int64, error) {
	var out struct {
		ID int64 `json:"id"`
	}
	err := s.Do(ctx, http.MethodPost, fmt.Sprintf("repos/%s/%s/issues/%d/comments", owner, name, number), s.sudo(as),
		map[string]string{"body": body}, &out)
	return out.ID, err
}

// Comments are the bodies of the comments on issue or pull request number.
type Comments []struct {
	ID   int64  `json:"id"`
	Body string `json:"body"`
	User struct {
		Login string `json:"login"`
	} `json:"user"`
}

// ListComments lists the comments of issue or pull request number.
func (s *Server) ListComments(ctx context.Context, owner, name string, number int) (Comments, error) {
	var out Comments
	err := s.Do(ctx, http.MethodGet, fmt.Sprintf("repos/%s/%s/issues/%d/comments?limit=50", owner, name, number), "", nil, &out)
	return out, err
}

// SetStatus sets a commit status ("pending", "success", "error", "failure",
// "warning") named context on sha.
func (s *Server) SetStatus(ctx context.Context, owner, name, sha, state, context_, description string) error {
	return s.Do(ctx, http.MethodPost, fmt.Sprintf("repos/%s/%s/statuses/%s", owner, name, sha), "", map[string]string{
		"state": state, "context": context_, "description": description, "target_url": s.URL + owner + "/" + name + "/actions",
	}, nil)
}

// Merge merges pull request number with a merge commit.
func (s *Server) Merge(ctx context.Context, owner, name string, number int) error {
	// A freshly opened pull request is checked for conflicts in the
	// background; merging before that answers 405 for a while.
	deadline := time.Now().Add(60 * time.Second)
	for {
		err := s.Do(ctx, http.MethodPost, fmt.Sprintf("repos/%s/%s/pulls/%d/merge", owner, name, number), "",
			map[string]any{"Do": "merge", "delete_branch_after_merge": false}, nil)
		var ae *APIError
		if err == nil || !errors.As(err, &ae) || ae.Status != http.StatusMethodNotAllowed || strings.Contains(ae.Body, "Work in progress") ||
			time.Now().After(deadline) {
			return err
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(250 * time.Millisecond):
		}
	}
}

// MarkReady takes a work-in-progress (draft) pull request out of draft, as
// its author does before merging: the WIP prefix leaves the title.
func (s *Server) MarkReady(ctx context.Context, owner, name string, number int) error {
	var pr PullRequest
	if err := s.Do(ctx, http.MethodGet, fmt.Sprintf("repos/%s/%s/pulls/%d", owner, name, number), "", nil, &pr); err != nil {
		return err
	}
	title := pr.Title
	for _, p := range []string{"WIP:", "[WIP]"} {
		if len(title) >= len(p) && strings.EqualFold(title[:len(p)], p) {
			title = strings.TrimSpace(title[len(p):])
		}
	}
	return s.Do(ctx, http.MethodPatch, fmt.Sprintf("repos/%s/%s/pulls/%d", owner, name, number), "", map[string]string{"title": title}, nil)
}

// AddLabel creates label (if missing) on owner/name and puts it on issue
// number as login.
func (s *Server) AddLabel(ctx context.Context, as, owner, name string, number int, label string) error {
	var labels []struct {
		ID   int64  `json:"id"`
		Name string `json:"name"`
	}
	if err := s.Do(ctx, http.MethodGet, fmt.Sprintf("repos/%s/%s/labels", owner, name), "", nil, &labels); err != nil {
		return err
	}
	var id int64
	for _, l := range labels {
		if strings.EqualFold(l.Name, label) {
			id = l.ID
		}
	}
	if id == 0 {
		var l struct {
			ID int64 `json:"id"`
		}
		if err := s.Do(ctx, http.MethodPost, fmt.Sprintf("repos/%s/%s/labels", owner, name), "",
			map[string]string{"name": label, "color": "#112233"}, &l); err != nil {
			return err
		}
		id = l.ID
	}
	return s.Do(ctx, http.MethodPost, fmt.Sprintf("repos/%s/%s/issues/%d/labels", owner, name, number), s.sudo(as),
		map[string]any{"labels": []int64{id}}, nil)
}

func (s *Server) sudo(login string) string {
	if login == s.Admin {
		return ""
	}
	return login
}

// CloneURL is the HTTP clone URL of owner/name.
func (s *Server) CloneURL(owner, name string) string { return s.URL + owner + "/" + name + ".git" }

// AuthCloneURL is CloneURL with the admin's token as credentials (for git
// commands in tests; never log it).
func (s *Server) AuthCloneURL(owner, name string) string {
	u, _ := url.Parse(s.CloneURL(owner, name))
	u.User = url.UserPassword(s.Admin, s.AdminToken)
	return u.String()
}

var (
	sharedMu  sync.Mutex
	shared    *Server
	sharedErr error
)

// Shared returns the Gitea of this test process, starting it on first use
// (one per test binary: starting takes seconds). A missing binary skips
// the test with the reason (see ErrUnavailable); any other failure fails
// it. Call Shutdown from TestMain to stop it; if the process dies first,
// the kernel kills Gitea with it.
func Shared(t testing.TB) *Server {
	t.Helper()
	sharedMu.Lock()
	defer sharedMu.Unlock()
	if shared == nil && sharedErr == nil {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
		start := time.Now()
		shared, sharedErr = Start(ctx)
		cancel()
		if sharedErr == nil {
			t.Logf("real Gitea %s started in %s at %s", Version, time.Since(start).Round(time.Millisecond), shared.URL)
		}
	}
	check(t, sharedErr)
	return shared
}

// New starts a Gitea for t alone, stopped when t ends; skips and failures
// as Shared.
func New(t testing.TB) *Server {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
	defer cancel()
	start := time.Now()
	s, err := Start(ctx)
	check(t, err)
	t.Logf("real Gitea %s started in %s at %s", Version, time.Since(start).Round(time.Millisecond), s.URL)
	t.Cleanup(func() { s.Close() })
	return s
}

func check(t testing.TB, err error) {
	t.Helper()
	switch {
	case errors.Is(err, ErrUnavailable):
		t.Skipf("real Gitea %s not available, so this test cannot run (build it with ./scripts/gitea): %v", Version, err)
	case err != nil:
		t.Fatal(err)
	}
}

// Shutdown stops the Shared server, if one was started.
func Shutdown() {
	sharedMu.Lock()
	defer sharedMu.Unlock()
	if shared != nil {
		shared.Close()
		shared = nil
	}
}

// CommitFiles commits files (path → content, created or replaced) on
// branch of owner/name in one commit and returns its SHA. A branch that
// does not exist yet is created from from (the default branch when "").
func (s *Server) CommitFiles(ctx context.Context, owner, name, branch, from string, files map[string]string) (string, error) {
	ops := make([]map[string]string, 0, len(files))
	for _, p := range slices.Sorted(maps.Keys(files)) {
		ops = append(ops, map[string]string{"operation": "upload", "path": p, "content": base64.StdEncoding.EncodeToString([]byte(files[p]))})
	}
	in := map[string]any{"files": ops, "message": "test: update " + strings.Join(slices.Sorted(maps.Keys(files)), ", ")}
	err := s.Do(ctx, http.MethodGet, fmt.Sprintf("repos/%s/%s/branches/%s", owner, name, url.PathEscape(branch)), "", nil, nil)
	var ae *APIError
	switch {
	case err == nil:
		in["branch"] = branch
	case errors.As(err, &ae) && ae.Status == http.StatusNotFound:
		in["new_branch"] = branch
		if from != "" {
			in["branch"] = from
		}
	default:
		return "", err
	}
	var out struct {
		Commit struct {
			SHA string `json:"sha"`
		} `json:"commit"`
	}
	if err := s.Do(ctx, http.MethodPost, fmt.Sprintf("repos/%s/%s/contents", owner, name), "", in, &out); err != nil {
		return "", err
	}
	return out.Commit.SHA, nil
}

// PullRequest is a pull request as the API describes it (the fields tests read).
type PullRequest struct {
	Number  int    `json:"number"`
	HTMLURL string `json:"html_url"`
	State   string `json:"state"`
	Merged  bool   `json:"merged"`
	Draft   bool   `json:"draft"`
	Title   string `json:"title"`
	Body    string `json:"body"`
	Head    struct {
		Ref  string `json:"ref"`
		SHA  string `json:"sha"`
		Repo *struct {
			FullName string `json:"full_name"`
		} `json:"repo"`
	} `json:"head"`
	Base struct {
		Ref string `json:"ref"`
	} `json:"base"`
}

// PullRequests lists every pull request of owner/name, in any state.
func (s *Server) PullRequests(ctx context.Context, owner, name string) ([]PullRequest, error) {
	var out []PullRequest
	err := s.Do(ctx, http.MethodGet, fmt.Sprintf("repos/%s/%s/pulls?state=all&limit=50", owner, name), "", nil, &out)
	return out, err
}

// Reactions lists the reactions on comment id of owner/name, one content
// name per reaction.
func (s *Server) Reactions(ctx context.Context, owner, name string, id int64) ([]string, error) {
	var rs []struct {
		Content string `json:"content"`
	}
	if err := s.Do(ctx, http.MethodGet, fmt.Sprintf("repos/%s/%s/issues/comments/%d/reactions", owner, name, id), "", nil, &rs); err != nil {
		return nil, err
	}
	out := make([]string, 0, len(rs))
	for _, r := range rs {
		out = append(out, r.Content)
	}
	return out, nil
}

// RemoveCollaborator takes login's collaborator role on owner/name away.
func (s *Server) RemoveCollaborator(ctx context.Context, owner, name, login string) error {
	err := s.Do(ctx, http.MethodDelete, fmt.Sprintf("repos/%s/%s/collaborators/%s", owner, name, login), "", nil, nil)
	var ae *APIError
	if errors.As(err, &ae) && ae.Status == http.StatusNotFound {
		return nil
	}
	return err
}

// EnsureUser makes login unless it exists.
func (s *Server) EnsureUser(ctx context.Context, login string) error {
	err := s.Do(ctx, http.MethodGet, "users/"+url.PathEscape(login), "", nil, nil)
	var ae *APIError
	if errors.As(err, &ae) && ae.Status == http.StatusNotFound {
		return s.CreateUser(ctx, login)
	}
	return err
}

// BranchHead returns the commit branch of owner/name points at, "" when
// the branch does not exist.
func (s *Server) BranchHead(ctx context.Context, owner, name, branch string) (string, error) {
	var b struct {
		Commit struct {
			ID string `json:"id"`
		} `json:"commit"`
	}
	err := s.Do(ctx, http.MethodGet, fmt.Sprintf("repos/%s/%s/branches/%s", owner, name, url.PathEscape(branch)), "", nil, &b)
	var ae *APIError
	if errors.As(err, &ae) && ae.Status == http.StatusNotFound {
		return "", nil
	}
	return b.Commit.ID, err
}

// Parents returns the parent SHAs of commit sha of owner/name.
func (s *Server) Parents(ctx context.Context, owner, name, sha string) ([]string, error) {
	var c struct {
		Parents []struct {
			SHA string `json:"sha"`
		} `json:"parents"`
	}
	if err := s.Do(ctx, http.MethodGet, fmt.Sprintf("repos/%s/%s/git/commits/%s", owner, name, sha), "", nil, &c); err != nil {
		return nil, err
	}
	out := make([]string, 0, len(c.Parents))
	for _, p := range c.Parents {
		out = append(out, p.SHA)
	}
	return out, nil
}

// File returns the content of path at ref (a branch or commit) of
// owner/name.
func (s *Server) File(ctx context.Context, owner, name, path, ref string) (string, error) {
	var f struct {
		Content string `json:"content"`
	}
	if err := s.Do(ctx, http.MethodGet, fmt.Sprintf("repos/%s/%s/contents/%s?ref=%s", owner, name, path, url.QueryEscape(ref)), "", nil, &f); err != nil {
		return "", err
	}
	b, err := base64.StdEncoding.DecodeString(f.Content)
	return string(b), err
}

// TestHook makes Gitea deliver a test (push) event through hook id of
// owner/name.
func (s *Server) TestHook(ctx context.Context, owner, name string, id int64) error {
	return s.Do(ctx, http.MethodPost, fmt.Sprintf("repos/%s/%s/hooks/%d/tests", owner, name, id), "", nil, nil)
}
