package github_test

import (
	"context"
	"errors"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	gh "github.com/google/go-github/v60/github"

	"github.com/nightshift/nightshift/orchestrator"
	"github.com/nightshift/nightshift/orchestrator/github"
	"github.com/nightshift/nightshift/orchestrator/github/githubtest"
	"github.com/nightshift/nightshift/worktree"
)

const appID = 4242

func newApp(t *testing.T, fake *githubtest.Server, mod func(*github.Config)) *github.Client {
	t.Helper()
	cfg := github.Config{APIURL: fake.APIURL, AppID: fake.AppID, PrivateKey: fake.PrivateKeyPEM,
		PublicURL: "https://nightshift.example.test/", HTTPClient: fake.Client()}
	if mod != nil {
		mod(&cfg)
	}
	c, err := github.New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	return c
}

func newWorktrees(t *testing.T) *worktree.Manager {
	t.Helper()
	dir := t.TempDir()
	m, err := worktree.New(worktree.Config{MirrorDir: filepath.Join(dir, "mirrors"), TaskDir: filepath.Join(dir, "tasks")})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { m.Close() })
	return m
}

// run does what the worker does around the agent: plan, provision from the
// plan's base with its auth, change a file, commit, push with the plan.
func run(t *testing.T, c *github.Client, wts *worktree.Manager, item orchestrator.WorkItem, file, content string) (orchestrator.Plan, orchestrator.RunResult) {
	t.Helper()
	ctx := context.Background()
	plan, err := c.Plan(ctx, item)
	if err != nil {
		t.Fatalf("plan: %v", err)
	}
	base := item.Base
	if plan.Base != "" {
		base = plan.Base
	}
	wt, err := wts.Provision(ctx, worktree.Ref{TaskID: item.TaskID, Repo: item.Repo, Base: base, Branch: item.Branch, Auth: *plan.Auth}, nil)
	if err != nil {
		t.Fatalf("provision: %v", err)
	}
	if err := os.WriteFile(filepath.Join(wt.Dir, file), []byte(content), 0o644); err != nil {
		t.Fatal(err)
	}
	commit, err := wts.Commit(ctx, wt, worktree.CommitRequest{Author: worktree.Signature{Name: "agent", Email: "agent@agents.localhost"}, Message: "change"})
	if err != nil {
		t.Fatalf("commit: %v", err)
	}
	branch := item.Branch
	if plan.PushBranch != "" {
		branch = plan.PushBranch
	}
	if _, err := wts.Push(ctx, wt, worktree.PushRequest{Remote: plan.PushRemote, Branch: branch, Auth: *plan.Auth, Force: plan.Force}); err != nil {
		t.Fatalf("push: %v", err)
	}
	return plan, orchestrator.RunResult{Commit: commit.SHA, Branch: branch, Summary: "Fix the greeting\n\nThe greeting now says hello.",
		Diff: orchestrator.DiffStat{Files: 1, Added: 1}, Files: commit.Files}
}

func issueItem(repo, id string) orchestrator.WorkItem {
	return orchestrator.WorkItem{TaskID: id, Run: 1, Repo: repo, Branch: orchestrator.BranchName(id), Agent: "script",
		Prompt: "fix the greeting", Source: orchestrator.SourceGitHub, Kind: orchestrator.KindComment,
		Target: orchestrator.Target{Type: "issue", Number: 3, URL: "https://github.com/acme/app/issues/3#issuecomment-1", CommentID: 1},
		Actor:  orchestrator.Actor{Login: "octocat", Association: "OWNER"}}
}

func noViolations(t *testing.T, fake *githubtest.Server) {
	t.Helper()
	if v := fake.Violations(); len(v) > 0 {
		t.Fatalf("requests beyond the token's rights:\n%s", strings.Join(v, "\n"))
	}
}

func TestIssueTaskOpensOneDraftPullRequest(t *testing.T) {
	t.Parallel()
	fake := githubtest.New(t, githubtest.Options{AppID: appID})
	repo := fake.CreateRepo("acme", "app", map[string]string{"README.md": "hi\n",
		".github/pull_request_template.md": "## Checklist\n- [ ] tests\n"})
	c := newApp(t, fake, func(cfg *github.Config) {
		cfg.Redact = func(s string) string { return strings.ReplaceAll(s, "hunter2", "[REDACTED]") }
	})
	wts := newWorktrees(t)
	item := issueItem(repo, "t0000000000000001")
	plan, res := run(t, c, wts, item, "greeting.txt", "hello\n")
	if plan.Base != "" || plan.PushBranch != "" || !plan.Force {
		t.Fatalf("plan for an issue task = %+v", plan)
	}
	res.Summary = "Fix the greeting\n\nThe password hunter2 is gone."
	url, err := c.Open(context.Background(), item, plan, res)
	if err != nil {
		t.Fatal(err)
	}
	prs := fake.PullRequests("acme", "app")
	if len(prs) != 1 {
		t.Fatalf("%d pull requests, want 1", len(prs))
	}
	pr := prs[0]
	if url != pr.GetHTMLURL() || !pr.GetDraft() || pr.GetTitle() != "Fix the greeting" ||
		pr.GetHead().GetRef() != item.Branch || pr.GetBase().GetRef() != "main" || pr.GetHead().GetSHA() != res.Commit {
		t.Fatalf("pull request %s: draft %v title %q head %s@%s base %s", url, pr.GetDraft(), pr.GetTitle(),
			pr.GetHead().GetRef(), pr.GetHead().GetSHA(), pr.GetBase().GetRef())
	}
	body := pr.GetBody()
	for _, want := range []string{"[REDACTED] is gone", "## Checklist", "Closes #3", "https://nightshift.example.test/tasks/t0000000000000001",
		"1 files changed, +1 −0", "`greeting.txt`", github.Marker(item.TaskID), "@octocat"} {
		if !strings.Contains(body, want) {
			t.Errorf("body lacks %q:\n%s", want, body)
		}
	}
	if strings.Contains(body, "hunter2") {
		t.Fatalf("body leaks a secret:\n%s", body)
	}

	// A retry (run 2) pushes again and updates the same pull request.
	item.Run = 2
	plan, res = run(t, c, wts, item, "greeting.txt", "hello again\n")
	res.Summary = "Fix the greeting, take two"
	url2, err := c.Open(context.Background(), item, plan, res)
	if err != nil {
		t.Fatal(err)
	}
	prs = fake.PullRequests("acme", "app")
	if url2 != url || len(prs) != 1 || prs[0].GetTitle() != "Fix the greeting, take two" || prs[0].GetHead().GetSHA() != res.Commit {
		t.Fatalf("retry: url %s (was %s), %d pull requests, title %q", url2, url, len(prs), prs[0].GetTitle())
	}
	// Closed without merging, a third run reopens it rather than opening another.
	fake.ClosePR("acme", "app", prs[0].GetNumber())
	if url3, err := c.Open(context.Background(), item, plan, res); err != nil || url3 != url {
		t.Fatalf("reopen: %s %v", url3, err)
	}
	if prs = fake.PullRequests("acme", "app"); len(prs) != 1 || prs[0].GetState() != "open" {
		t.Fatalf("after reopen: %d pull requests, state %s", len(prs), prs[0].GetState())
	}
	noViolations(t, fake)

	// Every token was narrowed to the repository and the step's permissions.
	minted := fake.Minted()
	if len(minted) == 0 {
		t.Fatal("no installation tokens minted")
	}
	var push, write int
	for _, m := range minted {
		if len(m.Repositories) != 1 || m.Repositories[0] != "app" {
			t.Errorf("token for repositories %v", m.Repositories)
		}
		if m.Permissions["contents"] == "write" {
			push++
			if len(m.Permissions) != 1 {
				t.Errorf("push token has more than contents:write: %v", m.Permissions)
			}
		}
		if m.Permissions["pull_requests"] == "write" {
			write++
		}
	}
	// Cached: one push token and one pull-request token for three runs.
	if push != 1 || write != 1 {
		t.Fatalf("minted %d push and %d pull request tokens, want 1 and 1: %+v", push, write, minted)
	}
}

func TestTokenCacheRespectsExpiry(t *testing.T) {
	t.Parallel()
	fake := githubtest.New(t, githubtest.Options{AppID: appID})
	fake.CreateRepo("acme", "app", map[string]string{"README.md": "hi\n"})
	c := newApp(t, fake, nil)
	ctx := context.Background()
	r := github.Repo{Owner: "acme", Name: "app"}
	a1, err := c.PushAuth(ctx, r)
	if err != nil {
		t.Fatal(err)
	}
	a2, _ := c.PushAuth(ctx, r)
	if a1.Password != a2.Password || len(fake.Minted()) != 1 {
		t.Fatalf("push token not cached: %d minted", len(fake.Minted()))
	}
	if a1.Username != "x-access-token" || a1.String() != "REDACTED" {
		t.Fatalf("auth %q prints %q", a1.Username, a1.String())
	}
	// Tokens that live 40 minutes are too short for a run (50m): every
	// push gets a fresh one.
	fake.TokenTTL = 40 * time.Minute
	other := github.Repo{Owner: "acme", Name: "app"}
	c2 := newApp(t, fake, nil)
	b1, err := c2.PushAuth(ctx, other)
	if err != nil {
		t.Fatal(err)
	}
	b2, _ := c2.PushAuth(ctx, other)
	if b1.Password == b2.Password || len(fake.Minted()) != 3 {
		t.Fatalf("push token with 40m left was reused (%d minted)", len(fake.Minted()))
	}
}

func TestPullRequestCommentPushesToItsHeadBranch(t *testing.T) {
	t.Parallel()
	fake := githubtest.New(t, githubtest.Options{AppID: appID})
	repo := fake.CreateRepo("acme", "app", map[string]string{"README.md": "hi\n"})
	head := fake.Commit("acme", "app", "feature", map[string]string{"feature.txt": "wip\n"}, "wip")
	fake.AddPR("acme", "app", 5, "", "feature", "main")
	c := newApp(t, fake, nil)
	item := issueItem(repo, "t0000000000000002")
	item.Target = orchestrator.Target{Type: "pull_request", Number: 5, CommentID: 9}
	plan, res := run(t, c, newWorktrees(t), item, "feature.txt", "done\n")
	if plan.Base != "feature" || plan.PushBranch != "feature" || plan.Force {
		t.Fatalf("plan = %+v", plan)
	}
	url, err := c.Open(context.Background(), item, plan, res)
	if err != nil {
		t.Fatal(err)
	}
	prs := fake.PullRequests("acme", "app")
	if len(prs) != 1 || url != prs[0].GetHTMLURL() {
		t.Fatalf("url %s, %d pull requests", url, len(prs))
	}
	if got := fake.RevParse("acme", "app", "refs/heads/feature"); got != res.Commit {
		t.Fatalf("feature is at %s, pushed %s", got, res.Commit)
	}
	if parent := fake.Git("acme", "app", "rev-parse", "feature~1"); parent != head {
		t.Fatalf("the fix is not on top of the pull request head: parent %s, head %s", parent, head)
	}
	if fake.RevParse("acme", "app", "refs/heads/"+item.Branch) != "" {
		t.Fatal("a task branch was pushed too")
	}
	// On a closed pull request the work gets its own branch and pull request.
	fake.ClosePR("acme", "app", 5)
	if plan, err := c.Plan(context.Background(), item); err != nil || plan.Base != "" || plan.PushBranch != "" || !plan.Force {
		t.Fatalf("plan on a closed pull request: %+v %v", plan, err)
	}
	noViolations(t, fake)
}

func TestForkPullRequestGetsAPullRequestAgainstItsHead(t *testing.T) {
	t.Parallel()
	fake := githubtest.New(t, githubtest.Options{AppID: appID})
	repo := fake.CreateRepo("acme", "app", map[string]string{"README.md": "hi\n"})
	fake.CreateRepo("forker", "app", map[string]string{"README.md": "hi\n"})
	sha := fake.Commit("forker", "app", "feat", map[string]string{"x.txt": "fork work\n"}, "fork work")
	// GitHub mirrors a fork pull request's head into the base repository.
	fake.Git("forker", "app", "push", "-q", fake.BareDir("acme", "app"), "feat:refs/pull/7/head")
	fake.AddPR("acme", "app", 7, "forker/app", "feat", "main")
	c := newApp(t, fake, nil)
	item := issueItem(repo, "t0000000000000003")
	item.Target = orchestrator.Target{Type: "pull_request", Number: 7}
	plan, res := run(t, c, newWorktrees(t), item, "x.txt", "fixed\n")
	if plan.Base != "refs/pull/7/head" || plan.PushBranch != "" || !plan.Force {
		t.Fatalf("plan = %+v", plan)
	}
	url, err := c.Open(context.Background(), item, plan, res)
	if err != nil {
		t.Fatal(err)
	}
	prs := fake.PullRequests("forker", "app")
	if len(prs) != 1 || prs[0].GetHTMLURL() != url || prs[0].GetBase().GetRef() != "feat" || prs[0].GetHead().GetLabel() != "acme:"+item.Branch {
		t.Fatalf("fork pull requests: %+v (url %s)", prs, url)
	}
	if got := fake.Git("acme", "app", "rev-parse", item.Branch+"~1"); got != sha {
		t.Fatalf("the fix does not build on the fork head")
	}
	noViolations(t, fake)
}

func TestCIFailureContext(t *testing.T) {
	t.Parallel()
	fake := githubtest.New(t, githubtest.Options{AppID: appID})
	repo := fake.CreateRepo("acme", "app", map[string]string{"README.md": "hi\n"})
	sha := fake.Commit("acme", "app", "changes", map[string]string{"a.go": "package a\n"}, "break")
	fake.AddPR("acme", "app", 2, "", "changes", "main")
	var log strings.Builder
	for i := 0; i < 2000; i++ {
		log.WriteString("2024-05-01T10:00:00.0000000Z noise line\n")
	}
	log.WriteString("2024-05-01T10:00:01.0000000Z --- FAIL: TestGreeting (0.00s)\n")
	log.WriteString("2024-05-01T10:00:01.0000000Z     token=hunter2 leaked\n")
	fake.SetJobLog(555, log.String())
	fake.SetCheckRuns(sha,
		&gh.CheckRun{ID: gh.Int64(554), Name: gh.String("lint"), Conclusion: gh.String("success"), Status: gh.String("completed")},
		&gh.CheckRun{ID: gh.Int64(555), Name: gh.String("test"), Conclusion: gh.String("failure"), Status: gh.String("completed"),
			App:    &gh.App{Slug: gh.String("github-actions")},
			Output: &gh.CheckRunOutput{Title: gh.String("1 test failed"), Summary: gh.String("TestGreeting")}})
	fake.SetStatuses(sha, &gh.RepoStatus{Context: gh.String("ci/legacy"), State: gh.String("error"), Description: gh.String("boom")})
	c := newApp(t, fake, func(cfg *github.Config) {
		cfg.LogExcerpt = 2048
		cfg.Redact = func(s string) string { return strings.ReplaceAll(s, "hunter2", "[REDACTED]") }
	})
	item := issueItem(repo, "t0000000000000004")
	item.Kind = orchestrator.KindCIFailed
	item.Target = orchestrator.Target{Type: "pull_request", Number: 2, Branch: "changes", HeadSHA: sha, Check: "test"}
	plan, err := c.Plan(context.Background(), item)
	if err != nil {
		t.Fatal(err)
	}
	pc := plan.PromptContext
	for _, want := range []string{`Check "test": failure`, "1 test failed", "--- FAIL: TestGreeting", "[REDACTED] leaked", `Status "ci/legacy": error`} {
		if !strings.Contains(pc, want) {
			t.Errorf("prompt context lacks %q:\n%s", want, pc)
		}
	}
	if strings.Contains(pc, "hunter2") || strings.Contains(pc, "lint") || strings.Contains(pc, "2024-05-01T") || len(pc) > 2048+16 {
		t.Fatalf("prompt context leaks, includes passing checks, keeps timestamps or is unbounded (%d bytes):\n%s", len(pc), pc)
	}
	if plan.Base != "changes" || plan.PushBranch != "changes" || plan.Force {
		t.Fatalf("plan = %+v", plan)
	}
	noViolations(t, fake)
}

func TestStaticTokenAndForeignRepos(t *testing.T) {
	t.Parallel()
	fake := githubtest.New(t, githubtest.Options{Token: "ghp_static"})
	repo := fake.CreateRepo("acme", "app", map[string]string{"README.md": "hi\n"})
	c, err := github.New(github.Config{APIURL: fake.APIURL, Token: "ghp_static", HTTPClient: fake.Client()})
	if err != nil {
		t.Fatal(err)
	}
	item := issueItem(repo, "t0000000000000005")
	plan, res := run(t, c, newWorktrees(t), item, "a.txt", "a\n")
	if plan.Auth.Password != "ghp_static" {
		t.Fatal("the static token is not used")
	}
	if _, err := c.Open(context.Background(), item, plan, res); err != nil {
		t.Fatal(err)
	}
	if len(fake.PullRequests("acme", "app")) != 1 || len(fake.Minted()) != 0 {
		t.Fatal("static token: want one pull request and no minted tokens")
	}
	// Repositories on other hosts are not GitHub's business here.
	for _, foreign := range []string{"/srv/git/app.git", "https://gitlab.example.test/acme/app.git", "file:///tmp/x.git"} {
		item := issueItem(foreign, "t0000000000000006")
		plan, err := c.Plan(context.Background(), item)
		if err != nil || !plan.Force || plan.Auth != nil || plan.Base != "" {
			t.Fatalf("%s: plan %+v err %v", foreign, plan, err)
		}
		if url, err := c.Open(context.Background(), item, plan, orchestrator.RunResult{}); url != "" || err != nil {
			t.Fatalf("%s: open %q %v", foreign, url, err)
		}
	}
}

func TestRepoOf(t *testing.T) {
	t.Parallel()
	c, err := github.New(github.Config{Token: "x"})
	if err != nil {
		t.Fatal(err)
	}
	for in, want := range map[string]string{
		"https://github.com/acme/app.git":      "acme/app",
		"https://github.com/acme/app":          "acme/app",
		"git@github.com:acme/app.git":          "acme/app",
		"ssh://git@github.com/acme/app.git":    "acme/app",
		"https://gitlab.com/acme/app.git":      "",
		"https://github.com/acme/app/tree/x":   "",
		"/home/me/app":                         "",
		"https://api.github.com/repos/acme/ap": "",
	} {
		r, ok := c.RepoOf(in)
		if got := r.FullName(); (ok && got != want) || (!ok && want != "") {
			t.Errorf("RepoOf(%q) = %q %v, want %q", in, got, ok, want)
		}
	}
	ghe, _ := github.New(github.Config{Token: "x", APIURL: "https://ghe.example.test/api/v3/"})
	if r, ok := ghe.RepoOf("https://ghe.example.test/acme/app.git"); !ok || r.FullName() != "acme/app" {
		t.Errorf("enterprise clone URL not recognized")
	}
}

func TestConfigErrorsNameTheKey(t *testing.T) {
	t.Parallel()
	for _, c := range []struct {
		cfg  github.Config
		want string
	}{
		{github.Config{}, "no app or token"},
		{github.Config{AppID: 1}, "github.private_key"},
		{github.Config{PrivateKey: "x"}, "github.app_id"},
		{github.Config{AppID: 1, PrivateKey: "not pem"}, "github.private_key"},
		{github.Config{Token: "x", APIURL: "ftp://x"}, "github.api_url"},
		{github.Config{Token: "x", GitURL: "nope"}, "github.git_url"},
	} {
		_, err := github.New(c.cfg)
		if err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%+v: err %v, want mention of %s", c.cfg, err, c.want)
		}
	}
	if _, err := github.New(github.Config{}); !errors.Is(err, github.ErrNoCredentials) {
		t.Errorf("want ErrNoCredentials, got %v", err)
	}
}

func TestTransportActsAsTheApp(t *testing.T) {
	t.Parallel()
	fake := githubtest.New(t, githubtest.Options{AppID: appID})
	fake.CreateRepo("acme", "app", map[string]string{"README.md": "hi\n"})
	c := newApp(t, fake, nil)
	hc := &http.Client{Transport: c.Transport(github.Permissions{"metadata": "read"})}
	api := gh.NewClient(hc)
	api.BaseURL, _ = url.Parse(fake.APIURL)
	repo, _, err := api.Repositories.Get(context.Background(), "acme", "app")
	if err != nil || repo.GetFullName() != "acme/app" {
		t.Fatalf("get repository through the app transport: %v", err)
	}
	m := fake.Minted()
	if len(m) != 1 || len(m[0].Permissions) != 1 || m[0].Permissions["metadata"] != "read" || m[0].Repositories[0] != "app" {
		t.Fatalf("minted %+v", m)
	}
	noViolations(t, fake)
}

func TestCIFailureOnABranchFindsItsPullRequest(t *testing.T) {
	t.Parallel()
	fake := githubtest.New(t, githubtest.Options{AppID: appID})
	repo := fake.CreateRepo("acme", "app", map[string]string{"README.md": "hi\n"})
	sha := fake.Commit("acme", "app", "changes", map[string]string{"a.txt": "x\n"}, "x")
	fake.AddPR("acme", "app", 4, "", "changes", "main")
	c := newApp(t, fake, nil)
	item := issueItem(repo, "t0000000000000007")
	item.Kind = orchestrator.KindCIFailed
	// A status event names only the branch.
	item.Target = orchestrator.Target{Type: "branch", Branch: "changes", HeadSHA: sha, Check: "ci/legacy"}
	plan, err := c.Plan(context.Background(), item)
	if err != nil || plan.Base != "changes" || plan.PushBranch != "changes" || plan.Force {
		t.Fatalf("plan %+v %v", plan, err)
	}
	// Without a pull request the fix goes to a new branch with a pull request against the failing one.
	item.Target = orchestrator.Target{Type: "branch", Branch: "main", Check: "ci/legacy"}
	plan, res := run(t, c, newWorktrees(t), item, "b.txt", "fix\n")
	if plan.Base != "main" || plan.PushBranch != "" || !plan.Force {
		t.Fatalf("plan without a pull request %+v", plan)
	}
	url, err := c.Open(context.Background(), item, plan, res)
	if err != nil {
		t.Fatal(err)
	}
	prs := fake.PullRequests("acme", "app")
	if len(prs) != 2 || prs[1].GetHTMLURL() != url || prs[1].GetBase().GetRef() != "main" || prs[1].GetHead().GetRef() != item.Branch {
		t.Fatalf("pull requests %+v", prs)
	}
	noViolations(t, fake)
}
