package main

import (
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	gh "github.com/google/go-github/v60/github"

	"github.com/nightshift/nightshift/orchestrator"
)

// TestRoundTripQuestionIsAnswered: a comment asking a question, whose agent
// changes nothing and answers, ends done with the answer on the task and in
// the one progress comment on the issue and the Slack message; no branch is
// pushed and no pull request opened. A secret in the answer is redacted.
func TestRoundTripQuestionIsAnswered(t *testing.T) {
	requireRoundTrip(t)
	t.Parallel()
	w := newRTWorld(t)
	agent := filepath.Join(w.dir, "answer.sh")
	script := "#!/bin/sh\necho 'The -x option prints each command before it runs.'\n"
	if err := os.WriteFile(agent, []byte(script), 0o755); err != nil {
		t.Fatal(err)
	}
	s := startTestServer(t, strings.Replace(w.yaml(agent), `test: "test -f WORK.md"`, `test: "true"`, 1))
	p := w.commentPayload(t, "@nightshift what does the -x option do?")
	if code, out := postGitHub(t, s, "issue_comment", "d-question", p); code != http.StatusAccepted {
		t.Fatalf("delivery: %d %v", code, out)
	}
	id := s.onlyTask(t)
	task := s.waitState(t, id, 90*time.Second, orchestrator.StateDone, orchestrator.StateFailed, orchestrator.StateReview)
	const answer = "The -x option prints each command before it runs."
	if task.State != orchestrator.StateDone || task.Answer != answer {
		t.Fatalf("task %s (%s %s) answer %q, want done with %q\n%s", task.State, task.Reason, task.Error, task.Answer, answer, s.stderr.String())
	}
	waitFor(t, 20*time.Second, "the answer in the progress comment", func() bool {
		cs := w.progressComments(1)
		return len(cs) == 1 && strings.Contains(cs[0], "> "+answer) && strings.Contains(cs[0], "done")
	}, func() string { return strings.Join(w.progressComments(1), "\n---\n") + "\n" + s.stderr.String() })
	waitFor(t, 20*time.Second, "the answer in the Slack message", func() bool {
		m := w.slack.Messages()
		return len(m) == 1 && strings.Contains(m[0].Blocks, "The -x option prints each command")
	}, s.stderr.String)
	if prs := w.gh.PullRequests(rtOwner, rtName); len(prs) != 0 {
		t.Fatalf("%d pull requests for a question", len(prs))
	}
	if b := w.gh.RevParse(rtOwner, rtName, "refs/heads/nightshift/"+id); b != "" {
		t.Fatalf("a question pushed its branch (%s)", b)
	}
}

// prEvent is a pull request webhook payload (the shared fixtures, pointed at
// pull request pr of the fake GitHub and its head branch).
func (w *rtWorld) prEvent(t *testing.T, fixture string, pr *gh.PullRequest, edit func(p map[string]any)) map[string]any {
	t.Helper()
	p := w.fixture(t, fixture)
	m := p["pull_request"].(map[string]any)
	m["number"] = pr.GetNumber()
	m["html_url"] = pr.GetHTMLURL()
	m["head"].(map[string]any)["ref"] = pr.GetHead().GetRef()
	m["head"].(map[string]any)["sha"] = pr.GetHead().GetSHA()
	m["base"].(map[string]any)["ref"] = pr.GetBase().GetRef()
	if edit != nil {
		edit(p)
	}
	return p
}

// TestRoundTripPullRequestLifecycle: the task owns its pull request until
// it is merged. A comment opens a draft pull request; a review comment on
// it (no trigger word) is a follow-up run of the same task that adds a
// second commit to the same branch and pull request; the merge webhook
// moves the task to done. One progress comment and one Slack message follow
// it all. A second task's pull request closed unmerged ends it cancelled;
// feedback on a pull request no task owns starts nothing.
func TestRoundTripPullRequestLifecycle(t *testing.T) {
	requireRoundTrip(t)
	t.Parallel()
	w := newRTWorld(t)
	// A question changes nothing: the agent only answers.
	s := startTestServer(t, w.yaml(w.agent(t, `case "$NIGHTSHIFT_PROMPT" in *"why the greeting"*) echo "Because the README asked for one."; exit 0;; esac`)))
	if code, out := postGitHub(t, s, "issue_comment", "d-life-1", w.commentPayload(t, "@nightshift add a greeting")); code != http.StatusAccepted {
		t.Fatalf("comment: %d %v", code, out)
	}
	id := s.onlyTask(t)
	task := s.waitState(t, id, 90*time.Second, orchestrator.StateReview, orchestrator.StateFailed)
	if task.State != orchestrator.StateReview {
		t.Fatalf("task %s: %s %s\n%s", task.State, task.Reason, task.Error, s.stderr.String())
	}
	prs := w.gh.PullRequests(rtOwner, rtName)
	if len(prs) != 1 {
		t.Fatalf("%d pull requests", len(prs))
	}
	pr := prs[0]
	first := task.Commit

	// A review comment by the owner, without the trigger word.
	review := w.prEvent(t, "octokit-webhooks/pull_request_review_comment.created.json", &pr, func(p map[string]any) {
		p["comment"].(map[string]any)["body"] = "Please also greet the weather."
	})
	if code, out := postGitHub(t, s, "pull_request_review_comment", "d-life-review", review); code != http.StatusAccepted {
		t.Fatalf("review comment: %d %v", code, out)
	}
	waitFor(t, 90*time.Second, "the follow-up run to rest", func() bool {
		tk := s.task(t, id)
		return tk.Run == 2 && (tk.State == orchestrator.StateReview || tk.State == orchestrator.StateFailed)
	}, s.stderr.String)
	task = s.task(t, id)
	if task.State != orchestrator.StateReview || task.Commit == first || task.PRURL != pr.GetHTMLURL() {
		t.Fatalf("after the review: %s (%s %s), commit %s (first %s), pr_url %s", task.State, task.Reason, task.Error, task.Commit, first, task.PRURL)
	}
	if n := len(s.tasks(t)); n != 1 {
		t.Fatalf("%d tasks: the review comment must follow up the task, not start one", n)
	}
	prs = w.gh.PullRequests(rtOwner, rtName)
	if len(prs) != 1 || prs[0].GetHead().GetSHA() != task.Commit || prs[0].GetHead().GetRef() != "nightshift/"+id {
		t.Fatalf("after the review: %d pull requests, head %s@%s, task commit %s", len(prs), prs[0].GetHead().GetRef(), prs[0].GetHead().GetSHA(), task.Commit)
	}
	if parent := w.gh.Git(rtOwner, rtName, "rev-parse", "nightshift/"+id+"~1"); strings.TrimSpace(parent) != first {
		t.Fatalf("the second commit's parent is %s, want the first commit %s", parent, first)
	}
	if work := w.gh.Git(rtOwner, rtName, "show", "nightshift/"+id+":WORK.md"); !strings.Contains(work, "add a greeting") ||
		!strings.Contains(work, "Please also greet the weather.") || !strings.Contains(work, "README.md line") {
		t.Fatalf("WORK.md after the review:\n%s", work)
	}
	waitFor(t, 20*time.Second, "the progress comment of run 2", func() bool {
		cs := w.progressComments(1)
		return len(cs) == 1 && strings.Contains(cs[0], "(run 2)") && strings.Contains(cs[0], "ready for review")
	}, func() string { return strings.Join(w.progressComments(1), "\n---\n") })

	// A question on the pull request (a plain comment, no trigger word) is
	// answered without a change: the task stays in review on the same
	// commit, with the answer in the progress comment.
	question := w.commentPayload(t, "Nice. But why the greeting at all?")
	question["comment"].(map[string]any)["id"] = 492700450
	question["issue"].(map[string]any)["number"] = pr.GetNumber()
	question["issue"].(map[string]any)["pull_request"] = map[string]any{"url": pr.GetURL(), "html_url": pr.GetHTMLURL()}
	if code, out := postGitHub(t, s, "issue_comment", "d-life-question", question); code != http.StatusAccepted {
		t.Fatalf("question on the pull request: %d %v", code, out)
	}
	waitFor(t, 90*time.Second, "the answer run to rest", func() bool {
		tk := s.task(t, id)
		return tk.Run == 3 && (tk.State == orchestrator.StateReview || tk.State == orchestrator.StateFailed)
	}, s.stderr.String)
	second := task.Commit
	if task = s.task(t, id); task.State != orchestrator.StateReview || task.Answer != "Because the README asked for one." || task.Commit != second {
		logs, _ := s.cli(t, "tasks", "logs", id)
		t.Fatalf("after the question: %s (%s %s), answer %q, commit %s (was %s)\n%s", task.State, task.Reason, task.Error, task.Answer, task.Commit, second, logs)
	}
	waitFor(t, 20*time.Second, "the answer in the progress comment", func() bool {
		cs := w.progressComments(1)
		return len(cs) == 1 && strings.Contains(cs[0], "> Because the README asked for one.") && strings.Contains(cs[0], "(run 3)")
	}, func() string { return strings.Join(w.progressComments(1), "\n---\n") })

	// The merge.
	merged := w.prEvent(t, "octokit-webhooks/pull_request.opened.json", &prs[0], func(p map[string]any) {
		p["action"] = "closed"
		p["pull_request"].(map[string]any)["state"] = "closed"
		p["pull_request"].(map[string]any)["merged"] = true
	})
	w.gh.ClosePR(rtOwner, rtName, pr.GetNumber())
	if code, out := postGitHub(t, s, "pull_request", "d-life-merged", merged); code != http.StatusAccepted {
		t.Fatalf("merge: %d %v", code, out)
	}
	task = s.waitState(t, id, 30*time.Second, orchestrator.StateDone, orchestrator.StateCancelled, orchestrator.StateFailed)
	if task.State != orchestrator.StateDone || task.Reason != "merged" {
		t.Fatalf("after the merge: %s (%s)", task.State, task.Reason)
	}
	waitFor(t, 20*time.Second, "the progress comment and Slack message to say merged", func() bool {
		cs, m := w.progressComments(1), w.slack.Messages()
		return len(cs) == 1 && strings.Contains(cs[0], "merged") && strings.Contains(cs[0], pr.GetHTMLURL()) &&
			len(m) == 1 && strings.Contains(m[0].Text, "merged")
	}, func() string { return strings.Join(w.progressComments(1), "\n---\n") + "\n" + s.stderr.String() })

	// Feedback on a pull request no task owns starts nothing.
	other := w.gh.AddPR(rtOwner, rtName, 77, "", "main", "main")
	stray := w.prEvent(t, "octokit-webhooks/pull_request_review_comment.created.json", other, func(p map[string]any) {
		p["comment"].(map[string]any)["id"] = 99001
	})
	if code, out := postGitHub(t, s, "pull_request_review_comment", "d-life-stray", stray); code != http.StatusAccepted {
		t.Fatalf("stray review comment: %d %v", code, out)
	}

	// A second task, its pull request closed without merging.
	another := w.commentPayload(t, "@nightshift try another greeting")
	another["comment"].(map[string]any)["id"] = 492700401
	if code, out := postGitHub(t, s, "issue_comment", "d-life-2", another); code != http.StatusAccepted {
		t.Fatalf("second comment: %d %v", code, out)
	}
	var id2 string
	waitFor(t, 30*time.Second, "the second task", func() bool {
		for _, tk := range s.tasks(t) {
			if tk.ID != id {
				id2 = tk.ID
			}
		}
		return id2 != ""
	}, s.stderr.String)
	if tk := s.waitState(t, id2, 90*time.Second, orchestrator.StateReview, orchestrator.StateFailed); tk.State != orchestrator.StateReview {
		t.Fatalf("second task %s: %s %s", tk.State, tk.Reason, tk.Error)
	}
	var pr2 *gh.PullRequest
	for _, p := range w.gh.PullRequests(rtOwner, rtName) {
		if p.GetHead().GetRef() == "nightshift/"+id2 {
			pr2 = &p
		}
	}
	if pr2 == nil {
		t.Fatal("no pull request for the second task")
	}
	closed := w.prEvent(t, "octokit-webhooks/pull_request.opened.json", pr2, func(p map[string]any) {
		p["action"] = "closed"
		p["pull_request"].(map[string]any)["state"] = "closed"
		p["pull_request"].(map[string]any)["merged"] = false
	})
	if code, out := postGitHub(t, s, "pull_request", "d-life-closed", closed); code != http.StatusAccepted {
		t.Fatalf("close: %d %v", code, out)
	}
	if tk := s.waitState(t, id2, 30*time.Second, orchestrator.StateCancelled, orchestrator.StateDone); tk.State != orchestrator.StateCancelled || tk.Reason != "pull request closed" {
		t.Fatalf("after the close: %s (%s)", tk.State, tk.Reason)
	}
	// Everything is recorded in order: the stray review comment was handled
	// before the second task's events, and started nothing.
	if ts := s.tasks(t); len(ts) != 2 {
		t.Fatalf("%d tasks after the stray review comment, want 2", len(ts))
	}
	if tk := s.task(t, id); tk.State != orchestrator.StateDone || tk.Run != 3 {
		t.Fatalf("the merged task moved on: %s run %d", tk.State, tk.Run)
	}
}
