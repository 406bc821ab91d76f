package webhook

import (
	"net/http"
	"net/http/httptest"
	"os"
	"strings"
	"testing"

	"github.com/nightshift/nightshift/orchestrator"
	"github.com/nightshift/nightshift/orchestrator/forge"
	"github.com/nightshift/nightshift/orchestrator/forge/gitlab"
	"github.com/nightshift/nightshift/orchestrator/forge/gitlab/gitlabtest"
	"github.com/nightshift/nightshift/orchestrator/github"
	"github.com/nightshift/nightshift/orchestrator/github/githubtest"
)

// gitlabNote is a real GitLab note hook payload (client-go's fixture) on
// issue 17 of project path, by username, saying body.
func gitlabNote(t *testing.T, path, username, body string, noteID int) []byte {
	return editJSON(t, readGitLabFixture(t, "client-go/note_issue.json"), func(m map[string]any) {
		obj(m, "project")["path_with_namespace"] = path
		obj(m, "user")["username"] = username
		obj(m, "object_attributes")["note"] = body
		obj(m, "object_attributes")["id"] = noteID
	})
}

func gitlabRequest(body []byte, token, delivery string) *http.Request {
	req := httptest.NewRequest(http.MethodPost, "/hooks/gitlab", strings.NewReader(string(body)))
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("X-Gitlab-Event", "Note Hook")
	if delivery != "" {
		req.Header.Set("X-Gitlab-Event-UUID", delivery)
	}
	if token != "" {
		req.Header.Set("X-Gitlab-Token", token)
	}
	return req
}

// forgeHarness is a handler with two GitLab hosts: the fake GitLab (with a
// driver, so permissions are checked for real) and a second host without
// credentials.
func forgeHarness(t testing.TB, mutate func(*Config)) (*harness, *gitlabtest.Server) {
	t.Helper()
	gl := gitlabtest.New(t, gitlabtest.Options{})
	gl.CreateProject("acme/app", map[string]string{"README.md": "hi\n"})
	gl.SetMember("acme/app", "dev", gitlab.LevelDeveloper)
	gl.SetMember("acme/app", "reporter", gitlab.LevelReporter)
	d, err := gitlab.New(gitlab.Config{APIURL: gl.APIURL, Token: gl.BotToken, HTTPClient: gl.Client()})
	if err != nil {
		t.Fatal(err)
	}
	reg, err := forge.NewRegistry(d)
	if err != nil {
		t.Fatal(err)
	}
	hs := newHarness(t, func(c *Config) {
		c.Forges = []ForgeConfig{
			{Kind: forge.KindGitLab, Secrets: []string{"gl-old", "gl-new"}, GitURL: gl.GitURL, BotLogin: gl.BotUser},
			{Kind: forge.KindGitLab, Secrets: []string{"other-host"}, GitURL: "https://gitlab.other.example/"},
		}
		c.Sources = []Source{GitLabSource()}
		c.Drivers = reg
		if mutate != nil {
			mutate(c)
		}
	})
	return hs, gl
}

func TestForgeRouteContract(t *testing.T) {
	t.Parallel()
	hs, gl := forgeHarness(t, nil)
	trigger := gitlabNote(t, "acme/app", "dev", "@nightshift fix the redirect", 501)
	for _, c := range []struct {
		name   string
		req    *http.Request
		status int
		want   string
	}{
		{"no token", gitlabRequest(trigger, "", "d0"), 401, ""},
		{"wrong token", gitlabRequest(trigger, "nope", "d0"), 401, ""},
		{"verified before parsed", gitlabRequest([]byte("{not json"), "wrong", "d0"), 401, ""},
		{"not json", gitlabRequest([]byte("{not json"), "gl-new", "d0"), 400, ""},
		{"get", httptest.NewRequest(http.MethodGet, "/hooks/gitlab", nil), 405, ""},
		{"rotated secret accepted", gitlabRequest(trigger, "gl-old", "d1"), 202, "accepted"},
		{"redelivery", gitlabRequest(trigger, "gl-new", "d1"), 200, "duplicate"},
		{"reporter refused", gitlabRequest(gitlabNote(t, "acme/app", "reporter", "@nightshift go", 502), "gl-new", "d2"), 200, "ignored"},
		{"own comment", gitlabRequest(gitlabNote(t, "acme/app", gl.BotUser, "@nightshift go", 503), "gl-new", "d3"), 200, "ignored"},
		{"no trigger", gitlabRequest(gitlabNote(t, "acme/app", "dev", "looks good", 504), "gl-new", "d4"), 200, "ignored"},
		{"host without credentials", gitlabRequest(gitlabNote(t, "acme/app", "dev", "@nightshift go", 505), "other-host", "d5"), 200, "ignored"},
	} {
		res := hs.do(c.req)
		if res.Status != c.status || (c.want != "" && res.Body["status"] != c.want) {
			t.Errorf("%s: %d %v, want %d %s", c.name, res.Status, res.Body, c.status, c.want)
		}
	}
	ev, n := hs.lastEvent()
	if n != 1 {
		t.Fatalf("%d events stored, want 1", n)
	}
	if ev.Source != orchestrator.Source(forge.KindGitLab) || ev.Kind != orchestrator.KindComment || ev.Repo != gl.GitURL+"acme/app.git" ||
		ev.DeliveryID != "d1" || ev.Actor.Login != "dev" || ev.Instruction != "fix the redirect" || len(ev.Raw) == 0 {
		t.Fatalf("event %+v", ev)
	}
}

// TestForgeRouteRefusalReasons: refusals say why, and the second host's
// deliveries name its own git URL.
func TestForgeRouteRefusalReasons(t *testing.T) {
	t.Parallel()
	hs, _ := forgeHarness(t, nil)
	res := hs.do(gitlabRequest(gitlabNote(t, "acme/app", "reporter", "@nightshift go", 601), "gl-new", "r1"))
	if !strings.Contains(res.Body["reason"], "reporter has read permission") {
		t.Fatalf("reporter: %v", res.Body)
	}
	res = hs.do(gitlabRequest(gitlabNote(t, "acme/app", "dev", "@nightshift go", 602), "other-host", "r2"))
	if !strings.Contains(res.Body["reason"], "no credentials for gitlab.other.example") {
		t.Fatalf("host without a driver: %v", res.Body)
	}
	if _, n := hs.lastEvent(); n != 0 {
		t.Fatalf("%d events stored by refused triggers", n)
	}
}

// TestForgeRoutePermissionLookupFails: when the forge's API cannot answer,
// the delivery is answered 503 and not remembered, so a redelivery decides
// again.
func TestForgeRoutePermissionLookupFails(t *testing.T) {
	t.Parallel()
	hs, gl := forgeHarness(t, nil)
	body := gitlabNote(t, "acme/app", "dev", "@nightshift go", 701)
	gl.Close()
	if res := hs.do(gitlabRequest(body, "gl-new", "p1")); res.Status != http.StatusServiceUnavailable {
		t.Fatalf("API down: %d %v", res.Status, res.Body)
	}
	if _, n := hs.lastEvent(); n != 0 {
		t.Fatalf("%d events stored", n)
	}
}

// TestForgeRoutesUnconfigured: with no host (or no source) of a kind, its
// route refuses everything like an unsigned delivery.
func TestForgeRoutesUnconfigured(t *testing.T) {
	t.Parallel()
	hs := newHarness(t, nil)
	for _, path := range []string{"/hooks/gitlab", "/hooks/gitea", "/gitea"} {
		req := httptest.NewRequest(http.MethodPost, path, strings.NewReader(`{}`))
		req.Header.Set("X-Gitlab-Token", "x")
		if res := hs.do(req); res.Status != http.StatusUnauthorized {
			t.Errorf("%s: %d %v, want 401", path, res.Status, res.Body)
		}
	}
	hs, _ = forgeHarness(t, func(c *Config) { c.Sources = nil })
	if res := hs.do(gitlabRequest(gitlabNote(t, "acme/app", "dev", "@nightshift go", 801), "gl-new", "u1")); res.Status != http.StatusUnauthorized {
		t.Fatalf("no source: %d %v", res.Status, res.Body)
	}
}

func TestForgeConfigErrors(t *testing.T) {
	t.Parallel()
	for _, c := range []struct {
		forges []ForgeConfig
		want   string
	}{
		{[]ForgeConfig{{Kind: "bitbucket", GitURL: "https://bb.example/"}}, "no webhook route"},
		{[]ForgeConfig{{Kind: forge.KindGitHub, GitURL: "https://github.com/"}}, "the github: block's"},
		{[]ForgeConfig{{Kind: forge.KindGitea, GitURL: "git.example"}}, "not an absolute http(s) URL"},
		{[]ForgeConfig{{Kind: forge.KindGitea, GitURL: "https://g.example/"}, {Kind: forge.KindGitLab, GitURL: "https://G.example/"}}, "configured twice"},
		{[]ForgeConfig{{Kind: forge.KindGitea, GitURL: "https://g.example/", Trigger: "@"}}, "has no name"},
		{[]ForgeConfig{{Kind: forge.KindGitea, GitURL: "https://a.example/", Secrets: []string{"s1", "same"}},
			{Kind: forge.KindGitea, GitURL: "https://b.example/", Secrets: []string{"same"}}}, "forges[1] (b.example) shares a webhook secret with a.example"},
	} {
		_, err := newForgeRoutes(Config{Forges: c.forges}.withDefaults())
		if err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%+v: err %v, want %q", c.forges, err, c.want)
		}
	}
	if _, err := newForgeRoutes(Config{Sources: []Source{GitLabSource(), GitLabSource()}}.withDefaults()); err == nil {
		t.Error("two sources of one kind accepted")
	}
	// The github: block's secret on a second GitHub host is refused; on
	// another kind's route it is only unwise.
	gh := Config{GitHub: GitHubConfig{Secrets: []string{"shared"}}, Forges: []ForgeConfig{{Kind: forge.KindGitHub, GitURL: "https://ghe.example/", Secrets: []string{"shared"}}}}
	if _, err := newForgeRoutes(gh.withDefaults()); err == nil || !strings.Contains(err.Error(), "the github: block") || strings.Contains(err.Error(), "shared") {
		t.Errorf("shared github secret: %v", err)
	}
	gh.Forges[0].Kind = forge.KindGitLab
	if _, err := newForgeRoutes(gh.withDefaults()); err != nil {
		t.Errorf("a secret shared across routes: %v", err)
	}
}

// TestSecondGitHubHost: a GitHub Enterprise host in Config.Forges shares
// /hooks/github; its deliveries are told apart by their secret, name
// repositories on its git URL and have their authors checked through its
// driver.
func TestSecondGitHubHost(t *testing.T) {
	t.Parallel()
	ghe := githubtest.New(t, githubtest.Options{Token: "ghe-token"})
	ghe.CreateRepo("Codertocat", "Hello-World", map[string]string{"README.md": "hi\n"})
	ghe.SetPermission("Codertocat", "Hello-World", "writer", "write")
	ghe.SetPermission("Codertocat", "Hello-World", "reader", "read")
	d, err := github.New(github.Config{APIURL: ghe.APIURL, Token: "ghe-token", HTTPClient: ghe.Client()})
	if err != nil {
		t.Fatal(err)
	}
	reg, err := forge.NewRegistry(d)
	if err != nil {
		t.Fatal(err)
	}
	hs := newHarness(t, func(c *Config) {
		c.Forges = []ForgeConfig{{Kind: forge.KindGitHub, Secrets: []string{"ghe-secret"}, GitURL: ghe.GitURL}}
		c.Drivers = reg
	})
	for _, c := range []struct {
		name, login, assoc, secret string
		status                     int
		want                       string
	}{
		{"writer", "writer", "CONTRIBUTOR", "ghe-secret", 202, "accepted"},
		{"reader", "reader", "CONTRIBUTOR", "ghe-secret", 200, "ignored"},
		{"owner needs no lookup", "boss", "OWNER", "ghe-secret", 202, "accepted"},
		{"unknown secret", "writer", "CONTRIBUTOR", "nope", 401, ""},
	} {
		res := hs.do(githubRequest("issue_comment", "ghe-"+c.name, commentBy(t, c.login, "User", c.assoc), c.secret))
		if res.Status != c.status || (c.want != "" && res.Body["status"] != c.want) {
			t.Errorf("%s: %d %v, want %d %s", c.name, res.Status, res.Body, c.status, c.want)
		}
		if c.login == "reader" && !strings.Contains(res.Body["reason"], "reader has read permission") {
			t.Errorf("reader refusal: %v", res.Body)
		}
	}
	ev, n := hs.lastEvent()
	if n != 2 || ev.Repo != ghe.GitURL+"Codertocat/Hello-World.git" || ev.Source != orchestrator.SourceGitHub || ev.Actor.Login != "boss" {
		t.Fatalf("%d events, last from %s on %s by %s", n, ev.Source, ev.Repo, ev.Actor.Login)
	}
}

// FuzzForgeRoutes drives verified arbitrary bodies through /hooks/gitlab
// and /hooks/gitea on an embedded JetStream, with the fake GitLab
// answering permission checks: no panic and no 5xx while both are up.
func FuzzForgeRoutes(f *testing.F) {
	for _, c := range []struct{ route, event, path string }{
		{"gitlab", "Note Hook", "testdata/gitlab/client-go/note_issue.json"},
		{"gitlab", "Note Hook", "testdata/gitlab/client-go/note_merge_request.json"},
		{"gitlab", "Issue Hook", "testdata/gitlab/client-go/issue.json"},
		{"gitlab", "Pipeline Hook", "testdata/gitlab/client-go/pipeline.json"},
		{"gitlab", "Job Hook", "testdata/gitlab/client-go/job.json"},
		{"gitlab", "Merge Request Hook", "testdata/gitlab/client-go/merge_request.json"},
		{"gitea", "issue_comment", "testdata/gitea/issue_comment.created.trigger.json"},
		{"gitea", "pull_request", "testdata/gitea/pull_request.closed.merged.json"},
		{"gitea", "status", "testdata/gitea/status.failure.json"},
	} {
		if b, err := os.ReadFile(c.path); err == nil {
			f.Add(c.route == "gitea", c.event, b)
		}
	}
	f.Add(false, "Note Hook", []byte(`{"object_kind":"note"}`))
	f.Add(true, "issue_comment", []byte(`{}`))
	hs, _ := forgeHarness(f, func(c *Config) {
		c.Forges = append(c.Forges, ForgeConfig{Kind: forge.KindGitea, Secrets: []string{"gitea-secret"}, GitURL: "https://gitea.example.test/"})
		c.Sources = append(c.Sources, GiteaSource{})
	})
	f.Fuzz(func(t *testing.T, gitea bool, event string, body []byte) {
		req := gitlabRequest(body, "gl-new", "")
		req.Header.Set("X-Gitlab-Event", event)
		if gitea {
			req = httptest.NewRequest(http.MethodPost, "/hooks/gitea", strings.NewReader(string(body)))
			req.Header.Set("X-Gitea-Event", event)
			req.Header.Set("X-Gitea-Signature", hexHMAC("gitea-secret", body))
		}
		rec := httptest.NewRecorder()
		hs.h.ServeHTTP(rec, req)
		if rec.Code >= 500 {
			t.Fatalf("gitea=%v %q: status %d: %s", gitea, event, rec.Code, rec.Body.String())
		}
	})
}
