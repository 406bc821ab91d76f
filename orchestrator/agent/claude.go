package agent

import (
	"encoding/json"
	"fmt"
	"path"
	"strings"
)

// GatewayAnthropicPath is appended to Request.GatewayURL to form
// ANTHROPIC_BASE_URL; the gateway routes /anthropic/... to the Anthropic upstream.
const GatewayAnthropicPath = "/anthropic"

// claudeMCPFile is where the Claude adapter writes its MCP config, relative to Home.
const claudeMCPFile = ".nightshift/claude-mcp.json"

// Claude drives Claude Code headless:
//
//	claude -p --output-format stream-json --verbose --permission-mode bypassPermissions
//	       [--mcp-config $HOME/.nightshift/claude-mcp.json --strict-mcp-config]
//	       [--model M] [--resume SESSION]
//
// with the prompt on stdin. The MCP config file is an Invocation file
// (written under Home by the caller); without a Home it is passed inline.
// Claude Code keeps its sessions under $HOME/.claude, so a follow-up
// (--resume) needs the same HOME as the first run. bypassPermissions is refused for root unless
// IS_SANDBOX=1, which the adapter sets: the agent always runs inside our
// sandbox. Telemetry, error reporting and auto-update are disabled through
// their environment variables so the CLI only talks to the model gateway
// and the task's MCP server.
//
// A read-only run (Request.ReadOnly: a plan or an answer) uses
// --permission-mode plan instead: Claude Code refuses Write, Edit and any
// Bash command that would change a file, except the plan file it has the
// model keep under $HOME/.claude/plans. Headless it also refuses
// ExitPlanMode ("disabled for this session"), so the parser takes the plan
// from that file's writes (Outcome.Plan), or from a plan passed to
// ExitPlanMode anyway; the worktree is mounted read-only besides.
type Claude struct {
	argv []string
}

var _ Adapter = (*Claude)(nil)

func newClaude(command []string) *Claude {
	if len(command) == 0 {
		command = []string{"claude"}
	}
	return &Claude{argv: append([]string(nil), command...)}
}

// Name returns "claude".
func (c *Claude) Name() string { return "claude" }

// Prepare builds the claude invocation for req.
func (c *Claude) Prepare(req Request) (Invocation, error) {
	if strings.TrimSpace(req.Prompt) == "" {
		return Invocation{}, ErrNoPrompt
	}
	argv := append([]string(nil), c.argv...)
	mode := "bypassPermissions"
	if req.ReadOnly {
		mode = "plan" // Claude Code looks and proposes; it edits nothing
	}
	argv = append(argv, "-p", "--output-format", "stream-json", "--verbose",
		"--permission-mode", mode)
	inv := Invocation{Env: map[string]string{
		"IS_SANDBOX":                               "1",
		"DISABLE_AUTOUPDATER":                      "1",
		"DISABLE_TELEMETRY":                        "1",
		"DISABLE_ERROR_REPORTING":                  "1",
		"DISABLE_BUG_COMMAND":                      "1",
		"CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC": "1",
		"CLAUDE_CODE_DISABLE_FEEDBACK_SURVEY":      "1",
		// MCP tools are called directly, not discovered through ToolSearch.
		"ENABLE_TOOL_SEARCH": "false",
	}, Stdin: req.Prompt}
	if req.Home != "" {
		inv.Env["HOME"] = req.Home
	}
	if req.GatewayURL != "" {
		inv.Env["ANTHROPIC_BASE_URL"] = strings.TrimRight(req.GatewayURL, "/") + GatewayAnthropicPath
		inv.Env["ANTHROPIC_API_KEY"] = req.GatewayToken
	}
	if req.MCPURL != "" {
		cfg, err := claudeMCPConfig(req.MCPURL, req.MCPToken)
		if err != nil {
			return Invocation{}, err
		}
		if req.Home != "" {
			inv.Files = map[string][]byte{claudeMCPFile: cfg}
			argv = append(argv, "--mcp-config", path.Join(req.Home, claudeMCPFile), "--strict-mcp-config")
		} else {
			// No HOME to write into: pass the config inline (Invocation's
			// LogValue hides it).
			argv = append(argv, "--mcp-config", string(cfg), "--strict-mcp-config")
		}
	}
	if req.Model != "" {
		argv = append(argv, "--model", req.Model)
	}
	if req.SessionID != "" {
		argv = append(argv, "--resume", req.SessionID)
	}
	inv.Argv = argv
	mergeEnv(inv.Env, req.Env)
	return inv, nil
}

// claudeMCPConfig renders the --mcp-config file: one streamable-HTTP server
// named "nightshift" with the task's bearer token.
func claudeMCPConfig(url, token string) ([]byte, error) {
	srv := map[string]any{"type": "http", "url": url}
	if token != "" {
		srv["headers"] = map[string]string{"Authorization": "Bearer " + token}
	}
	b, err := json.Marshal(map[string]any{"mcpServers": map[string]any{"nightshift": srv}})
	if err != nil {
		return nil, fmt.Errorf("agent: render claude mcp config: %w", err)
	}
	return b, nil
}

// NewParser parses claude's stream-json output.
func (c *Claude) NewParser(emit func(Line)) Parser {
	p := &claudeParser{emit: emit}
	p.lines.fn = p.line
	return p
}

type claudeParser struct {
	plan      string // the plan of an ExitPlanMode call
	emit      func(Line)
	lines     lineSplitter
	session   string
	usage     Usage
	summary   string
	lastText  string
	gotResult bool
	isError   bool
	errMsg    string
	lastErr   string // text of the last synthetic (API error) message
	// question is what the agent's last AskUserQuestion call asked, unless
	// it went on working after it.
	question string
}

func (p *claudeParser) Write(b []byte) (int, error) { return p.lines.Write(b) }

type claudeBlock struct {
	Type      string          `json:"type"`
	Text      string          `json:"text"`
	Name      string          `json:"name"`
	ID        string          `json:"id"`
	Input     json.RawMessage `json:"input"`
	ToolUseID string          `json:"tool_use_id"`
	Content   json.RawMessage `json:"content"`
	IsError   bool            `json:"is_error"`
}

type claudeEvent struct {
	Type       string `json:"type"`
	Subtype    string `json:"subtype"`
	SessionID  string `json:"session_id"`
	Model      string `json:"model"`
	MCPServers []struct {
		Name   string `json:"name"`
		Status string `json:"status"`
	} `json:"mcp_servers"`
	// Message is the message of an assistant or user event; a system
	// event (permission_denied) has a string here instead.
	Message json.RawMessage `json:"message"`
	// ToolUseResult is the structured result of the tool a user event
	// answers (for Write and Edit: the file and its new content).
	ToolUseResult   json.RawMessage `json:"tool_use_result"`
	TerminalReason  string          `json:"terminal_reason"`
	ParentToolUseID *string         `json:"parent_tool_use_id"`
	// result
	IsError      bool     `json:"is_error"`
	Result       string   `json:"result"`
	TotalCostUSD float64  `json:"total_cost_usd"`
	Errors       []string `json:"errors"`
	Usage        *struct {
		InputTokens              int64 `json:"input_tokens"`
		CacheCreationInputTokens int64 `json:"cache_creation_input_tokens"`
		CacheReadInputTokens     int64 `json:"cache_read_input_tokens"`
		OutputTokens             int64 `json:"output_tokens"`
	} `json:"usage"`
}

func (p *claudeParser) line(s string) {
	s = strings.TrimSpace(s)
	if s == "" {
		return
	}
	var ev claudeEvent
	if !strings.HasPrefix(s, "{") || json.Unmarshal([]byte(s), &ev) != nil {
		p.emit(Line{Kind: KindText, Text: s})
		return
	}
	msg := ev.message()
	if ev.SessionID != "" {
		p.session = ev.SessionID
	}
	switch ev.Type {
	case "system":
		if ev.Subtype != "init" {
			return
		}
		var mcp []string
		for _, m := range ev.MCPServers {
			mcp = append(mcp, m.Name+": "+m.Status)
			if m.Status != "connected" {
				p.emit(Line{Kind: KindError, Text: fmt.Sprintf("mcp server %s: %s", m.Name, m.Status)})
			}
		}
		txt := fmt.Sprintf("claude session %s model %s", ev.SessionID, ev.Model)
		if len(mcp) > 0 {
			txt += " mcp [" + strings.Join(mcp, ", ") + "]"
		}
		p.emit(Line{Kind: KindSystem, Text: txt})
	case "assistant":
		// Claude Code reports API failures as a synthetic assistant message.
		synthetic := msg != nil && msg.Model == "<synthetic>"
		for _, b := range msg.blocks() {
			switch b.Type {
			case "text":
				if strings.TrimSpace(b.Text) == "" {
					continue
				}
				if synthetic {
					p.lastErr = b.Text
					p.emit(Line{Kind: KindError, Text: b.Text})
					continue
				}
				if ev.ParentToolUseID == nil {
					p.lastText = b.Text
				}
				p.emit(Line{Kind: KindText, Text: b.Text})
			case "tool_use":
				p.emit(Line{Kind: KindToolCall, Text: toolCallText(b.Name, b.Input)})
				if ev.ParentToolUseID == nil {
					// Headless Claude Code cannot ask the user: the
					// question becomes the task's (needs_input), unless
					// the agent goes on with other tools.
					p.question = ""
					if b.Name == "AskUserQuestion" {
						p.question = askUserQuestionText(b.Input)
					}
					if b.Name == "ExitPlanMode" {
						// Headless, Claude Code refuses the call ("disabled
						// for this session"), but a plan passed to it is the
						// plan the agent wants reviewed.
						var in struct {
							Plan string `json:"plan"`
						}
						if json.Unmarshal(b.Input, &in) == nil && strings.TrimSpace(in.Plan) != "" {
							p.plan = in.Plan
						}
					}
				}
			}
		}
	case "user":
		for _, b := range msg.blocks() {
			if b.Type != "tool_result" {
				continue
			}
			if !b.IsError && ev.ParentToolUseID == nil {
				if plan, ok := planFileContent(ev.ToolUseResult); ok {
					p.plan = plan
				}
			}
			txt := truncate(contentText(b.Content), maxToolResult)
			if b.IsError {
				txt = "error: " + txt
			}
			p.emit(Line{Kind: KindToolResult, Text: txt})
		}
	case "result":
		p.gotResult = true
		p.isError = ev.IsError || (ev.Subtype != "" && ev.Subtype != "success")
		if !p.isError {
			p.summary = ev.Result
		}
		if ev.Usage != nil {
			p.usage = Usage{
				InputTokens:  ev.Usage.InputTokens + ev.Usage.CacheCreationInputTokens + ev.Usage.CacheReadInputTokens,
				OutputTokens: ev.Usage.OutputTokens,
				CostUSD:      ev.TotalCostUSD,
			}
		}
		if p.isError {
			switch {
			case ev.TerminalReason != "" && ev.TerminalReason != "completed":
				p.errMsg = ev.TerminalReason
			case ev.Subtype != "" && ev.Subtype != "success":
				p.errMsg = ev.Subtype
			default:
				p.errMsg = "error"
			}
			detail := ev.Result
			if len(ev.Errors) > 0 {
				detail = strings.Join(ev.Errors, "; ")
			}
			if detail != "" && detail != p.lastErr {
				p.emit(Line{Kind: KindError, Text: "claude: " + p.errMsg + ": " + truncate(detail, 500)})
			} else {
				p.emit(Line{Kind: KindError, Text: "claude: run failed (" + p.errMsg + ")"})
			}
			if detail != "" {
				p.errMsg += ": " + truncate(detail, 500)
			}
		}
	}
}

type claudeMessage struct {
	Model   string          `json:"model"`
	Content json.RawMessage `json:"content"`
}

// message returns the event's message, or nil when it has none (or a
// system event's string).
func (ev *claudeEvent) message() *claudeMessage {
	if !strings.HasPrefix(strings.TrimSpace(string(ev.Message)), "{") {
		return nil
	}
	var m claudeMessage
	if json.Unmarshal(ev.Message, &m) != nil {
		return nil
	}
	return &m
}

func (m *claudeMessage) blocks() []claudeBlock {
	if m == nil {
		return nil
	}
	var bs []claudeBlock
	if json.Unmarshal(m.Content, &bs) != nil {
		var s string
		if json.Unmarshal(m.Content, &s) == nil {
			return []claudeBlock{{Type: "text", Text: s}}
		}
	}
	return bs
}

// planFileContent returns the content of Claude Code's plan file after a
// Write or Edit to it succeeded, from the tool's structured result. In its
// plan permission mode Claude Code has the model keep the plan in
// $HOME/.claude/plans/<name>.md, the one file it may write, and then call
// ExitPlanMode, which headless Claude Code refuses; so the plan file is
// where the plan is. A Write's result carries the whole content; an Edit's
// carries the file before the edit and the replacement.
func planFileContent(raw json.RawMessage) (string, bool) {
	if !strings.HasPrefix(strings.TrimSpace(string(raw)), "{") {
		return "", false
	}
	var r struct {
		FilePath     string  `json:"filePath"`
		Content      *string `json:"content"`
		OriginalFile *string `json:"originalFile"`
		OldString    *string `json:"oldString"`
		NewString    *string `json:"newString"`
		ReplaceAll   bool    `json:"replaceAll"`
	}
	if json.Unmarshal(raw, &r) != nil || !strings.Contains(r.FilePath, "/.claude/plans/") || !strings.HasSuffix(r.FilePath, ".md") {
		return "", false
	}
	switch {
	case r.Content != nil:
		return *r.Content, true
	case r.OriginalFile != nil && r.OldString != nil && r.NewString != nil && *r.OldString != "":
		n := 1
		if r.ReplaceAll {
			n = -1
		}
		return strings.Replace(*r.OriginalFile, *r.OldString, *r.NewString, n), true
	}
	return "", false
}

func (p *claudeParser) Outcome(exitCode int) Outcome {
	p.lines.Flush()
	o := Outcome{SessionID: p.session, Usage: p.usage, Summary: p.summary, Plan: p.plan}
	if o.Summary == "" {
		o.Summary = p.lastText
	}
	if !p.isError {
		o.Question = p.question
	}
	switch {
	case p.isError:
		o.Err = failed("claude reported %s", p.errMsg)
	case exitCode != 0:
		o.Err = failed("claude exited with status %d", exitCode)
	case !p.gotResult:
		o.Err = failed("claude ended without a result")
	}
	return o
}

const maxToolResult = 4000

// askUserQuestionText renders the input of Claude Code's AskUserQuestion
// tool ({"questions": [{"question", "options": [{"label",
// "description"}]}]}) as plain text: each question, then its options.
func askUserQuestionText(input json.RawMessage) string {
	var in struct {
		Questions []struct {
			Question string `json:"question"`
			Options  []struct {
				Label       string `json:"label"`
				Description string `json:"description"`
			} `json:"options"`
		} `json:"questions"`
	}
	if json.Unmarshal(input, &in) != nil {
		return ""
	}
	var b strings.Builder
	for _, q := range in.Questions {
		if strings.TrimSpace(q.Question) == "" {
			continue
		}
		if b.Len() > 0 {
			b.WriteString("\n\n")
		}
		b.WriteString(strings.TrimSpace(q.Question))
		for _, o := range q.Options {
			b.WriteString("\n- " + o.Label)
			if o.Description != "" {
				b.WriteString(": " + o.Description)
			}
		}
	}
	return b.String()
}

// toolCallText renders a tool call as "Name: input", showing the command of
// shell tools and the path of file tools.
func toolCallText(name string, input json.RawMessage) string {
	var m map[string]any
	if json.Unmarshal(input, &m) == nil {
		for _, k := range []string{"command", "cmd", "file_path", "path", "pattern", "url"} {
			if v, ok := m[k].(string); ok {
				return name + ": " + truncate(v, 1000)
			}
		}
	}
	return name + ": " + truncate(string(input), 1000)
}

// contentText flattens tool result content (string or text blocks).
func contentText(raw json.RawMessage) string {
	if len(raw) == 0 {
		return ""
	}
	var s string
	if json.Unmarshal(raw, &s) == nil {
		return s
	}
	var bs []claudeBlock
	if json.Unmarshal(raw, &bs) != nil {
		return string(raw)
	}
	var parts []string
	for _, b := range bs {
		if b.Type == "text" {
			parts = append(parts, b.Text)
		} else {
			parts = append(parts, "["+b.Type+"]")
		}
	}
	return strings.Join(parts, "\n")
}

func truncate(s string, n int) string {
	if len(s) <= n {
		return s
	}
	cut := n
	for cut > 0 && cut < len(s) && (s[cut]&0xC0) == 0x80 {
		cut--
	}
	return s[:cut] + fmt.Sprintf("… (%d bytes more)", len(s)-cut)
}
