package main

import (
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/nightshift/nightshift/orchestrator"
	"github.com/nightshift/nightshift/orchestrator/agent/modelserver"
)

// probeAgent probes, from inside its sandbox, what the task's service ports
// reach, writes the answers to PROBES.txt in the worktree, keeps a copy of
// its MCP token in $HOME (outside the change) and prints its gateway token.
// The prompt is another task's valid MCP token.
const probeAgent = `
code() { curl -s -o /dev/null -w '%{http_code}' --max-time 20 --path-as-is "$@"; }
mcp="${NIGHTSHIFT_MCP_URL%/mcp}"
{
for base in "$mcp" "$NIGHTSHIFT_GATEWAY_URL"; do
  for p in /api/v1/tasks /metrics /hooks/github / /board /mcp/../api/v1/tasks /anthropic/../api/v1/tasks; do
    echo "probe $p $(code "$base$p")"
  done
done
init='{"jsonrpc":"2.0","id":1,"method":"initialize","params":{"protocolVersion":"2025-03-26","capabilities":{},"clientInfo":{"name":"probe","version":"1"}}}'
mcpcall() { code -X POST -H 'Content-Type: application/json' -H 'Accept: application/json, text/event-stream' -H "Authorization: Bearer $1" -d "$init" "$NIGHTSHIFT_MCP_URL"; }
echo "mcp-own $(mcpcall "$NIGHTSHIFT_MCP_TOKEN")"
echo "mcp-other $(mcpcall "$NIGHTSHIFT_PROMPT")"
echo "gateway-own $(code -X POST -H "X-Api-Key: $ANTHROPIC_API_KEY" -H 'Content-Type: application/json' -d '{"model":"claude-sonnet-4-5"}' "$ANTHROPIC_BASE_URL/v1/messages/count_tokens")"
echo "gateway-delete $(code -X DELETE -H "X-Api-Key: $ANTHROPIC_API_KEY" "$ANTHROPIC_BASE_URL/v1/files/file_1")"
} > PROBES.txt
printf '%s' "$NIGHTSHIFT_MCP_TOKEN" > "$HOME/mcp-token"
echo "gateway token is $NIGHTSHIFT_GATEWAY_TOKEN"
`

// TestSandboxReachesOnlyItsServices: from inside a task, the MCP and gateway
// ports reach only /mcp and the allowed model endpoints, never the API, the
// metrics, the webhooks or the board; /mcp takes the task's own token and
// refuses another task's valid one. After the (successful) run, the MCP
// token the agent kept is dead and the gateway token it printed is
// redacted in the stored log.
func TestSandboxReachesOnlyItsServices(t *testing.T) {
	t.Parallel()
	if _, err := exec.LookPath("curl"); err != nil {
		t.Skip("curl not installed")
	}
	for _, driver := range []string{"bwrap", "process"} {
		t.Run(driver, func(t *testing.T) {
			t.Parallel()
			sandboxCfg := ""
			if driver == "process" {
				sandboxCfg = "sandbox: {driver: process}\n"
			} else if _, err := exec.LookPath("bwrap"); err != nil {
				t.Skip("bubblewrap not installed (scripts/test installs it)")
			}
			ms := modelserver.New(modelserver.Config{})
			up := httptest.NewServer(ms)
			t.Cleanup(up.Close)
			s := startTestServer(t, sandboxCfg+fmt.Sprintf(`
identity: {smtp_listen: "127.0.0.1:0"}
models:
  anthropic: {base_url: %q, api_key: "sk-test-upstream"}
agents:
  probe:
    command: ["sh", "-c", %q]
`, up.URL, probeAgent))
			out, err := s.cli(t, "identity", "new", "--task", "OTHERTASK01", "--json")
			if err != nil {
				t.Fatalf("identity new: %v\n%s", err, out)
			}
			var other struct{ Token string }
			if err := json.Unmarshal([]byte(out), &other); err != nil || !strings.HasPrefix(other.Token, "nsa_") {
				t.Fatalf("identity new --json: %v %s", err, out)
			}
			if status := mcpInitialize(t, s.URL+"/mcp", other.Token); status != http.StatusOK {
				t.Fatalf("the other task's token is not valid (%d): the cross-task check proves nothing", status)
			}
			origin := newOrigin(t)
			id := s.dispatch(t, origin, "probe", other.Token)
			task := s.waitState(t, id, 2*time.Minute, orchestrator.StateReview, orchestrator.StateFailed)
			logs, _ := s.cli(t, "tasks", "logs", id)
			if task.State != orchestrator.StateReview {
				t.Fatalf("task failed: %s\n%s", task.Error, logs)
			}
			probes := gitRun(t, origin, "show", "nightshift/"+id+":PROBES.txt")
			want := map[string]string{"mcp-own": "200", "mcp-other": "401", "gateway-own": "200", "gateway-delete": "404"}
			seen := 0
			for _, line := range strings.Split(probes, "\n") {
				f := strings.Fields(line)
				switch {
				case len(f) == 3 && f[0] == "probe":
					seen++
					if f[2] != "404" && f[2] != "000" {
						t.Errorf("from inside the sandbox %s answered %s, want 404 or refused", f[1], f[2])
					}
				case len(f) == 2 && want[f[0]] != "":
					if f[1] != want[f[0]] {
						t.Errorf("%s: %s, want %s", f[0], f[1], want[f[0]])
					}
					delete(want, f[0])
				}
			}
			if seen != 14 || len(want) != 0 {
				t.Fatalf("probes incomplete (%d port probes, missing %v):\n%s", seen, want, probes)
			}

			// The run is over: the token the agent kept is dead.
			tok, err := os.ReadFile(filepath.Join(s.DataDir, "tasks", id, "home", "mcp-token"))
			if err != nil || !strings.HasPrefix(string(tok), "nsa_") {
				t.Fatalf("the agent's copy of its token: %v %q", err, tok)
			}
			if status := mcpInitialize(t, s.URL+"/mcp", string(tok)); status != http.StatusUnauthorized {
				t.Errorf("a token copied out of a finished run still works: %d", status)
			}
			if !strings.Contains(logs, "gateway token is [REDACTED") || strings.Contains(logs, "nsgw_") {
				t.Errorf("the gateway token is not redacted in the task log:\n%s", logs)
			}
			if strings.Contains(logs, string(tok)) {
				t.Errorf("the MCP token is in the task log")
			}
		})
	}
}

// mcpInitialize posts an MCP initialize request with token and returns the
// status.
func mcpInitialize(t *testing.T, url, token string) int {
	t.Helper()
	body := `{"jsonrpc":"2.0","id":1,"method":"initialize","params":{"protocolVersion":"2025-03-26","capabilities":{},"clientInfo":{"name":"test","version":"1"}}}`
	req, _ := http.NewRequest(http.MethodPost, url, strings.NewReader(body))
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("Accept", "application/json, text/event-stream")
	req.Header.Set("Authorization", "Bearer "+token)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	return resp.StatusCode
}

// TestSoftBudgetLimitLeavesTheWorktreeAlone: crossing the soft budget limit
// while the agent runs changes nothing in its worktree (no checkpoint
// commit under its feet); the agent sees only its own history and its
// uncommitted change after the answer that crossed the limit.
func TestSoftBudgetLimitLeavesTheWorktreeAlone(t *testing.T) {
	t.Parallel()
	if _, err := exec.LookPath("curl"); err != nil {
		t.Skip("curl not installed")
	}
	ms := modelserver.New(modelserver.Config{})
	up := httptest.NewServer(ms)
	t.Cleanup(up.Close)
	// One answer of 850 tokens crosses 80% of the 1000-token budget, not
	// the budget.
	ms.Script(modelserver.Step{Name: "big", Text: "a long answer", InputTokens: 840, OutputTokens: 10})
	agentScript := `
echo draft > NOTES.md
curl -s --max-time 30 -o /dev/null -X POST -H "X-Api-Key: $ANTHROPIC_API_KEY" -H 'Content-Type: application/json' \
  -d '{"model":"claude-sonnet-4-5","max_tokens":100,"tools":[{"name":"Bash","input_schema":{"type":"object"}}],"messages":[{"role":"user","content":"hi"}]}' \
  "$ANTHROPIC_BASE_URL/v1/messages"
git rev-list --count HEAD > COMMITS.txt
git status --porcelain -- NOTES.md > STATUS.txt
`
	s := startTestServer(t, processConfig+fmt.Sprintf(`
models:
  anthropic: {base_url: %q, api_key: "sk-test-upstream"}
agents:
  spender:
    command: ["sh", "-c", %q]
repos:
  - match: "*"
    budget: {tokens: 1000}
`, up.URL, agentScript))
	origin := newOrigin(t)
	id := s.dispatch(t, origin, "spender", "spend")
	task := s.waitState(t, id, 2*time.Minute, orchestrator.StateReview, orchestrator.StateFailed)
	logs, _ := s.cli(t, "tasks", "logs", id)
	if task.State != orchestrator.StateReview {
		t.Fatalf("task failed: %s\n%s", task.Error, logs)
	}
	if !strings.Contains(logs, "tokens used") || task.Usage.InputTokens != 840 {
		t.Fatalf("the soft limit was never crossed (usage %+v): the check below proves nothing\n%s", task.Usage, logs)
	}
	ref := "nightshift/" + id
	if got := gitRun(t, origin, "show", ref+":COMMITS.txt"); got != "1" {
		t.Errorf("the agent saw %s commits after crossing the soft limit, want its base only: the host committed under it\n%s", got, logs)
	}
	if got := gitRun(t, origin, "show", ref+":STATUS.txt"); !strings.Contains(got, "NOTES.md") {
		t.Errorf("the agent's change was no longer uncommitted after the soft limit: status %q", got)
	}
	if n := gitRun(t, origin, "rev-list", "--count", "main.."+ref); n != "1" {
		t.Errorf("%s commits pushed, want the run's one", n)
	}
}

// TestAgentHomeLinksAreNotFollowed: links the agent leaves in its home
// (where the worker writes adapter files before each run) never make the
// worker write outside it. A link at the file is replaced, so the
// follow-up proceeds; a link at its directory fails the follow-up with a
// clear reason; the host files the links point at are untouched.
func TestAgentHomeLinksAreNotFollowed(t *testing.T) {
	t.Parallel()
	canaries := t.TempDir()
	canaryFile := filepath.Join(canaries, "canary.txt")
	canaryDir := filepath.Join(canaries, "dir")
	os.WriteFile(canaryFile, []byte("host file\n"), 0o600)
	os.Mkdir(canaryDir, 0o700)
	// The "claude" adapter writes $HOME/.nightshift/claude-mcp.json before
	// every run; the command stands in for the CLI and prints its result.
	agentScript := `
n=$(cat "$HOME/runs" 2>/dev/null || echo 0); n=$((n+1)); echo $n > "$HOME/runs"
test -f "$HOME/.nightshift/claude-mcp.json" && ! test -L "$HOME/.nightshift/claude-mcp.json" && echo "run $n: adapter file ok"
case $n in
1) ln -sf "$CANARY_FILE" "$HOME/.nightshift/claude-mcp.json" ;;
2) rm -rf "$HOME/.nightshift"; ln -s "$CANARY_DIR" "$HOME/.nightshift" ;;
esac
echo "run $n" >> NOTES.md
echo '{"type":"result","subtype":"success","is_error":false,"result":"done","session_id":"s1"}'
`
	// A claude agent needs a model key to pass the preflight; this one
	// never calls the model.
	s := startTestServer(t, processConfig+fmt.Sprintf(`
models: {anthropic: {api_key: unused}}
agents:
  linker:
    kind: claude
    command: ["sh", "-c", %q]
    env: {CANARY_FILE: %q, CANARY_DIR: %q}
`, agentScript, canaryFile, canaryDir))
	origin := newOrigin(t)
	id := s.dispatch(t, origin, "linker", "plant links")
	s.waitState(t, id, time.Minute, orchestrator.StateReview)

	// Run 2: the file is a link to a host file.
	if out, err := s.cli(t, "tasks", "message", id, "again"); err != nil {
		t.Fatalf("message: %v\n%s", err, out)
	}
	s.waitRunReview(t, id, 2, time.Minute)
	if b, _ := os.ReadFile(canaryFile); string(b) != "host file\n" {
		t.Fatalf("the worker wrote through the agent's link: canary now %q", b)
	}
	logs, _ := s.cli(t, "tasks", "logs", id)
	if !strings.Contains(logs, "run 2: adapter file ok") {
		t.Fatalf("run 2 did not get its adapter file in place of the link:\n%s", logs)
	}

	// Run 3: the file's directory is a link to a host directory.
	if out, err := s.cli(t, "tasks", "message", id, "once more"); err != nil {
		t.Fatalf("message: %v\n%s", err, out)
	}
	deadline := time.Now().Add(time.Minute)
	var task orchestrator.Task
	for task = s.task(t, id); task.Run != 3 || task.State != orchestrator.StateFailed; task = s.task(t, id) {
		if (task.Run == 3 && task.State == orchestrator.StateReview) || time.Now().After(deadline) {
			logs, _ := s.cli(t, "tasks", "logs", id)
			t.Fatalf("run 3: state %s (run %d), want failed\n%s", task.State, task.Run, logs)
		}
		time.Sleep(50 * time.Millisecond)
	}
	if task.Reason != "agent_home" || !strings.Contains(task.Error, "claude-mcp.json") {
		t.Errorf("run 3 failed with reason %q error %q", task.Reason, task.Error)
	}
	entries, _ := os.ReadDir(canaryDir)
	if len(entries) != 0 {
		t.Errorf("the worker wrote into the host directory the agent linked: %v", entries)
	}
	if b, _ := os.ReadFile(canaryFile); string(b) != "host file\n" {
		t.Errorf("canary file now %q", b)
	}
}
