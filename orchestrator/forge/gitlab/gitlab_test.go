package gitlab_test

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/nightshift/nightshift/orchestrator/forge"
	"github.com/nightshift/nightshift/orchestrator/forge/forgetest"
	"github.com/nightshift/nightshift/orchestrator/forge/gitlab"
	"github.com/nightshift/nightshift/orchestrator/forge/gitlab/gitlabtest"
)

// namespace is where the harness creates projects: a nested group, as
// self-managed GitLab instances have them.
const namespace = "acme/platform"

type harness struct {
	srv *gitlabtest.Server
	d   *gitlab.Driver
}

func newHarness(t *testing.T, srv *gitlabtest.Server) *harness {
	d, err := gitlab.New(gitlab.Config{APIURL: srv.APIURL, Token: srv.BotToken})
	if err != nil {
		t.Fatal(err)
	}
	return &harness{srv: srv, d: d}
}

func (h *harness) Driver() forge.Driver { return h.d }

func (h *harness) CreateRepo(t *testing.T, name string, files map[string]string) forge.Repo {
	h.srv.CreateProject(namespace+"/"+name, files)
	r, ok := h.d.RepoOf(h.srv.CloneURL(namespace + "/" + name))
	if !ok {
		t.Fatalf("RepoOf(%s) failed", h.srv.CloneURL(namespace+"/"+name))
	}
	return r
}

func (h *harness) TemplatePath() string { return ".gitlab/merge_request_templates/Default.md" }

func (h *harness) Push(t *testing.T, r forge.Repo, branch string, files map[string]string) string {
	return h.srv.Commit(r.FullName(), branch, files, "push "+branch)
}

func (h *harness) CreateIssue(t *testing.T, r forge.Repo, title string) int {
	return h.srv.CreateIssue(r.FullName(), title)
}

func (h *harness) AddComment(t *testing.T, th forge.Thread, body string) forge.CommentRef {
	h.srv.SetMember(th.Repo.FullName(), "alice", gitlab.LevelDeveloper)
	id := h.srv.AddNote(th.Repo.FullName(), th.Kind == forge.ThreadChange, th.Number, "alice", body)
	return forge.CommentRef{Thread: th, ID: id}
}

func (h *harness) SetAccess(t *testing.T, r forge.Repo, login string, a forge.Access) {
	level := map[forge.Access]int{forge.AccessNone: 0, forge.AccessRead: gitlab.LevelReporter, forge.AccessTriage: gitlab.LevelReporter,
		forge.AccessWrite: gitlab.LevelDeveloper, forge.AccessMaintain: gitlab.LevelMaintainer, forge.AccessAdmin: gitlab.LevelOwner}[a]
	h.srv.SetMember(r.FullName(), login, level)
}

func (h *harness) FailCI(t *testing.T, r forge.Repo, sha, name, logTail string) bool {
	branch := ""
	for _, ref := range strings.Fields(h.srv.Git(r.FullName(), "for-each-ref", "--points-at", sha, "--format=%(refname:short)", "refs/heads/")) {
		branch = ref
	}
	// A trace as GitLab runners write it: sections, colours, carriage returns.
	trace := "\x1b[0KRunning with gitlab-runner 17.5.0\n" +
		"section_start:1733468400:step_script\r\x1b[0K\x1b[0K\x1b[36;1mExecuting \"step_script\" stage of the job script\x1b[0;m\n" +
		"\x1b[32;1m$ go test ./...\x1b[0;m\n" + logTail + "\n" +
		"section_end:1733468401:step_script\r\x1b[0K\x1b[31;1mERROR: Job failed: exit code 1\n\x1b[0;m\n"
	h.srv.FailPipeline(r.FullName(), branch, sha, name, trace)
	return true
}

func (h *harness) ChangeRequests(t *testing.T, r forge.Repo) []forge.ChangeRequest {
	var out []forge.ChangeRequest
	for _, mr := range h.srv.MergeRequests(r.FullName()) {
		cr := forge.ChangeRequest{Number: int(mr.IID), URL: mr.WebURL, Title: mr.Title, Body: mr.Description,
			Draft: strings.HasPrefix(mr.Title, gitlab.DraftPrefix), Head: forge.Branch{Repo: r, Name: mr.SourceBranch},
			HeadSHA: mr.SHA, Base: mr.TargetBranch}
		switch mr.State {
		case "opened":
			cr.State = forge.StateOpen
		case "merged":
			cr.State = forge.StateMerged
		default:
			cr.State = forge.StateClosed
		}
		out = append(out, cr)
	}
	return out
}

func (h *harness) Comments(t *testing.T, th forge.Thread) []forgetest.Comment {
	var out []forgetest.Comment
	for _, n := range h.srv.Notes(th.Repo.FullName(), th.Kind == forge.ThreadChange, th.Number) {
		out = append(out, forgetest.Comment{ID: n.ID, Body: n.Body})
	}
	return out
}

func (h *harness) Reactions(t *testing.T, c forge.CommentRef) []string {
	var out []string
	for _, a := range h.srv.Awards(c.Thread.Repo.FullName(), c.Thread.Kind == forge.ThreadChange, c.Thread.Number, c.ID) {
		name, _, _ := strings.Cut(a, " by ")
		out = append(out, name)
	}
	return out
}

// TestConformance runs the forge suite against the GitLab test server.
func TestConformance(t *testing.T) {
	srv := gitlabtest.New(t, gitlabtest.Options{})
	forgetest.Run(t, func(t *testing.T) forgetest.Harness { return newHarness(t, srv) })
	if v := srv.Violations(); len(v) > 0 {
		t.Fatalf("requests beyond the token's rights:\n%s", strings.Join(v, "\n"))
	}
}

func ctx(t *testing.T) context.Context {
	c, cancel := context.WithTimeout(t.Context(), 30*time.Second)
	t.Cleanup(cancel)
	return c
}

// TestDraftStaysDraft: the "Draft: " prefix is how GitLab marks a draft;
// the driver hides it from the title and keeps it on every edit.
func TestDraftStaysDraft(t *testing.T) {
	srv := gitlabtest.New(t, gitlabtest.Options{})
	h := newHarness(t, srv)
	r := h.CreateRepo(t, "draft", nil)
	h.Push(t, r, "nightshift/t1", map[string]string{"a": "a"})
	cr, err := h.d.OpenChangeRequest(ctx(t), r, forge.NewChangeRequest{Head: forge.Branch{Repo: r, Name: "nightshift/t1"}, Base: "main",
		Title: "Fix the parser", Body: "b", Draft: true})
	if err != nil {
		t.Fatal(err)
	}
	if !cr.Draft || cr.Title != "Fix the parser" {
		t.Fatalf("opened %+v", cr)
	}
	if got := srv.MergeRequests(r.FullName())[0].Title; got != "Draft: Fix the parser" {
		t.Fatalf("GitLab holds title %q", got)
	}
	if _, err := h.d.EditChangeRequest(ctx(t), r, cr.Number, forge.ChangeEdit{Title: "Fix the parser again"}); err != nil {
		t.Fatal(err)
	}
	if got := srv.MergeRequests(r.FullName())[0].Title; got != "Draft: Fix the parser again" {
		t.Fatalf("after edit GitLab holds title %q", got)
	}
}

// TestPermissionTriggerLevel: Developer triggers by default; a configured
// level moves the line.
func TestPermissionTriggerLevel(t *testing.T) {
	srv := gitlabtest.New(t, gitlabtest.Options{})
	h := newHarness(t, srv)
	r := h.CreateRepo(t, "levels", nil)
	for name, level := range map[string]int{"guest": gitlab.LevelGuest, "reporter": gitlab.LevelReporter, "dev": gitlab.LevelDeveloper,
		"maint": gitlab.LevelMaintainer, "owner": gitlab.LevelOwner} {
		srv.SetMember(r.FullName(), name, level)
	}
	strict, err := gitlab.New(gitlab.Config{APIURL: srv.APIURL, Token: srv.BotToken, TriggerLevel: gitlab.LevelMaintainer})
	if err != nil {
		t.Fatal(err)
	}
	lax, err := gitlab.New(gitlab.Config{APIURL: srv.APIURL, Token: srv.BotToken, TriggerLevel: gitlab.LevelReporter})
	if err != nil {
		t.Fatal(err)
	}
	for _, c := range []struct {
		login            string
		def, strict, lax bool
		defAccess        forge.Access
	}{
		{"guest", false, false, false, forge.AccessRead},
		{"reporter", false, false, true, forge.AccessRead},
		{"dev", true, false, true, forge.AccessWrite},
		{"maint", true, true, true, forge.AccessMaintain},
		{"owner", true, true, true, forge.AccessAdmin},
		{"nobody", false, false, false, forge.AccessNone},
	} {
		for _, d := range []struct {
			drv  *gitlab.Driver
			want bool
		}{{h.d, c.def}, {strict, c.strict}, {lax, c.lax}} {
			a, err := d.drv.Permission(ctx(t), r, c.login)
			if err != nil {
				t.Fatal(err)
			}
			if a.CanTrigger() != d.want {
				t.Errorf("%s: access %s, CanTrigger %v, want %v", c.login, a, a.CanTrigger(), d.want)
			}
		}
		if a, _ := h.d.Permission(ctx(t), r, c.login); a != c.defAccess {
			t.Errorf("%s: default access %s, want %s", c.login, a, c.defAccess)
		}
	}
	if _, err := gitlab.New(gitlab.Config{APIURL: srv.APIURL, TriggerLevel: 60}); err == nil {
		t.Fatal("trigger level 60 accepted")
	}
}

// TestTokenResolvedAtUse: a token stored after the driver was built (a
// vault secret) is used from then on; until then calls fail naming it.
func TestTokenResolvedAtUse(t *testing.T) {
	srv := gitlabtest.New(t, gitlabtest.Options{})
	var tok string
	d, err := gitlab.New(gitlab.Config{APIURL: srv.APIURL, TokenFunc: func(context.Context) (string, error) { return tok, nil }})
	if err != nil {
		t.Fatal(err)
	}
	srv.CreateProject(namespace+"/late", nil)
	r, _ := d.RepoOf(srv.CloneURL(namespace + "/late"))
	if _, err := d.DefaultBranch(ctx(t), r); err == nil || !strings.Contains(err.Error(), "token") {
		t.Fatalf("without a token: %v", err)
	}
	if _, err := d.PushAuth(ctx(t), r); err == nil {
		t.Fatal("push auth without a token")
	}
	tok = srv.BotToken
	if b, err := d.DefaultBranch(ctx(t), r); err != nil || b != "main" {
		t.Fatalf("with the token: %q %v", b, err)
	}
	a, err := d.PushAuth(ctx(t), r)
	if err != nil || a.Username != "oauth2" || a.Password != srv.BotToken {
		t.Fatalf("push auth %v %v", a.Username, err)
	}
}

func TestRepoOf(t *testing.T) {
	d, err := gitlab.New(gitlab.Config{APIURL: "https://git.example.com/gitlab/api/v4/"})
	if err != nil {
		t.Fatal(err)
	}
	if d.GitURL() != "https://git.example.com/gitlab/" || d.Host() != "git.example.com" {
		t.Fatalf("git url %s host %s", d.GitURL(), d.Host())
	}
	for in, want := range map[string]string{
		"https://git.example.com/gitlab/acme/app.git":        "acme/app",
		"https://git.example.com/gitlab/acme/sub/app":        "acme/sub/app",
		"ssh://git@git.example.com:2222/acme/sub/app.git":    "acme/sub/app",
		"git@git.example.com:acme/app.git":                   "acme/app",
		"https://git.example.com/acme/app.git":               "", // outside the relative root
		"https://other.example.com/gitlab/acme/app.git":      "",
		"https://git.example.com/gitlab/acme/../etc/app.git": "",
		"https://git.example.com/gitlab/app.git":             "",
		"/srv/git/acme/app.git":                              "",
		"file:///srv/git/acme/app.git":                       "",
		"https://git.example.com/gitlab/acme/app.git?x=1":    "",
		"https://git.example.com/gitlab/acme/-rf/app.git":    "",
	} {
		r, ok := d.RepoOf(in)
		if got := map[bool]string{true: r.FullName(), false: ""}[ok]; got != want {
			t.Errorf("RepoOf(%q) = %q, want %q", in, got, want)
		}
	}
	if _, err := gitlab.New(gitlab.Config{APIURL: "ftp://x/"}); err == nil {
		t.Fatal("ftp api url accepted")
	}
}

func TestTraceTail(t *testing.T) {
	trace := "\x1b[0KRunning with gitlab-runner\nsection_start:1:step_script\r\x1b[0K$ make\n" +
		"downloading 10%\rdownloading 100%\n2024-05-01T10:00:01.000000Z 01O --- FAIL: TestX\nFAIL\n\n"
	got := gitlab.TraceTail(trace, 1000)
	want := "Running with gitlab-runner\n$ make\ndownloading 100%\n--- FAIL: TestX\nFAIL"
	if got != want {
		t.Fatalf("TraceTail = %q, want %q", got, want)
	}
	if got := gitlab.TraceTail(trace, 12); got != "FAIL" {
		t.Fatalf("TraceTail(12) = %q", got)
	}
}
