package main

import (
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/nightshift/nightshift/orchestrator"
	"github.com/nightshift/nightshift/orchestrator/automation"
)

// TestAutomationSeesEventsNoBuiltInTriggerTakes boots nightshift serve
// with the README's triage-bugs automation (on github issue.labeled where
// label eq bug) and posts GitHub's real issues labeled payload, signed:
// the bug label starts no built-in work (github.label is nightshift) yet
// the webhook answers 202 and the automation starts exactly one task; a
// redelivery answers duplicate and starts nothing new; another label, and
// the bug label added by a bot, start nothing.
func TestAutomationSeesEventsNoBuiltInTriggerTakes(t *testing.T) {
	t.Parallel()
	w := newRTWorld(t)
	s := startTestServer(t, w.yaml(w.agent(t, ""))+`
automations:
  - name: triage-bugs
    on: {source: github, kind: issue.labeled}
    where: [{field: "label", op: "eq", value: "bug"}, {field: "repo", op: "glob", value: "Codertocat/*"}]
    prompt: "Reproduce {{.Target.URL}} and propose a fix."
    respond: silent
`)
	// Without allow:, only people with write access may trigger it.
	w.gh.SetPermission("Codertocat", "Hello-World", "Codertocat", "write")
	labeled := func(label, sender, senderType string) map[string]any {
		p := w.fixture(t, "octokit-webhooks/issues.labeled.json")
		p["label"].(map[string]any)["name"] = label
		p["sender"].(map[string]any)["login"] = sender
		p["sender"].(map[string]any)["type"] = senderType
		return p
	}
	// Unrelated: another label, and bug by a bot. Ignored as before.
	for i, p := range []map[string]any{labeled("documentation", "Codertocat", "User"), labeled("bug", "renovate[bot]", "Bot")} {
		code, out := postGitHub(t, s, "issues", "d-unrelated-"+string(rune('0'+i)), p)
		if code != http.StatusOK || out["status"] != "ignored" {
			t.Fatalf("unrelated delivery %d: %d %v", i, code, out)
		}
	}
	code, out := postGitHub(t, s, "issues", "d-bug", labeled("bug", "Codertocat", "User"))
	if code != http.StatusAccepted || out["status"] != "accepted" || out["delivery_id"] != "d-bug" {
		t.Fatalf("bug label: %d %v", code, out)
	}
	var runs []automation.Run
	waitFor(t, 60*time.Second, "the automation's run", func() bool {
		var resp struct{ Runs []automation.Run }
		getJSONTo(t, s.URL+"/api/v1/automations/triage-bugs/runs", &resp)
		runs = resp.Runs
		return len(runs) == 1 && runs[0].Status != automation.RunPending
	}, s.stderr.String)
	if runs[0].Trigger != "event" || runs[0].EventKind != "github issue.labeled" || runs[0].Actor != "Codertocat" || runs[0].TaskID == "" {
		t.Fatalf("run = %+v", runs[0])
	}
	var task orchestrator.Task
	waitFor(t, 30*time.Second, "the task", func() bool {
		for _, tk := range s.tasks(t) {
			if tk.ID == runs[0].TaskID {
				task = tk
				return true
			}
		}
		return false
	}, s.stderr.String)
	if task.Source != orchestrator.SourceAutomation || !strings.HasPrefix(task.Prompt, "Reproduce https://github.com/Codertocat/Hello-World/issues/1") {
		t.Fatalf("task = %s %q", task.Source, task.Prompt)
	}

	// GitHub redelivers: stored once, nothing new starts.
	if code, out := postGitHub(t, s, "issues", "d-bug", labeled("bug", "Codertocat", "User")); code != http.StatusOK || out["status"] != "duplicate" {
		t.Fatalf("redelivery: %d %v", code, out)
	}
	time.Sleep(2 * time.Second) // what the redelivery would start, it would start by now
	if ts := s.tasks(t); len(ts) != 1 {
		t.Fatalf("%d tasks, want the automation's one: %+v", len(ts), ts)
	}
	var resp struct{ Runs []automation.Run }
	getJSONTo(t, s.URL+"/api/v1/automations/triage-bugs/runs", &resp)
	if len(resp.Runs) != 1 {
		t.Fatalf("runs after the redelivery and unrelated labels: %+v", resp.Runs)
	}
}
