package gitea_test

import (
	"context"
	"errors"
	"net/http"
	"os"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nightshift/nightshift/orchestrator/forge"
	"github.com/nightshift/nightshift/orchestrator/forge/forgetest"
	"github.com/nightshift/nightshift/orchestrator/forge/gitea"
	"github.com/nightshift/nightshift/orchestrator/forge/gitea/giteatest"
)

func TestMain(m *testing.M) {
	code := m.Run()
	giteatest.Shutdown()
	os.Exit(code)
}

// botLogin is Nightshift's account on the test Gitea; its token has only
// the scopes the README asks for.
const botLogin = "nightshift"

// botScopes are the token scopes the README documents.
var botScopes = []string{"write:repository", "write:issue", "read:user"}

var (
	botOnce  sync.Once
	botToken string
	botErr   error
)

// bot returns the shared Gitea and the token of Nightshift's account.
func bot(t *testing.T) (*giteatest.Server, string) {
	t.Helper()
	s := giteatest.Shared(t)
	botOnce.Do(func() {
		ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
		defer cancel()
		if botErr = s.EnsureUser(ctx, botLogin); botErr == nil {
			botToken, botErr = s.CreateToken(ctx, botLogin, "nightshift-driver", botScopes...)
		}
	})
	if botErr != nil {
		t.Fatal(botErr)
	}
	return s, botToken
}

// harness is the conformance suite's view of the real Gitea: repositories
// belong to the admin, Nightshift's account administers them.
type harness struct {
	s *giteatest.Server
	d *gitea.Driver
}

func newHarness(t *testing.T) forgetest.Harness {
	s, tok := bot(t)
	d, err := gitea.New(gitea.Config{APIURL: s.APIURL, Token: tok})
	if err != nil {
		t.Fatal(err)
	}
	return &harness{s: s, d: d}
}

func tctx(t *testing.T) context.Context {
	c, cancel := context.WithTimeout(t.Context(), time.Minute)
	t.Cleanup(cancel)
	return c
}

func (h *harness) Driver() forge.Driver { return h.d }

func (h *harness) repo(name string) forge.Repo {
	return forge.Repo{Host: h.d.Host(), Owner: h.s.Admin, Name: name}
}

func (h *harness) CreateRepo(t *testing.T, name string, files map[string]string) forge.Repo {
	t.Helper()
	ctx := tctx(t)
	if _, err := h.s.CreateRepo(ctx, h.s.Admin, name); err != nil {
		t.Fatal(err)
	}
	if err := h.s.AddCollaborator(ctx, h.s.Admin, name, botLogin, "admin"); err != nil {
		t.Fatal(err)
	}
	if len(files) > 0 {
		if _, err := h.s.CommitFiles(ctx, h.s.Admin, name, "main", "", files); err != nil {
			t.Fatal(err)
		}
	}
	return h.repo(name)
}

func (h *harness) TemplatePath() string { return ".gitea/pull_request_template.md" }

func (h *harness) Push(t *testing.T, r forge.Repo, branch string, files map[string]string) string {
	t.Helper()
	sha, err := h.s.CommitFiles(tctx(t), r.Owner, r.Name, branch, "main", files)
	if err != nil {
		t.Fatal(err)
	}
	return sha
}

func (h *harness) CreateIssue(t *testing.T, r forge.Repo, title string) int {
	t.Helper()
	n, err := h.s.CreateIssue(tctx(t), h.s.Admin, r.Owner, r.Name, title, "")
	if err != nil {
		t.Fatal(err)
	}
	return n
}

func (h *harness) AddComment(t *testing.T, th forge.Thread, body string) forge.CommentRef {
	t.Helper()
	id, err := h.s.Comment(tctx(t), h.s.Admin, th.Repo.Owner, th.Repo.Name, th.Number, body)
	if err != nil {
		t.Fatal(err)
	}
	return forge.CommentRef{Thread: th, ID: id}
}

func (h *harness) SetAccess(t *testing.T, r forge.Repo, login string, a forge.Access) {
	t.Helper()
	ctx := tctx(t)
	if err := h.s.EnsureUser(ctx, login); err != nil {
		t.Fatal(err)
	}
	var err error
	switch {
	case a == forge.AccessNone:
		err = h.s.RemoveCollaborator(ctx, r.Owner, r.Name, login)
	case a >= forge.AccessAdmin:
		err = h.s.AddCollaborator(ctx, r.Owner, r.Name, login, "admin")
	case a >= forge.AccessWrite:
		err = h.s.AddCollaborator(ctx, r.Owner, r.Name, login, "write")
	default:
		err = h.s.AddCollaborator(ctx, r.Owner, r.Name, login, "read")
	}
	if err != nil {
		t.Fatal(err)
	}
}

// FailCI sets a failing commit status, as an external CI does (Gitea
// Actions needs a runner this test does not have): no log to read.
func (h *harness) FailCI(t *testing.T, r forge.Repo, sha, name, logTail string) bool {
	t.Helper()
	if err := h.s.SetStatus(tctx(t), r.Owner, r.Name, sha, "failure", name, firstLine(logTail)); err != nil {
		t.Fatal(err)
	}
	return false
}

func firstLine(s string) string {
	l, _, _ := strings.Cut(s, "\n")
	return l
}

func (h *harness) ChangeRequests(t *testing.T, r forge.Repo) []forge.ChangeRequest {
	t.Helper()
	prs, err := h.s.PullRequests(tctx(t), r.Owner, r.Name)
	if err != nil {
		t.Fatal(err)
	}
	out := make([]forge.ChangeRequest, 0, len(prs))
	for _, p := range prs {
		st := forge.StateClosed
		switch {
		case p.Merged:
			st = forge.StateMerged
		case p.State == "open":
			st = forge.StateOpen
		}
		out = append(out, forge.ChangeRequest{Number: p.Number, URL: p.HTMLURL, State: st, Draft: p.Draft, Title: p.Title,
			Body: p.Body, Head: forge.Branch{Repo: r, Name: p.Head.Ref}, HeadSHA: p.Head.SHA, Base: p.Base.Ref})
	}
	return out
}

func (h *harness) Comments(t *testing.T, th forge.Thread) []forgetest.Comment {
	t.Helper()
	cs, err := h.s.ListComments(tctx(t), th.Repo.Owner, th.Repo.Name, th.Number)
	if err != nil {
		t.Fatal(err)
	}
	out := make([]forgetest.Comment, 0, len(cs))
	for _, c := range cs {
		out = append(out, forgetest.Comment{ID: c.ID, Body: c.Body})
	}
	return out
}

func (h *harness) Reactions(t *testing.T, c forge.CommentRef) []string {
	t.Helper()
	rs, err := h.s.Reactions(tctx(t), c.Thread.Repo.Owner, c.Thread.Repo.Name, c.ID)
	if err != nil {
		t.Fatal(err)
	}
	return rs
}

// TestConformance runs the forge conformance suite against a real Gitea.
func TestConformance(t *testing.T) {
	forgetest.Run(t, newHarness)
}

// TestDraftIsWorkInProgress: a draft is opened with Gitea's WIP prefix,
// which Gitea itself reports as a draft, and keeps it when its title is
// edited.
func TestDraftIsWorkInProgress(t *testing.T) {
	h := newHarness(t).(*harness)
	r := h.CreateRepo(t, "draft-wip", nil)
	h.Push(t, r, "nightshift/wip", map[string]string{"w.txt": "w\n"})
	cr, err := h.d.OpenChangeRequest(tctx(t), r, forge.NewChangeRequest{Head: forge.Branch{Repo: r, Name: "nightshift/wip"},
		Base: "main", Title: "Fix it", Body: "b", Draft: true})
	if err != nil {
		t.Fatal(err)
	}
	if cr.Title != "WIP: Fix it" || !cr.Draft {
		t.Fatalf("opened %+v", cr)
	}
	prs, _ := h.s.PullRequests(tctx(t), r.Owner, r.Name)
	if len(prs) != 1 || !prs[0].Draft {
		t.Fatalf("Gitea does not see a draft: %+v", prs)
	}
	ed, err := h.d.EditChangeRequest(tctx(t), r, cr.Number, forge.ChangeEdit{Title: "Fix it better"})
	if err != nil || ed.Title != "WIP: Fix it better" {
		t.Fatalf("edit: %+v %v", ed, err)
	}
}

// TestPermissionNeedsRepoAdmin: without administrator access Gitea
// refuses to show another user's permission; the error says what to fix.
func TestPermissionNeedsRepoAdmin(t *testing.T) {
	h := newHarness(t).(*harness)
	ctx := tctx(t)
	if _, err := h.s.CreateRepo(ctx, h.s.Admin, "perm-writer-only"); err != nil {
		t.Fatal(err)
	}
	r := h.repo("perm-writer-only")
	if err := h.s.AddCollaborator(ctx, r.Owner, r.Name, botLogin, "write"); err != nil {
		t.Fatal(err)
	}
	h.SetAccess(t, r, "perm-someone", forge.AccessWrite)
	_, err := h.d.Permission(ctx, r, "perm-someone")
	if err == nil || !strings.Contains(err.Error(), "must be an administrator") {
		t.Fatalf("permission as a writer: %v", err)
	}
	// Its own permission it may read.
	if a, err := h.d.Permission(ctx, r, botLogin); err != nil || a != forge.AccessWrite {
		t.Fatalf("own permission: %s %v", a, err)
	}
}

// TestPushAuthFetches: the push credentials are accepted by Gitea's git
// HTTP endpoint, and the token does not appear in errors.
func TestPushAuthFetches(t *testing.T) {
	h := newHarness(t).(*harness)
	r := h.CreateRepo(t, "push-auth", nil)
	auth, err := h.d.PushAuth(tctx(t), r)
	if err != nil {
		t.Fatal(err)
	}
	req, _ := http.NewRequestWithContext(tctx(t), http.MethodGet, h.d.CloneURL(r)+"/info/refs?service=git-receive-pack", nil)
	req.SetBasicAuth(auth.Username, auth.Password)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("receive-pack advertisement with the push auth: %d", resp.StatusCode)
	}
	bad, _ := gitea.New(gitea.Config{APIURL: h.s.APIURL, Token: "not-a-valid-token-0123456789"})
	_, err = bad.DefaultBranch(tctx(t), r)
	var ae *gitea.APIError
	if !errors.As(err, &ae) || ae.Status != http.StatusUnauthorized || strings.Contains(err.Error(), "not-a-valid-token") {
		t.Fatalf("bad token: %v", err)
	}
}

// TestOpenChangeRequestsAt finds the open pull request whose head is a
// commit (what a status delivery names), and none for other commits.
func TestOpenChangeRequestsAt(t *testing.T) {
	h := newHarness(t).(*harness)
	r := h.CreateRepo(t, "open-at", nil)
	first := h.Push(t, r, "feature/at", map[string]string{"a.txt": "1\n"})
	cr, err := h.d.OpenChangeRequest(tctx(t), r, forge.NewChangeRequest{Head: forge.Branch{Repo: r, Name: "feature/at"}, Base: "main", Title: "At", Body: "b"})
	if err != nil {
		t.Fatal(err)
	}
	if got, err := h.d.OpenChangeRequestsAt(tctx(t), r, first); err != nil || len(got) != 1 || got[0].Number != cr.Number || got[0].Head.Name != "feature/at" {
		t.Fatalf("at the head: %+v %v", got, err)
	}
	second := h.Push(t, r, "feature/at", map[string]string{"a.txt": "2\n"})
	if got, err := h.d.OpenChangeRequestsAt(tctx(t), r, first); err != nil || len(got) != 0 {
		t.Fatalf("at an older commit: %+v %v", got, err)
	}
	if got, err := h.d.OpenChangeRequestsAt(tctx(t), r, second); err != nil || len(got) != 1 {
		t.Fatalf("at the new head: %+v %v", got, err)
	}
}
