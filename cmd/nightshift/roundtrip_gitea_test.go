package main

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/nightshift/nightshift/orchestrator"
	"github.com/nightshift/nightshift/orchestrator/forge/gitea/giteatest"
)

// Two webhook secrets: the repository's two hooks sign with one each, as
// during a rotation.
const (
	gtSecret    = "gitea-hook-roundtrip"
	gtOldSecret = "gitea-hook-roundtrip-old"
	gtRepo      = "hello"
)

// gtDelivery is one webhook request Gitea made and Nightshift's answer.
type gtDelivery struct {
	header http.Header
	body   []byte
	status int
	answer string
}

// gtRelay stands between Gitea's webhooks and Nightshift: it forwards
// every delivery to /hooks/gitea as is and records it with the answer, so
// the test can see what Gitea sent and redeliver it byte for byte.
type gtRelay struct {
	srv    *httptest.Server
	target atomic.Pointer[string]
	mu     sync.Mutex
	got    []gtDelivery
}

func newGTRelay(t *testing.T) *gtRelay {
	rl := &gtRelay{}
	rl.srv = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, _ := io.ReadAll(r.Body)
		d := gtDelivery{header: r.Header.Clone(), body: body, status: http.StatusServiceUnavailable}
		if to := rl.target.Load(); to != nil {
			d.status, d.answer = rl.post(*to, d.header, body)
		}
		rl.mu.Lock()
		rl.got = append(rl.got, d)
		rl.mu.Unlock()
		w.WriteHeader(d.status)
		io.WriteString(w, d.answer)
	}))
	t.Cleanup(rl.srv.Close)
	return rl
}

// post sends a delivery to url with Gitea's headers.
func (rl *gtRelay) post(url string, h http.Header, body []byte) (int, string) {
	req, _ := http.NewRequest(http.MethodPost, url, bytes.NewReader(body))
	for k, v := range h {
		if strings.HasPrefix(k, "X-") || k == "Content-Type" {
			req.Header[k] = v
		}
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return http.StatusBadGateway, err.Error()
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b)
}

// deliveries returns what Gitea delivered of eventType (X-Gitea-Event-Type).
func (rl *gtRelay) deliveries(eventType string) []gtDelivery {
	rl.mu.Lock()
	defer rl.mu.Unlock()
	var out []gtDelivery
	for _, d := range rl.got {
		if d.header.Get("X-Gitea-Event-Type") == eventType {
			out = append(out, d)
		}
	}
	return out
}

func (rl *gtRelay) String() string {
	rl.mu.Lock()
	defer rl.mu.Unlock()
	var b strings.Builder
	for _, d := range rl.got {
		fmt.Fprintf(&b, "%s %s → %d %s\n", d.header.Get("X-Gitea-Event-Type"), d.header.Get("X-Gitea-Delivery"), d.status, strings.TrimSpace(d.answer))
	}
	return b.String()
}

// TestRoundTripGitea: against a real Gitea whose own webhooks (two of
// them, signed with the two current secrets) post to /hooks/gitea, an
// "@nightshift …" comment on an issue becomes one task: its branch is
// pushed with the configured token, one draft (WIP) pull request with the
// repository's template is opened from it, the comment gets one 👀 and the
// issue one progress comment. Redelivering Gitea's request and the second
// hook add nothing. A failing commit status on the pull request's head
// becomes one fix commit on its branch, and so does a failed Gitea Actions
// run (a stand-in runner speaking Gitea's runner protocol); merging the
// pull request in Gitea ends the task done. A failed Actions run on a
// person's pull request starts a task whose prompt has the job's log and
// whose fix lands on that pull request's branch; the nightshift label on
// an issue starts one task on it.
func TestRoundTripGitea(t *testing.T) {
	requireRoundTrip(t)
	t.Parallel()
	g := giteatest.New(t)
	ctx, cancel := context.WithTimeout(t.Context(), 8*time.Minute)
	defer cancel()
	must := func(err error) {
		t.Helper()
		if err != nil {
			t.Fatalf("%v\n%s", err, g.Log())
		}
	}
	owner := g.Admin
	_, err := g.CreateRepo(ctx, owner, gtRepo)
	must(err)
	// A pull request template, and a workflow Gitea Actions runs on every
	// push and pull request (its jobs wait for the stand-in runner).
	wfPath, wf := giteatest.Workflow("CI", "unit-tests")
	_, err = g.CommitFiles(ctx, owner, gtRepo, "main", "", map[string]string{".gitea/pull_request_template.md": "## Checklist\n- [ ] Tests pass\n",
		wfPath: wf})
	must(err)
	for login, perm := range map[string]string{"nightshift": "admin", "alice": "write", "mallory": ""} {
		must(g.EnsureUser(ctx, login))
		if perm != "" {
			must(g.AddCollaborator(ctx, owner, gtRepo, login, perm))
		}
	}
	token, err := g.CreateToken(ctx, "nightshift", "nightshift-roundtrip", "write:repository", "write:issue", "read:user")
	must(err)
	issue, err := g.CreateIssue(ctx, "alice", owner, gtRepo, "Greet people", "The README should greet people.")
	must(err)

	relay := newGTRelay(t)
	hook1, err := g.CreateHook(ctx, owner, gtRepo, relay.srv.URL+"/hooks/gitea", gtSecret, nil)
	must(err)
	_, err = g.CreateHook(ctx, owner, gtRepo, relay.srv.URL+"/hooks/gitea", gtOldSecret, nil)
	must(err)

	dir := t.TempDir()
	agentPath := filepath.Join(dir, "agent.sh")
	script := "#!/bin/sh\nprintf '%s\\n---\\n' \"$NIGHTSHIFT_PROMPT\" >> WORK.md\nenv >> " + filepath.Join(dir, "agent-env.log") +
		"\necho working\necho 'Add the requested change'\n"
	must(os.WriteFile(agentPath, []byte(script), 0o755))
	s := startTestServer(t, fmt.Sprintf(`
sandbox: {driver: process}
identity: {smtp_listen: "127.0.0.1:0"}
public_url: https://nightshift.example.test
forges:
  - kind: gitea
    api_url: %q
    git_url: %q
    webhook_secrets: [%q, %q]
    token: %q
    bot_login: nightshift
agents:
  script: {command: ["sh", %q]}
default_agent: script
repos:
  - match: "*"
    test: "test -f WORK.md"
`, g.APIURL, g.URL, gtOldSecret, gtSecret, token, agentPath))
	to := s.URL + "/hooks/gitea"
	relay.target.Store(&to)

	// Someone without write access asks first: refused, nothing starts.
	_, err = g.Comment(ctx, "mallory", owner, gtRepo, issue, "@nightshift delete everything")
	must(err)
	waitFor(t, 30*time.Second, "mallory's comment delivered by both hooks", func() bool {
		return len(relay.deliveries("issue_comment")) == 2
	}, relay.String)
	for _, d := range relay.deliveries("issue_comment") {
		if d.status != http.StatusOK || !strings.Contains(d.answer, "write is required") {
			t.Fatalf("mallory's comment: %d %s", d.status, d.answer)
		}
	}

	cid, err := g.Comment(ctx, "alice", owner, gtRepo, issue, "@nightshift add a friendly greeting to the README")
	must(err)
	waitFor(t, 30*time.Second, "alice's comment delivered by both hooks", func() bool {
		return len(relay.deliveries("issue_comment")) == 4
	}, relay.String)
	for _, d := range relay.deliveries("issue_comment")[2:] {
		if d.status != http.StatusAccepted {
			t.Fatalf("alice's comment: %d %s\n%s", d.status, d.answer, s.stderr.String())
		}
	}
	id := s.onlyTask(t)
	task := s.waitState(t, id, 120*time.Second, orchestrator.StateReview, orchestrator.StateFailed)
	if task.State != orchestrator.StateReview {
		t.Fatalf("task failed: %s %s\n%s", task.Reason, task.Error, s.stderr.String())
	}
	branch := "nightshift/" + id
	prs, err := g.PullRequests(ctx, owner, gtRepo)
	must(err)
	if len(prs) != 1 {
		t.Fatalf("%d pull requests, want 1", len(prs))
	}
	pr := prs[0]
	if !pr.Draft || pr.Title != "WIP: Add the requested change" || pr.Head.Ref != branch || pr.Base.Ref != "main" ||
		pr.Head.SHA != task.Commit || task.PRURL != pr.HTMLURL {
		t.Fatalf("pull request: draft %v title %q %s@%s → %s; task commit %s pr_url %s", pr.Draft, pr.Title, pr.Head.Ref, pr.Head.SHA,
			pr.Base.Ref, task.Commit, task.PRURL)
	}
	for _, want := range []string{"## Checklist", "https://nightshift.example.test/tasks/" + id, "<!-- nightshift:task:" + id + " -->", "`WORK.md`"} {
		if !strings.Contains(pr.Body, want) {
			t.Errorf("pull request body lacks %q:\n%s", want, pr.Body)
		}
	}
	work, err := g.File(ctx, owner, gtRepo, "WORK.md", branch)
	must(err)
	if !strings.Contains(work, "add a friendly greeting to the README") {
		t.Fatalf("the agent did not get the instruction: %q", work)
	}
	env, err := os.ReadFile(filepath.Join(dir, "agent-env.log"))
	must(err)
	if strings.Contains(string(env), token) {
		t.Fatal("the agent's environment holds the Gitea token")
	}
	progress := func() []string {
		cs, err := g.ListComments(ctx, owner, gtRepo, issue)
		must(err)
		var out []string
		for _, c := range cs {
			if strings.Contains(c.Body, "<!-- nightshift:task:") {
				if c.User.Login != "nightshift" {
					t.Fatalf("progress comment by %s", c.User.Login)
				}
				out = append(out, c.Body)
			}
		}
		return out
	}
	waitFor(t, 30*time.Second, "one final progress comment and one reaction", func() bool {
		cs := progress()
		rs, _ := g.Reactions(ctx, owner, gtRepo, cid)
		return len(cs) == 1 && strings.Contains(cs[0], "ready for review") && strings.Contains(cs[0], pr.HTMLURL) && len(rs) == 1
	}, func() string { return strings.Join(progress(), "\n---\n") + "\n" + s.stderr.String() })
	if rs, _ := g.Reactions(ctx, owner, gtRepo, cid); rs[0] != "eyes" {
		t.Fatalf("reactions %v", rs)
	}

	// Redeliveries: Gitea's own request again, byte for byte, is a
	// duplicate; a test delivery (a push) starts nothing.
	first := relay.deliveries("issue_comment")[2]
	if code, answer := relay.post(to, first.header, first.body); code != http.StatusOK || !strings.Contains(answer, "duplicate") {
		t.Fatalf("redelivery: %d %s", code, answer)
	}
	must(g.TestHook(ctx, owner, gtRepo, hook1.ID))
	waitFor(t, 30*time.Second, "the test delivery", func() bool { return len(relay.deliveries("push")) > 0 }, relay.String)
	if d := relay.deliveries("push")[0]; d.status != http.StatusOK || !strings.Contains(d.answer, "ignored") {
		t.Fatalf("test delivery: %d %s", d.status, d.answer)
	}

	// CI fails on the pull request's head: one fix commit on its branch.
	head := task.Commit
	must(g.SetStatus(ctx, owner, gtRepo, head, "failure", "ci/unit", "TestGreeting: want a friendly greeting"))
	waitFor(t, 30*time.Second, "the status delivered by both hooks", func() bool {
		n := 0
		for _, d := range relay.deliveries("status") {
			if bytes.Contains(d.body, []byte(`"state": "failure"`)) {
				n++
			}
		}
		return n == 2
	}, relay.String)
	for _, d := range relay.deliveries("status") {
		if bytes.Contains(d.body, []byte(`"state": "failure"`)) && d.status != http.StatusAccepted {
			t.Fatalf("failing status: %d %s\n%s", d.status, d.answer, relay)
		}
	}
	task = s.waitRunReview(t, id, 2, 120*time.Second)
	fixed, err := g.BranchHead(ctx, owner, gtRepo, branch)
	must(err)
	parents, err := g.Parents(ctx, owner, gtRepo, fixed)
	must(err)
	if fixed == head || fixed != task.Commit || len(parents) != 1 || parents[0] != head {
		t.Fatalf("%s is at %s (parents %v, task commit %s), want one commit on top of %s", branch, fixed, parents, task.Commit, head)
	}
	work, err = g.File(ctx, owner, gtRepo, "WORK.md", branch)
	must(err)
	if !strings.Contains(work, `Status "ci/unit" is failure: TestGreeting: want a friendly greeting`) {
		t.Fatalf("the fix run's prompt lacks the failing status:\n%s", work)
	}
	if prs, _ := g.PullRequests(ctx, owner, gtRepo); len(prs) != 1 {
		t.Fatalf("%d pull requests after the CI fix", len(prs))
	}
	if n := len(s.tasks(t)); n != 1 {
		t.Fatalf("%d tasks", n)
	}

	// Gitea Actions fails on the pull request's head (the stand-in runner
	// passes every queued job but the pull request run of the head): one
	// more fix commit. Gitea also sets a failing status for the job: it
	// adds nothing.
	runner, err := g.Runner(ctx)
	must(err)
	wfSHA := task.Commit
	for failed := false; !failed; {
		_, err := runner.FinishFunc(ctx, func(j giteatest.Job) (string, string) {
			if j.Event == "pull_request" && j.SHA == wfSHA {
				failed = true
				return "failure", "Run go test ./...\n--- FAIL: TestGreeting (0.00s)\n    greet_test.go:9: want a friendlier greeting\nFAIL"
			}
			return "success", "ok"
		})
		must(err)
	}
	waitFor(t, 30*time.Second, "the failed run delivered by both hooks", func() bool {
		n := 0
		for _, d := range relay.deliveries("workflow_run") {
			if bytes.Contains(d.body, []byte(`"conclusion": "failure"`)) {
				n++
				if d.status != http.StatusAccepted {
					t.Fatalf("failed workflow run: %d %s", d.status, d.answer)
				}
			}
		}
		return n == 2
	}, relay.String)
	task = s.waitRunReview(t, id, 3, 120*time.Second)
	fixed2, err := g.BranchHead(ctx, owner, gtRepo, branch)
	must(err)
	parents, err = g.Parents(ctx, owner, gtRepo, fixed2)
	must(err)
	if fixed2 != task.Commit || len(parents) != 1 || parents[0] != wfSHA {
		t.Fatalf("%s is at %s (parents %v, task commit %s), want one commit on top of %s", branch, fixed2, parents, task.Commit, wfSHA)
	}
	work, err = g.File(ctx, owner, gtRepo, "WORK.md", branch)
	must(err)
	if !strings.Contains(work, `Workflow "CI" failed (failure, attempt 1)`) {
		t.Fatalf("the Actions fix run's prompt lacks the failed run:\n%s", work)
	}
	for _, d := range relay.deliveries("status") {
		if bytes.Contains(d.body, []byte("/actions/runs/")) && (d.status != http.StatusOK || !strings.Contains(d.answer, "ignored")) {
			t.Fatalf("the Actions job's status: %d %s", d.status, d.answer)
		}
	}

	// Marked ready and merged in Gitea: the task is done.
	must(g.MarkReady(ctx, owner, gtRepo, pr.Number))
	must(g.Merge(ctx, owner, gtRepo, pr.Number))
	s.waitState(t, id, 60*time.Second, orchestrator.StateDone)
	if n := len(s.tasks(t)); n != 1 {
		t.Fatalf("%d tasks after the merge", n)
	}

	// A person's pull request fails Gitea Actions: a new task reads the
	// failed job's log through the Actions API and pushes the fix onto
	// that pull request's branch.
	human, err := g.CommitFiles(ctx, owner, gtRepo, "feature/greet", "main", map[string]string{"greet.go": "package main // wip\n"})
	must(err)
	var humanPR struct {
		Number  int    `json:"number"`
		HTMLURL string `json:"html_url"`
	}
	must(g.Do(ctx, http.MethodPost, fmt.Sprintf("repos/%s/%s/pulls", owner, gtRepo), "alice",
		map[string]string{"head": "feature/greet", "base": "main", "title": "Greet people", "body": "wip"}, &humanPR))
	for failed := false; !failed; {
		_, err := runner.FinishFunc(ctx, func(j giteatest.Job) (string, string) {
			if j.Event == "pull_request" && j.SHA == human {
				failed = true
				return "failure", "Run go test ./...\n--- FAIL: TestGreeting (0.00s)\n    greet_test.go:9: want a friendly greeting\nFAIL"
			}
			return "success", "ok"
		})
		must(err)
	}
	var id2 string
	waitFor(t, 120*time.Second, "the CI fix task of the person's pull request to rest", func() bool {
		for _, tk := range s.tasks(t) {
			if tk.ID != id && (tk.State == orchestrator.StateReview || tk.State == orchestrator.StateFailed) {
				id2 = tk.ID
				return true
			}
		}
		return false
	}, func() string { return relay.String() + s.stderr.String() })
	task2 := s.task(t, id2)
	if task2.State != orchestrator.StateReview || task2.PRURL != humanPR.HTMLURL {
		t.Fatalf("CI fix task: %s %s %s, pr_url %s want %s", task2.State, task2.Reason, task2.Error, task2.PRURL, humanPR.HTMLURL)
	}
	fixedHuman, err := g.BranchHead(ctx, owner, gtRepo, "feature/greet")
	must(err)
	parents, err = g.Parents(ctx, owner, gtRepo, fixedHuman)
	must(err)
	if fixedHuman != task2.Commit || len(parents) != 1 || parents[0] != human {
		t.Fatalf("feature/greet is at %s (parents %v, task commit %s), want one commit on top of %s", fixedHuman, parents, task2.Commit, human)
	}
	work, err = g.File(ctx, owner, gtRepo, "WORK.md", "feature/greet")
	must(err)
	if !strings.Contains(work, "--- FAIL: TestGreeting") || !strings.Contains(work, `Check "unit-tests": failure`) {
		t.Fatalf("the CI fix prompt lacks the failed job's log:\n%s", work)
	}

	// The nightshift label on a new issue starts one task on it, whichever
	// of the two hooks delivers it.
	issue2, err := g.CreateIssue(ctx, "alice", owner, gtRepo, "Add a changelog", "Start CHANGELOG.md with this release.")
	must(err)
	must(g.AddLabel(ctx, "alice", owner, gtRepo, issue2, "nightshift"))
	var id3 string
	waitFor(t, 120*time.Second, "the labelled issue's task to rest", func() bool {
		for _, tk := range s.tasks(t) {
			if tk.ID != id && tk.ID != id2 && (tk.State == orchestrator.StateReview || tk.State == orchestrator.StateFailed) {
				id3 = tk.ID
				return true
			}
		}
		return false
	}, func() string { return relay.String() + s.stderr.String() })
	task3 := s.task(t, id3)
	if task3.State != orchestrator.StateReview || task3.Kind != orchestrator.KindIssueLabeled || task3.Target.Number != issue2 {
		t.Fatalf("label task: %s %s %s kind %s target %+v", task3.State, task3.Reason, task3.Error, task3.Kind, task3.Target)
	}
	work, err = g.File(ctx, owner, gtRepo, "WORK.md", "nightshift/"+id3)
	must(err)
	if !strings.Contains(work, "Start CHANGELOG.md with this release.") {
		t.Fatalf("the label task's prompt lacks the issue:\n%s", work)
	}
	for _, d := range relay.deliveries("issue_label") {
		if d.status != http.StatusAccepted {
			t.Fatalf("label delivery: %d %s", d.status, d.answer)
		}
	}
	if n := len(relay.deliveries("issue_label")); n != 2 {
		t.Fatalf("%d label deliveries, want one per hook", n)
	}
	if n := len(s.tasks(t)); n != 3 {
		t.Fatalf("%d tasks at the end", n)
	}
	if cs := progress(); len(cs) != 1 {
		t.Fatalf("%d progress comments at the end", len(cs))
	}
}
