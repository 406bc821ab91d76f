// Package api serves Nightshift's REST API under /api/v1: dispatching tasks,
// reading and filtering them (newest first, paged with ?before= and the
// answer's next), following one task or all of them over Server-Sent Events,
// and acting on them (cancel, retry, follow-up messages). Every action is
// published as an event on JetStream and carried out by the scheduler; the
// API answers 202 once the event is stored, and 429 with Retry-After and a
// queue position when the backlog is over the limit. Errors are always
// {"error": "..."}. The OpenAPI 3 document is served at
// /api/v1/openapi.json and checked against the routes by a test.
//
// It also owns authentication for the API and the board: bearer API tokens
// (admin or read-only) for machines, and login sessions for people (a
// SessionStore behind an HttpOnly, SameSite=Strict cookie, with a CSRF
// token required on state-changing requests made with it). Authenticator
// and Server.StartSession are where OIDC plugs in. Without tokens the API
// is open, and serve allows that only on loopback.
//
// A task's repository is a remote URL, or a local repository (absolute
// path or file:// URL) that an admin dispatches, that the configuration
// names (Config.LocalRepoAllowed) and that is not inside the server's data
// directory (see checkRepo); anything else is refused with 400 or 403.
//
// NewCollector and NewStepRecorder export what operators watch: tasks by
// state, queue depth and age, step durations and run outcomes.
package api

import (
	"context"
	"crypto/subtle"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/url"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/nightshift/nightshift/orchestrator"
	"github.com/nightshift/nightshift/orchestrator/forge"
)

// Config configures the API. Zero values mean the documented defaults.
type Config struct {
	// AdminTokens may read and act; ReadOnlyTokens may only read. When both
	// are empty (and no Authenticators are set) the API and the board are
	// open (serve allows that only on loopback).
	AdminTokens, ReadOnlyTokens []string
	// Authenticators are tried after the API tokens (e.g. an OIDC bearer
	// verifier). Default none.
	Authenticators []Authenticator
	// Sessions keeps the board's login sessions. Default in memory.
	Sessions SessionStore
	// SessionKey signs session cookies. Default 32 random bytes per process.
	SessionKey []byte
	// SessionTTL is how long a login lasts. Default 12h.
	SessionTTL time.Duration
	// MaxQueued is the backlog past which POST /tasks answers 429. Default 1000.
	MaxQueued int
	// RetryAfter is what a 429 tells the caller to wait. Default 30s.
	RetryAfter time.Duration
	// MaxPromptBytes is the largest prompt (or follow-up message) accepted;
	// larger ones are refused with 413. Default DefaultMaxPromptBytes.
	MaxPromptBytes int
	// KnownAgent reports whether an agent name is configured. Nil: any.
	KnownAgent func(name string) bool
	// AgentFor names the agent for a repository when a request names
	// none (the scheduler's choice). When set, POST /api/v1/tasks
	// creates the task in the authority itself before it answers, so a
	// GET of the new id right after finds it; nil leaves creation to the
	// scheduler (the answer then waits up to 3 s for it).
	AgentFor func(repo string) string
	// LocalRepoAllowed reports whether the server's configuration names
	// the local repository at an absolute, cleaned path (serve: a
	// repos[].match entry that is the path or a path glob). Nil: no local
	// path or file:// repository is accepted. See checkRepo.
	LocalRepoAllowed func(path string) bool
	// DataDir is the server's data directory: a local repository inside
	// it (symlinks evaluated) is always refused. Empty: not checked.
	DataDir string
	// Metrics records API counters; nil records nothing (see NewMetrics).
	Metrics *Metrics
	Clock   func() time.Time
	Logger  *slog.Logger
}

func (c Config) withDefaults() Config {
	if c.MaxQueued <= 0 {
		c.MaxQueued = 1000
	}
	if c.RetryAfter <= 0 {
		c.RetryAfter = 30 * time.Second
	}
	if c.MaxPromptBytes <= 0 {
		c.MaxPromptBytes = DefaultMaxPromptBytes
	}
	if c.SessionTTL <= 0 {
		c.SessionTTL = 12 * time.Hour
	}
	if c.Clock == nil {
		c.Clock = time.Now
	}
	if c.Logger == nil {
		c.Logger = slog.New(slog.DiscardHandler)
	}
	if c.Sessions == nil {
		c.Sessions = NewMemorySessionStore(c.Clock)
	}
	if len(c.SessionKey) == 0 {
		c.SessionKey = []byte(randomToken() + randomToken())
	}
	return c
}

// DefaultMaxPromptBytes is the default prompt limit of POST /api/v1/tasks
// and follow-up messages: 1 MiB.
const DefaultMaxPromptBytes = 1 << 20

// Server is the REST API handler.
type Server struct {
	bus    *orchestrator.Bus
	store  *orchestrator.Store
	cfg    Config
	log    *slog.Logger
	mux    *http.ServeMux
	auth   *auth
	routes []string
	idem   *idempotency // nil without a bus
}

// Role is what a caller may do.
type Role int

// Roles.
const (
	RoleNone Role = iota
	RoleReadOnly
	RoleAdmin
)

// New returns the API handler. bus and store may be nil for a handler that
// only authenticates (the board in tests).
func New(bus *orchestrator.Bus, store *orchestrator.Store, cfg Config) *Server {
	cfg = cfg.withDefaults()
	s := &Server{bus: bus, store: store, cfg: cfg, log: cfg.Logger.With("component", "api"), mux: http.NewServeMux()}
	if bus != nil {
		s.idem = &idempotency{js: bus.JetStream()}
	}
	s.auth = &auth{tokens: NewTokenAuthenticator(cfg.AdminTokens, cfg.ReadOnlyTokens), extra: cfg.Authenticators,
		sessions: cfg.Sessions, key: cfg.SessionKey, ttl: cfg.SessionTTL, now: cfg.Clock}
	s.handle("POST /api/v1/tasks", s.admin(s.createTask))
	s.handle("GET /api/v1/tasks", s.read(s.listTasks))
	s.handle("GET /api/v1/tasks/{id}", s.read(s.getTask))
	s.handle("GET /api/v1/tasks/{id}/events", s.read(s.taskEvents))
	s.handle("GET /api/v1/tasks/{id}/logs", s.read(s.taskLogs))
	s.handle("GET /api/v1/tasks/{id}/diff", s.read(s.taskDiff))
	s.handle("GET /api/v1/tasks/{id}/transitions", s.read(s.taskTransitions))
	s.handle("POST /api/v1/tasks/{id}/cancel", s.admin(s.control(orchestrator.KindTaskCancel)))
	s.handle("POST /api/v1/tasks/{id}/retry", s.admin(s.control(orchestrator.KindTaskRetry)))
	s.handle("POST /api/v1/tasks/{id}/messages", s.admin(s.control(orchestrator.KindTaskMessage)))
	s.handle("GET /api/v1/events", s.read(s.allEvents))
	s.handle("GET /api/v1/session", s.read(s.session))
	s.handle("POST /api/v1/session", s.login)
	s.handle("DELETE /api/v1/session", s.read(s.logout))
	s.handle("GET /api/v1/openapi.json", s.openAPI)
	s.mux.HandleFunc("/api/v1/", s.noRoute)
	return s
}

// noRoute answers requests no route takes: 405 with Allow when the path
// exists under other methods, 404 otherwise; JSON either way.
func (s *Server) noRoute(w http.ResponseWriter, r *http.Request) {
	var allow []string
	for _, m := range []string{http.MethodGet, http.MethodPost, http.MethodDelete} {
		probe := r.Clone(r.Context())
		probe.Method = m
		if _, pattern := s.mux.Handler(probe); strings.HasPrefix(pattern, m+" ") {
			allow = append(allow, m)
		}
	}
	if len(allow) > 0 {
		w.Header().Set("Allow", strings.Join(allow, ", "))
		writeError(w, http.StatusMethodNotAllowed, fmt.Sprintf("%s is not allowed on %s (allowed: %s)", r.Method, r.URL.Path, strings.Join(allow, ", ")))
		return
	}
	writeError(w, http.StatusNotFound, "no such route: "+r.Method+" "+r.URL.Path)
}

func (s *Server) handle(pattern string, h http.HandlerFunc) {
	s.routes = append(s.routes, pattern)
	s.mux.HandleFunc(pattern, h)
}

// Routes returns the "METHOD /path" patterns the API serves (the OpenAPI
// document is checked against them).
func (s *Server) Routes() []string { return append([]string(nil), s.routes...) }

// ServeHTTP serves /api/v1/.
func (s *Server) ServeHTTP(w http.ResponseWriter, r *http.Request) { s.mux.ServeHTTP(w, r) }

// RoleOf returns what the credentials of r (bearer token or session cookie)
// may do.
func (s *Server) RoleOf(r *http.Request) Role {
	p, _ := s.auth.authenticate(r)
	return p.Role
}

func matchToken(tok string, list []string) bool {
	found := 0
	for _, t := range list {
		found |= subtle.ConstantTimeCompare([]byte(tok), []byte(t))
	}
	return found == 1
}

// RequireRole wraps h so it runs only for callers with at least role min.
// State-changing requests made with the session cookie must carry the
// session's CSRF token (see checkCSRF); bearer requests need none.
func (s *Server) RequireRole(min Role, h http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		p, sess := s.auth.authenticate(r)
		switch {
		case p.Role == RoleNone:
			w.Header().Set("WWW-Authenticate", `Bearer realm="nightshift"`)
			writeError(w, http.StatusUnauthorized, "missing or invalid token")
		case p.Role < min:
			writeError(w, http.StatusForbidden, "this token is read-only")
		default:
			if err := checkCSRF(r, p, sess); err != nil {
				writeError(w, http.StatusForbidden, err.Error())
				return
			}
			h.ServeHTTP(w, r.WithContext(context.WithValue(r.Context(), principalKey{}, p)))
		}
	})
}

type principalKey struct{}

// PrincipalFrom returns the principal RequireRole authenticated.
func PrincipalFrom(ctx context.Context) (Principal, bool) {
	p, ok := ctx.Value(principalKey{}).(Principal)
	return p, ok
}

func (s *Server) admin(h http.HandlerFunc) http.HandlerFunc {
	return s.RequireRole(RoleAdmin, h).ServeHTTP
}

func (s *Server) read(h http.HandlerFunc) http.HandlerFunc {
	return s.RequireRole(RoleReadOnly, h).ServeHTTP
}

// CreateRequest is the body of POST /api/v1/tasks.
type CreateRequest struct {
	Repo   string `json:"repo"`
	Prompt string `json:"prompt"`
	Branch string `json:"branch,omitempty"`
	Agent  string `json:"agent,omitempty"`
	// Mode is change (default), plan (read-only plan, approved before
	// any change) or answer (read-only answer).
	Mode string `json:"mode,omitempty"`
}

// CreateResponse answers POST /api/v1/tasks.
type CreateResponse struct {
	ID       string             `json:"id"`
	State    orchestrator.State `json:"state"`
	Position int                `json:"position"`
}

func (s *Server) createTask(w http.ResponseWriter, r *http.Request) {
	var req CreateRequest
	dec := json.NewDecoder(http.MaxBytesReader(w, r.Body, s.maxBody()))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&req); err != nil {
		s.cfg.Metrics.requested("rejected")
		if s.tooLarge(w, err) {
			return
		}
		writeError(w, http.StatusBadRequest, "bad request body: "+err.Error())
		return
	}
	if len(req.Prompt) > s.cfg.MaxPromptBytes {
		s.cfg.Metrics.requested("rejected")
		s.promptTooLarge(w, len(req.Prompt))
		return
	}
	req.Repo, req.Prompt = strings.TrimSpace(req.Repo), strings.TrimSpace(req.Prompt)
	switch {
	case req.Repo == "":
		writeError(w, http.StatusBadRequest, "repo is required")
		return
	case req.Prompt == "":
		writeError(w, http.StatusBadRequest, "prompt is required")
		return
	case req.Mode != "" && req.Mode != orchestrator.ModeChange && req.Mode != orchestrator.ModePlan && req.Mode != orchestrator.ModeAnswer:
		writeError(w, http.StatusBadRequest, fmt.Sprintf("mode must be change, plan or answer, not %q", req.Mode))
		return
	case req.Agent != "" && s.cfg.KnownAgent != nil && !s.cfg.KnownAgent(req.Agent):
		writeError(w, http.StatusBadRequest, fmt.Sprintf("unknown agent %q", req.Agent))
		return
	}
	if ref := s.checkRepo(r, req.Repo); ref != nil {
		s.cfg.Metrics.requested("rejected")
		writeError(w, ref.status, ref.msg)
		return
	}

	// The queue's length comes from the index, caught up first.
	if err := s.store.CatchUp(r.Context(), s.bus.Records(), 2*time.Second); err != nil {
		s.cfg.Logger.Warn("queue length from a lagging index", "err", err)
	}
	counts, err := s.store.CountByState(r.Context())
	if err != nil {
		s.fail(w, err)
		return
	}
	queued := counts[orchestrator.StateQueued]
	if queued >= s.cfg.MaxQueued {
		s.cfg.Metrics.requested("queue_full")
		secs := int(s.cfg.RetryAfter.Round(time.Second).Seconds())
		w.Header().Set("Retry-After", strconv.Itoa(secs))
		writeJSON(w, http.StatusTooManyRequests, QueueFull{
			Error:    fmt.Sprintf("the queue is full (%d tasks waiting, limit %d); retry in %ds", queued, s.cfg.MaxQueued, secs),
			Position: queued + 1, Queued: queued, RetryAfter: secs})
		return
	}
	// With an Idempotency-Key the task id derives from it, so a repeated
	// request answers with the one task it created.
	id := orchestrator.NewID()
	key := r.Header.Get("Idempotency-Key")
	if key == "" {
		key = id
	} else {
		id = orchestrator.IDFromKey("api:" + key)
	}
	ev := &orchestrator.Event{
		ID: id, Source: orchestrator.SourceAPI, Kind: orchestrator.KindTaskRequested, Repo: req.Repo,
		Instruction: req.Prompt, DeliveryID: "api:" + key, IdempotencyKey: "api:" + key,
		ReceivedAt: s.cfg.Clock().UTC(), Agent: req.Agent, Branch: req.Branch, TaskID: id,
		Actor: orchestrator.Actor{Login: actorLogin(r)}, Mode: req.Mode,
	}
	// A repeated Idempotency-Key is a duplicate delivery: answer with the
	// task the first request created, if the body is the same.
	release := func() {}
	if r.Header.Get("Idempotency-Key") != "" && s.idem != nil {
		if release, err = s.idem.claim(r.Context(), key, bodyHash(req)); err != nil {
			if errors.Is(err, errKeyReused) {
				s.cfg.Metrics.requested("rejected")
			} else {
				s.cfg.Metrics.requested("failed")
			}
			s.fail(w, err)
			return
		}
	}
	if err := s.bus.PublishEventWait(r.Context(), ev); err != nil && !errors.Is(err, orchestrator.ErrDuplicate) {
		release()
		s.cfg.Metrics.requested("failed")
		s.log.Error("publish task request", "err", err)
		writeError(w, http.StatusServiceUnavailable, "the task could not be stored; try again")
		return
	}
	s.cfg.Metrics.requested("accepted")
	resp := CreateResponse{ID: id, State: orchestrator.StateQueued, Position: queued + 1}
	if s.cfg.AgentFor != nil {
		// Read-your-writes: the task exists in the authority before the
		// answer (the scheduler, handling the event, finds it). The event
		// is durable already: should this write fail, the scheduler
		// creates the task from it.
		agent := req.Agent
		if agent == "" {
			agent = s.cfg.AgentFor(req.Repo)
		}
		res, err := s.bus.Records().CreateFromEvent(r.Context(), ev, agent)
		if err == nil {
			resp.State = res.Task.State
			if res.Task.State == orchestrator.StateQueued {
				resp.Position, _ = s.store.Position(r.Context(), res.Task)
				resp.Position = max(resp.Position, queued+1)
			}
			writeJSON(w, http.StatusAccepted, resp)
			return
		}
		s.log.Warn("create task; the scheduler will from the event", "task_id", id, "err", err)
	}
	// Usually the scheduler has the task stored within milliseconds; answer
	// with its real state and position then. The event is durable either way.
	if t, err := s.waitTask(r.Context(), id, 3*time.Second); err == nil {
		resp.State, resp.Position = t.State, t.Position
	}
	writeJSON(w, http.StatusAccepted, resp)
}

// maxBody bounds a request body carrying a prompt: the prompt limit with
// room for JSON escaping (up to 6 bytes a byte) and the other fields.
func (s *Server) maxBody() int64 { return int64(s.cfg.MaxPromptBytes)*6 + 64<<10 }

// tooLarge answers 413 when err is a body over maxBody.
func (s *Server) tooLarge(w http.ResponseWriter, err error) bool {
	var mb *http.MaxBytesError
	if !errors.As(err, &mb) {
		return false
	}
	writeError(w, http.StatusRequestEntityTooLarge, fmt.Sprintf("the request body is over %d bytes; a prompt may be at most %d bytes", mb.Limit, s.cfg.MaxPromptBytes))
	return true
}

func (s *Server) promptTooLarge(w http.ResponseWriter, n int) {
	writeError(w, http.StatusRequestEntityTooLarge, fmt.Sprintf("the prompt is %d bytes; the limit is %d bytes (%s)", n, s.cfg.MaxPromptBytes, humanBytes(s.cfg.MaxPromptBytes)))
}

func humanBytes(n int) string {
	switch {
	case n >= 1<<20 && n%(1<<20) == 0:
		return fmt.Sprintf("%d MiB", n>>20)
	case n >= 1<<10 && n%(1<<10) == 0:
		return fmt.Sprintf("%d KiB", n>>10)
	}
	return fmt.Sprintf("%d bytes", n)
}

// QueueFull answers POST /api/v1/tasks with 429 when the backlog is over
// Config.MaxQueued.
type QueueFull struct {
	Error string `json:"error"`
	// Position is where the task would have been in the queue.
	Position int `json:"position"`
	Queued   int `json:"queued"`
	// RetryAfter repeats the Retry-After header, in seconds.
	RetryAfter int `json:"retry_after"`
}

// actorLogin names the caller on the events it causes.
func actorLogin(r *http.Request) string {
	if p, ok := PrincipalFrom(r.Context()); ok && p.Subject != "" && p.Subject != "anonymous" {
		if p.Name != "" {
			return p.Name
		}
		return p.Subject
	}
	return "api"
}

// waitTask returns task id once the scheduler has stored it, waiting up to d.
func (s *Server) waitTask(ctx context.Context, id string, d time.Duration) (orchestrator.Task, error) {
	ctx, cancel := context.WithTimeout(ctx, d)
	defer cancel()
	tick := time.NewTicker(20 * time.Millisecond)
	defer tick.Stop()
	for {
		t, err := s.task(ctx, id)
		if !errors.Is(err, orchestrator.ErrNotFound) {
			return t, err
		}
		select {
		case <-ctx.Done():
			return t, err
		case <-tick.C:
		}
	}
}

// sources are the sources a task can have: the ?source= filter takes
// them and the OpenAPI document's Source enum lists them (a test checks).
var sources = []orchestrator.Source{orchestrator.SourceGitHub, orchestrator.Source(forge.KindGitLab), orchestrator.Source(forge.KindGitea),
	orchestrator.SourceLinear, orchestrator.SourceSlack, orchestrator.SourceAPI, orchestrator.SourceAutomation}

// parseFilter reads the state, repo, source, before and limit parameters.
func parseFilter(q url.Values) (orchestrator.Filter, error) {
	f := orchestrator.Filter{Repo: q.Get("repo"), Before: q.Get("before")}
	for _, st := range q["state"] {
		for _, p := range strings.Split(st, ",") {
			if p == "" {
				continue
			}
			state := orchestrator.State(p)
			if !state.Valid() {
				return f, fmt.Errorf("unknown state %q", p)
			}
			f.States = append(f.States, state)
		}
	}
	switch src := orchestrator.Source(q.Get("source")); {
	case src == "" || slices.Contains(sources, src):
		f.Source = src
	default:
		return f, fmt.Errorf("unknown source %q (want github, gitlab, gitea, linear, slack, api or automation)", src)
	}
	if l := q.Get("limit"); l != "" {
		n, err := strconv.Atoi(l)
		if err != nil || n < 1 || n > 500 {
			return f, errors.New("limit must be 1..500")
		}
		f.Limit = n
	}
	return f, nil
}

// ListResponse answers GET /api/v1/tasks.
type ListResponse struct {
	Tasks []orchestrator.Task `json:"tasks"`
	// Next is the cursor for the next page (pass as ?before=).
	Next string `json:"next,omitempty"`
}

func (s *Server) listTasks(w http.ResponseWriter, r *http.Request) {
	q := r.URL.Query()
	f, err := parseFilter(q)
	if err != nil {
		writeError(w, http.StatusBadRequest, err.Error())
		return
	}
	if f.Limit == 0 {
		f.Limit = 100
	}
	// The index lags the authority by a moment: catch up first, so a list
	// right after a change shows it.
	if err := s.store.CatchUp(r.Context(), s.bus.Records(), 2*time.Second); err != nil {
		s.cfg.Logger.Warn("list from a lagging index", "err", err)
	}
	tasks, err := s.store.List(r.Context(), f)
	if err != nil {
		s.fail(w, err)
		return
	}
	resp := ListResponse{Tasks: tasks}
	if resp.Tasks == nil {
		resp.Tasks = []orchestrator.Task{}
	}
	if len(tasks) == f.Limit {
		resp.Next = tasks[len(tasks)-1].ID
	}
	writeJSON(w, http.StatusOK, resp)
}

// task reads task id from the authority (read-your-writes: a task the
// API created, or a change it asked for and saw acknowledged, is there),
// with its queue position from the index.
func (s *Server) task(ctx context.Context, id string) (orchestrator.Task, error) {
	t, err := s.bus.Records().Task(ctx, id)
	if err == nil && t.State == orchestrator.StateQueued {
		// The queue position comes from the index: let it catch up with
		// the authority first (a task created a moment ago is in it).
		if err := s.store.CatchUp(ctx, s.bus.Records(), 2*time.Second); err != nil {
			s.cfg.Logger.Warn("queue position from a lagging index", "err", err)
		}
		t.Position, _ = s.store.Position(ctx, t)
	}
	return t, err
}

func (s *Server) getTask(w http.ResponseWriter, r *http.Request) {
	t, err := s.task(r.Context(), r.PathValue("id"))
	if err != nil {
		s.fail(w, err)
		return
	}
	writeJSON(w, http.StatusOK, t)
}

func (s *Server) taskTransitions(w http.ResponseWriter, r *http.Request) {
	rec, _, err := s.bus.Records().Get(r.Context(), r.PathValue("id"))
	if err != nil {
		s.fail(w, err)
		return
	}
	trs := rec.Transitions
	if trs == nil {
		trs = []orchestrator.Transition{}
	}
	writeJSON(w, http.StatusOK, map[string]any{"transitions": trs})
}

func (s *Server) taskDiff(w http.ResponseWriter, r *http.Request) {
	id := r.PathValue("id")
	if _, err := s.bus.Records().Task(r.Context(), id); err != nil {
		s.fail(w, err)
		return
	}
	d, err := s.bus.LastDiff(r.Context(), id)
	if err != nil {
		s.fail(w, err)
		return
	}
	w.Header().Set("Content-Type", "text/x-diff; charset=utf-8")
	w.Write([]byte(d.Patch))
}

func (s *Server) taskLogs(w http.ResponseWriter, r *http.Request) {
	id := r.PathValue("id")
	if _, err := s.bus.Records().Task(r.Context(), id); err != nil {
		s.fail(w, err)
		return
	}
	lines := []orchestrator.LogLine{}
	ctx, cancel := context.WithTimeout(r.Context(), 30*time.Second)
	defer cancel()
	err := s.bus.Watch(ctx, id, false, func(m orchestrator.TaskMessage) error {
		if m.Log != nil {
			lines = append(lines, *m.Log)
		}
		return nil
	})
	if err != nil {
		s.fail(w, err)
		return
	}
	writeJSON(w, http.StatusOK, map[string]any{"lines": lines})
}

// taskEvents streams a task's states, log lines and diffs as Server-Sent
// Events: history first, then live, with the stream sequence as event id.
func (s *Server) taskEvents(w http.ResponseWriter, r *http.Request) {
	id := r.PathValue("id")
	if _, err := s.waitTask(r.Context(), id, 5*time.Second); err != nil {
		s.fail(w, err)
		return
	}
	fl, ok := w.(http.Flusher)
	if !ok {
		writeError(w, http.StatusInternalServerError, "streaming unsupported")
		return
	}
	w.Header().Set("Content-Type", "text/event-stream")
	w.Header().Set("Cache-Control", "no-cache")
	w.Header().Set("X-Accel-Buffering", "no")
	w.WriteHeader(http.StatusOK)
	fmt.Fprint(w, ": nightshift task events\n\n")
	fl.Flush()
	ctx := r.Context()
	msgs := make(chan orchestrator.TaskMessage, 64)
	errc := make(chan error, 1)
	go func() {
		errc <- s.bus.Watch(ctx, id, true, func(m orchestrator.TaskMessage) error {
			select {
			case msgs <- m:
				return nil
			case <-ctx.Done():
				return ctx.Err()
			}
		})
	}()
	keepalive := time.NewTicker(15 * time.Second)
	defer keepalive.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case err := <-errc:
			if err != nil && ctx.Err() == nil {
				fmt.Fprintf(w, "event: error\ndata: %q\n\n", err.Error())
				fl.Flush()
			}
			return
		case <-keepalive.C:
			fmt.Fprint(w, ": keepalive\n\n")
			fl.Flush()
		case m := <-msgs:
			var data any
			switch m.Type {
			case "state":
				data = m.State
			case "log":
				data = m.Log
			case "diff":
				data = m.Diff // with the patch: the store may not have it yet
			}
			b, _ := json.Marshal(data)
			fmt.Fprintf(w, "id: %d\nevent: %s\ndata: %s\n\n", m.Seq, m.Type, b)
			fl.Flush()
		}
	}
}

type messageBody struct {
	Text string `json:"text"`
}

func (s *Server) control(kind string) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		id := r.PathValue("id")
		t, err := s.bus.Records().Task(r.Context(), id)
		if err != nil {
			s.fail(w, err)
			return
		}
		ev := &orchestrator.Event{ID: orchestrator.NewID(), Source: orchestrator.SourceAPI, Kind: kind, Repo: t.Repo,
			Target: orchestrator.Target{Type: "task", ID: id}, ReceivedAt: s.cfg.Clock().UTC(), Actor: orchestrator.Actor{Login: actorLogin(r)}}
		ev.DeliveryID = "api:" + ev.ID
		ev.IdempotencyKey = ev.DeliveryID
		switch kind {
		case orchestrator.KindTaskMessage:
			var body messageBody
			err := json.NewDecoder(http.MaxBytesReader(w, r.Body, s.maxBody())).Decode(&body)
			if err != nil && s.tooLarge(w, err) {
				return
			}
			if err != nil || strings.TrimSpace(body.Text) == "" {
				writeError(w, http.StatusBadRequest, `body must be {"text": "..."}`)
				return
			}
			if len(body.Text) > s.cfg.MaxPromptBytes {
				s.promptTooLarge(w, len(body.Text))
				return
			}
			ev.Instruction = body.Text
		case orchestrator.KindTaskCancel:
			if !t.State.CanCancel() {
				writeError(w, http.StatusConflict, fmt.Sprintf("task %s is already %s", id, t.State))
				return
			}
		case orchestrator.KindTaskRetry:
			// The body is optional: {"from_base": true} starts over from
			// the base instead of the task's branch.
			var body struct {
				FromBase bool `json:"from_base"`
			}
			dec := json.NewDecoder(http.MaxBytesReader(w, r.Body, 4<<10))
			dec.DisallowUnknownFields()
			if err := dec.Decode(&body); err != nil && !errors.Is(err, io.EOF) {
				writeError(w, http.StatusBadRequest, `body must be empty or {"from_base": true|false}`)
				return
			}
			ev.FromBase = body.FromBase
			if !t.State.CanRetry() {
				writeError(w, http.StatusConflict, fmt.Sprintf("task %s is %s; only finished tasks can be retried", id, t.State))
				return
			}
		}
		if err := s.bus.PublishEventWait(r.Context(), ev); err != nil {
			writeError(w, http.StatusServiceUnavailable, "the request could not be stored; try again")
			return
		}
		writeJSON(w, http.StatusAccepted, map[string]any{"id": id, "state": t.State, "accepted": strings.TrimPrefix(kind, "task.")})
	}
}

func (s *Server) fail(w http.ResponseWriter, err error) {
	code, msg := StatusOf(err)
	if code >= 500 {
		s.log.Error("api error", "err", err)
	}
	writeError(w, code, msg)
}

// StatusOf maps an error to the HTTP status and the message users see.
func StatusOf(err error) (int, string) {
	switch {
	case errors.Is(err, orchestrator.ErrNotFound):
		return http.StatusNotFound, "task not found"
	case errors.Is(err, orchestrator.ErrConflict):
		return http.StatusConflict, err.Error()
	case errors.Is(err, context.DeadlineExceeded):
		return http.StatusGatewayTimeout, "timed out"
	case errors.Is(err, errKeyReused):
		return http.StatusUnprocessableEntity, "this Idempotency-Key was already used with a different request body; send a new key for a new task"
	}
	return http.StatusInternalServerError, "internal error"
}

// ErrorBody is every API error's JSON shape.
type ErrorBody struct {
	Error string `json:"error"`
}

func writeError(w http.ResponseWriter, code int, msg string) {
	writeJSON(w, code, ErrorBody{Error: msg})
}

func writeJSON(w http.ResponseWriter, code int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(code)
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	enc.Encode(v)
}
