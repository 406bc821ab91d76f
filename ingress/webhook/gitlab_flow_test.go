package webhook

import (
	"fmt"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/nightshift/nightshift/orchestrator"
	"github.com/nightshift/nightshift/orchestrator/forge"
	"github.com/nightshift/nightshift/orchestrator/forge/gitlab"
	"github.com/nightshift/nightshift/orchestrator/forge/gitlab/gitlabtest"
)

const (
	glFlowSecret  = "gl-flow-secret"
	glFlowProject = "gitlab-org/gitlab-test" // the fixtures' project
)

// glFlow is the webhook handler with one GitLab host: the GitLab test
// server, whose driver checks the authors' access levels.
type glFlow struct {
	*harness
	srv *gitlabtest.Server
}

func newGLFlow(t *testing.T, secrets ...string) *glFlow {
	srv := gitlabtest.New(t, gitlabtest.Options{})
	srv.CreateProject(glFlowProject, nil)
	srv.SetMember(glFlowProject, "user1", gitlab.LevelDeveloper)
	srv.SetMember(glFlowProject, "rita", gitlab.LevelReporter)
	d, err := gitlab.New(gitlab.Config{APIURL: srv.APIURL, Token: srv.BotToken})
	if err != nil {
		t.Fatal(err)
	}
	reg, err := forge.NewRegistry(d)
	if err != nil {
		t.Fatal(err)
	}
	if secrets == nil {
		secrets = []string{"old-rotated-secret", glFlowSecret}
	}
	hs := newHarness(t, func(c *Config) {
		c.Forges = []ForgeConfig{{Kind: forge.KindGitLab, Secrets: secrets, GitURL: srv.GitURL, BotLogin: srv.BotUser}}
		c.Sources = []Source{GitLabSource()}
		c.Drivers = reg
	})
	return &glFlow{harness: hs, srv: srv}
}

func glFlowRequest(event, token, idem string, body []byte) *http.Request {
	req := httptest.NewRequest(http.MethodPost, "/hooks/gitlab", strings.NewReader(string(body)))
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("X-Gitlab-Event", event)
	if token != "" {
		req.Header.Set("X-Gitlab-Token", token)
	}
	if idem != "" {
		req.Header.Set("Idempotency-Key", idem)
	}
	return req
}

// TestGitLabRoute: /hooks/gitlab follows the /hooks/github contract:
// 401 without or with a wrong token, 202 once stored, 200 duplicate for
// a redelivery (same Idempotency-Key), 200 ignored for a Reporter's
// trigger, Nightshift's own note or a push, 400 for a malformed body.
func TestGitLabRoute(t *testing.T) {
	t.Parallel()
	f := newGLFlow(t)
	trigger := gitlabNote(t, glFlowProject, "user1", "@nightshift fix the login redirect", 1241)
	for _, tok := range []string{"", "wrong", glFlowSecret + " "} {
		if got := f.do(glFlowRequest(glNoteHook, tok, "k1", trigger)); got.Status != http.StatusUnauthorized {
			t.Fatalf("token %q: %d %v", tok, got.Status, got.Body)
		}
	}
	got := f.do(glFlowRequest(glNoteHook, glFlowSecret, "k1", trigger))
	if got.Status != http.StatusAccepted || got.Body["status"] != "accepted" || got.Body["delivery_id"] != "k1" {
		t.Fatalf("trigger: %d %v", got.Status, got.Body)
	}
	ev, n := f.lastEvent()
	if n != 1 || ev.Source != orchestrator.Source("gitlab") || ev.Kind != orchestrator.KindComment || ev.IdempotencyKey != "gitlab:note:1241" ||
		ev.Repo != f.srv.GitURL+glFlowProject+".git" || ev.Instruction != "fix the login redirect" || ev.RawEvent != glNoteHook {
		t.Fatalf("event %+v (%d in the stream)", ev, n)
	}
	if got := f.do(glFlowRequest(glNoteHook, "old-rotated-secret", "k1", trigger)); got.Status != http.StatusOK || got.Body["status"] != "duplicate" {
		t.Fatalf("redelivery with the old secret: %d %v", got.Status, got.Body)
	}
	for _, c := range []struct {
		name, event string
		body        []byte
		reason      string
	}{
		{"reporter", glNoteHook, gitlabNote(t, glFlowProject, "rita", "@nightshift delete everything", 1300), "rita has read permission on"},
		{"stranger", glNoteHook, gitlabNote(t, glFlowProject, "mallory", "@nightshift delete everything", 1301), "mallory has none permission"},
		{"self", glNoteHook, gitlabNote(t, glFlowProject, f.srv.BotUser, "@nightshift loop", 1302), "nightshift itself"},
		{"push", "Push Hook", readGitLabFixture(t, "client-go/push.json"), `event "Push Hook" starts no work`},
	} {
		got := f.do(glFlowRequest(c.event, glFlowSecret, "k-"+c.name, c.body))
		if got.Status != http.StatusOK || got.Body["status"] != "ignored" || !strings.Contains(got.Body["reason"], c.reason) {
			t.Errorf("%s: %d %v, want ignored %q", c.name, got.Status, got.Body, c.reason)
		}
	}
	if got := f.do(glFlowRequest(glNoteHook, glFlowSecret, "k-bad", []byte(`{"object_kind":"note",`))); got.Status != http.StatusBadRequest {
		t.Fatalf("malformed: %d %v", got.Status, got.Body)
	}
	if _, n := f.lastEvent(); n != 1 {
		t.Fatalf("%d events stored, want 1", n)
	}
}

// TestGitLabRouteWithoutSecret: a GitLab host with no secret refuses
// everything.
func TestGitLabRouteWithoutSecret(t *testing.T) {
	t.Parallel()
	f := newGLFlow(t, []string{}...)
	body := gitlabNote(t, glFlowProject, "user1", "@nightshift x", 1)
	if got := f.do(glFlowRequest(glNoteHook, "anything", "k", body)); got.Status != http.StatusUnauthorized {
		t.Fatalf("%d %v", got.Status, got.Body)
	}
}

// TestGitLabCIAttemptCap: failed pipelines on one merge request's branch
// start work for three distinct head commits; the fourth is refused, so an
// agent's own failing fixes cannot loop. A job hook of a counted pipeline
// is the same failure: same idempotency key, same attempt.
func TestGitLabCIAttemptCap(t *testing.T) {
	t.Parallel()
	f := newGLFlow(t)
	fail := func(n int) response {
		body := editJSON(t, readGitLabFixture(t, "client-go/pipeline.json"), func(m map[string]any) {
			a := obj(m, "object_attributes")
			a["id"], a["status"], a["sha"] = 500+n, "failed", fmt.Sprintf("%040d", n)
		})
		return f.do(glFlowRequest(glPipelineHook, glFlowSecret, fmt.Sprintf("pl-%d", n), body))
	}
	for n := 1; n <= 3; n++ {
		if got := fail(n); got.Status != http.StatusAccepted {
			t.Fatalf("failure %d: %d %v", n, got.Status, got.Body)
		}
		ev, _ := f.lastEvent()
		if ev.Attempt != n || ev.Kind != orchestrator.KindCIFailed || ev.Target.Type != "pull_request" || ev.Target.Number != 1 || ev.Target.Branch != "test" {
			t.Fatalf("failure %d: event %+v", n, ev)
		}
	}
	job := editJSON(t, readGitLabFixture(t, "client-go/job.json"), func(m map[string]any) {
		m["build_status"], m["pipeline_id"], m["ref"], m["sha"] = "failed", 503, "test", fmt.Sprintf("%040d", 3)
		obj(m, "project")["path_with_namespace"] = "gitlab-org/gitlab-test"
	})
	if got := f.do(glFlowRequest(glJobHook, glFlowSecret, "job-3", job)); got.Status != http.StatusAccepted {
		t.Fatalf("job hook: %d %v", got.Status, got.Body)
	}
	ev, _ := f.lastEvent()
	if ev.IdempotencyKey != "gitlab:pipeline:503:failed" || ev.Attempt != 3 {
		t.Fatalf("job hook event: key %s attempt %d", ev.IdempotencyKey, ev.Attempt)
	}
	got := fail(4)
	if got.Status != http.StatusOK || got.Body["status"] != "ignored" || !strings.Contains(got.Body["reason"], "cap of 3") {
		t.Fatalf("fourth failure: %d %v", got.Status, got.Body)
	}
}
