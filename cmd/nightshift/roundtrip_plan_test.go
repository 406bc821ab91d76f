package main

import (
	"fmt"
	"net/http"
	"os/exec"
	"strings"
	"testing"
	"time"

	"github.com/nightshift/nightshift/orchestrator"
)

// rtPlanAgent tries to change the worktree whatever its mode (a plan run
// cannot), then: planning, prints a plan that takes the reviewer's
// feedback (its prompt) into account; changing, writes WORK.md from its
// prompt, which carries the approved plan.
const rtPlanAgent = `if echo tampered >> README.md 2>/dev/null; then echo WROTE; else echo 'could not write'; fi
if [ "$NIGHTSHIFT_MODE" = change ]; then cp "$NIGHTSHIFT_PROMPT_FILE" WORK.md; echo 'Carried out the plan'; exit 0; fi
if grep -q 'mention the tests' "$NIGHTSHIFT_PROMPT_FILE"; then echo 'Plan: add a greeting to README.md and mention the tests.'; else echo 'Plan: add a greeting to README.md.'; fi`

// planYAML is the round trip's config with bubblewrap (a plan run needs
// the worktree mounted read-only), the plan agent, and the README's kind
// of automation: an issue labeled "plan" gets a plan, posted on the issue.
func (w *rtWorld) planYAML(t *testing.T) string {
	t.Helper()
	path := w.agent(t, "")
	y := w.yaml(path)
	for old, new := range map[string]string{
		"sandbox: {driver: process}":                         "sandbox: {driver: bwrap}",
		fmt.Sprintf("script: {command: [\"sh\", %q]}", path): fmt.Sprintf("script: {command: [\"sh\", \"-c\", %q]}", rtPlanAgent),
	} {
		if !strings.Contains(y, old) {
			t.Fatalf("round trip config lacks %q", old)
		}
		y = strings.Replace(y, old, new, 1)
	}
	return y + `
automations:
  - name: plan-on-label
    on: {source: github, kind: issue.labeled}
    where: [{field: label, op: eq, value: plan}]
    agent: script
    prompt: "Add a greeting to the README ({{.Target.URL}})."
    mode: plan
`
}

// planComments returns the bodies of Nightshift's question comments on #1
// that carry a plan.
func (w *rtWorld) planComments() []string {
	var out []string
	for _, c := range w.gh.Comments(rtOwner, rtName, 1) {
		if strings.Contains(c.GetBody(), "<!-- nightshift:question:") && strings.Contains(c.GetBody(), "Proposed plan") {
			out = append(out, c.GetBody())
		}
	}
	return out
}

// planRequested labels issue #1 "plan" and returns the task it starts.
// The automation engine may still be creating its consumer (new events
// only) when the server answers: a label it missed is added again, as a
// person would.
func planRequested(t *testing.T, w *rtWorld, s *testServer) string {
	t.Helper()
	for i := range 5 {
		p := w.fixture(t, "octokit-webhooks/issues.labeled.json")
		p["label"].(map[string]any)["name"] = "plan"
		if code, out := postGitHub(t, s, "issues", fmt.Sprintf("d-plan-%d", i), p); code != http.StatusAccepted {
			t.Fatalf("plan request: %d %v", code, out)
		}
		deadline := time.Now().Add(10 * time.Second)
		for time.Now().Before(deadline) {
			if ts := s.tasks(t); len(ts) > 0 {
				return s.onlyTask(t)
			}
			time.Sleep(50 * time.Millisecond)
		}
	}
	t.Fatalf("no plan task\n%s", s.stderr.String())
	return ""
}

// TestRoundTripPlanApprovedOnGitHub: labeling an issue "plan" starts a
// plan run (an automation replying where it was triggered); the run cannot
// write, and its plan is posted on the issue with how to approve it; the
// task waits in needs_input. A /approve from someone without write access
// is not an answer; a plain comment from a collaborator plans again with
// it; a /approve from a collaborator starts the change run in the same task
// with the approved plan in its prompt, which opens a pull request.
func TestRoundTripPlanApprovedOnGitHub(t *testing.T) {
	requireRoundTrip(t)
	t.Parallel()
	if _, err := exec.LookPath("bwrap"); err != nil {
		t.Skip("bubblewrap not installed (scripts/test installs it)")
	}
	w := newRTWorld(t)
	s := startTestServer(t, w.planYAML(t))
	id := planRequested(t, w, s)
	task := s.waitState(t, id, 90*time.Second, orchestrator.StateNeedsInput, orchestrator.StateFailed, orchestrator.StateReview, orchestrator.StateDone)
	logs, _ := s.cli(t, "tasks", "logs", id)
	if task.State != orchestrator.StateNeedsInput || task.Mode != orchestrator.ModePlan || task.Plan != "Plan: add a greeting to README.md." {
		t.Fatalf("plan task: %s mode %q plan %q (%s %s)\n%s\n%s", task.State, task.Mode, task.Plan, task.Reason, task.Error, logs, s.stderr.String())
	}
	if !strings.Contains(logs, "could not write") || strings.Contains(logs, "WROTE") {
		t.Fatalf("the plan run could write its worktree:\n%s", logs)
	}
	branch := "refs/heads/nightshift/" + id
	if got := w.gh.RevParse(rtOwner, rtName, branch); got != "" {
		t.Fatalf("a plan run pushed its branch (%s)", got)
	}
	waitFor(t, 20*time.Second, "the plan on the issue", func() bool {
		cs := w.planComments()
		return len(cs) == 1 && strings.Contains(cs[0], "Plan: add a greeting to README.md.") && strings.Contains(cs[0], "/approve")
	}, func() string { return fmt.Sprint(w.gh.Comments(rtOwner, rtName, 1)) + "\n" + s.stderr.String() })

	// /approve from someone without write access: not an answer.
	code, out := postGitHub(t, s, "issue_comment", "d-approve-mallory", w.answerComment(t, 880002, "mallory", "NONE", "/approve"))
	if code != http.StatusOK || out["status"] != "ignored" || !strings.Contains(out["reason"], "not an answer") {
		t.Fatalf("unauthorized approval: %d %v", code, out)
	}
	if tk := s.task(t, id); tk.State != orchestrator.StateNeedsInput || tk.Run != 1 || tk.PlanApproved {
		t.Fatalf("after the unauthorized approval: %s run %d approved %v", tk.State, tk.Run, tk.PlanApproved)
	}

	// Feedback from a collaborator: a new plan, posted again.
	if code, out := postGitHub(t, s, "issue_comment", "d-feedback", w.answerComment(t, 880003, rtOwner, "OWNER", "please also mention the tests")); code != http.StatusAccepted {
		t.Fatalf("feedback: %d %v", code, out)
	}
	waitFor(t, 90*time.Second, "the second plan", func() bool {
		tk := s.task(t, id)
		return tk.Run == 2 && tk.State == orchestrator.StateNeedsInput || tk.State == orchestrator.StateFailed
	}, s.stderr.String)
	if tk := s.task(t, id); tk.State != orchestrator.StateNeedsInput || tk.PlanApproved || !strings.Contains(tk.Plan, "mention the tests") {
		t.Fatalf("re-plan: %s approved %v plan %q (%s)", tk.State, tk.PlanApproved, tk.Plan, tk.Error)
	}
	waitFor(t, 20*time.Second, "the second plan on the issue", func() bool {
		for _, c := range w.planComments() {
			if strings.Contains(c, "mention the tests") {
				return true
			}
		}
		return false
	}, func() string { return strings.Join(w.planComments(), "\n---\n") })
	if got := w.gh.RevParse(rtOwner, rtName, branch); got != "" {
		t.Fatalf("a re-plan pushed its branch (%s)", got)
	}

	// The approval: the change run of the same task opens a pull request.
	if code, out := postGitHub(t, s, "issue_comment", "d-approve", w.answerComment(t, 880004, rtOwner, "OWNER", "/approve")); code != http.StatusAccepted {
		t.Fatalf("approval: %d %v", code, out)
	}
	waitFor(t, 90*time.Second, "the change run in review", func() bool {
		tk := s.task(t, id)
		return tk.Run == 3 && (tk.State == orchestrator.StateReview || tk.State == orchestrator.StateFailed)
	}, s.stderr.String)
	task = s.task(t, id)
	if task.State != orchestrator.StateReview || !task.PlanApproved || task.PRURL == "" {
		logs, _ := s.cli(t, "tasks", "logs", id)
		t.Fatalf("approved task: %s approved %v pr %q (%s %s)\n%s", task.State, task.PlanApproved, task.PRURL, task.Reason, task.Error, logs)
	}
	work := w.gh.Git(rtOwner, rtName, "show", "nightshift/"+id+":WORK.md")
	if !strings.Contains(work, "Plan: add a greeting to README.md and mention the tests.") {
		t.Fatalf("the change run did not get the approved plan:\n%s", work)
	}
	if readme := w.gh.Git(rtOwner, rtName, "show", "nightshift/"+id+":README.md"); !strings.Contains(readme, "tampered") {
		t.Fatalf("the change run could not write: README.md = %q", readme)
	}
	var opened bool
	for _, pr := range w.gh.PullRequests(rtOwner, rtName) {
		opened = opened || pr.GetHead().GetRef() == "nightshift/"+id
	}
	if !opened {
		t.Fatalf("no pull request from nightshift/%s", id)
	}
	if n := len(s.tasks(t)); n != 1 {
		t.Fatalf("%d tasks: the feedback and the approval must not start tasks", n)
	}
}

// TestRoundTripPlanApprovedInSlack: the task's Slack message and the plan
// in its thread carry an "Approve plan" button; clicking it (a signed
// block_actions interaction) approves the plan and the change run opens a
// pull request;
// afterwards the message has no such button.
func TestRoundTripPlanApprovedInSlack(t *testing.T) {
	requireRoundTrip(t)
	t.Parallel()
	if _, err := exec.LookPath("bwrap"); err != nil {
		t.Skip("bubblewrap not installed (scripts/test installs it)")
	}
	w := newRTWorld(t)
	s := startTestServer(t, w.planYAML(t))
	id := planRequested(t, w, s)
	if tk := s.waitState(t, id, 90*time.Second, orchestrator.StateNeedsInput, orchestrator.StateFailed); tk.State != orchestrator.StateNeedsInput {
		t.Fatalf("plan task: %s (%s)", tk.State, tk.Error)
	}
	button := `"text":"Approve plan","emoji":false},"action_id":"approve","value":"` + id + `","style":"primary"`
	var parent string
	waitFor(t, 20*time.Second, "the Approve plan button on the task message and on the plan in its thread", func() bool {
		var inThread bool
		parent = ""
		for _, m := range w.slack.Messages() {
			switch {
			case m.ThreadTS == "" && strings.Contains(m.Metadata, id) && strings.Contains(m.Blocks, button):
				parent = m.TS
			case m.ThreadTS != "" && strings.Contains(m.Text, "Proposed plan") && strings.Contains(m.Blocks, button):
				inThread = true
			}
		}
		return parent != "" && inThread
	}, func() string { return fmt.Sprint(w.slack.Messages()) })

	if code, out := postSlackAction(t, s, "approve", id); code != http.StatusOK || out["status"] != "accepted" {
		t.Fatalf("approve: %d %v", code, out)
	}
	waitFor(t, 90*time.Second, "the change run in review", func() bool {
		tk := s.task(t, id)
		return tk.Run == 2 && (tk.State == orchestrator.StateReview || tk.State == orchestrator.StateFailed)
	}, s.stderr.String)
	if tk := s.task(t, id); tk.State != orchestrator.StateReview || !tk.PlanApproved {
		t.Fatalf("approved task: %s approved %v (%s %s)", tk.State, tk.PlanApproved, tk.Reason, tk.Error)
	}
	if work := w.gh.Git(rtOwner, rtName, "show", "nightshift/"+id+":WORK.md"); !strings.Contains(work, "Plan: add a greeting to README.md.") {
		t.Fatalf("the change run did not get the approved plan:\n%s", work)
	}
	waitFor(t, 20*time.Second, "the task message without the button", func() bool {
		for _, m := range w.slack.Messages() {
			if m.TS == parent {
				return strings.Contains(m.Text, "review") && !strings.Contains(m.Blocks, `"action_id":"approve"`)
			}
		}
		return false
	}, func() string { return fmt.Sprint(w.slack.Messages()) })
}
