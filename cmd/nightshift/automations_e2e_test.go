package main

import (
	"encoding/json"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/nightshift/nightshift/ingress/api"
	"github.com/nightshift/nightshift/orchestrator"
	"github.com/nightshift/nightshift/orchestrator/automation"
	"github.com/nightshift/nightshift/orchestrator/notify/notifytest"
)

// TestAutomationPausesAfterThreeFailures boots nightshift serve with an
// event automation whose agent exits 1: three matched events make three
// failed runs, the automation pauses itself and says why, a fourth event
// starts nothing (the timeline says it was skipped as paused), and
// enabling it resumes it with the count cleared.
func TestAutomationPausesAfterThreeFailures(t *testing.T) {
	t.Parallel()
	chat := notifytest.NewSlack(t, "xoxb-automations")
	s := startTestServer(t, processConfig+`
slack: {bot_token: xoxb-automations, channel: C0AUTO, api_url: "`+chat.URL+`/api/"}
agents:
  broken:
    command: ["sh", "-c", "echo the agent broke >&2; exit 1"]
repos:
  - match: "*"
automations:
  - name: triage
    on: {source: api, kind: task.requested}
    where: [{field: instruction, op: contains, value: "triage"}]
    agent: broken
    prompt: "Automation triage of: {{.Instruction}}"
    respond: silent
    inbox: true
`)
	origin := newOrigin(t)
	runs := func() []automation.Run {
		var resp struct{ Runs []automation.Run }
		getJSONTo(t, s.URL+"/api/v1/automations/triage/runs", &resp)
		return resp.Runs
	}
	waitRuns := func(what string, ok func([]automation.Run) bool) []automation.Run {
		t.Helper()
		deadline := time.Now().Add(90 * time.Second)
		for {
			r := runs()
			if ok(r) {
				return r
			}
			if time.Now().After(deadline) {
				t.Fatalf("timed out waiting for %s; runs: %+v\n%s", what, r, s.stderr.String())
			}
			time.Sleep(100 * time.Millisecond)
		}
	}
	count := func(r []automation.Run, status string) int {
		n := 0
		for _, x := range r {
			if x.Status == status {
				n++
			}
		}
		return n
	}
	// An event the filter does not take starts nothing.
	s.dispatch(t, origin, "broken", "unrelated work")
	for i := 1; i <= 3; i++ {
		s.dispatch(t, origin, "broken", "triage bug "+string(rune('0'+i)))
		waitRuns("failed run", func(r []automation.Run) bool { return count(r, automation.RunFailed) == i })
	}
	var v api.AutomationView
	getJSONTo(t, s.URL+"/api/v1/automations/triage", &v)
	if !v.Paused || v.Failures != 3 || !strings.Contains(v.PausedReason, "3 consecutive failed runs") {
		t.Fatalf("after three failures: %+v", v)
	}
	r := waitRuns("the pause entry", func(r []automation.Run) bool { return count(r, automation.RunPaused) == 1 })
	if !strings.Contains(r[0].Reason, "enable it to resume") {
		t.Errorf("pause entry = %+v", r[0])
	}
	// Slack hears why.
	var notice string
	for deadline := time.Now().Add(15 * time.Second); notice == "" && time.Now().Before(deadline); time.Sleep(50 * time.Millisecond) {
		for _, m := range chat.Messages() {
			if strings.HasPrefix(m.Text, "Automation *triage* paused after 3 consecutive failed runs") {
				notice = m.Text
			}
		}
	}
	if notice == "" || !strings.Contains(notice, "nightshift automations enable triage") {
		t.Errorf("no pause notice in Slack: %+v", chat.Messages())
	}
	out, err := s.cli(t, "automations", "ls")
	if err != nil || !strings.Contains(out, "triage") || !strings.Contains(out, "paused") {
		t.Fatalf("automations ls: %v\n%s", err, out)
	}

	// The fourth event starts nothing, and the timeline says why.
	s.dispatch(t, origin, "broken", "triage bug 4")
	r = waitRuns("the skipped run", func(r []automation.Run) bool { return count(r, automation.RunSkipped) == 1 })
	for _, x := range r {
		if x.Status == automation.RunSkipped && !strings.HasPrefix(x.Reason, "paused: 3 consecutive failed runs") {
			t.Errorf("skipped run reason = %q", x.Reason)
		}
	}
	var list struct{ Tasks []orchestrator.Task }
	getJSONTo(t, s.URL+"/api/v1/tasks?limit=100", &list)
	var byAutomation []orchestrator.Task
	for _, task := range list.Tasks {
		if task.Source == orchestrator.SourceAutomation {
			byAutomation = append(byAutomation, task)
		}
	}
	if len(byAutomation) != 3 || len(list.Tasks) != 8 {
		t.Fatalf("%d tasks (%d from the automation), want 8 (5 dispatched, 3 from the automation): the paused automation started work", len(list.Tasks), len(byAutomation))
	}
	// tasks ls --source automation lists exactly the automation's tasks.
	out, err = s.cli(t, "tasks", "ls", "--source", "automation", "--json")
	var listed []orchestrator.Task
	if err != nil || json.Unmarshal([]byte(out), &listed) != nil || len(listed) != 3 {
		t.Fatalf("tasks ls --source automation: %v\n%s", err, out)
	}
	for _, task := range listed {
		if task.Source != orchestrator.SourceAutomation {
			t.Errorf("tasks ls --source automation listed %s from %s", task.ID, task.Source)
		}
	}
	for _, task := range byAutomation {
		if task.State != orchestrator.StateFailed || !strings.HasPrefix(task.Prompt, "Automation triage of: triage bug") {
			t.Errorf("automation task %s: %s %q", task.ID, task.State, task.Prompt)
		}
	}
	// The inbox lists the runs, unread until marked.
	var inbox struct {
		Runs   []automation.Run
		Unread int
	}
	getJSONTo(t, s.URL+"/api/v1/inbox", &inbox)
	if len(inbox.Runs) != 3 || inbox.Unread != 3 {
		t.Fatalf("inbox: %d runs, %d unread", len(inbox.Runs), inbox.Unread)
	}
	resp, err := http.Post(s.URL+"/api/v1/inbox/"+inbox.Runs[0].ID+"/read", "application/json", nil)
	if err != nil || resp.StatusCode != 200 {
		t.Fatalf("mark read: %v %v", err, resp)
	}
	resp.Body.Close()
	getJSONTo(t, s.URL+"/api/v1/inbox", &inbox)
	if inbox.Unread != 2 || !inbox.Runs[0].Read {
		t.Fatalf("after marking one read: %d unread", inbox.Unread)
	}

	// The CLI shows the same, as text and JSON.
	out, err = s.cli(t, "automations", "show", "triage", "--json")
	var shown api.AutomationView
	if err != nil || json.Unmarshal([]byte(out), &shown) != nil || !shown.Paused || shown.Definition.Where[0].Field != "instruction" {
		t.Fatalf("automations show --json: %v\n%s", err, out)
	}
	out, err = s.cli(t, "automations", "runs", "triage")
	if err != nil || strings.Count(out, "failed") < 3 || !strings.Contains(out, "skipped") || !strings.Contains(out, "paused: 3 consecutive") {
		t.Fatalf("automations runs: %v\n%s", err, out)
	}
	if out, err := s.cli(t, "automations", "run", "triage"); err == nil || !strings.Contains(err.Error(), "no repository to run on") {
		t.Fatalf("a manual run of an automation without a repo: %v\n%s", err, out)
	}

	// Resuming clears the count.
	if out, err := s.cli(t, "automations", "enable", "triage"); err != nil || !strings.Contains(out, "enabled") {
		t.Fatalf("enable: %v: %s", err, out)
	}
	getJSONTo(t, s.URL+"/api/v1/automations/triage", &v)
	if v.Paused || v.Failures != 0 {
		t.Fatalf("after enable: %+v", v)
	}
}

func getJSONTo(t *testing.T, url string, v any) {
	t.Helper()
	resp, err := http.Get(url)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != 200 {
		t.Fatalf("GET %s: %s", url, resp.Status)
	}
	if err := json.NewDecoder(resp.Body).Decode(v); err != nil {
		t.Fatalf("GET %s: %v", url, err)
	}
}
