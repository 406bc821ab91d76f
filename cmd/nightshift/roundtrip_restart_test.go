package main

import (
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/nightshift/nightshift/orchestrator"
)

// TestRoundTripRestartKeepsOnePullRequest kills the server (SIGKILL) while
// the agent of a comment-triggered task runs, starts it again on the same
// data dir, and checks the redelivered run ends with one pull request, one
// progress comment, one reaction and one Slack message.
func TestRoundTripRestartKeepsOnePullRequest(t *testing.T) {
	requireRoundTrip(t)
	t.Parallel()
	w := newRTWorld(t)
	mark := filepath.Join(w.dir, "first-run")
	agent := w.agent(t, fmt.Sprintf("if [ ! -e %[1]s ]; then touch %[1]s; echo $$ > %[1]s.pid; exec sleep 1000; fi", mark))
	if err := os.WriteFile(filepath.Join(w.dir, "nightshift.yaml"), []byte(w.yaml(agent)), 0o600); err != nil {
		t.Fatal(err)
	}
	bin := nightshiftBinary(t) // restart_test.go
	cmd, s := startProcess(t, bin, w.dir)
	if code, out := postGitHub(t, s, "issue_comment", "d-restart", w.commentPayload(t, "@nightshift add a greeting")); code != http.StatusAccepted {
		t.Fatalf("delivery: %d %v", code, out)
	}
	id := s.onlyTask(t)
	agentPID := readPID(t, mark+".pid", 30*time.Second)
	s.waitState(t, id, 30*time.Second, orchestrator.StateRunning)
	waitFor(t, 20*time.Second, "the progress comment and the Slack message of the running task", func() bool {
		cs, ms := w.progressComments(1), w.slack.Messages()
		return len(cs) == 1 && strings.Contains(cs[0], "working") && len(ms) == 1 && strings.Contains(ms[0].Text, "working")
	}, func() string { b, _ := os.ReadFile(filepath.Join(w.dir, "serve.log")); return string(b) })

	cmd.Process.Signal(syscall.SIGKILL)
	cmd.Wait()
	syscall.Kill(agentPID, syscall.SIGKILL)

	_, s2 := startProcess(t, bin, w.dir)
	task := s2.waitState(t, id, 90*time.Second, orchestrator.StateReview, orchestrator.StateFailed)
	if task.State != orchestrator.StateReview {
		b, _ := os.ReadFile(filepath.Join(w.dir, "serve.log"))
		t.Fatalf("state %s error %q\n%s", task.State, task.Error, b)
	}
	prs := w.gh.PullRequests(rtOwner, rtName)
	if len(prs) != 1 || prs[0].GetHTMLURL() != task.PRURL || prs[0].GetHead().GetSHA() != task.Commit {
		t.Fatalf("%d pull requests (task pr_url %s)", len(prs), task.PRURL)
	}
	waitFor(t, 20*time.Second, "the final progress comment", func() bool {
		cs := w.progressComments(1)
		return len(cs) == 1 && strings.Contains(cs[0], "ready for review")
	}, func() string { return strings.Join(w.progressComments(1), "\n---\n") })
	waitFor(t, 20*time.Second, "the final Slack message", func() bool {
		ms := w.slack.Messages()
		return len(ms) == 1 && strings.Contains(ms[0].Text, "ready for review")
	}, func() string { return fmt.Sprint(w.slack.Messages()) })
	if r := w.gh.Reactions(); len(r) != 1 {
		t.Fatalf("reactions: %v", r)
	}
	if n := len(s2.tasks(t)); n != 1 {
		t.Fatalf("%d tasks", n)
	}
	if v := w.gh.Violations(); len(v) > 0 {
		t.Fatalf("requests beyond their token's rights:\n%s", strings.Join(v, "\n"))
	}
}
