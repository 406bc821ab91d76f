package main

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"net/http"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/nightshift/nightshift/orchestrator"
)

// secretProbe asks, from inside its task, for every secret by name through
// ravi (MCP get_secret) and records what it got: a refusal's message, or a
// hash of a value, never a value. It prints the env value it was given and
// a server token it "finds" in a git error; both must be redacted.
const secretProbe = `
for n in NO_SUCH_SECRET ANTHROPIC_API_KEY GITHUB_TOKEN ADMIN_TOKEN GITHUB_WEBHOOK_SECRET OTHER_REPO_TOKEN; do
  if out=$(ravi secrets get $n 2>&1); then
    echo "$n served $(printf %s "$out" | sha256sum | cut -c1-64)"
  else
    echo "$n refused: $out"
  fi
done > REFUSED.txt
for n in SHARED_TOKEN REPO_TOKEN; do
  echo "$n $(printf %s "$(ravi secrets get $n)" | sha256sum | cut -c1-64)"
done > GRANTED.txt
echo "GRANTED_ENV $(printf %s "$GRANTED_ENV" | sha256sum | cut -c1-64)" > ENV.txt
echo "REPO_ENV $(printf %s "$REPO_ENV" | sha256sum | cut -c1-64)" >> ENV.txt
echo "env says $GRANTED_ENV"
echo "fatal: could not read from remote: token $LEAKED_IN_OUTPUT rejected"
`

// TestAgentsNeverReadServerSecrets boots the server with its model API key,
// GitHub token, API admin token and webhook secret in the vault's server
// scope (the default of vault set; GITHUB_TOKEN through the old name
// "global"), referenced from nightshift.yaml, and runs an agent that asks
// for each of them from inside its sandbox: every one is refused, exactly
// like a secret that does not exist. Secrets granted with --scope agents and
// --scope repo:<glob> are readable, and ${vault:NAME} / ${ravi:NAME} in
// agents.<name>.env arrive as their values; all of them, and a server
// value printed by the agent, are redacted from the task log. An agent
// whose env names a server secret fails before it runs, with a reason that
// names the secret.
func TestAgentsNeverReadServerSecrets(t *testing.T) {
	t.Parallel()
	driver := "bwrap"
	if _, err := exec.LookPath("bwrap"); err != nil {
		driver = "process" // the scope checks are the server's; the sandbox only carries the call
	}
	dir := t.TempDir()
	data := filepath.Join(dir, "data")
	origin := newOrigin(t)
	id := orchestrator.NewID()
	values := map[string]string{
		"ANTHROPIC_API_KEY":     "sk-ant-server-" + id,
		"GITHUB_TOKEN":          "ghp_server_" + id,
		"ADMIN_TOKEN":           "admin-server-" + id,
		"GITHUB_WEBHOOK_SECRET": "whsec-server-" + id,
		"SHARED_TOKEN":          "shared-agents-" + id,
		"REPO_TOKEN":            "repo-granted-" + id,
		"OTHER_REPO_TOKEN":      "repo-other-" + id,
	}
	for _, s := range []struct{ name, scope string }{
		{"ANTHROPIC_API_KEY", ""}, // the default: server
		{"GITHUB_TOKEN", "global"},
		{"ADMIN_TOKEN", "server"},
		{"GITHUB_WEBHOOK_SECRET", ""},
		{"SHARED_TOKEN", "agents"},
		{"REPO_TOKEN", "repo:" + filepath.Dir(origin) + "/*"},
		{"OTHER_REPO_TOKEN", "repo:github.com/other/*"},
	} {
		args := []string{"nightshift", "vault", "set", s.name, "--data-dir", data}
		if s.scope != "" {
			args = append(args, "--scope", s.scope)
		}
		var out, errb bytes.Buffer
		if err := run(context.Background(), args, baseEnv(t), strings.NewReader(values[s.name]), &out, &errb); err != nil {
			t.Fatalf("vault set %s: %v %s", s.name, err, errb.String())
		}
	}
	admin := values["ADMIN_TOKEN"]
	s := startTestServerIn(t, dir, `
sandbox: {driver: `+driver+`}
identity: {smtp_listen: "127.0.0.1:0"}
api: {tokens: ["${vault:ADMIN_TOKEN}"]}
github:
  webhook_secrets: ["${vault:GITHUB_WEBHOOK_SECRET}"]
  token: ${vault:GITHUB_TOKEN}
  api_url: http://127.0.0.1:1/
models:
  anthropic: {base_url: "http://127.0.0.1:1", api_key: "${vault:ANTHROPIC_API_KEY}"}
agents:
  probe:
    command: ["sh", "-c", `+jsonString(secretProbe)+`]
    env:
      GRANTED_ENV: ${vault:SHARED_TOKEN}
      REPO_ENV: "${ravi:REPO_TOKEN}"
      LEAKED_IN_OUTPUT: "`+values["GITHUB_TOKEN"]+`"
  greedy:
    command: ["sh", "-c", "echo ran > NOTES.md"]
    env:
      KEY: ${vault:ANTHROPIC_API_KEY}
repos:
  - match: "*"
`)
	// The server itself resolved its references: the API answers the
	// admin token and nothing else.
	if code := apiStatus(t, s, "", "/api/v1/tasks"); code != http.StatusUnauthorized {
		t.Fatalf("API without a token: %d", code)
	}
	if code := apiStatus(t, s, admin, "/api/v1/tasks"); code != http.StatusOK {
		t.Fatalf("API with the admin token from the vault: %d", code)
	}

	taskID := authedDispatch(t, s, admin, origin, "probe")
	task := authedWait(t, s, admin, taskID, orchestrator.StateReview, orchestrator.StateFailed)
	logs, _ := s.cli(t, "tasks", "logs", taskID, "--token", admin)
	if task.State != orchestrator.StateReview {
		t.Fatalf("probe task %s: %s\n%s", task.State, task.Error, logs)
	}
	ref := "nightshift/" + taskID
	refused := strings.Split(gitRun(t, origin, "show", ref+":REFUSED.txt"), "\n")
	missing := refused[0]
	if !strings.HasPrefix(missing, "NO_SUCH_SECRET refused: ") || !strings.Contains(missing, "not found") {
		t.Fatalf("a missing secret: %q", missing)
	}
	names := []string{"ANTHROPIC_API_KEY", "GITHUB_TOKEN", "ADMIN_TOKEN", "GITHUB_WEBHOOK_SECRET", "OTHER_REPO_TOKEN"}
	if len(refused) != 1+len(names) {
		t.Fatalf("REFUSED.txt:\n%s", strings.Join(refused, "\n"))
	}
	for i, name := range names {
		if want := strings.ReplaceAll(missing, "NO_SUCH_SECRET", name); refused[i+1] != want {
			t.Errorf("an agent asked for %s: got %q, want the missing-secret answer %q", name, refused[i+1], want)
		}
	}
	hash := func(v string) string { h := sha256.Sum256([]byte(v)); return hex.EncodeToString(h[:]) }
	granted := gitRun(t, origin, "show", ref+":GRANTED.txt")
	for _, name := range []string{"SHARED_TOKEN", "REPO_TOKEN"} {
		if !strings.Contains(granted, name+" "+hash(values[name])) {
			t.Errorf("ravi secrets get %s did not return the granted value:\n%s", name, granted)
		}
	}
	env := gitRun(t, origin, "show", ref+":ENV.txt")
	for k, name := range map[string]string{"GRANTED_ENV": "SHARED_TOKEN", "REPO_ENV": "REPO_TOKEN"} {
		if !strings.Contains(env, k+" "+hash(values[name])) {
			t.Errorf("agents.probe.env.%s did not arrive as the value of %s:\n%s", k, name, env)
		}
	}
	for name, v := range values {
		if strings.Contains(logs, v) {
			t.Errorf("the value of %s reached the task log", name)
		}
	}
	if !strings.Contains(logs, "env says [REDACTED:SHARED_TOKEN]") || !strings.Contains(logs, "token [REDACTED:GITHUB_TOKEN] rejected") {
		t.Errorf("the agent's lines are missing or unredacted (so the redaction check proves nothing):\n%s", logs)
	}

	// A server secret named in an agent's env fails the run before the
	// agent starts, naming the secret and not its value.
	greedy := authedDispatch(t, s, admin, origin, "greedy")
	task = authedWait(t, s, admin, greedy, orchestrator.StateReview, orchestrator.StateFailed)
	if task.State != orchestrator.StateFailed || task.Reason != "agent_env" ||
		!strings.Contains(task.Error, "ANTHROPIC_API_KEY is not granted to this task") || !strings.Contains(task.Error, "agents.greedy.env.KEY") {
		t.Fatalf("greedy task: state %s reason %q error %q", task.State, task.Reason, task.Error)
	}
	if strings.Contains(task.Error, values["ANTHROPIC_API_KEY"]) {
		t.Fatalf("the failure carries the server value: %s", task.Error)
	}
	assertNotPushed(t, origin, greedy, "an agent whose env names a server secret ran and pushed")
}

func jsonString(s string) string {
	b, _ := json.Marshal(s)
	return string(b)
}

func apiStatus(t *testing.T, s *testServer, token, path string) int {
	t.Helper()
	req, _ := http.NewRequest(http.MethodGet, s.URL+path, nil)
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	return resp.StatusCode
}

func authedDispatch(t *testing.T, s *testServer, token, repo, agent string) string {
	t.Helper()
	out, err := s.cli(t, "dispatch", "--repo", repo, "--agent", agent, "--json", "--token", token, "probe the vault")
	if err != nil {
		t.Fatalf("dispatch: %v: %s", err, out)
	}
	var resp struct{ ID string }
	if err := json.Unmarshal([]byte(out), &resp); err != nil || resp.ID == "" {
		t.Fatalf("dispatch output %q: %v", out, err)
	}
	return resp.ID
}

// authedWait polls the task with the API token until it is in one of states.
func authedWait(t *testing.T, s *testServer, token, id string, states ...orchestrator.State) orchestrator.Task {
	t.Helper()
	deadline := time.Now().Add(90 * time.Second)
	var last orchestrator.Task
	for time.Now().Before(deadline) {
		req, _ := http.NewRequest(http.MethodGet, s.URL+"/api/v1/tasks/"+id, nil)
		req.Header.Set("Authorization", "Bearer "+token)
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		last = orchestrator.Task{}
		json.NewDecoder(resp.Body).Decode(&last)
		resp.Body.Close()
		for _, st := range states {
			if last.State == st {
				return last
			}
		}
		time.Sleep(50 * time.Millisecond)
	}
	t.Fatalf("task %s: state %q, want %v (error %q)\n%s", id, last.State, states, last.Error, s.stderr.String())
	return last
}
