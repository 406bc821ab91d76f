// Package agent adapts coding-agent CLIs (Claude Code, Codex, any command) to
// the orchestrator's worker. An Adapter turns a Request (prompt, worktree,
// MCP endpoint, model gateway) into an Invocation (argv, environment, stdin
// and files for the sandbox's private HOME) and parses the agent's streamed
// stdout into task log lines and a final Outcome (session id, usage, summary,
// failure).
//
// Guarantees:
//   - Adapters never see real model API keys: the only credential they place
//     in an Invocation is the per-task gateway token from the Request.
//   - A Parser is fed the agent's stdout in arbitrary chunks; it emits one Line
//     per complete event in the order the agent wrote them and never blocks.
//   - Outcome is deterministic given the stream and the exit code: a non-zero
//     exit or an error result reported by the agent sets Outcome.Err.
//
// The package does not run processes; the orchestrator runs the Invocation in
// a sandbox and streams stdout into the Parser. It does not import the root
// orchestrator package.
//
// Follow-ups: Claude Code and Codex keep their conversations under $HOME
// (~/.claude, ~/.codex), so a run with Request.SessionID must see the same
// HOME as the run that produced it: keep a per-task home directory and mount
// it as the sandbox HOME for every run of the task.
//
// SetupCommands finds a repo's setup steps (nightshift.yaml, .nightshift/setup.sh,
// Cursor's and 1Code's worktree setup files).
package agent

import (
	"errors"
	"fmt"
	"io"
	"log/slog"
	"strings"
)

// Kinds of Line emitted by parsers.
const (
	KindText       = "text"
	KindToolCall   = "tool_call"
	KindToolResult = "tool_result"
	KindError      = "error"
	KindSystem     = "system"
)

// Sentinel errors.
var (
	// ErrUnknownKind is returned by New for an agent kind it does not know.
	ErrUnknownKind = errors.New("agent: unknown agent kind")
	// ErrNoCommand is returned when a command agent has an empty argv.
	ErrNoCommand = errors.New("agent: command agent needs a command")
	// ErrNoPrompt is returned by Prepare when the request has no prompt.
	ErrNoPrompt = errors.New("agent: empty prompt")
	// ErrAgentFailed wraps failures the agent reported (non-zero exit, error result).
	ErrAgentFailed = errors.New("agent: agent failed")
)

// Request is what the worker asks an agent to do, with every path and URL as
// seen from inside the sandbox.
type Request struct {
	// Prompt is the instruction (or the follow-up message when SessionID is set).
	Prompt string
	// SessionID, when non-empty, resumes that conversation (a follow-up).
	SessionID string
	// Dir is the working directory (the worktree).
	Dir string
	// Home is the private HOME inside the sandbox; Invocation.Files go there.
	Home string
	// MCPURL and MCPToken are the task's MCP endpoint and bearer token.
	MCPURL, MCPToken string
	// GatewayURL and GatewayToken address the model gateway ("" = none).
	GatewayURL, GatewayToken string
	// Model selects the model; "" means the CLI's default.
	Model string
	// Env is extra environment the task is given.
	Env map[string]string
	// ReadOnly asks the agent to look and not change anything (a plan or
	// an answer): Claude Code runs in its plan permission mode, Codex in
	// its read-only sandbox. The worktree is mounted read-only as well.
	ReadOnly bool
}

// LogValue keeps tokens out of logs.
func (r Request) LogValue() slog.Value {
	return slog.GroupValue(
		slog.String("dir", r.Dir),
		slog.String("session_id", r.SessionID),
		slog.String("model", r.Model),
		slog.String("mcp_url", r.MCPURL),
		slog.String("gateway_url", r.GatewayURL),
	)
}

// Invocation is how to run the agent: argv, environment, stdin and files to
// write under the sandbox HOME before starting.
type Invocation struct {
	Argv  []string
	Env   map[string]string
	Stdin string
	// Files maps a path relative to Request.Home to its content.
	Files map[string][]byte
}

// LogValue keeps environment values, file contents and inline configs
// (tokens) out of logs.
func (inv Invocation) LogValue() slog.Value {
	argv := make([]string, len(inv.Argv))
	for i, a := range inv.Argv {
		if strings.HasPrefix(a, "{") {
			a = "REDACTED"
		}
		argv[i] = a
	}
	return slog.GroupValue(slog.Any("argv", argv), slog.Int("env", len(inv.Env)), slog.Int("files", len(inv.Files)))
}

// Usage is model usage as reported by the agent.
type Usage struct {
	InputTokens  int64   `json:"input_tokens"`
	OutputTokens int64   `json:"output_tokens"`
	CostUSD      float64 `json:"cost_usd"`
}

// Line is one task log line derived from the agent's output.
type Line struct {
	Kind string `json:"kind"` // text|tool_call|tool_result|error|system
	Text string `json:"text"`
}

// Outcome summarizes a finished run.
type Outcome struct {
	// SessionID resumes the conversation in a follow-up ("" if unknown).
	SessionID string
	Usage     Usage
	// Summary is the final assistant text.
	Summary string
	// Plan is the plan the agent proposed (Claude Code's ExitPlanMode),
	// when it did.
	Plan string
	// Err is non-nil when the agent reported failure; it wraps ErrAgentFailed.
	Err error
	// Question is set when the agent ended its turn asking the user
	// something (Claude Code's AskUserQuestion tool): the task waits for
	// an answer instead of publishing.
	Question string
}

// Adapter prepares invocations of one kind of agent and parses its output.
type Adapter interface {
	// Name is the adapter kind: "claude", "codex" or "command".
	Name() string
	// Prepare builds the invocation for req.
	Prepare(req Request) (Invocation, error)
	// NewParser returns a parser for one run's stdout; emit is called
	// synchronously from Write for every line.
	NewParser(emit func(Line)) Parser
}

// Parser consumes an agent's stdout and yields the outcome.
type Parser interface {
	io.Writer
	// Outcome flushes any buffered partial line and returns the result of the
	// run given the process exit code.
	Outcome(exitCode int) Outcome
}

// New returns the adapter for kind. command overrides the binary (and any
// fixed argv prefix); for kind "command" it is the whole argv and required.
// Any kind other than "claude" and "codex" is treated as a command agent.
func New(kind string, command []string) (Adapter, error) {
	switch kind {
	case "claude":
		return newClaude(command), nil
	case "codex":
		return newCodex(command), nil
	case "command", "":
		if len(command) == 0 {
			return nil, ErrNoCommand
		}
		return &Command{argv: append([]string(nil), command...)}, nil
	default:
		if len(command) == 0 {
			return nil, fmt.Errorf("%w: %q (and no command)", ErrUnknownKind, kind)
		}
		return &Command{argv: append([]string(nil), command...)}, nil
	}
}

// failed builds the Outcome.Err for a failure message.
func failed(format string, args ...any) error {
	return fmt.Errorf("%w: %s", ErrAgentFailed, fmt.Sprintf(format, args...))
}

// mergeEnv copies extra into env without overriding keys already set by the
// adapter (the gateway and MCP settings win over task env).
func mergeEnv(env, extra map[string]string) {
	for k, v := range extra {
		if _, ok := env[k]; !ok {
			env[k] = v
		}
	}
}
