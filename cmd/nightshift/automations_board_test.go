package main

import (
	"testing"

	"github.com/chromedp/chromedp"

	"github.com/nightshift/nightshift/ingress/api"
	"github.com/nightshift/nightshift/orchestrator/automation"
)

// TestAutomationBoardPages drives the automations list, an automation's
// page (definition, next fire time, timeline with outcome, the enable
// switch) and the inbox (unread, then marked read) in Chromium, and audits
// each with axe-core.
func TestAutomationBoardPages(t *testing.T) {
	t.Parallel()
	s := startTestServer(t, processConfig+`
agents:
  broken:
    command: ["sh", "-c", "exit 1"]
repos:
  - match: "*"
automations:
  - name: nightly
    schedule: "0 3 * * 1-5"
    timezone: Europe/Paris
    repo: https://example.invalid/acme/api.git
    prompt: "Upgrade dependencies."
    respond: silent
  - name: triage
    on: {source: api, kind: task.requested}
    where: [{field: instruction, op: contains, value: "triage"}]
    agent: broken
    prompt: "Triage {{.Instruction}}"
    inbox: true
`)
	origin := newOrigin(t)
	s.dispatch(t, origin, "broken", "triage <b>this</b>")
	ctx := browser(t)
	axe := axeSource(t)
	audit := func(page string) {
		runAxe(t, axe, page, func(expr string) ([]axeViolation, error) {
			return chromedp.Run(ctx, chromedp.Evaluate[[]axeViolation](expr, chromedp.EvalAwaitPromise))
		})
	}
	nav := func(path string) {
		t.Helper()
		if err := chromedp.Do(ctx, chromedp.Navigate(s.URL+path)); err != nil {
			t.Fatal(err)
		}
		waitJS(t, ctx, path, `document.body.dataset.ready === "true"`)
	}

	nav("/automations")
	waitJS(t, ctx, "rows", `document.querySelectorAll("#automations tbody tr").length === 2`)
	if got := evalJS[string](t, ctx, `NS.trigger({"source":"automation","automation":"triage","target":{}}).label`); got != "Automation triage" {
		t.Errorf("an automation task's trigger reads %q", got)
	}
	if got := evalJS[string](t, ctx, `document.querySelector('tr[data-name="nightly"] td:nth-child(5)').textContent`); got == "—" || got == "" {
		t.Errorf("nightly shows no next fire time: %q", got)
	}
	audit("automations")

	nav("/automations/triage")
	waitJS(t, ctx, "failed run in the timeline", `!!document.querySelector('#runs tr[data-status="failed"]')`)
	if !evalJS[bool](t, ctx, `document.getElementById("definition").textContent.includes('"instruction"') && document.getElementById("enabled").checked`) {
		t.Fatal("the definition or the switch is not shown")
	}
	audit("automation page")
	if err := chromedp.Do(ctx, chromedp.Click(chromedp.CSS("#enabled"))); err != nil {
		t.Fatal(err)
	}
	waitJS(t, ctx, "disabled", `document.getElementById("state").textContent === "disabled"`)
	var v api.AutomationView
	getJSONTo(t, s.URL+"/api/v1/automations/triage", &v)
	if v.Enabled {
		t.Fatal("the switch did not disable the automation")
	}
	if err := chromedp.Do(ctx, chromedp.Click(chromedp.CSS("#enabled"))); err != nil {
		t.Fatal(err)
	}
	waitJS(t, ctx, "enabled", `document.getElementById("state").textContent === "enabled"`)

	nav("/inbox")
	waitJS(t, ctx, "unread run", `document.querySelectorAll("#inbox li.unread").length === 1`)
	if evalJS[bool](t, ctx, `!!document.querySelector("#inbox b")`) {
		t.Fatal("run text rendered as HTML")
	}
	audit("inbox")
	if err := chromedp.Do(ctx, chromedp.Click(chromedp.CSS("#inbox li button"))); err != nil {
		t.Fatal(err)
	}
	waitJS(t, ctx, "read", `document.querySelectorAll("#inbox li.read").length === 1`)
	var inbox struct {
		Runs   []automation.Run
		Unread int
	}
	getJSONTo(t, s.URL+"/api/v1/inbox", &inbox)
	if inbox.Unread != 0 || len(inbox.Runs) != 1 {
		t.Fatalf("inbox after marking read: %+v", inbox)
	}
}
