package main

import (
	"os/exec"
	"strings"
	"testing"
	"time"

	"github.com/nightshift/nightshift/orchestrator"
)

// modeAgent tries to change a file whatever its mode (a plan run must not be
// able to), then prints what it would do; a change run carries the plan
// out: it writes the approved plan, which reaches it in the prompt.
const modeAgent = `
agents:
  planner:
    command: ["sh", "-c", "if echo tampered >> README.md 2>/dev/null; then echo WROTE; else echo 'could not write'; fi; if [ \"$NIGHTSHIFT_MODE\" = change ]; then grep -q 'Add PLAN.md' \"$NIGHTSHIFT_PROMPT_FILE\" && echo planned > PLAN.md; else echo 'Plan: Add PLAN.md with one line.'; fi"]
`

// TestPlanModeThenApproval: a plan run cannot write (its attempt to change
// a file fails, nothing is pushed) and rests in needs_input with its plan;
// a reply that is not an approval plans again; /approve starts the change
// run in the same task, with the plan in its prompt, which pushes.
func TestPlanModeThenApproval(t *testing.T) {
	t.Parallel()
	if _, err := exec.LookPath("bwrap"); err != nil {
		t.Skip("bubblewrap not installed (scripts/test installs it)")
	}
	s := startTestServer(t, `identity: {smtp_listen: "127.0.0.1:0"}`+modeAgent)
	origin := newOrigin(t)
	id := s.dispatch(t, origin, "planner", "document the plan", "--mode", "plan")
	task := s.waitState(t, id, 90*time.Second, orchestrator.StateNeedsInput, orchestrator.StateFailed)
	logs, _ := s.cli(t, "tasks", "logs", id)
	if task.State != orchestrator.StateNeedsInput {
		t.Fatalf("plan run: %s (%s)\n%s", task.State, task.Error, logs)
	}
	if task.Mode != orchestrator.ModePlan || !strings.Contains(task.Plan, "Add PLAN.md") || !strings.Contains(task.Question, "/approve") {
		t.Fatalf("plan task: mode %q plan %q question %q", task.Mode, task.Plan, task.Question)
	}
	if !strings.Contains(logs, "could not write") || strings.Contains(logs, "WROTE") {
		t.Fatalf("the plan run could write its worktree:\n%s", logs)
	}
	assertNotPushed(t, origin, id, "a plan run pushed")

	// Feedback that is not an approval: it plans again.
	if out, err := s.cli(t, "tasks", "message", id, "also mention the tests"); err != nil {
		t.Fatalf("message: %v %s", err, out)
	}
	deadline := time.Now().Add(90 * time.Second)
	for task = s.task(t, id); task.Run < 2 || task.State != orchestrator.StateNeedsInput; task = s.task(t, id) {
		if time.Now().After(deadline) || task.State == orchestrator.StateFailed {
			t.Fatalf("re-plan: run %d %s (%s)", task.Run, task.State, task.Error)
		}
		time.Sleep(50 * time.Millisecond)
	}
	if task.PlanApproved {
		t.Fatal("feedback approved the plan")
	}
	assertNotPushed(t, origin, id, "a re-plan pushed")

	// The approval: the change run of the same task.
	if out, err := s.cli(t, "tasks", "message", id, "/approve"); err != nil {
		t.Fatalf("approve: %v %s", err, out)
	}
	task = s.waitRunReview(t, id, 3, 90*time.Second)
	if !task.PlanApproved {
		t.Fatal("the change run's task is not approved")
	}
	ref := "nightshift/" + id
	if got := gitRun(t, origin, "show", ref+":PLAN.md"); got != "planned" {
		t.Fatalf("PLAN.md = %q (the change run did not get the plan)", got)
	}
	if got := gitRun(t, origin, "show", ref+":README.md"); !strings.Contains(got, "tampered") {
		t.Fatalf("the change run could not write: README.md = %q", got)
	}
}

// TestAnswerModeEndsDone: an answer run cannot write and its final message
// ends the task done, nothing pushed.
func TestAnswerModeEndsDone(t *testing.T) {
	t.Parallel()
	if _, err := exec.LookPath("bwrap"); err != nil {
		t.Skip("bubblewrap not installed (scripts/test installs it)")
	}
	s := startTestServer(t, `identity: {smtp_listen: "127.0.0.1:0"}`+modeAgent)
	origin := newOrigin(t)
	id := s.dispatch(t, origin, "planner", "what would you do?", "--mode", "answer")
	task := s.waitState(t, id, 90*time.Second, orchestrator.StateDone, orchestrator.StateFailed)
	if task.State != orchestrator.StateDone || !strings.Contains(task.Answer, "Add PLAN.md") {
		logs, _ := s.cli(t, "tasks", "logs", id)
		t.Fatalf("answer run: %s %q (%s)\n%s", task.State, task.Answer, task.Error, logs)
	}
	assertNotPushed(t, origin, id, "an answer run pushed")
	if out, err := s.cli(t, "dispatch", "--repo", origin, "--mode", "nope", "x"); err == nil {
		t.Fatalf("a bad mode was accepted: %s", out)
	}
}
