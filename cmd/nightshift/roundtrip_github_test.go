package main

import (
	"net/http"
	"os"
	"strings"
	"testing"
	"time"

	gh "github.com/google/go-github/v60/github"

	"github.com/nightshift/nightshift/orchestrator"
)

// TestRoundTripCommentToDraftPullRequest: an @nightshift comment (the
// shared fixture, re-signed), delivered twice and through a second hook,
// becomes one task; the agent's work is pushed with a narrowed installation
// token the agent never sees, one draft pull request is opened, the trigger
// gets 👀, one progress comment and one Slack message follow the task to
// the end. The Slack buttons cancel and retry it; the retry updates the same
// pull request, comment and message.
func TestRoundTripCommentToDraftPullRequest(t *testing.T) {
	requireRoundTrip(t)
	t.Parallel()
	w := newRTWorld(t)
	s := startTestServer(t, w.yaml(w.agent(t, "")))
	p := w.commentPayload(t, "@nightshift add a friendly greeting to the README")

	if code, out := postGitHub(t, s, "issue_comment", "d-repo-hook", p); code != http.StatusAccepted {
		t.Fatalf("first delivery: %d %v", code, out)
	}
	if code, out := postGitHub(t, s, "issue_comment", "d-repo-hook", p); code != http.StatusOK || out["status"] != "duplicate" {
		t.Fatalf("redelivery: %d %v", code, out)
	}
	// The organization's hook delivers the same comment under its own id.
	if code, out := postGitHub(t, s, "issue_comment", "d-org-hook", p); code != http.StatusAccepted {
		t.Fatalf("org hook delivery: %d %v", code, out)
	}
	id := s.onlyTask(t)
	task := s.waitState(t, id, 90*time.Second, orchestrator.StateReview, orchestrator.StateFailed)
	if task.State != orchestrator.StateReview {
		t.Fatalf("task failed: %s %s\n%s", task.Reason, task.Error, s.stderr.String())
	}
	if n := len(s.tasks(t)); n != 1 {
		t.Fatalf("%d tasks for one comment", n)
	}

	prs := w.gh.PullRequests(rtOwner, rtName)
	if len(prs) != 1 {
		t.Fatalf("%d pull requests, want 1", len(prs))
	}
	pr := prs[0]
	if !pr.GetDraft() || pr.GetHead().GetRef() != "nightshift/"+id || pr.GetBase().GetRef() != "main" ||
		pr.GetHead().GetSHA() != task.Commit || task.PRURL != pr.GetHTMLURL() || pr.GetTitle() != "Add the requested change" {
		t.Fatalf("pull request: draft %v head %s@%s base %s title %q; task commit %s pr_url %s", pr.GetDraft(),
			pr.GetHead().GetRef(), pr.GetHead().GetSHA(), pr.GetBase().GetRef(), pr.GetTitle(), task.Commit, task.PRURL)
	}
	for _, want := range []string{"## Checklist", "https://nightshift.example.test/tasks/" + id, "Closes #1",
		"<!-- nightshift:task:" + id + " -->", "`WORK.md`"} {
		if !strings.Contains(pr.GetBody(), want) {
			t.Errorf("pull request body lacks %q:\n%s", want, pr.GetBody())
		}
	}
	if got := w.gh.Git(rtOwner, rtName, "show", "nightshift/"+id+":WORK.md"); !strings.Contains(got, "add a friendly greeting to the README") {
		t.Fatalf("the agent did not get the instruction: %q", got)
	}

	// Reporting: the reaction, one progress comment, one Slack message.
	waitFor(t, 20*time.Second, "the final progress comment", func() bool {
		cs := w.progressComments(1)
		return len(cs) == 1 && strings.Contains(cs[0], "ready for review") && strings.Contains(cs[0], pr.GetHTMLURL())
	}, func() string { return strings.Join(w.progressComments(1), "\n---\n") + "\n" + s.stderr.String() })
	if r := w.gh.Reactions(); len(r) != 1 || r[0] != rtOwner+"/"+rtName+":492700400:eyes" {
		t.Fatalf("reactions: %v", r)
	}
	waitFor(t, 20*time.Second, "the final Slack message", func() bool {
		m := w.slack.Messages()
		return len(m) == 1 && strings.Contains(m[0].Text, "ready for review")
	}, func() string { return s.stderr.String() })

	// Least privilege: the agent never saw a token; every token was narrowed.
	env, err := os.ReadFile(w.envLog)
	if err != nil {
		t.Fatal(err)
	}
	for _, m := range w.gh.Minted() {
		if strings.Contains(string(env), m.Token) {
			t.Fatalf("the agent's environment holds an installation token (%v)", m.Permissions)
		}
		if len(m.Repositories) != 1 || m.Repositories[0] != rtName || m.Permissions["contents"] == "write" && len(m.Permissions) != 1 {
			t.Errorf("token minted for %v with %v", m.Repositories, m.Permissions)
		}
	}
	if v := w.gh.Violations(); len(v) > 0 {
		t.Fatalf("requests beyond their token's rights:\n%s", strings.Join(v, "\n"))
	}

	// Slack: cancel the resting task, then retry it with the new button.
	if code, out := postSlackAction(t, s, "cancel", id); code != http.StatusOK || out["status"] != "accepted" {
		t.Fatalf("cancel click: %d %v", code, out)
	}
	s.waitState(t, id, 30*time.Second, orchestrator.StateCancelled)
	waitFor(t, 20*time.Second, "a Retry button", func() bool {
		m := w.slack.Messages()
		return len(m) == 1 && strings.Contains(m[0].Blocks, `"action_id":"retry"`) && strings.Contains(m[0].Blocks, `"value":"`+id+`"`)
	}, func() string { return s.stderr.String() })
	if code, out := postSlackAction(t, s, "retry", id); code != http.StatusOK || out["status"] != "accepted" {
		t.Fatalf("retry click: %d %v", code, out)
	}
	waitFor(t, 90*time.Second, "the retried run in review", func() bool {
		tk := s.task(t, id)
		return tk.Run == 2 && tk.State == orchestrator.StateReview
	}, s.stderr.String)
	task = s.task(t, id)
	prs = w.gh.PullRequests(rtOwner, rtName)
	if len(prs) != 1 || prs[0].GetHead().GetSHA() != task.Commit || task.PRURL != pr.GetHTMLURL() {
		t.Fatalf("after retry: %d pull requests, head %s, task commit %s", len(prs), prs[0].GetHead().GetSHA(), task.Commit)
	}
	waitFor(t, 20*time.Second, "the progress comment of run 2", func() bool {
		cs := w.progressComments(1)
		return len(cs) == 1 && strings.Contains(cs[0], "(run 2)") && strings.Contains(cs[0], "ready for review")
	}, func() string { return strings.Join(w.progressComments(1), "\n---\n") })
	if m := w.slack.Messages(); len(m) != 1 || len(w.gh.Reactions()) != 1 {
		t.Fatalf("after retry: %d Slack messages, %d reactions", len(m), len(w.gh.Reactions()))
	}
}

// TestRoundTripRefusalIsAnswered: a comment from someone without write
// access starts nothing and gets a short answer on the issue.
func TestRoundTripRefusalIsAnswered(t *testing.T) {
	requireRoundTrip(t)
	t.Parallel()
	w := newRTWorld(t)
	s := startTestServer(t, w.yaml(w.agent(t, "")))
	p := w.commentPayload(t, "@nightshift delete everything")
	c := p["comment"].(map[string]any)
	c["author_association"] = "NONE"
	c["user"].(map[string]any)["login"] = "mallory"
	code, out := postGitHub(t, s, "issue_comment", "d-refused", p)
	if code != http.StatusOK || out["status"] != "ignored" || !strings.Contains(out["reason"], "write is required") {
		t.Fatalf("refused delivery: %d %v", code, out)
	}
	cs := w.gh.Comments(rtOwner, rtName, 1)
	if len(cs) != 1 || !strings.HasPrefix(cs[0].GetBody(), "@mallory Nightshift did not start") {
		t.Fatalf("replies: %+v", cs)
	}
	if n := len(s.tasks(t)); n != 0 {
		t.Fatalf("%d tasks started", n)
	}
	// GitHub redelivers: no second answer.
	postGitHub(t, s, "issue_comment", "d-refused", p)
	if n := len(w.gh.Comments(rtOwner, rtName, 1)); n != 1 {
		t.Fatalf("%d replies after a redelivery", n)
	}
}

// TestRoundTripCIFailureFixesPullRequestBranch: a failing check_run (the
// shared fixture) on pull request #2 starts a task whose prompt carries the
// check's output and log tail; the fix is pushed onto the pull request's
// branch. Failures of Nightshift's own fixes count as attempts: the second
// and third become follow-up runs, the fourth is refused by the cap.
func TestRoundTripCIFailureFixesPullRequestBranch(t *testing.T) {
	requireRoundTrip(t)
	t.Parallel()
	w := newRTWorld(t)
	head := w.gh.Commit(rtOwner, rtName, "changes", map[string]string{"greet.go": "package main // broken\n"}, "wip")
	w.gh.AddPR(rtOwner, rtName, 2, "", "changes", "main")
	s := startTestServer(t, w.yaml(w.agent(t, "")))

	fail := func(n int, sha string) (int, map[string]string) {
		t.Helper()
		jobID := int64(9000 + n)
		w.gh.SetCheckRuns(sha, &gh.CheckRun{ID: gh.Int64(jobID), Name: gh.String("Octocoders-linter"), Status: gh.String("completed"),
			Conclusion: gh.String("failure"), HeadSHA: gh.String(sha), App: &gh.App{Slug: gh.String("github-actions")},
			Output: &gh.CheckRunOutput{Title: gh.String("1 lint error")}})
		w.gh.SetJobLog(jobID, "2024-05-01T10:00:00.0000000Z ##[group]Run lint\n2024-05-01T10:00:01.0000000Z greet.go:1: lint error (attempt "+
			string(rune('0'+n))+")\n2024-05-01T10:00:01.0000000Z ##[error]Process completed with exit code 1.\n")
		p := w.fixture(t, "octokit-webhooks/check_run.completed.1.json")
		cr := p["check_run"].(map[string]any)
		cr["id"] = 128620228 + n
		cr["head_sha"] = sha
		cr["pull_requests"].([]any)[0].(map[string]any)["head"].(map[string]any)["sha"] = sha
		return postGitHub(t, s, "check_run", "d-ci-"+string(rune('0'+n)), p)
	}

	sha := head
	var id string
	for n := 1; n <= 3; n++ {
		if code, out := fail(n, sha); code != http.StatusAccepted {
			t.Fatalf("failure %d: %d %v", n, code, out)
		}
		if n == 1 {
			id = s.onlyTask(t)
		}
		waitFor(t, 90*time.Second, "CI fix run to rest in review", func() bool {
			tk := s.task(t, id)
			return tk.Run == n && (tk.State == orchestrator.StateReview || tk.State == orchestrator.StateFailed)
		}, s.stderr.String)
		task := s.task(t, id)
		if task.State != orchestrator.StateReview {
			t.Fatalf("run %d: %s %s", n, task.Reason, task.Error)
		}
		got := w.gh.RevParse(rtOwner, rtName, "refs/heads/changes")
		if got != task.Commit || w.gh.Git(rtOwner, rtName, "rev-parse", "changes~1") != sha {
			t.Fatalf("run %d: changes is at %s, task commit %s, want it on top of %s", n, got, task.Commit, sha)
		}
		work := w.gh.Git(rtOwner, rtName, "show", "changes:WORK.md")
		if !strings.Contains(work, "lint error (attempt "+string(rune('0'+n))+")") || !strings.Contains(work, `Check "Octocoders-linter": failure`) ||
			strings.Contains(work, "2024-05-01T10") {
			t.Fatalf("run %d: the agent's prompt lacks the failing check's log:\n%s", n, work)
		}
		if task.PRURL != w.gh.URL+"/"+rtOwner+"/"+rtName+"/pull/2" {
			t.Fatalf("run %d: pr_url %s", n, task.PRURL)
		}
		sha = got
	}
	code, out := fail(4, sha)
	if code != http.StatusOK || out["status"] != "ignored" || !strings.Contains(out["reason"], "cap") {
		t.Fatalf("fourth failure: %d %v", code, out)
	}
	if n := len(s.tasks(t)); n != 1 || s.task(t, id).Run != 3 {
		t.Fatalf("after the cap: %d tasks, run %d", n, s.task(t, id).Run)
	}
	if prs := w.gh.PullRequests(rtOwner, rtName); len(prs) != 1 {
		t.Fatalf("%d pull requests: CI fixes must not open new ones", len(prs))
	}
	if fr := w.gh.RevParse(rtOwner, rtName, "refs/heads/nightshift/"+id); fr != "" {
		t.Fatal("a CI fix pushed a task branch")
	}
	waitFor(t, 20*time.Second, "one progress comment on the pull request", func() bool {
		cs := w.progressComments(2)
		return len(cs) == 1 && strings.Contains(cs[0], "(run 3)")
	}, func() string { return strings.Join(w.progressComments(2), "\n---\n") })
	if v := w.gh.Violations(); len(v) > 0 {
		t.Fatalf("requests beyond their token's rights:\n%s", strings.Join(v, "\n"))
	}
}
