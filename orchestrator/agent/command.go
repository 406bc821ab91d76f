package agent

import (
	"bytes"
	"fmt"
	"path"
	"strings"
)

// Command runs any argv as an agent. The prompt is given on stdin, in the
// file $NIGHTSHIFT_PROMPT_FILE names (always), and in $NIGHTSHIFT_PROMPT when
// it is at most MaxEnvPrompt bytes; every stdout line becomes a "text" Line
// and the last non-empty line is the summary.
type Command struct {
	argv []string
}

var _ Adapter = (*Command)(nil)

// MaxEnvPrompt is the largest prompt also given in $NIGHTSHIFT_PROMPT
// (32 KiB). The kernel refuses to start a process with any one environment
// string over 128 KiB (MAX_ARG_STRLEN), and every variable adds to the
// total: a larger prompt reaches a command agent only through stdin and
// $NIGHTSHIFT_PROMPT_FILE.
const MaxEnvPrompt = 32 << 10

// PromptFile is where a command agent's prompt is written, relative to the
// agent's HOME; $NIGHTSHIFT_PROMPT_FILE holds its path inside the sandbox.
const PromptFile = ".nightshift/prompt"

// Name returns "command".
func (c *Command) Name() string { return "command" }

// Prepare returns the configured argv with the prompt on stdin, in the file
// $NIGHTSHIFT_PROMPT_FILE (under Request.Home) and, when small, in env.
// NIGHTSHIFT_SESSION_ID carries a follow-up's session id; MCP and gateway
// settings are exported as NIGHTSHIFT_MCP_URL/TOKEN and
// NIGHTSHIFT_GATEWAY_URL/TOKEN when set. With a gateway, the variables the
// Anthropic and OpenAI SDKs read (ANTHROPIC_BASE_URL, ANTHROPIC_API_KEY,
// OPENAI_BASE_URL, OPENAI_API_KEY) point at it with the task token, so
// SDK-based agents work unchanged.
func (c *Command) Prepare(req Request) (Invocation, error) {
	if len(c.argv) == 0 {
		return Invocation{}, ErrNoCommand
	}
	env := map[string]string{"NIGHTSHIFT_PROMPT_FILE": path.Join(req.Home, PromptFile), "NIGHTSHIFT_PROMPT": req.Prompt}
	set := func(k, v string) {
		if v != "" {
			env[k] = v
		}
	}
	set("NIGHTSHIFT_SESSION_ID", req.SessionID)
	set("NIGHTSHIFT_MCP_URL", req.MCPURL)
	set("NIGHTSHIFT_MCP_TOKEN", req.MCPToken)
	set("NIGHTSHIFT_GATEWAY_URL", req.GatewayURL)
	set("NIGHTSHIFT_GATEWAY_TOKEN", req.GatewayToken)
	set("NIGHTSHIFT_MODEL", req.Model)
	if gw := strings.TrimRight(req.GatewayURL, "/"); gw != "" {
		env["ANTHROPIC_BASE_URL"] = gw + GatewayAnthropicPath
		env["ANTHROPIC_API_KEY"] = req.GatewayToken
		env["OPENAI_BASE_URL"] = gw + GatewayOpenAIPath
		env["OPENAI_API_KEY"] = req.GatewayToken
	}
	mergeEnv(env, req.Env)
	if len(req.Prompt) > MaxEnvPrompt {
		// Only after the task's own env is merged, which must not set it
		// either.
		delete(env, "NIGHTSHIFT_PROMPT")
	}
	stdin := req.Prompt
	if stdin != "" && !strings.HasSuffix(stdin, "\n") {
		stdin += "\n"
	}
	files := map[string][]byte{PromptFile: []byte(req.Prompt)}
	return Invocation{Argv: append([]string(nil), c.argv...), Env: env, Stdin: stdin, Files: files}, nil
}

// NewParser returns a parser that emits each stdout line as text.
func (c *Command) NewParser(emit func(Line)) Parser {
	p := &commandParser{emit: emit}
	p.lines.fn = p.line
	return p
}

type commandParser struct {
	emit  func(Line)
	lines lineSplitter
	last  string
}

func (p *commandParser) Write(b []byte) (int, error) { return p.lines.Write(b) }

func (p *commandParser) line(s string) {
	s = strings.TrimRight(s, "\r")
	if strings.TrimSpace(s) != "" {
		p.last = s
	}
	p.emit(Line{Kind: KindText, Text: s})
}

func (p *commandParser) Outcome(exitCode int) Outcome {
	p.lines.Flush()
	o := Outcome{Summary: p.last}
	if exitCode != 0 {
		o.Err = failed("command exited with status %d", exitCode)
	}
	return o
}

// lineSplitter buffers written bytes and calls fn for each complete line
// (without the newline). Lines longer than maxLine are cut.
type lineSplitter struct {
	fn  func(string)
	buf []byte
}

const maxLine = 4 << 20

func (s *lineSplitter) Write(b []byte) (int, error) {
	n := len(b)
	for len(b) > 0 {
		i := bytes.IndexByte(b, '\n')
		if i < 0 {
			s.buf = append(s.buf, b...)
			if len(s.buf) > maxLine {
				s.fn(string(s.buf))
				s.buf = s.buf[:0]
			}
			break
		}
		s.buf = append(s.buf, b[:i]...)
		s.fn(string(s.buf))
		s.buf = s.buf[:0]
		b = b[i+1:]
	}
	return n, nil
}

// Flush emits a trailing partial line.
func (s *lineSplitter) Flush() {
	if len(s.buf) > 0 {
		s.fn(string(s.buf))
		s.buf = s.buf[:0]
	}
}

// String describes the command adapter.
func (c *Command) String() string { return fmt.Sprintf("command %q", c.argv) }
