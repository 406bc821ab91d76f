// Package mcpserver exposes a task's identity to its agent over MCP: the
// streamable HTTP handler the server mounts at /mcp, a stdio bridge to it
// for agents inside a sandbox (nightshift mcp), and a small client used by
// the sandbox's ravi command.
//
// Every request must carry a task-scoped bearer token issued by
// identity.Service.IssueToken. A token reaches only its own identity, and
// get_secret reads the vault with the scopes granted to the token's task
// (task:<id>, agent:<name>, repo:<repo>, agents, most specific first) as
// actor {Kind: "task", ID: task id}, never the server scope: a secret only
// the server may read answers exactly like a missing one. Every tool call
// is reported to the audit hook with its identity, task, tool and outcome,
// never with values. ask_human hands the agent's question to Config.Ask
// (the server records it on the task, which then waits in needs_input).
package mcpserver

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"strings"
	"time"

	"github.com/mark3labs/mcp-go/mcp"
	"github.com/mark3labs/mcp-go/server"

	"github.com/nightshift/nightshift/identity"
	"github.com/nightshift/nightshift/vault"
)

// Tool names.
const (
	ToolGetSecret   = "get_secret"
	ToolGetEmail    = "get_email"
	ToolGetPhone    = "get_phone"
	ToolCheckInbox  = "check_inbox"
	ToolCheckSMS    = "check_sms"
	ToolGetIdentity = "get_identity"
	ToolAskHuman    = "ask_human"
)

// AskedText is what ask_human answers the agent: the question is on its way
// and the agent must end its turn; the answer arrives as its next prompt.
const AskedText = "Your question was sent to the people who gave you this task. Stop now: end your turn without " +
	"further changes or tool calls. The answer will arrive as your next message, in this same session."

// Secrets is the part of the vault get_secret uses; *vault.Vault
// satisfies it. Lookup returns the value and the scope it was found in, or
// an error matching vault.ErrNotFound. The scopes it is given never include
// the server scope (and *vault.Vault refuses it).
type Secrets interface {
	Lookup(ctx context.Context, actor vault.Actor, name string, scopes []string) ([]byte, string, error)
}

// AuditEvent records one tool call. It never holds secret values or
// message contents.
type AuditEvent struct {
	At         time.Time `json:"at"`
	IdentityID string    `json:"identity_id"`
	TaskID     string    `json:"task_id,omitempty"`
	Tool       string    `json:"tool"`
	Secret     string    `json:"secret,omitempty"` // get_secret: the name asked for
	Outcome    string    `json:"outcome"`          // ok, not_found, error
	Detail     string    `json:"detail,omitempty"`
	Duration   time.Duration
}

// Config configures the server.
type Config struct {
	// Audit receives every tool call. Nil logs them to Logger at info.
	Audit func(ctx context.Context, ev AuditEvent)
	// MaxWait caps wait_seconds. Default 120s.
	MaxWait time.Duration
	// Owner is what "ravi get owner" reports: the human or team running
	// Nightshift. Default "Nightshift".
	Owner string
	// Version is reported to MCP clients. Default "dev".
	Version string
	// RepoKey turns a task's repository (a URL or a path) into the form
	// repo scopes are written in, host/owner/name, so a secret granted to
	// repo:github.com/acme/* reaches a task on https://github.com/acme/x.git.
	// Nil: the repository is matched only as given.
	RepoKey func(repo string) string
	// Grants, when set, may take away vault scopes a task's token would be
	// granted (an automation that limits its runs' secrets) and says
	// whether a secret found in a stored scope may be handed out: one read
	// of the task answers both.
	Grants func(ctx context.Context, taskID string, scopes []string) (granted []string, allowed func(scope string) bool)
	// Ask records a question of task taskID's agent for a human (the
	// ask_human tool). Nil: ask_human reports that nobody can be asked.
	Ask func(ctx context.Context, taskID, question string) error
	// Clock returns the current time. Default time.Now.
	Clock func() time.Time
	// Logger receives operational logs. Nil discards.
	Logger *slog.Logger
}

func (c Config) withDefaults() Config {
	if c.MaxWait <= 0 {
		c.MaxWait = 120 * time.Second
	}
	if c.Owner == "" {
		c.Owner = "Nightshift"
	}
	if c.Version == "" {
		c.Version = "dev"
	}
	if c.Clock == nil {
		c.Clock = time.Now
	}
	if c.Logger == nil {
		c.Logger = slog.New(slog.DiscardHandler)
	}
	return c
}

// Server is the identity MCP server.
type Server struct {
	ids     *identity.Service
	secrets Secrets
	cfg     Config
	log     *slog.Logger
	mcp     *server.MCPServer
	http    *server.StreamableHTTPServer
}

// NewServer returns the MCP server for identities. secrets may be nil, in
// which case get_secret reports every secret as missing.
func NewServer(ids *identity.Service, secrets Secrets, cfg Config) *Server {
	cfg = cfg.withDefaults()
	s := &Server{ids: ids, secrets: secrets, cfg: cfg, log: cfg.Logger.With("component", "identity_mcp")}
	if s.cfg.Audit == nil {
		s.cfg.Audit = func(ctx context.Context, ev AuditEvent) {
			s.log.InfoContext(ctx, "mcp tool call", "identity_id", ev.IdentityID, "task_id", ev.TaskID, "tool", ev.Tool,
				"secret", ev.Secret, "outcome", ev.Outcome, "duration", ev.Duration)
		}
	}
	s.mcp = server.NewMCPServer("nightshift-identity", cfg.Version,
		server.WithToolCapabilities(false),
		server.WithRecovery(),
		server.WithInstructions("Your task identity: an email inbox, a phone number for one-time codes, and the secrets your task may read. "+
			"When you cannot go on without a human's decision, call ask_human and end your turn."),
		server.WithToolHandlerMiddleware(s.audit),
	)
	for _, t := range Tools() {
		s.mcp.AddTool(t, s.handler(t.Name))
	}
	s.http = server.NewStreamableHTTPServer(s.mcp,
		server.WithStreamableHTTPLogger(s.log),
		// Every request carries a bearer token, which a DNS-rebinding page
		// cannot know; sandboxes reach us through proxies with other Host names.
		server.WithDisableLocalhostProtection(true),
	)
	return s
}

// Tools returns the tool definitions (shared with the stdio bridge's tests).
func Tools() []mcp.Tool {
	ro := mcp.WithReadOnlyHintAnnotation(true)
	waitOpts := []mcp.ToolOption{
		mcp.WithString("since", mcp.Description("only messages received after this RFC 3339 time")),
		mcp.WithNumber("wait_seconds", mcp.Description("wait up to this many seconds for a message to arrive (default 0, max 120)")),
		ro,
	}
	return []mcp.Tool{
		mcp.NewTool(ToolGetSecret, mcp.WithDescription("Read a secret your task may use, by name (e.g. GITHUB_TOKEN)."),
			mcp.WithString("name", mcp.Required(), mcp.Description("secret name: upper case letters, digits and _")), ro),
		mcp.NewTool(ToolGetEmail, mcp.WithDescription("Your email address; mail to it arrives in check_inbox."), ro),
		mcp.NewTool(ToolGetPhone, mcp.WithDescription("Your phone number for SMS codes; messages arrive in check_sms."), ro),
		mcp.NewTool(ToolCheckInbox, append([]mcp.ToolOption{mcp.WithDescription("List received email, newest first, with any one-time code or verification link found.")}, waitOpts...)...),
		mcp.NewTool(ToolCheckSMS, append([]mcp.ToolOption{mcp.WithDescription("List received SMS, newest first, with any one-time code found.")}, waitOpts...)...),
		mcp.NewTool(ToolGetIdentity, mcp.WithDescription("Your identity: name (also your git author), email, phone."), ro),
		mcp.NewTool(ToolAskHuman, mcp.WithDescription("Ask the people who gave you this task a question when you cannot go on "+
			"without their decision or information. Then end your turn at once: the task waits, and their answer arrives as "+
			"your next message in this session."),
			mcp.WithString("question", mcp.Required(), mcp.Description("the question, self-contained: the reader has not seen your work"))),
	}
}

// Handler returns the streamable HTTP handler to mount at /mcp. Requests
// without a valid bearer token get 401.
func (s *Server) Handler() http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		tok, ok := bearer(r.Header.Get("Authorization"))
		if !ok {
			unauthorized(w, "missing bearer token")
			return
		}
		id, sc, err := s.ids.Authenticate(r.Context(), tok)
		if errors.Is(err, identity.ErrUnauthorized) {
			unauthorized(w, "invalid or revoked token")
			return
		}
		if err != nil {
			s.log.ErrorContext(r.Context(), "mcp authenticate", "err", err)
			http.Error(w, "authentication unavailable", http.StatusServiceUnavailable)
			return
		}
		s.http.ServeHTTP(w, r.WithContext(withCaller(r.Context(), caller{id: id, scope: sc})))
	})
}

// Shutdown closes open MCP sessions.
func (s *Server) Shutdown(ctx context.Context) error { return s.http.Shutdown(ctx) }

func bearer(h string) (string, bool) {
	scheme, tok, ok := strings.Cut(h, " ")
	if !ok || !strings.EqualFold(scheme, "Bearer") || strings.TrimSpace(tok) == "" {
		return "", false
	}
	return strings.TrimSpace(tok), true
}

func unauthorized(w http.ResponseWriter, msg string) {
	w.Header().Set("WWW-Authenticate", `Bearer realm="nightshift"`)
	http.Error(w, msg, http.StatusUnauthorized)
}

type caller struct {
	id    identity.Identity
	scope identity.Scope
}

type callerKey struct{}

func withCaller(ctx context.Context, c caller) context.Context {
	return context.WithValue(ctx, callerKey{}, c)
}

func callerFrom(ctx context.Context) (caller, bool) {
	c, ok := ctx.Value(callerKey{}).(caller)
	return c, ok
}

// audit wraps every tool handler and reports the call.
func (s *Server) audit(next server.ToolHandlerFunc) server.ToolHandlerFunc {
	return func(ctx context.Context, req mcp.CallToolRequest) (*mcp.CallToolResult, error) {
		start := s.cfg.Clock()
		res, err := next(ctx, req)
		ev := AuditEvent{At: start.UTC(), Tool: req.Params.Name, Outcome: "ok", Duration: s.cfg.Clock().Sub(start)}
		if c, ok := callerFrom(ctx); ok {
			ev.IdentityID, ev.TaskID = c.id.ID, c.scope.TaskID
		}
		if req.Params.Name == ToolGetSecret {
			ev.Secret = req.GetString("name", "")
		}
		switch {
		case err != nil:
			ev.Outcome, ev.Detail = "error", err.Error()
		case res != nil && res.IsError:
			ev.Outcome = "error"
			if res.Meta != nil && res.Meta.AdditionalFields["nightshift/outcome"] == "not_found" {
				ev.Outcome = "not_found"
			}
		}
		s.cfg.Audit(ctx, ev)
		return res, err
	}
}

// IdentityResult is get_identity's answer.
type IdentityResult struct {
	ID        string    `json:"id"`
	Name      string    `json:"name"`
	Email     string    `json:"email"`
	Phone     string    `json:"phone"`
	Provider  string    `json:"provider"`
	TaskID    string    `json:"task_id,omitempty"`
	Owner     string    `json:"owner"`
	CreatedAt time.Time `json:"created_at"`
}

// InboxResult is check_inbox's and check_sms's answer.
type InboxResult struct {
	Messages []identity.Message `json:"messages"`
	OTP      *identity.OTP      `json:"otp,omitempty"`
}

// SecretResult is get_secret's structured answer.
type SecretResult struct {
	Name  string `json:"name"`
	Value string `json:"value"`
	Scope string `json:"scope"`
}

func (s *Server) handler(tool string) server.ToolHandlerFunc {
	return func(ctx context.Context, req mcp.CallToolRequest) (*mcp.CallToolResult, error) {
		c, ok := callerFrom(ctx)
		if !ok {
			return mcp.NewToolResultError("not authenticated"), nil
		}
		// Re-read the identity so a release during a session takes effect.
		id, err := s.ids.Get(ctx, c.id.ID)
		if err != nil {
			return nil, err
		}
		if !id.Live() {
			return mcp.NewToolResultError("identity released"), nil
		}
		switch tool {
		case ToolGetEmail:
			return mcp.NewToolResultText(id.Email), nil
		case ToolGetPhone:
			if id.Phone == "" {
				return notFound("this identity has no phone number"), nil
			}
			return mcp.NewToolResultText(id.Phone), nil
		case ToolGetIdentity:
			out := IdentityResult{ID: id.ID, Name: id.Name, Email: id.Email, Phone: id.Phone, Provider: id.Provider,
				TaskID: id.TaskID, Owner: s.cfg.Owner, CreatedAt: id.CreatedAt}
			return structured(out)
		case ToolGetSecret:
			return s.getSecret(ctx, c, req)
		case ToolCheckInbox:
			return s.check(ctx, id, identity.KindEmail, req)
		case ToolCheckSMS:
			return s.check(ctx, id, identity.KindSMS, req)
		case ToolAskHuman:
			return s.ask(ctx, c, req)
		}
		return mcp.NewToolResultErrorf("unknown tool %s", tool), nil
	}
}

func (s *Server) getSecret(ctx context.Context, c caller, req mcp.CallToolRequest) (*mcp.CallToolResult, error) {
	name, err := req.RequireString("name")
	if err != nil {
		return mcp.NewToolResultError("name is required"), nil
	}
	if err := vault.ValidateName(name); err != nil {
		return mcp.NewToolResultErrorf("invalid secret name %q: use upper case letters, digits and _", name), nil
	}
	if s.secrets == nil {
		return notFound(fmt.Sprintf("secret %s not found", name)), nil
	}
	actor := vault.Actor{Kind: vault.ActorTask, ID: c.scope.TaskID}
	if c.scope.TaskID == "" {
		actor = vault.Actor{Kind: vault.ActorIdentity, ID: c.id.ID}
	}
	scopes := s.secretScopes(c.scope)
	allowed := func(string) bool { return true }
	if s.cfg.Grants != nil && c.scope.TaskID != "" {
		scopes, allowed = s.cfg.Grants(ctx, c.scope.TaskID, scopes)
	}
	val, scope, err := s.secrets.Lookup(ctx, actor, name, scopes)
	if err == nil && !allowed(scope) {
		err = vault.ErrNotFound
	}
	if errors.Is(err, vault.ErrNotFound) {
		return notFound(fmt.Sprintf("secret %s not found in the scopes this task may read", name)), nil
	}
	if err != nil {
		s.log.ErrorContext(ctx, "get_secret", "identity_id", c.id.ID, "secret", name, "err", err)
		return mcp.NewToolResultErrorf("could not read secret %s", name), nil
	}
	res := mcp.NewToolResultStructured(SecretResult{Name: name, Value: string(val), Scope: scope}, string(val))
	return res, nil
}

// secretScopes returns the vault scopes granted to a token's task.
func (s *Server) secretScopes(sc identity.Scope) []string {
	if s.cfg.RepoKey == nil || sc.Repo == "" {
		return vault.ScopesFor(sc.TaskID, sc.Agent, sc.Repo)
	}
	return vault.ScopesFor(sc.TaskID, sc.Agent, sc.Repo, s.cfg.RepoKey(sc.Repo))
}

func (s *Server) check(ctx context.Context, id identity.Identity, kind identity.MessageKind, req mcp.CallToolRequest) (*mcp.CallToolResult, error) {
	q := identity.MessageQuery{Kind: kind}
	if since := req.GetString("since", ""); since != "" {
		t, err := time.Parse(time.RFC3339Nano, since)
		if err != nil {
			return mcp.NewToolResultErrorf("since %q: want an RFC 3339 time such as 2026-01-02T15:04:05Z", since), nil
		}
		q.Since = t
	}
	wait := time.Duration(req.GetFloat("wait_seconds", 0) * float64(time.Second))
	if wait < 0 {
		return mcp.NewToolResultError("wait_seconds must not be negative"), nil
	}
	wait = min(wait, s.cfg.MaxWait)
	msgs, err := s.ids.WaitMessages(ctx, id.ID, q, wait)
	if err != nil {
		return nil, err
	}
	out := InboxResult{Messages: msgs}
	if otp, ok := identity.FindOTP(msgs); ok {
		out.OTP = &otp
	}
	return structured(out)
}

func (s *Server) ask(ctx context.Context, c caller, req mcp.CallToolRequest) (*mcp.CallToolResult, error) {
	q, err := req.RequireString("question")
	if err != nil || strings.TrimSpace(q) == "" {
		return mcp.NewToolResultError("question is required"), nil
	}
	if s.cfg.Ask == nil || c.scope.TaskID == "" {
		return mcp.NewToolResultError("nobody can be asked here: decide yourself and say what you assumed"), nil
	}
	if err := s.cfg.Ask(ctx, c.scope.TaskID, q); err != nil {
		s.log.ErrorContext(ctx, "ask_human", "task_id", c.scope.TaskID, "err", err)
		return mcp.NewToolResultErrorf("the question could not be sent: %v", err), nil
	}
	return mcp.NewToolResultText(AskedText), nil
}

func structured(v any) (*mcp.CallToolResult, error) {
	b, err := json.Marshal(v)
	if err != nil {
		return nil, err
	}
	return mcp.NewToolResultStructured(v, string(b)), nil
}

func notFound(msg string) *mcp.CallToolResult {
	res := mcp.NewToolResultError(msg)
	res.Meta = mcp.NewMetaFromMap(map[string]any{"nightshift/outcome": "not_found"})
	return res
}
