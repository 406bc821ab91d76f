package main

import (
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/nightshift/nightshift/orchestrator"
)

// TestRoundTripPreflightFailureIsReported: a comment whose task cannot run
// (its agent's command is not installed) fails at once with reason
// preflight, and the reason reaches the trigger's channels: the progress
// comment on the issue and the Slack message.
func TestRoundTripPreflightFailureIsReported(t *testing.T) {
	requireRoundTrip(t)
	t.Parallel()
	w := newRTWorld(t)
	yaml := w.yaml(w.agent(t, ""))
	broken := strings.Replace(yaml, `script: {command: ["sh",`, `script: {command: ["no-such-agent-binary",`, 1)
	if broken == yaml {
		t.Fatal("the round-trip config no longer has the agent line this test replaces")
	}
	s := startTestServer(t, broken)
	if code, out := postGitHub(t, s, "issue_comment", "d-preflight", w.commentPayload(t, "@nightshift add a greeting")); code != http.StatusAccepted {
		t.Fatalf("delivery: %d %v", code, out)
	}
	id := s.onlyTask(t)
	task := s.waitState(t, id, 60*time.Second, orchestrator.StateFailed, orchestrator.StateReview)
	const why = "is not on the sandbox's PATH"
	if task.State != orchestrator.StateFailed || task.Reason != "preflight" || !strings.Contains(task.Error, why) {
		t.Fatalf("task: %s reason %q error %q", task.State, task.Reason, task.Error)
	}
	waitFor(t, 20*time.Second, "the progress comment with the reason", func() bool {
		cs := w.progressComments(1)
		return len(cs) == 1 && strings.Contains(cs[0], "no-such-agent-binary") && strings.Contains(cs[0], why)
	}, func() string { return strings.Join(w.progressComments(1), "\n---\n") })
	waitFor(t, 20*time.Second, "the Slack message with the reason", func() bool {
		m := w.slack.Messages()
		return len(m) == 1 && strings.Contains(m[0].Blocks, "no-such-agent-binary") && strings.Contains(m[0].Blocks, "is not on the sandbox")
	}, func() string {
		var b strings.Builder
		for _, m := range w.slack.Messages() {
			b.WriteString(m.Text + " " + m.Blocks + "\n")
		}
		return b.String()
	})
}
