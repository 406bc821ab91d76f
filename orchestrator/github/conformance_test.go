package github_test

import (
	"fmt"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"

	gh "github.com/google/go-github/v60/github"

	"github.com/nightshift/nightshift/orchestrator/forge"
	"github.com/nightshift/nightshift/orchestrator/forge/forgetest"
	"github.com/nightshift/nightshift/orchestrator/github"
	"github.com/nightshift/nightshift/orchestrator/github/githubtest"
)

// TestConformance runs the forge conformance suite against the GitHub
// driver acting as a GitHub App (every call with a narrowed installation
// token) on the fake GitHub, which refuses any call beyond a token's rights.
func TestConformance(t *testing.T) {
	t.Parallel()
	forgetest.Run(t, func(t *testing.T) forgetest.Harness {
		fake := githubtest.New(t, githubtest.Options{AppID: appID})
		t.Cleanup(func() { noViolations(t, fake) })
		return &harness{fake: fake, c: newApp(t, fake, nil)}
	})
}

// TestConformanceWithToken runs the suite with a plain token.
func TestConformanceWithToken(t *testing.T) {
	t.Parallel()
	forgetest.Run(t, func(t *testing.T) forgetest.Harness {
		fake := githubtest.New(t, githubtest.Options{Token: "ghp_conformance"})
		c, err := github.New(github.Config{APIURL: fake.APIURL, Token: "ghp_conformance", HTTPClient: fake.Client()})
		if err != nil {
			t.Fatal(err)
		}
		return &harness{fake: fake, c: c}
	})
}

type harness struct {
	fake   *githubtest.Server
	c      *github.Client
	issues atomic.Int64
	checks atomic.Int64
}

const owner = "conform"

func (h *harness) Driver() forge.Driver { return h.c }

func (h *harness) CreateRepo(t *testing.T, name string, files map[string]string) forge.Repo {
	if files == nil {
		files = map[string]string{"README.md": "conformance\n"}
	}
	h.fake.CreateRepo(owner, name, files)
	r, ok := h.c.RepoOf(h.fake.CloneURL(owner, name))
	if !ok {
		t.Fatalf("the driver does not know its own clone URL %s", h.fake.CloneURL(owner, name))
	}
	return r
}

func (h *harness) TemplatePath() string { return ".github/pull_request_template.md" }

func (h *harness) Push(t *testing.T, r forge.Repo, branch string, files map[string]string) string {
	return h.fake.Commit(r.Owner, r.Name, branch, files, "push "+branch)
}

// CreateIssue numbers issues: the fake keeps comments per number and
// GitHub shares numbers between issues and pull requests, so issues start
// high.
func (h *harness) CreateIssue(t *testing.T, r forge.Repo, title string) int {
	return 500 + int(h.issues.Add(1))
}

func (h *harness) AddComment(t *testing.T, th forge.Thread, body string) forge.CommentRef {
	c := h.fake.AddComment(th.Repo.Owner, th.Repo.Name, th.Number, "octocat", body)
	return forge.CommentRef{Thread: th, ID: c.GetID(),
		URL: fmt.Sprintf("%s%s/issues/%d#issuecomment-%d", h.fake.GitURL, th.Repo.FullName(), th.Number, c.GetID())}
}

func (h *harness) SetAccess(t *testing.T, r forge.Repo, login string, a forge.Access) {
	h.fake.SetPermission(r.Owner, r.Name, login, map[forge.Access]string{forge.AccessNone: "none", forge.AccessRead: "read",
		forge.AccessTriage: "read", forge.AccessWrite: "write", forge.AccessMaintain: "write", forge.AccessAdmin: "admin"}[a])
}

// FailCI records a failing GitHub Actions check run with a job log.
func (h *harness) FailCI(t *testing.T, r forge.Repo, sha, name, logTail string) bool {
	id := 9000 + h.checks.Add(1)
	h.fake.SetCheckRuns(sha, &gh.CheckRun{ID: gh.Int64(id), Name: gh.String(name), HeadSHA: gh.String(sha),
		Status: gh.String("completed"), Conclusion: gh.String("failure"),
		HTMLURL: gh.String(h.fake.GitURL + r.FullName() + "/runs/" + strconv.FormatInt(id, 10)),
		App:     &gh.App{Slug: gh.String("github-actions")}})
	h.fake.SetJobLog(id, "2026-12-06T01:02:03.0000000Z go test ./...\n2026-12-06T01:02:04.0000000Z "+strings.ReplaceAll(logTail, "\n", "\n2026-12-06T01:02:04.0000000Z ")+"\n")
	return true
}

func (h *harness) ChangeRequests(t *testing.T, r forge.Repo) []forge.ChangeRequest {
	var out []forge.ChangeRequest
	for _, pr := range h.fake.PullRequests(r.Owner, r.Name) {
		st := forge.StateOpen
		if pr.GetState() != "open" {
			st = forge.StateClosed
		}
		out = append(out, forge.ChangeRequest{Number: pr.GetNumber(), URL: pr.GetHTMLURL(), State: st, Draft: pr.GetDraft(),
			Title: pr.GetTitle(), Body: pr.GetBody(), Head: forge.Branch{Name: pr.GetHead().GetRef()}, HeadSHA: pr.GetHead().GetSHA(),
			Base: pr.GetBase().GetRef()})
	}
	return out
}

func (h *harness) Comments(t *testing.T, th forge.Thread) []forgetest.Comment {
	var out []forgetest.Comment
	for _, c := range h.fake.Comments(th.Repo.Owner, th.Repo.Name, th.Number) {
		out = append(out, forgetest.Comment{ID: c.GetID(), Body: c.GetBody()})
	}
	return out
}

func (h *harness) Reactions(t *testing.T, c forge.CommentRef) []string {
	var out []string
	prefix := c.Thread.Repo.FullName() + ":" + strconv.FormatInt(c.ID, 10) + ":"
	for _, r := range h.fake.Reactions() {
		if content, ok := strings.CutPrefix(r, prefix); ok {
			out = append(out, content)
		}
	}
	return out
}
