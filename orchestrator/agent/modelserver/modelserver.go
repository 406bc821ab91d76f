// Package modelserver is a scripted model server for tests. It speaks the
// Anthropic Messages API (streaming SSE and plain JSON) and the OpenAI
// Responses API (streaming SSE and plain JSON) closely enough for the real
// Claude Code and Codex CLIs, and plays a script of turns: assistant text,
// tool calls, and checks on what the CLI sent back (tool results, the resumed
// conversation).
//
// Only "main" requests consume script steps: a request that offers tools to
// the model. Side requests the CLIs make (token counting, title or summary
// generation with a small model, quota probes) are answered with a short
// canned text and recorded, but do not advance the script.
//
// Guarantees: steps are played strictly in order, one per main request, for
// both providers from one queue; a failed check or an exhausted script is
// recorded (see Errors) and answered with a final text turn so the CLI ends
// instead of hanging.
package modelserver

import (
	"encoding/json"
	"fmt"
	"log/slog"
	"net/http"
	"strings"
	"sync"
)

// Step is one scripted assistant turn.
type Step struct {
	// Name labels the step in errors.
	Name string
	// Check, if set, inspects the request that this step answers (e.g. that
	// the tool result of the previous step's call is present). A returned
	// error is recorded and the step is still played.
	Check func(r *Request) error
	// Text is assistant text, sent before any tool calls.
	Text string
	// ToolCalls are tool invocations; when non-empty the turn ends with
	// stop_reason "tool_use" (Anthropic) or function calls (OpenAI).
	ToolCalls []ToolCall
	// ToolCallsFunc, if set, computes the tool calls from the request this
	// step answers (e.g. to use a path the CLI named in its prompt); it
	// replaces ToolCalls.
	ToolCallsFunc func(r *Request) []ToolCall
	// InputTokens and OutputTokens are the usage reported (defaults 100, 20).
	InputTokens, OutputTokens int64
	// Hold, if non-nil, is waited on (or the request's context) before the
	// response is written: a way to keep an agent mid-run.
	Hold <-chan struct{}
}

// ToolCall is one tool invocation by the model.
type ToolCall struct {
	// ID is the call id; "" assigns toolu_N / call_N.
	ID string
	// Name is the tool name (e.g. "Bash", "Write", "mcp__nightshift__get_identity",
	// "exec_command").
	Name string
	// Input is the JSON-encodable arguments.
	Input any
	// Namespace qualifies an OpenAI function in a tool namespace (Codex puts
	// MCP tools in "mcp__<server>").
	Namespace string
	// Custom, when non-empty, makes an OpenAI freeform custom tool call
	// (e.g. apply_patch) with this raw input instead of a function call.
	Custom string
}

// Request is a parsed model request.
type Request struct {
	Provider string // "anthropic" or "openai"
	Path     string
	Header   http.Header
	Body     []byte
	Model    string
	Stream   bool
	// Main reports whether the request offered tools (and so consumed a step).
	Main bool
	// ToolNames are the tools offered (namespaces flattened).
	ToolNames []string
	// ToolResults maps call id to the text content returned for it.
	ToolResults map[string]string
	// ToolErrors holds call ids whose result was marked as an error.
	ToolErrors map[string]bool
	// Texts holds every user/assistant text in the conversation, in order.
	Texts []string
}

// HasText reports whether any conversation text contains s.
func (r *Request) HasText(s string) bool {
	for _, t := range r.Texts {
		if strings.Contains(t, s) {
			return true
		}
	}
	return false
}

// Result returns the tool result for id, or an error naming the id.
func (r *Request) Result(id string) (string, error) {
	s, ok := r.ToolResults[id]
	if !ok {
		ids := make([]string, 0, len(r.ToolResults))
		for k := range r.ToolResults {
			ids = append(ids, k)
		}
		return "", fmt.Errorf("no tool result for %s (have %v)", id, ids)
	}
	return s, nil
}

// Config configures a Server.
type Config struct {
	// Logger receives debug logs; nil discards.
	Logger *slog.Logger
	// SideText answers side requests (default "OK").
	SideText string
}

// Server is an http.Handler playing a script.
type Server struct {
	log  *slog.Logger
	side string

	mu       sync.Mutex
	steps    []Step
	next     int
	calls    int
	requests []*Request
	errs     []error
	played   chan struct{}
}

// New returns a server with no steps.
func New(cfg Config) *Server {
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	if cfg.SideText == "" {
		cfg.SideText = "OK"
	}
	return &Server{log: cfg.Logger, side: cfg.SideText, played: make(chan struct{}, 1024)}
}

// Script appends steps to the queue.
func (s *Server) Script(steps ...Step) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.steps = append(s.steps, steps...)
}

// Requests returns every request received so far.
func (s *Server) Requests() []*Request {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]*Request(nil), s.requests...)
}

// MainRequests returns the requests that consumed steps.
func (s *Server) MainRequests() []*Request {
	var out []*Request
	for _, r := range s.Requests() {
		if r.Main {
			out = append(out, r)
		}
	}
	return out
}

// Remaining returns how many steps are not played yet.
func (s *Server) Remaining() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return len(s.steps) - s.next
}

// Played is signalled (non-blocking, buffered) each time a step starts.
func (s *Server) Played() <-chan struct{} { return s.played }

// Errors returns failed checks, exhausted-script and protocol errors.
func (s *Server) Errors() []error {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]error(nil), s.errs...)
}

func (s *Server) fail(err error) {
	s.mu.Lock()
	s.errs = append(s.errs, err)
	s.mu.Unlock()
	s.log.Info("modelserver error", "err", err)
}

// ServeHTTP routes Anthropic (/v1/messages...) and OpenAI (/responses) calls.
func (s *Server) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	path := r.URL.Path
	switch {
	case r.Method == http.MethodPost && strings.HasSuffix(path, "/messages/count_tokens"):
		s.record(&Request{Provider: "anthropic", Path: path, Header: r.Header})
		writeJSON(w, http.StatusOK, map[string]any{"input_tokens": 42})
	case r.Method == http.MethodPost && strings.HasSuffix(path, "/messages"):
		s.serveAnthropic(w, r)
	case r.Method == http.MethodPost && strings.HasSuffix(path, "/responses"):
		s.serveOpenAI(w, r)
	case r.Method == http.MethodGet && strings.HasSuffix(path, "/models"):
		writeJSON(w, http.StatusOK, map[string]any{"object": "list", "data": []any{}, "models": []any{}})
	default:
		s.fail(fmt.Errorf("unexpected %s %s", r.Method, path))
		http.NotFound(w, r)
	}
}

func (s *Server) record(req *Request) {
	s.mu.Lock()
	s.requests = append(s.requests, req)
	s.mu.Unlock()
}

// take returns the step for a main request and its sequence number.
// answer returns the step that answers req and its number: the next scripted
// step for a main request, a short canned answer (number 0) for a side one.
func (s *Server) answer(req *Request) (Step, int) {
	if req.Main {
		return s.take(req)
	}
	s.record(req)
	return Step{Name: "side", Text: s.side, InputTokens: 10, OutputTokens: 2}, 0
}

func (s *Server) take(req *Request) (Step, int) {
	s.mu.Lock()
	s.requests = append(s.requests, req)
	s.calls++
	n := s.calls
	if s.next >= len(s.steps) {
		s.mu.Unlock()
		s.fail(fmt.Errorf("script exhausted at main request %d (%s %s)", n, req.Provider, req.Path))
		return Step{Name: "exhausted", Text: "Script exhausted; stopping."}, n
	}
	st := s.steps[s.next]
	s.next++
	s.mu.Unlock()
	select {
	case s.played <- struct{}{}:
	default:
	}
	if st.Check != nil {
		if err := st.Check(req); err != nil {
			s.fail(fmt.Errorf("step %d %q: %w", n, st.Name, err))
		}
	}
	if st.ToolCallsFunc != nil {
		st.ToolCalls = st.ToolCallsFunc(req)
	}
	return st, n
}

func writeJSON(w http.ResponseWriter, code int, v any) {
	b, _ := json.Marshal(v)
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(code)
	_, _ = w.Write(b)
}

// sse writes one server-sent event and flushes.
func sse(w http.ResponseWriter, event string, data any) {
	b, _ := json.Marshal(data)
	if event != "" {
		fmt.Fprintf(w, "event: %s\n", event)
	}
	fmt.Fprintf(w, "data: %s\n\n", b)
	if f, ok := w.(http.Flusher); ok {
		f.Flush()
	}
}

func hold(r *http.Request, st Step) bool {
	if st.Hold == nil {
		return true
	}
	select {
	case <-st.Hold:
		return true
	case <-r.Context().Done():
		return false
	}
}

func (st Step) usage() (int64, int64) {
	in, out := st.InputTokens, st.OutputTokens
	if in == 0 {
		in = 100
	}
	if out == 0 {
		out = 20
	}
	return in, out
}

func inputJSON(v any) string {
	if v == nil {
		return "{}"
	}
	if s, ok := v.(string); ok {
		return s
	}
	b, err := json.Marshal(v)
	if err != nil {
		return "{}"
	}
	return string(b)
}

// chunks splits s into about n pieces for delta events.
func chunks(s string, n int) []string {
	if s == "" {
		return nil
	}
	size := max(1, (len(s)+n-1)/n)
	var out []string
	for len(s) > size {
		out = append(out, s[:size])
		s = s[size:]
	}
	return append(out, s)
}
