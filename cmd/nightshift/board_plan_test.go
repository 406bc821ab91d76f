package main

import (
	"os/exec"
	"testing"
	"time"

	"github.com/chromedp/chromedp"

	"github.com/nightshift/nightshift/orchestrator"
)

// TestBoardPlanApprovalInBrowser: a plan task waiting for review shows an
// Approve plan button on its page (beside the answer box) and an Approve
// button on its card in Needs input; other cards have none. Clicking the
// card's button posts /approve as the task's message: the change run
// carries the plan out and the card moves to Review, without the button.
func TestBoardPlanApprovalInBrowser(t *testing.T) {
	t.Parallel()
	if _, err := exec.LookPath("bwrap"); err != nil {
		t.Skip("bubblewrap not installed (scripts/test installs it)")
	}
	s := startTestServer(t, `identity: {smtp_listen: "127.0.0.1:0"}`+modeAgent)
	origin := newOrigin(t)
	board := boardURL(t, s)
	ctx := browser(t)

	id := s.dispatch(t, origin, "planner", "document the plan", "--mode", "plan")
	if task := s.waitState(t, id, 90*time.Second, orchestrator.StateNeedsInput, orchestrator.StateFailed); task.State != orchestrator.StateNeedsInput {
		t.Fatalf("plan run: %s (%s)", task.State, task.Error)
	}
	// An answer task in the same board: done, no button.
	other := s.dispatch(t, origin, "planner", "what would you do?", "--mode", "answer")
	s.waitState(t, other, 90*time.Second, orchestrator.StateDone, orchestrator.StateFailed)

	if err := chromedp.Do(ctx, chromedp.Navigate(board+"/tasks/"+id)); err != nil {
		t.Fatal(err)
	}
	waitJS(t, ctx, "the plan and its Approve plan button", `document.body.dataset.ready === "true" &&
		!document.getElementById("question-box").hidden && document.getElementById("question").textContent.includes("Add PLAN.md") &&
		!document.getElementById("approve-box").hidden && !document.getElementById("btn-approve").disabled`)

	if err := chromedp.Do(ctx, chromedp.Navigate(board+"/")); err != nil {
		t.Fatal(err)
	}
	waitJS(t, ctx, "board ready", `document.body.dataset.ready === "true"`)
	waitJS(t, ctx, "the plan card's Approve button", cardIn("needs_input", id)+`.querySelector("button.approve") !== null`)
	waitJS(t, ctx, "no button on the answered card", cardIn("done", other)+` !== null && `+cardIn("done", other)+`.querySelector("button.approve") === null`)
	if err := chromedp.Do(ctx, chromedp.Click(chromedp.CSS(`#col-needs_input li.card[data-task-id="`+id+`"] button.approve`))); err != nil {
		t.Fatal(err)
	}
	task := s.waitRunReview(t, id, 2, 90*time.Second)
	if !task.PlanApproved {
		t.Fatal("the approved task is not approved")
	}
	if got := gitRun(t, origin, "show", "nightshift/"+id+":PLAN.md"); got != "planned" {
		t.Fatalf("PLAN.md = %q (the change run did not get the plan)", got)
	}
	waitJS(t, ctx, "the card in Review without the button", cardIn("review", id)+` !== null && `+cardIn("review", id)+`.querySelector("button.approve") === null`)
}
