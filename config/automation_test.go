package config

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// issueExample is the automations block of issue #16, verbatim.
const issueExample = `automations:
  - name: nightly-deps
    schedule: "0 3 * * 1-5"          # cron, or "@every 30m"; timezone key optional
    repo: github.com/acme/api          # or repos: [...] for several
    agent: claude
    prompt: "Upgrade patch-level dependencies and fix what breaks."
    mode: change                       # change | plan | answer
    respond: silent                    # reply | silent
    inbox: true
  - name: triage-bugs
    on: {source: github, kind: issue.labeled}
    where: [{field: "label", op: "eq", value: "bug"}, {field: "repo", op: "glob", value: "acme/*"}]
    prompt: "Reproduce {{.Target.URL}} and propose a fix."
    mode: plan
`

func loadYAML(t *testing.T, y string) (*Config, error) {
	t.Helper()
	p := filepath.Join(t.TempDir(), "nightshift.yaml")
	if err := os.WriteFile(p, []byte(y), 0o600); err != nil {
		t.Fatal(err)
	}
	return Load(p, nil)
}

func TestAutomationsIssueExample(t *testing.T) {
	t.Parallel()
	c, err := loadYAML(t, issueExample)
	if err != nil {
		t.Fatal(err)
	}
	if len(c.Automations) != 2 {
		t.Fatalf("got %d automations", len(c.Automations))
	}
	a, b := c.Automations[0].WithDefaults(), c.Automations[1].WithDefaults()
	if a.Schedule != "0 3 * * 1-5" || a.Respond != "silent" || !a.Inbox || a.Concurrency != 1 || a.PauseAfter != 3 || a.CatchUp != "skip" {
		t.Errorf("nightly-deps = %+v", a)
	}
	if b.On == nil || b.On.Kind != "issue.labeled" || len(b.Where) != 2 || b.Where[1].Value[0] != "acme/*" || b.Mode != "plan" || b.Respond != "reply" {
		t.Errorf("triage-bugs = %+v", b)
	}
}

func TestAutomationErrorsNameTheKey(t *testing.T) {
	t.Parallel()
	base := "automations:\n  - {name: ok, schedule: '@every 1m', repo: r, prompt: p}\n"
	for _, tc := range []struct{ yaml, key string }{
		{base + "  - {name: b, on: {kind: x}, prompt: p, where: [{field: repo, op: equals, value: x}]}", "automations[1].where[0].op"},
		{base + "  - {name: b, on: {kind: x}, prompt: p, where: [{field: repo, op: regex, value: '('}]}", "automations[1].where[0].value"},
		{base + "  - {name: b, on: {kind: x}, prompt: p, where: [{op: eq, value: x}]}", "automations[1].where[0].field"},
		{base + "  - {name: b, on: {kind: x}, prompt: p, where: [{field: repo, op: in, value: []}]}", "automations[1].where[0].value"},
		{base + "  - {name: b, on: {kind: x}, prompt: p, wher: []}", "automations[1].wher"},
		{base + "  - {name: ok, on: {kind: x}, prompt: p}", "automations[1].name"},
		{base + "  - {name: Bad_Name, on: {kind: x}, prompt: p}", "automations[1].name"},
		{base + "  - {name: b, prompt: p}", "automations[1].schedule"},
		{base + "  - {name: b, schedule: '@daily', on: {kind: x}, repo: r, prompt: p}", "automations[1].on"},
		{base + "  - {name: b, schedule: '@daily', prompt: p}", "automations[1].repo"},
		{base + "  - {name: b, on: {kind: x}, prompt: '{{.Target.URL'}", "automations[1].prompt"},
		{base + "  - {name: b, on: {kind: x}, prompt: p, mode: write}", "automations[1].mode"},
		{base + "  - {name: b, on: {kind: x}, prompt: p, respond: loud}", "automations[1].respond"},
		{base + "  - {name: b, schedule: '@daily', repo: r, prompt: p, catch_up: all}", "automations[1].catch_up"},
		{base + "  - {name: b, on: {kind: x}, prompt: p, agent: nobody}", "automations[1].agent"},
		{base + "  - {name: b, on: {kind: x}, prompt: p, allow: {teams: [core]}}", "automations[1].allow.teams[0]"},
		{base + "  - {name: b, on: {kind: x}, prompt: p, secret_scopes: [server]}", "automations[1].secret_scopes[0]"},
		{base + "  - {name: b, on: {kind: x}, prompt: p, budget: {per_day_usd: -1}}", "automations[1].budget"},
	} {
		_, err := loadYAML(t, tc.yaml)
		if err == nil || !strings.Contains(err.Error(), "config: "+tc.key+":") {
			t.Errorf("%s\n  err = %v, want key %s", tc.yaml, err, tc.key)
		}
	}
}
