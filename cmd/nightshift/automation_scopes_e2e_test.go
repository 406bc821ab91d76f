package main

import (
	"path/filepath"
	"testing"
	"time"

	"github.com/nightshift/nightshift/orchestrator"
	"github.com/nightshift/nightshift/orchestrator/automation"
)

// TestAutomationSecretScopesNarrowGrants: an automation's secret_scopes are
// the only vault scopes its runs may be granted. The same agent, whose env
// names a repo-scoped secret, runs under an automation without the limit
// (the secret is granted, the run pushes) and under one limited to the
// agents scope (the secret is not granted: the run fails with agent_env).
func TestAutomationSecretScopesNarrowGrants(t *testing.T) {
	t.Parallel()
	origin := newOrigin(t)
	s := startTestServer(t, processConfig+`
agents:
  envprobe:
    command: ["sh", "-c", "test -n \"$REPO_TOKEN\" && echo granted > GRANTED.txt"]
    env: {REPO_TOKEN: "${vault:REPO_TOKEN}"}
repos:
  - match: "`+origin+`"
automations:
  - name: wide
    schedule: "@every 1000h"
    repo: "`+origin+`"
    agent: envprobe
    prompt: "probe"
  - name: narrow
    schedule: "@every 1000h"
    repo: "`+origin+`"
    agent: envprobe
    prompt: "probe"
    secret_scopes: [agents]
  - name: glob
    schedule: "@every 1000h"
    repo: "`+origin+`"
    agent: envprobe
    prompt: "probe"
    secret_scopes: ["repo:`+filepath.Dir(origin)+`/*"]
  - name: elsewhere
    schedule: "@every 1000h"
    repo: "`+origin+`"
    agent: envprobe
    prompt: "probe"
    secret_scopes: ["repo:github.com/other/*"]
`)
	// Stored under a repository pattern, as vault set --scope repo:<glob> does.
	s.vaultSet(t, "REPO_TOKEN", "repo:"+filepath.Dir(origin)+"/*", "repo-secret-value")
	final := func(name string) orchestrator.Task {
		t.Helper()
		if out, err := s.cli(t, "automations", "run", name); err != nil {
			t.Fatalf("automations run %s: %v %s", name, err, out)
		}
		deadline := time.Now().Add(90 * time.Second)
		for time.Now().Before(deadline) {
			var resp struct{ Runs []automation.Run }
			getJSONTo(t, s.URL+"/api/v1/automations/"+name+"/runs", &resp)
			for _, r := range resp.Runs {
				if r.TaskID == "" {
					continue
				}
				if tk := s.task(t, r.TaskID); tk.State == orchestrator.StateReview || tk.State == orchestrator.StateFailed {
					return tk
				}
			}
			time.Sleep(100 * time.Millisecond)
		}
		t.Fatalf("automation %s: no run ended\n%s", name, s.stderr.String())
		return orchestrator.Task{}
	}
	if tk := final("wide"); tk.State != orchestrator.StateReview {
		t.Fatalf("unlimited automation: %s (%s: %s)", tk.State, tk.Reason, tk.Error)
	}
	for _, name := range []string{"narrow", "elsewhere"} {
		tk := final(name)
		if tk.State != orchestrator.StateFailed || tk.Reason != "agent_env" || len(tk.SecretScopes) != 1 {
			t.Fatalf("automation %s: %s (%s: %s) scopes %v", name, tk.State, tk.Reason, tk.Error, tk.SecretScopes)
		}
	}
	// The secret's own repo: pattern, named as stored, is granted.
	if tk := final("glob"); tk.State != orchestrator.StateReview {
		t.Fatalf("automation limited to the secret's pattern: %s (%s: %s)", tk.State, tk.Reason, tk.Error)
	}
}
