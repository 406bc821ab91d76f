package main

import (
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

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
