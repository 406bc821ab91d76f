package agent_test

import (
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/nightshift/nightshift/orchestrator/agent"
	"github.com/nightshift/nightshift/orchestrator/agent/modelserver"
	"github.com/nightshift/nightshift/orchestrator/gateway"
)

func TestPrepare(t *testing.T) {
	t.Parallel()
	req := agent.Request{Prompt: "fix the bug", Dir: "/w", Home: "/home/agent", MCPURL: "http://127.0.0.1:7/mcp", MCPToken: "mcp-secret",
		GatewayURL: "http://127.0.0.1:9/", GatewayToken: "gw-secret", Model: "m1", Env: map[string]string{"FOO": "1", "HOME": "/evil"}}
	for _, tc := range []struct {
		kind     string
		wantArgv string
		wantEnv  map[string]string
	}{
		{"claude", "claude -p --output-format stream-json --verbose --permission-mode bypassPermissions --mcp-config /home/agent/.nightshift/claude-mcp.json --strict-mcp-config --model m1",
			map[string]string{"ANTHROPIC_BASE_URL": "http://127.0.0.1:9/anthropic", "ANTHROPIC_API_KEY": "gw-secret", "HOME": "/home/agent", "FOO": "1",
				"DISABLE_TELEMETRY": "1", "DISABLE_AUTOUPDATER": "1", "CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC": "1", "IS_SANDBOX": "1"}},
		{"codex", "codex exec --json --skip-git-repo-check --dangerously-bypass-approvals-and-sandbox",
			map[string]string{"OPENAI_API_KEY": "gw-secret", "NIGHTSHIFT_MCP_TOKEN": "mcp-secret", "HOME": "/home/agent", "FOO": "1"}},
		{"command", "sh -c true", map[string]string{"NIGHTSHIFT_PROMPT": "fix the bug", "ANTHROPIC_BASE_URL": "http://127.0.0.1:9/anthropic",
			"OPENAI_BASE_URL": "http://127.0.0.1:9/openai", "OPENAI_API_KEY": "gw-secret", "NIGHTSHIFT_MCP_TOKEN": "mcp-secret"}},
	} {
		t.Run(tc.kind, func(t *testing.T) {
			t.Parallel()
			var cmd []string
			if tc.kind == "command" {
				cmd = []string{"sh", "-c", "true"}
			}
			a, err := agent.New(tc.kind, cmd)
			if err != nil {
				t.Fatal(err)
			}
			inv, err := a.Prepare(req)
			if err != nil {
				t.Fatal(err)
			}
			argv := strings.Join(inv.Argv, " ")
			if !strings.HasPrefix(argv, tc.wantArgv) {
				t.Errorf("argv %q\nwant prefix %q", argv, tc.wantArgv)
			}
			for _, secret := range []string{"gw-secret", "mcp-secret"} {
				if strings.Contains(argv, secret) {
					t.Errorf("argv carries %s: %q", secret, argv)
				}
			}
			for k, v := range tc.wantEnv {
				if inv.Env[k] != v {
					t.Errorf("env %s = %q, want %q", k, inv.Env[k], v)
				}
			}
			if !strings.HasPrefix(inv.Stdin, "fix the bug") {
				t.Errorf("stdin %q", inv.Stdin)
			}
			if tc.kind == "codex" {
				for _, kv := range []string{`model_providers.nightshift.base_url="http://127.0.0.1:9/openai"`, `mcp_servers.nightshift.url="http://127.0.0.1:7/mcp"`,
					`mcp_servers.nightshift.bearer_token_env_var="NIGHTSHIFT_MCP_TOKEN"`, `model_provider="nightshift"`, "features.plugins=false", "analytics.enabled=false", `web_search="disabled"`} {
					if !slices.Contains(inv.Argv, kv) {
						t.Errorf("codex argv lacks -c %s", kv)
					}
				}
				if inv.Argv[len(inv.Argv)-1] != "-" {
					t.Errorf("codex prompt is not read from stdin: %q", argv)
				}
			}
			if tc.kind == "claude" {
				var cfg struct {
					MCPServers map[string]struct {
						Type, URL string
						Headers   map[string]string
					} `json:"mcpServers"`
				}
				if err := json.Unmarshal(inv.Files[".nightshift/claude-mcp.json"], &cfg); err != nil {
					t.Fatal(err)
				}
				if s := cfg.MCPServers["nightshift"]; s.Type != "http" || s.URL != req.MCPURL || s.Headers["Authorization"] != "Bearer mcp-secret" {
					t.Errorf("mcp config %+v", cfg)
				}
			}
		})
	}
	// Follow-ups resume the session.
	for kind, want := range map[string]string{"claude": "--resume sess-1", "codex": "codex exec resume --json"} {
		a, _ := agent.New(kind, nil)
		r := req
		r.SessionID = "sess-1"
		inv, err := a.Prepare(r)
		if err != nil || !strings.Contains(strings.Join(inv.Argv, " "), want) {
			t.Errorf("%s resume argv %q, %v", kind, inv.Argv, err)
		}
		if kind == "codex" && inv.Argv[len(inv.Argv)-2] != "sess-1" {
			t.Errorf("codex resume argv %q", inv.Argv)
		}
	}
	// Without a Home, claude gets its MCP config inline; logs hide it.
	a, _ := agent.New("claude", nil)
	r := req
	r.Home = ""
	inv, err := a.Prepare(r)
	if err != nil || len(inv.Files) != 0 || !strings.Contains(strings.Join(inv.Argv, " "), "Bearer mcp-secret") {
		t.Fatalf("inline mcp: %q %v", inv.Argv, err)
	}
	var b strings.Builder
	slog.New(slog.NewTextHandler(&b, nil)).Info("run", "inv", inv, "req", r)
	if strings.Contains(b.String(), "secret") {
		t.Errorf("log leaks a token: %s", b.String())
	}
	if _, err := a.Prepare(agent.Request{}); err == nil {
		t.Error("empty prompt accepted")
	}
}

// TestNoHome runs each CLI with no Home (the sandbox's own fresh HOME) and
// checks the MCP server is still wired: inline for claude, -c for codex.
func TestNoHome(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct{ kind, model string }{{"claude", claudeModel}, {"codex", codexModel}} {
		t.Run(tc.kind, func(t *testing.T) {
			t.Parallel()
			needCLI(t, tc.kind)
			w := newWorld(t)
			call := modelserver.ToolCall{ID: "mcp1", Name: "mcp__nightshift__get_identity"}
			if tc.kind == "codex" {
				call = modelserver.ToolCall{ID: "mcp1", Namespace: "mcp__nightshift", Name: "get_identity"}
			}
			w.ms.Script(modelserver.Step{ToolCalls: []modelserver.ToolCall{call}},
				modelserver.Step{Check: func(r *modelserver.Request) error {
					if out, err := r.Result("mcp1"); err != nil || !strings.Contains(out, "agent-7@") {
						return fmt.Errorf("mcp result %q, %v", out, err)
					}
					return nil
				}, Text: "ok"})
			req, fw := w.request("nohome-"+tc.kind, "who am I?", gateway.Budget{}, gateway.Hooks{})
			req.Home, req.Model = "", tc.model
			a, _ := agent.New(tc.kind, nil)
			ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
			defer cancel()
			r := w.runSandboxed(ctx, a, req, fw)
			w.checkScript()
			if r.outcome.Err != nil {
				t.Fatalf("%v\n%s\n%s", r.outcome.Err, r.log(), r.stderr)
			}
			w.checkCanary(r)
		})
	}
}
