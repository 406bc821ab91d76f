package main

import (
	"encoding/json"
	"net/http"
	"os/exec"
	"strings"
	"testing"
	"time"

	"github.com/nightshift/nightshift/orchestrator"
)

// TestPreflightFailsFastAndSaysWhy: a run whose agent cannot start, whose
// model key is missing, whose push credentials are missing or whose
// repository host does not answer fails before anything is provisioned,
// with reason preflight and one sentence on the task and in its log; it
// never reaches running.
func TestPreflightFailsFastAndSaysWhy(t *testing.T) {
	t.Parallel()
	if _, err := exec.LookPath("bwrap"); err != nil {
		t.Skip("bubblewrap not installed (scripts/test installs it)")
	}
	s := startTestServer(t, `
identity: {smtp_listen: "127.0.0.1:0"}
agents:
  keyless: {kind: claude, command: ["sh"]}
  ghost: {command: ["no-such-agent-binary", "--go"]}
  ok: {command: ["sh", "-c", "echo more >> NOTES.md"]}
repos:
  - match: "*"
`)
	origin := newOrigin(t)
	for _, tc := range []struct{ repo, agent, want string }{
		{origin, "keyless", `agent "keyless" needs a model API key and models.anthropic.api_key is not set`},
		{origin, "ghost", `agent "ghost" cannot start: "no-such-agent-binary" is not on the sandbox's PATH`},
		{"https://github.com/acme/app.git", "ok", "no push credentials for github.com: set github.token"},
		{"https://127.0.0.1:1/acme/app.git", "ok", "the repository's host 127.0.0.1:1 is not reachable"},
	} {
		out, err := s.cli(t, "dispatch", "--repo", tc.repo, "--agent", tc.agent, "--json", "do it")
		if err != nil {
			t.Fatalf("dispatch: %v: %s", err, out)
		}
		var resp struct{ ID string }
		json.Unmarshal([]byte(out), &resp)
		task := s.waitState(t, resp.ID, 60*time.Second, orchestrator.StateFailed, orchestrator.StateReview)
		if task.State != orchestrator.StateFailed || task.Reason != "preflight" || !strings.Contains(task.Error, tc.want) {
			t.Errorf("%s on %s: state %s reason %q error %q, want preflight: %q", tc.agent, tc.repo, task.State, task.Reason, task.Error, tc.want)
			continue
		}
		logs, _ := s.cli(t, "tasks", "logs", resp.ID)
		if !strings.Contains(logs, "failed: "+tc.want) {
			t.Errorf("%s: the log does not say why:\n%s", tc.agent, logs)
		}
		var trs struct{ Transitions []orchestrator.Transition }
		r, err := http.Get(s.URL + "/api/v1/tasks/" + resp.ID + "/transitions")
		if err != nil {
			t.Fatal(err)
		}
		json.NewDecoder(r.Body).Decode(&trs)
		r.Body.Close()
		for _, tr := range trs.Transitions {
			if tr.To == orchestrator.StateRunning {
				t.Errorf("%s: the task reached running before failing", tc.agent)
			}
		}
	}
	// The same server runs a task that has what it needs.
	id := s.dispatch(t, origin, "ok", "add a note")
	if task := s.waitState(t, id, 60*time.Second, orchestrator.StateReview, orchestrator.StateFailed); task.State != orchestrator.StateReview {
		t.Fatalf("a runnable task failed: %s (%s)", task.Error, task.Reason)
	}
}
