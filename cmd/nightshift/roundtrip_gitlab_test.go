package main

import (
	"bytes"
	"encoding/json"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/nightshift/nightshift/orchestrator"
	"github.com/nightshift/nightshift/orchestrator/forge/gitlab"
	"github.com/nightshift/nightshift/orchestrator/forge/gitlab/gitlabtest"
)

// glFixtures holds the real GitLab payloads of the webhook package (client-go's
// test data, see its README.md for the licence).
const glFixtures = "../../ingress/webhook/testdata/gitlab/client-go"

const (
	glWebhookSecret = "gl-webhook-roundtrip"
	glProject       = "acme/platform/app"
)

// glWorld is a GitLab test server with one project (in a nested group),
// one issue and a Developer, alice.
type glWorld struct {
	gl      *gitlabtest.Server
	pid     int64
	issue   int
	aliceID int64
	dir     string
}

func newGLWorld(t *testing.T) *glWorld {
	t.Helper()
	w := &glWorld{gl: gitlabtest.New(t, gitlabtest.Options{}), dir: t.TempDir()}
	w.pid = w.gl.CreateProject(glProject, map[string]string{"README.md": "# App\n",
		".gitlab/merge_request_templates/Default.md": "## Checklist\n- [ ] Pipeline green\n"})
	w.gl.SetMember(glProject, "alice", gitlab.LevelDeveloper)
	w.gl.SetMember(glProject, "rita", gitlab.LevelReporter)
	w.aliceID, _ = w.gl.User("alice")
	w.issue = w.gl.CreateIssue(glProject, "Greet people")
	return w
}

// yaml is the server config: one forges entry of kind gitlab pointing at
// the test server, and a script agent.
func (w *glWorld) yaml(agentPath string) string {
	return fmt.Sprintf(`
sandbox: {driver: process}
identity: {smtp_listen: "127.0.0.1:0"}
public_url: https://nightshift.example.test
forges:
  - kind: gitlab
    api_url: %q
    git_url: %q
    webhook_secrets: ["old-rotated-secret", %q]
    token: %q
    bot_login: %q
agents:
  script: {command: ["sh", %q]}
default_agent: script
repos:
  - match: "*"
    test: "test -f WORK.md"
`, w.gl.APIURL, w.gl.GitURL, glWebhookSecret, w.gl.BotToken, w.gl.BotUser, agentPath)
}

// agent writes the script agent: it appends its prompt to WORK.md and
// prints a summary.
func (w *glWorld) agent(t *testing.T) string {
	t.Helper()
	path := filepath.Join(w.dir, "agent.sh")
	script := "#!/bin/sh\nprintf '%s\\n---\\n' \"$NIGHTSHIFT_PROMPT\" >> WORK.md\necho working\necho 'Add the requested change'\n"
	if err := os.WriteFile(path, []byte(script), 0o755); err != nil {
		t.Fatal(err)
	}
	return path
}

func glFixture(t *testing.T, name string) map[string]any {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(glFixtures, name))
	if err != nil {
		t.Fatal(err)
	}
	var p map[string]any
	if err := json.Unmarshal(b, &p); err != nil {
		t.Fatal(err)
	}
	return p
}

func (w *glWorld) project(p map[string]any) {
	pr := p["project"].(map[string]any)
	pr["id"], pr["path_with_namespace"] = w.pid, glProject
	pr["web_url"] = w.gl.URL + "/" + glProject
	pr["git_http_url"] = w.gl.CloneURL(glProject)
}

// notePayload is client-go's note_issue.json naming a note the test
// server holds.
func (w *glWorld) notePayload(t *testing.T, noteID int64, login string, uid int64, body string) map[string]any {
	p := glFixture(t, "note_issue.json")
	w.project(p)
	p["project_id"] = w.pid
	u := p["user"].(map[string]any)
	u["id"], u["username"], u["name"] = uid, login, login
	a := p["object_attributes"].(map[string]any)
	a["id"], a["note"], a["description"], a["project_id"] = noteID, body, body, w.pid
	a["url"] = fmt.Sprintf("%s/%s/-/issues/%d#note_%d", w.gl.URL, glProject, w.issue, noteID)
	is := p["issue"].(map[string]any)
	is["iid"], is["project_id"], is["state"] = w.issue, w.pid, "opened"
	return p
}

// pipelinePayload is client-go's pipeline.json: pipeline id failed at
// sha on the merge request's source branch.
func (w *glWorld) pipelinePayload(t *testing.T, id int64, sha, branch string, mrIID int) map[string]any {
	p := glFixture(t, "pipeline.json")
	w.project(p)
	a := p["object_attributes"].(map[string]any)
	a["id"], a["status"], a["detailed_status"], a["ref"], a["sha"] = id, "failed", "failed", branch, sha
	mr := p["merge_request"].(map[string]any)
	mr["iid"], mr["source_branch"], mr["target_branch"] = mrIID, branch, "main"
	mr["source_project_id"], mr["target_project_id"] = w.pid, w.pid
	mr["url"] = fmt.Sprintf("%s/%s/-/merge_requests/%d", w.gl.URL, glProject, mrIID)
	return p
}

// postGitLab posts payload to /hooks/gitlab as GitLab does: the secret
// token in X-Gitlab-Token, the event name, an Idempotency-Key that stays
// the same on retries and a fresh X-Gitlab-Event-UUID.
func postGitLab(t *testing.T, s *testServer, token, event, idem string, payload any) (int, map[string]string) {
	t.Helper()
	body, err := json.Marshal(payload)
	if err != nil {
		t.Fatal(err)
	}
	req, _ := http.NewRequest(http.MethodPost, s.URL+"/hooks/gitlab", bytes.NewReader(body))
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("X-Gitlab-Event", event)
	req.Header.Set("X-Gitlab-Token", token)
	req.Header.Set("X-Gitlab-Instance", "https://gitlab.example.test")
	req.Header.Set("X-Gitlab-Event-UUID", fmt.Sprintf("uuid-%d", time.Now().UnixNano()))
	if idem != "" {
		req.Header.Set("Idempotency-Key", idem)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var out map[string]string
	json.NewDecoder(resp.Body).Decode(&out)
	return resp.StatusCode, out
}

// TestRoundTripGitLab: real serve with a forges: entry of kind gitlab
// against the GitLab test server. A note "@nightshift …" on an issue (the
// token checked against the second of two webhook secrets; a Reporter's
// note refused) becomes one task: its branch is pushed with the project
// token, one draft merge request with the project's template is opened
// from it, the note gets the eyes award and the issue one progress note. A
// failed pipeline on that merge request's source branch becomes a fix
// commit on the branch (a follow-up run of the task); a failed pipeline on
// a person's merge request becomes a task whose prompt has the cleaned job
// trace and whose fix lands on that merge request's branch. Redelivered
// hooks, and the job hook of an already counted pipeline, add nothing. The
// merge ends the task.
func TestRoundTripGitLab(t *testing.T) {
	requireRoundTrip(t)
	t.Parallel()
	w := newGLWorld(t)
	s := startTestServer(t, w.yaml(w.agent(t)))

	// Refused at the door: no token, a wrong one.
	note := w.gl.AddNote(glProject, false, w.issue, "alice", "@nightshift add a friendly greeting to the README")
	p := w.notePayload(t, note, "alice", w.aliceID, "@nightshift add a friendly greeting to the README")
	for _, tok := range []string{"", "not-the-secret"} {
		if code, out := postGitLab(t, s, tok, "Note Hook", "k-bad", p); code != http.StatusUnauthorized {
			t.Fatalf("token %q: %d %v", tok, code, out)
		}
	}
	// A Reporter may not trigger.
	ritaID, _ := w.gl.User("rita")
	rnote := w.gl.AddNote(glProject, false, w.issue, "rita", "@nightshift delete everything")
	if code, out := postGitLab(t, s, glWebhookSecret, "Note Hook", "k-rita", w.notePayload(t, rnote, "rita", ritaID, "@nightshift delete everything")); code != http.StatusOK ||
		out["status"] != "ignored" || !strings.Contains(out["reason"], "write is required") {
		t.Fatalf("reporter's note: %d %v", code, out)
	}

	if code, out := postGitLab(t, s, glWebhookSecret, "Note Hook", "k-note-1", p); code != http.StatusAccepted {
		t.Fatalf("note hook: %d %v\n%s", code, out, s.stderr.String())
	}
	if code, out := postGitLab(t, s, glWebhookSecret, "Note Hook", "k-note-1", p); code != http.StatusOK || out["status"] != "duplicate" {
		t.Fatalf("redelivered note hook: %d %v", code, out)
	}
	id := s.onlyTask(t)
	task := s.waitState(t, id, 90*time.Second, orchestrator.StateReview, orchestrator.StateFailed)
	if task.State != orchestrator.StateReview {
		t.Fatalf("task failed: %s %s\n%s", task.Reason, task.Error, s.stderr.String())
	}

	mrs := w.gl.MergeRequests(glProject)
	if len(mrs) != 1 {
		t.Fatalf("%d merge requests, want 1", len(mrs))
	}
	mr := mrs[0]
	branch := "nightshift/" + id
	if !mr.Draft || !strings.HasPrefix(mr.Title, "Draft: ") || mr.SourceBranch != branch || mr.TargetBranch != "main" ||
		mr.SHA != task.Commit || task.PRURL != mr.WebURL {
		t.Fatalf("merge request: draft %v title %q %s@%s → %s; task commit %s pr_url %s", mr.Draft, mr.Title, mr.SourceBranch, mr.SHA,
			mr.TargetBranch, task.Commit, task.PRURL)
	}
	for _, want := range []string{"## Checklist", "<!-- nightshift:task:" + id + " -->", "`WORK.md`"} {
		if !strings.Contains(mr.Description, want) {
			t.Errorf("merge request description lacks %q:\n%s", want, mr.Description)
		}
	}
	if got := w.gl.Git(glProject, "show", branch+":WORK.md"); !strings.Contains(got, "add a friendly greeting to the README") {
		t.Fatalf("the agent did not get the instruction: %q", got)
	}
	waitFor(t, 20*time.Second, "one progress note and the award emoji", func() bool {
		return len(w.progressNotes(false, w.issue)) == 1 && len(w.gl.Awards(glProject, false, w.issue, note)) == 1
	}, func() string {
		return fmt.Sprintf("%q %q\n%s", w.progressNotes(false, w.issue), w.gl.Awards(glProject, false, w.issue, note), s.stderr.String())
	})
	if a := w.gl.Awards(glProject, false, w.issue, note); a[0] != "eyes by "+w.gl.BotUser {
		t.Fatalf("awards %v", a)
	}

	// The pipeline of the merge request fails.
	head := w.gl.RevParse(glProject, "refs/heads/"+branch)
	plID, _ := w.gl.FailPipeline(glProject, branch, head, "unit-tests",
		"\x1b[32;1m$ go test ./...\x1b[0;m\n--- FAIL: TestGreeting (0.00s)\n    greet_test.go:9: want a friendly greeting\nFAIL\n")
	pp := w.pipelinePayload(t, plID, head, branch, int(mr.IID))
	if code, out := postGitLab(t, s, glWebhookSecret, "Pipeline Hook", "k-pipeline-1", pp); code != http.StatusAccepted {
		t.Fatalf("pipeline hook: %d %v", code, out)
	}
	waitFor(t, 90*time.Second, "the CI fix run to rest in review", func() bool {
		tk := s.task(t, id)
		return tk.Run == 2 && (tk.State == orchestrator.StateReview || tk.State == orchestrator.StateFailed)
	}, s.stderr.String)
	task = s.task(t, id)
	if task.State != orchestrator.StateReview {
		t.Fatalf("CI fix run: %s %s", task.Reason, task.Error)
	}
	fixed := w.gl.RevParse(glProject, "refs/heads/"+branch)
	if fixed == head || fixed != task.Commit || w.gl.Git(glProject, "rev-parse", branch+"~1") != head {
		t.Fatalf("%s is at %s (task commit %s), want one commit on top of %s", branch, fixed, task.Commit, head)
	}
	if work := w.gl.Git(glProject, "show", branch+":WORK.md"); !strings.Contains(work, fmt.Sprintf("Pipeline %d failed on %s", plID, branch)) {
		t.Fatalf("the fix run was not told about the failed pipeline:\n%s", work)
	}
	waitFor(t, 20*time.Second, "the progress note of run 2, edited in place", func() bool {
		ns := w.progressNotes(false, w.issue)
		return len(ns) == 1 && strings.Contains(ns[0], "(run 2)")
	}, func() string { return strings.Join(w.progressNotes(false, w.issue), "\n---\n") })

	// A person's merge request fails its pipeline: a new task reads the
	// failed job's trace (cleaned) and pushes the fix onto that branch.
	human := w.gl.Commit(glProject, "feature/greet", map[string]string{"greet.go": "package main // wip\n"}, "wip")
	humanMR := w.gl.AddMergeRequest(glProject, "feature/greet", "main", "Greet people", "alice")
	pl2, _ := w.gl.FailPipeline(glProject, "feature/greet", human, "unit-tests",
		"section_start:1733468400:step_script\r\x1b[0K\x1b[32;1m$ go test ./...\x1b[0;m\n--- FAIL: TestGreeting (0.00s)\n    greet_test.go:9: want a friendly greeting\nFAIL\nsection_end:1733468401:step_script\r\x1b[0K\n")
	pp2 := w.pipelinePayload(t, pl2, human, "feature/greet", humanMR)
	if code, out := postGitLab(t, s, glWebhookSecret, "Pipeline Hook", "k-pipeline-2", pp2); code != http.StatusAccepted {
		t.Fatalf("pipeline hook of the person's merge request: %d %v", code, out)
	}
	var id2 string
	waitFor(t, 90*time.Second, "the CI fix task of the person's merge request to rest", func() bool {
		for _, tk := range s.tasks(t) {
			if tk.ID != id && (tk.State == orchestrator.StateReview || tk.State == orchestrator.StateFailed) {
				id2 = tk.ID
				return true
			}
		}
		return false
	}, s.stderr.String)
	task2 := s.task(t, id2)
	wantURL := fmt.Sprintf("%s/%s/-/merge_requests/%d", w.gl.URL, glProject, humanMR)
	if task2.State != orchestrator.StateReview || task2.PRURL != wantURL {
		t.Fatalf("CI fix task: %s %s %s, pr_url %s want %s", task2.State, task2.Reason, task2.Error, task2.PRURL, wantURL)
	}
	fixed2 := w.gl.RevParse(glProject, "refs/heads/feature/greet")
	if fixed2 != task2.Commit || w.gl.Git(glProject, "rev-parse", "feature/greet~1") != human {
		t.Fatalf("feature/greet is at %s (task commit %s), want one commit on top of %s", fixed2, task2.Commit, human)
	}
	work := w.gl.Git(glProject, "show", "feature/greet:WORK.md")
	if !strings.Contains(work, "--- FAIL: TestGreeting") || !strings.Contains(work, `Check "unit-tests": failed`) ||
		strings.Contains(work, "\x1b[") || strings.Contains(work, "section_start") {
		t.Fatalf("the CI fix prompt lacks the cleaned job trace:\n%s", work)
	}

	// Redeliveries add nothing: the same pipeline hooks, the job hook of a
	// failed pipeline under its own delivery, the first note again.
	for _, c := range []struct {
		idem string
		p    map[string]any
	}{{"k-pipeline-1", pp}, {"k-pipeline-2", pp2}} {
		if code, out := postGitLab(t, s, glWebhookSecret, "Pipeline Hook", c.idem, c.p); code != http.StatusOK || out["status"] != "duplicate" {
			t.Fatalf("redelivered pipeline hook %s: %d %v", c.idem, code, out)
		}
	}
	job := glFixture(t, "job.json")
	w.project(job)
	job["build_status"], job["pipeline_id"], job["ref"], job["sha"], job["build_name"] = "failed", plID, branch, head, "unit-tests"
	if code, out := postGitLab(t, s, glWebhookSecret, "Job Hook", "k-job-1", job); code != http.StatusAccepted {
		t.Fatalf("job hook: %d %v", code, out)
	}
	if code, out := postGitLab(t, s, glWebhookSecret, "Note Hook", "k-note-1", p); code != http.StatusOK || out["status"] != "duplicate" {
		t.Fatalf("late redelivered note hook: %d %v", code, out)
	}
	// The scheduler has consumed the job hook's event once it counted a
	// third GitLab CI failure (the two pipelines, the job).
	waitFor(t, 20*time.Second, "the job hook's event consumed", func() bool {
		return s.schedulerEvents(t, "gitlab", orchestrator.KindCIFailed) >= 3
	}, s.stderr.String)
	if n := len(s.tasks(t)); n != 2 {
		t.Fatalf("%d tasks, want 2", n)
	}
	if tk := s.task(t, id); tk.Run != 2 || tk.State != orchestrator.StateReview {
		t.Fatalf("task %s: run %d %s after the redeliveries, want run 2 in review", id, tk.Run, tk.State)
	}
	if got := w.gl.RevParse(glProject, "refs/heads/"+branch); got != fixed {
		t.Fatalf("%s moved to %s after the redeliveries", branch, got)
	}
	if got := w.gl.RevParse(glProject, "refs/heads/feature/greet"); got != fixed2 {
		t.Fatalf("feature/greet moved to %s after the redeliveries", got)
	}
	if n := len(w.gl.MergeRequests(glProject)); n != 2 {
		t.Fatalf("%d merge requests after the redeliveries, want Nightshift's and alice's", n)
	}
	if v := w.gl.Violations(); len(v) > 0 {
		t.Fatalf("requests beyond the token's rights:\n%s", strings.Join(v, "\n"))
	}

	// Merging Nightshift's merge request ends its task: done.
	merged := glFixture(t, "merge_request.json")
	w.project(merged)
	a := merged["object_attributes"].(map[string]any)
	a["iid"], a["action"], a["state"], a["source_branch"], a["target_branch"] = mr.IID, "merge", "merged", branch, "main"
	a["source_project_id"], a["target_project_id"], a["url"] = w.pid, w.pid, mr.WebURL
	w.gl.SetMergeRequestState(glProject, int(mr.IID), "merged")
	if code, out := postGitLab(t, s, glWebhookSecret, "Merge Request Hook", "k-merge", merged); code != http.StatusAccepted {
		t.Fatalf("merge hook: %d %v", code, out)
	}
	if tk := s.waitState(t, id, 30*time.Second, orchestrator.StateDone); tk.Reason != "merged" {
		t.Fatalf("after the merge: %s (%s)", tk.State, tk.Reason)
	}
}

// schedulerEvents sums nightshift_scheduler_events_total of source and
// kind over every outcome, from GET /metrics.
func (s *testServer) schedulerEvents(t *testing.T, source, kind string) float64 {
	t.Helper()
	var sum float64
	for series, v := range scrape(t, s.URL+"/metrics") {
		if strings.HasPrefix(series, "nightshift_scheduler_events_total{") && strings.Contains(series, `source="`+source+`"`) &&
			strings.Contains(series, `kind="`+kind+`"`) {
			sum += v
		}
	}
	return sum
}

// progressNotes returns Nightshift's notes (those with a task marker).
func (w *glWorld) progressNotes(onMR bool, iid int) []string {
	var out []string
	for _, n := range w.gl.Notes(glProject, onMR, iid) {
		if strings.Contains(n.Body, "<!-- nightshift:task:") {
			out = append(out, n.Body)
		}
	}
	return out
}
