package agent

import (
	"encoding/json"
	"fmt"
	"strings"
)

// GatewayOpenAIPath is appended to Request.GatewayURL to form the OpenAI base
// URL given to Codex; the gateway routes /openai/... to the OpenAI upstream
// (whose base URL includes /v1).
const GatewayOpenAIPath = "/openai"

// Codex drives the Codex CLI headless:
//
//	codex exec [resume] --json --skip-git-repo-check --dangerously-bypass-approvals-and-sandbox
//	      -c KEY=VALUE... [-m MODEL] [SESSION] -
//
// with the prompt on stdin ("-"). Codex's own sandbox is bypassed because
// ours wraps it, read-only runs included (see Prepare). The -c overrides (the same on resume) select a
// "nightshift" model provider whose base URL is the gateway and whose key
// is read from OPENAI_API_KEY (the gateway token); register the task's MCP
// server as a streamable-HTTP server whose bearer token is read from
// NIGHTSHIFT_MCP_TOKEN; and turn off update checks, analytics, feedback,
// hosted web search and the features that reach out to plugin marketplaces
// and connectors. No
// secret is on the command line. Codex keeps its sessions under
// $HOME/.codex, so a follow-up needs the same HOME.
type Codex struct {
	argv []string
}

var _ Adapter = (*Codex)(nil)

func newCodex(command []string) *Codex {
	if len(command) == 0 {
		command = []string{"codex"}
	}
	return &Codex{argv: append([]string(nil), command...)}
}

// Name returns "codex".
func (c *Codex) Name() string { return "codex" }

// codexDisabledFeatures are features that contact outside services
// (plugin marketplaces on GitHub, ChatGPT connectors, tool suggestions).
var codexDisabledFeatures = []string{
	"plugins", "remote_plugin", "plugin_sharing", "apps", "tool_suggest",
	"skill_mcp_dependency_install", "recommended_plugins", "in_app_updates",
}

// Prepare builds the codex invocation for req.
func (c *Codex) Prepare(req Request) (Invocation, error) {
	if strings.TrimSpace(req.Prompt) == "" {
		return Invocation{}, ErrNoPrompt
	}
	argv := append([]string(nil), c.argv...)
	argv = append(argv, "exec")
	if req.SessionID != "" {
		argv = append(argv, "resume")
	}
	// Codex's own sandbox stays off even for a read-only run (a plan or
	// an answer): on Linux it is bubblewrap, which cannot create its
	// namespaces inside ours ("bwrap: No permissions to create new
	// namespace"), so with sandbox_mode="read-only" every shell command,
	// reads included, fails; its legacy Landlock backend refuses to start
	// without bubblewrap. Ours enforces read-only instead: the worktree is
	// mounted read-only (sandbox.Spec.DirReadOnly) and the prompt says not
	// to change anything.
	argv = append(argv, "--json", "--skip-git-repo-check", "--dangerously-bypass-approvals-and-sandbox")
	for _, kv := range codexConfig(req) {
		argv = append(argv, "-c", kv)
	}
	if req.Model != "" {
		argv = append(argv, "-m", req.Model)
	}
	if req.SessionID != "" {
		argv = append(argv, req.SessionID)
	}
	argv = append(argv, "-")
	env := map[string]string{}
	if req.Home != "" {
		env["HOME"] = req.Home
	}
	if req.GatewayURL != "" {
		env["OPENAI_API_KEY"] = req.GatewayToken
	}
	if req.MCPToken != "" {
		env["NIGHTSHIFT_MCP_TOKEN"] = req.MCPToken
	}
	mergeEnv(env, req.Env)
	return Invocation{Argv: argv, Env: env, Stdin: req.Prompt}, nil
}

// codexConfig returns the -c overrides (KEY=TOML value) for req.
func codexConfig(req Request) []string {
	q := tomlString
	// Codex offers the model OpenAI's hosted web search by default; the
	// gateway refuses provider-side tools, so it is turned off.
	kv := []string{"check_for_update_on_startup=false", "analytics.enabled=false", "feedback.enabled=false", "web_search=" + q("disabled")}
	for _, f := range codexDisabledFeatures {
		kv = append(kv, "features."+f+"=false")
	}
	if req.GatewayURL != "" {
		kv = append(kv,
			"model_provider="+q("nightshift"),
			"model_providers.nightshift.name="+q("nightshift"),
			"model_providers.nightshift.base_url="+q(strings.TrimRight(req.GatewayURL, "/")+GatewayOpenAIPath),
			"model_providers.nightshift.env_key="+q("OPENAI_API_KEY"),
			"model_providers.nightshift.wire_api="+q("responses"),
		)
	}
	if req.MCPURL != "" {
		kv = append(kv, "mcp_servers.nightshift.url="+q(req.MCPURL))
		if req.MCPToken != "" {
			kv = append(kv, "mcp_servers.nightshift.bearer_token_env_var="+q("NIGHTSHIFT_MCP_TOKEN"))
		}
	}
	return kv
}

// NewParser parses `codex exec --json` JSONL events.
func (c *Codex) NewParser(emit func(Line)) Parser {
	p := &codexParser{emit: emit}
	p.lines.fn = p.line
	return p
}

type codexParser struct {
	emit      func(Line)
	lines     lineSplitter
	thread    string
	usage     Usage
	lastText  string
	completed bool
	failed    string
	lastErr   string
}

func (p *codexParser) Write(b []byte) (int, error) { return p.lines.Write(b) }

type codexItem struct {
	ID               string          `json:"id"`
	Type             string          `json:"type"`
	Text             string          `json:"text"`
	Message          string          `json:"message"`
	Command          string          `json:"command"`
	AggregatedOutput string          `json:"aggregated_output"`
	ExitCode         *int            `json:"exit_code"`
	Status           string          `json:"status"`
	Server           string          `json:"server"`
	Tool             string          `json:"tool"`
	Arguments        json.RawMessage `json:"arguments"`
	Result           json.RawMessage `json:"result"`
	Error            json.RawMessage `json:"error"`
	Query            string          `json:"query"`
	Changes          []struct {
		Path string `json:"path"`
		Kind string `json:"kind"`
	} `json:"changes"`
}

type codexEvent struct {
	Type     string     `json:"type"`
	ThreadID string     `json:"thread_id"`
	Item     *codexItem `json:"item"`
	Message  string     `json:"message"`
	Error    *struct {
		Message string `json:"message"`
	} `json:"error"`
	Usage *struct {
		InputTokens       int64 `json:"input_tokens"`
		CachedInputTokens int64 `json:"cached_input_tokens"`
		OutputTokens      int64 `json:"output_tokens"`
	} `json:"usage"`
}

func (p *codexParser) line(s string) {
	s = strings.TrimSpace(s)
	if s == "" {
		return
	}
	var ev codexEvent
	if !strings.HasPrefix(s, "{") || json.Unmarshal([]byte(s), &ev) != nil {
		p.emit(Line{Kind: KindText, Text: s})
		return
	}
	switch ev.Type {
	case "thread.started":
		p.thread = ev.ThreadID
		p.emit(Line{Kind: KindSystem, Text: "codex thread " + ev.ThreadID})
	case "turn.completed":
		p.completed = true
		if ev.Usage != nil {
			// input_tokens already includes the cached part.
			p.usage.InputTokens += ev.Usage.InputTokens
			p.usage.OutputTokens += ev.Usage.OutputTokens
		}
	case "turn.failed":
		msg := "turn failed"
		if ev.Error != nil && ev.Error.Message != "" {
			msg = ev.Error.Message
		}
		p.failed = msg
		if msg != p.lastErr { // codex reports the failure as an error event first
			p.emit(Line{Kind: KindError, Text: "codex: " + msg})
		}
	case "error":
		p.lastErr = ev.Message
		p.emit(Line{Kind: KindError, Text: "codex: " + ev.Message})
	case "item.started":
		if ev.Item != nil {
			p.started(ev.Item)
		}
	case "item.completed":
		if ev.Item != nil {
			p.itemDone(ev.Item)
		}
	}
}

func (p *codexParser) started(it *codexItem) {
	switch it.Type {
	case "command_execution":
		p.emit(Line{Kind: KindToolCall, Text: "shell: " + truncate(it.Command, 1000)})
	case "mcp_tool_call":
		p.emit(Line{Kind: KindToolCall, Text: toolCallText("mcp__"+it.Server+"__"+it.Tool, it.Arguments)})
	case "web_search":
		p.emit(Line{Kind: KindToolCall, Text: "web_search: " + it.Query})
	}
}

func (p *codexParser) itemDone(it *codexItem) {
	switch it.Type {
	case "agent_message":
		if strings.TrimSpace(it.Text) != "" {
			p.lastText = it.Text
			p.emit(Line{Kind: KindText, Text: it.Text})
		}
	case "reasoning":
		if strings.TrimSpace(it.Text) != "" {
			p.emit(Line{Kind: KindSystem, Text: "reasoning: " + truncate(it.Text, 1000)})
		}
	case "command_execution":
		txt := truncate(strings.TrimRight(it.AggregatedOutput, "\n"), maxToolResult)
		if it.ExitCode != nil {
			txt = fmt.Sprintf("exit %d: %s", *it.ExitCode, txt)
		}
		p.emit(Line{Kind: KindToolResult, Text: txt})
	case "file_change":
		var parts []string
		for _, c := range it.Changes {
			parts = append(parts, c.Kind+" "+c.Path)
		}
		p.emit(Line{Kind: KindToolResult, Text: "file change (" + it.Status + "): " + strings.Join(parts, ", ")})
	case "mcp_tool_call":
		if len(it.Error) > 0 && string(it.Error) != "null" {
			p.emit(Line{Kind: KindToolResult, Text: "error: " + truncate(mcpText(it.Error), maxToolResult)})
			return
		}
		p.emit(Line{Kind: KindToolResult, Text: truncate(mcpText(it.Result), maxToolResult)})
	case "error":
		p.emit(Line{Kind: KindError, Text: "codex: " + it.Message})
	}
}

// mcpText flattens an MCP call result ({"content":[{"type":"text","text":...}]})
// or error ({"message":...}) to text.
func mcpText(raw json.RawMessage) string {
	var r struct {
		Content json.RawMessage `json:"content"`
		Message string          `json:"message"`
	}
	if json.Unmarshal(raw, &r) == nil {
		if r.Message != "" {
			return r.Message
		}
		if len(r.Content) > 0 {
			return contentText(r.Content)
		}
	}
	return string(raw)
}

func (p *codexParser) Outcome(exitCode int) Outcome {
	p.lines.Flush()
	o := Outcome{SessionID: p.thread, Usage: p.usage, Summary: p.lastText}
	switch {
	case p.failed != "":
		o.Err = failed("codex reported %s", p.failed)
	case exitCode != 0:
		o.Err = failed("codex exited with status %d", exitCode)
	case !p.completed:
		o.Err = failed("codex ended without completing its turn")
	}
	return o
}

// tomlString quotes s as a TOML basic string.
func tomlString(s string) string {
	var b strings.Builder
	b.WriteByte('"')
	for _, r := range s {
		switch {
		case r == '"' || r == '\\':
			b.WriteByte('\\')
			b.WriteRune(r)
		case r < 0x20 || r == 0x7f:
			fmt.Fprintf(&b, "\\u%04x", r)
		default:
			b.WriteRune(r)
		}
	}
	b.WriteByte('"')
	return b.String()
}
