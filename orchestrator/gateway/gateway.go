// Package gateway is the model gateway: the only way an agent inside a
// sandbox reaches a model API. Each task gets a random token that stands in
// for the API key (ANTHROPIC_API_KEY / OPENAI_API_KEY inside the sandbox);
// the gateway authenticates the task by that token (valid until the task is
// unregistered or the token's lifetime ends), swaps in the real key
// (fetched per request from an injected function, normally the vault),
// forwards to the configured upstream, streams the answer back event by
// event, meters tokens and cost per task, enforces the task's budget and
// stores a redacted transcript of every exchange.
//
// Routing: a request to /<provider><path> goes to
// Upstreams[<provider>].BaseURL + <path> only when <method> <path> is one
// of the provider's Endpoints, the calls Claude Code and Codex make (see
// DefaultEndpoints); anything else (another method or path, dot segments,
// encoded or doubled slashes) is answered 404 without reaching the
// upstream. Clients are configured with ANTHROPIC_BASE_URL=<gateway>/anthropic
// (Claude Code appends /v1/messages) and an OpenAI base URL of
// <gateway>/openai (Codex appends /responses; the OpenAI upstream's BaseURL
// carries /v1).
//
// Request policy: the provider must not become the sandbox's network. Only
// the request headers the CLIs send are forwarded (see upstreamHeader), and
// of anthropic-beta only Upstream.Betas. POST bodies must be JSON objects
// (gzip or zstd encoded at most) and are refused with 400 in the
// provider's error format, never forwarded, when they use provider-side
// tools (web search and fetch, code execution, hosted shells, image
// generation, file search), the MCP connector, containers, files stored at
// the provider, URL sources the provider would fetch, stored prompts or
// background responses; Upstream.AllowServerTools lifts the body checks
// and the beta filter.
// Forwarded bodies are the agent's bytes, unchanged.
//
// A sandbox should reach the gateway only through TaskHandler(task), which
// refuses every token but that task's, on a listener of its own.
//
// Guarantees:
//   - The real key never leaves the gateway: it is set only on the upstream
//     request, never logged, and replaced by REDACTED in transcripts.
//   - A task's usage is updated after every exchange, including streams the
//     client abandoned (the tokens the upstream reported so far count).
//   - Hooks fire at most once per Register: OnSoftLimit when usage first
//     reaches SoftFraction of a limit, OnHardLimit when it first reaches the
//     limit. From then on every request of the task is refused with 400 and
//     an invalid_request_error in the provider's format (code
//     budget_exceeded for OpenAI); the CLIs do not retry it.
//   - A response is charged before its last bytes reach the agent (see
//     ServeHTTP), so Usage is current when the agent has the answer, and
//     hooks run before the agent can act on it. Hooks run on the request
//     goroutine without locks held; they must not block for long.
package gateway

import (
	"bytes"
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/url"
	"path"
	"strings"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

// Sentinel errors.
var (
	// ErrNoUpstream reports a configuration without upstreams.
	ErrNoUpstream = errors.New("gateway: no upstream configured")
)

// Upstream is one model API behind the gateway.
type Upstream struct {
	// BaseURL is the API root, e.g. https://api.anthropic.com or
	// https://api.openai.com/v1. Required.
	BaseURL string
	// Key returns the real API key for a request. Required.
	Key func(ctx context.Context) (string, error)
	// Auth is how the key is sent: "x-api-key" or "bearer". Empty means
	// "x-api-key" for the provider named "anthropic" and "bearer" otherwise.
	Auth string
	// Endpoints are the calls forwarded to this upstream. Nil means
	// DefaultEndpoints(provider), which is required for a provider other
	// than "anthropic" and "openai".
	Endpoints []Endpoint
	// Betas are the anthropic-beta flags forwarded (provider "anthropic"
	// only); others are dropped from the header. Nil means
	// DefaultBetas(provider).
	Betas []string
	// AllowServerTools forwards requests that use provider-side tools, the
	// MCP connector, containers, stored files and URL sources, and every
	// anthropic-beta flag, letting the provider reach the network for the
	// agent. False (the default) refuses such requests.
	AllowServerTools bool
}

// Endpoint is one API call the gateway forwards: an HTTP method and a path
// below the provider prefix (and the upstream's BaseURL), matched exactly.
type Endpoint struct {
	Method string // e.g. POST
	Path   string // e.g. /v1/messages
}

// DefaultEndpoints returns the calls Claude Code ("anthropic") and Codex
// and the OpenAI SDKs ("openai", whose BaseURL carries /v1) make: creating
// messages or responses, counting tokens and listing models. Nothing that
// reads or deletes stored data (files, batches) is among them. Other
// providers have none.
func DefaultEndpoints(provider string) []Endpoint {
	switch provider {
	case "anthropic":
		return []Endpoint{{"POST", "/v1/messages"}, {"POST", "/v1/messages/count_tokens"}, {"GET", "/v1/models"}}
	case "openai":
		return []Endpoint{{"POST", "/responses"}, {"POST", "/chat/completions"}, {"GET", "/models"}}
	}
	return nil
}

// Price is the list price of a model in USD per million tokens.
type Price struct {
	InputPerMTok  float64
	OutputPerMTok float64
	// CacheReadPerMTok and CacheWritePerMTok price Anthropic prompt-cache
	// reads and writes; zero means 0.1× and 1.25× the input price.
	CacheReadPerMTok, CacheWritePerMTok float64
}

// Config configures a Gateway.
type Config struct {
	// Upstreams maps a provider name ("anthropic", "openai") to its upstream.
	// At least one is required.
	Upstreams map[string]Upstream
	// TranscriptDir, when set, receives one JSON Lines file per task
	// (<task id>.jsonl, see Exchange). Empty means no files.
	TranscriptDir string
	// OnExchange, when set, receives every (redacted) exchange.
	OnExchange func(e Exchange)
	// Redact is applied to request and response bodies before they are
	// stored. Nil means no redaction beyond the gateway's own (upstream keys
	// and task tokens are always removed).
	Redact func(string) string
	// Clock returns the current time. Nil means time.Now.
	Clock func() time.Time
	// Logger receives operational logs. Nil discards.
	Logger *slog.Logger
	// HTTPClient sends upstream requests. Nil means a dedicated client with
	// no overall timeout (streams are long) and a 10-minute header timeout.
	HTTPClient *http.Client
	// Metrics, when set, receives the gateway's Prometheus collectors.
	Metrics prometheus.Registerer
	// Prices maps a model name prefix to its price; the longest matching
	// prefix wins. Nil means DefaultPrices(). Models without a price cost 0.
	Prices map[string]Price
	// MaxRequestBytes bounds a request body. Zero means 64 MiB.
	MaxRequestBytes int64
	// MaxTranscriptBytes bounds each stored body. Zero means 16 MiB.
	MaxTranscriptBytes int
	// Rand is the source of task tokens. Nil means crypto/rand.
	Rand io.Reader
}

func (c Config) withDefaults() Config {
	if c.Clock == nil {
		c.Clock = time.Now
	}
	if c.Logger == nil {
		c.Logger = slog.New(slog.DiscardHandler)
	}
	if c.HTTPClient == nil {
		tr := &http.Transport{
			Proxy:                 nil,
			DialContext:           (&net.Dialer{Timeout: 30 * time.Second, KeepAlive: 30 * time.Second}).DialContext,
			ForceAttemptHTTP2:     true,
			MaxIdleConns:          100,
			IdleConnTimeout:       90 * time.Second,
			TLSHandshakeTimeout:   10 * time.Second,
			ResponseHeaderTimeout: 10 * time.Minute,
		}
		c.HTTPClient = &http.Client{Transport: tr}
	}
	if c.Prices == nil {
		c.Prices = DefaultPrices()
	}
	if c.MaxRequestBytes == 0 {
		c.MaxRequestBytes = 64 << 20
	}
	if c.MaxTranscriptBytes == 0 {
		c.MaxTranscriptBytes = 16 << 20
	}
	if c.Rand == nil {
		c.Rand = rand.Reader
	}
	return c
}

func (c Config) validate() error {
	if len(c.Upstreams) == 0 {
		return ErrNoUpstream
	}
	for name, u := range c.Upstreams {
		if name == "" || strings.Contains(name, "/") {
			return fmt.Errorf("gateway: config Upstreams: bad provider name %q", name)
		}
		bu, err := url.Parse(u.BaseURL)
		if err != nil || (bu.Scheme != "http" && bu.Scheme != "https") || bu.Host == "" {
			return fmt.Errorf("gateway: config Upstreams[%s].BaseURL %q is not an http(s) URL", name, u.BaseURL)
		}
		if u.Key == nil {
			return fmt.Errorf("gateway: config Upstreams[%s].Key is nil", name)
		}
		switch u.Auth {
		case "", "x-api-key", "bearer":
		default:
			return fmt.Errorf("gateway: config Upstreams[%s].Auth %q must be x-api-key or bearer", name, u.Auth)
		}
		eps := u.Endpoints
		if eps == nil {
			eps = DefaultEndpoints(name)
		}
		if len(eps) == 0 {
			return fmt.Errorf("gateway: config Upstreams[%s].Endpoints: none (no defaults for this provider)", name)
		}
		for _, e := range eps {
			if e.Method == "" || !cleanPath(e.Path) {
				return fmt.Errorf("gateway: config Upstreams[%s].Endpoints: %q %q is not a method and a clean path", name, e.Method, e.Path)
			}
		}
	}
	if c.MaxRequestBytes < 0 {
		return fmt.Errorf("gateway: config MaxRequestBytes must not be negative")
	}
	return nil
}

// Budget limits a task's model usage. Zero limits are unlimited.
type Budget struct {
	// Tokens limits input plus output tokens.
	Tokens int64
	// CostUSD limits the priced cost.
	CostUSD float64
	// SoftFraction is where OnSoftLimit fires, as a fraction of each limit.
	// Zero means 0.8.
	SoftFraction float64
	// Used is usage already spent by earlier runs of the task; it counts
	// against the limits and is included in Usage.
	Used Usage
}

// Hooks are called as a task's usage crosses its budget.
type Hooks struct {
	// OnSoftLimit fires once when usage reaches SoftFraction of a limit
	// (the orchestrator notes it in the task log).
	OnSoftLimit func(Usage)
	// OnHardLimit fires once when usage reaches a limit (the orchestrator
	// stops the run with reason budget_exceeded).
	OnHardLimit func(Usage)
	// Redact, when set, is applied to this task's transcript bodies after
	// Config.Redact (e.g. the task's own secrets).
	Redact func(string) string
}

// Usage is a task's metered model usage.
type Usage struct {
	// InputTokens counts all prompt tokens, prompt-cache reads and writes included.
	InputTokens  int64   `json:"input_tokens"`
	OutputTokens int64   `json:"output_tokens"`
	CostUSD      float64 `json:"cost_usd"`
	Requests     int     `json:"requests"`
}

// Tokens returns input plus output tokens.
func (u Usage) Tokens() int64 { return u.InputTokens + u.OutputTokens }

func (u Usage) add(v Usage) Usage {
	return Usage{InputTokens: u.InputTokens + v.InputTokens, OutputTokens: u.OutputTokens + v.OutputTokens,
		CostUSD: u.CostUSD + v.CostUSD, Requests: u.Requests + v.Requests}
}

// task is the state of one registered task.
type task struct {
	id       string
	tokenKey string
	budget   Budget
	hooks    Hooks
	usage    Usage
	soft     bool // OnSoftLimit fired
	hard     bool // OnHardLimit fired / limit reached
	seq      int
	fileMu   sync.Mutex
	expires  time.Time // zero: the token lives until Unregister
}

// Gateway is the model gateway. It is an http.Handler; serve it on its own
// loopback listener or unix socket and forward a sandbox port to it.
type Gateway struct {
	cfg     Config
	log     *slog.Logger
	metrics *metrics
	secrets []string // never-stored strings seen so far (upstream keys)

	mu     sync.Mutex
	tasks  map[string]*task // task id -> task
	tokens map[string]*task // sha256(token) -> task
}

var _ http.Handler = (*Gateway)(nil)

// New returns a Gateway.
func New(cfg Config) (*Gateway, error) {
	cfg = cfg.withDefaults()
	if err := cfg.validate(); err != nil {
		return nil, err
	}
	m, err := newMetrics(cfg.Metrics)
	if err != nil {
		return nil, err
	}
	ups := make(map[string]Upstream, len(cfg.Upstreams))
	for name, u := range cfg.Upstreams {
		if u.Endpoints == nil {
			u.Endpoints = DefaultEndpoints(name)
		}
		if u.Betas == nil {
			u.Betas = DefaultBetas(name)
		}
		betas := make([]string, len(u.Betas))
		for i, b := range u.Betas {
			betas[i] = strings.ToLower(strings.TrimSpace(b))
		}
		u.Betas = betas
		ups[name] = u
	}
	cfg.Upstreams = ups
	return &Gateway{
		cfg:     cfg,
		log:     cfg.Logger.With("component", "gateway"),
		metrics: m,
		tasks:   map[string]*task{},
		tokens:  map[string]*task{},
	}, nil
}

func tokenKey(token string) string {
	h := sha256.Sum256([]byte(token))
	return hex.EncodeToString(h[:])
}

// TokenPrefix starts every task token, so redactors and humans can spot them.
const TokenPrefix = "nsgw_"

// Register starts (or renews) metering for taskID under budget and returns
// the task's token, to be given to the agent as its API key. Registering a
// task that is already registered revokes its previous token, replaces the
// budget and hooks, keeps its usage and re-arms the hooks that have not been
// crossed under the new budget.
func (g *Gateway) Register(taskID string, b Budget, hooks Hooks) string {
	return g.RegisterTTL(taskID, b, hooks, 0)
}

// RegisterTTL is Register with a token that the gateway refuses ttl after
// now (by Config.Clock) even if Unregister is never called; zero means no
// expiry.
func (g *Gateway) RegisterTTL(taskID string, b Budget, hooks Hooks, ttl time.Duration) string {
	var raw [32]byte
	if _, err := io.ReadFull(g.cfg.Rand, raw[:]); err != nil {
		// crypto/rand does not fail on supported platforms; a broken
		// injected source must not yield a guessable token.
		panic(fmt.Sprintf("gateway: read token randomness: %v", err))
	}
	token := TokenPrefix + base64.RawURLEncoding.EncodeToString(raw[:])
	if b.SoftFraction <= 0 || b.SoftFraction > 1 {
		b.SoftFraction = 0.8
	}
	g.mu.Lock()
	defer g.mu.Unlock()
	t := g.tasks[taskID]
	if t == nil {
		t = &task{id: taskID, usage: b.Used}
		g.tasks[taskID] = t
	} else {
		delete(g.tokens, t.tokenKey)
	}
	t.budget, t.hooks = b, hooks
	t.tokenKey = tokenKey(token)
	t.expires = time.Time{}
	if ttl > 0 {
		t.expires = g.cfg.Clock().Add(ttl)
	}
	t.soft = overLimit(t.usage, b, b.SoftFraction)
	t.hard = overLimit(t.usage, b, 1)
	g.tokens[t.tokenKey] = t
	return token
}

// Unregister revokes the task's token and forgets its usage.
func (g *Gateway) Unregister(taskID string) {
	g.mu.Lock()
	defer g.mu.Unlock()
	if t := g.tasks[taskID]; t != nil {
		delete(g.tokens, t.tokenKey)
		delete(g.tasks, taskID)
	}
}

// Usage returns the task's usage so far (zero for an unknown task).
func (g *Gateway) Usage(taskID string) Usage {
	g.mu.Lock()
	defer g.mu.Unlock()
	if t := g.tasks[taskID]; t != nil {
		return t.usage
	}
	return Usage{}
}

// overLimit reports whether u reaches frac of any limit in b.
func overLimit(u Usage, b Budget, frac float64) bool {
	if b.Tokens > 0 && float64(u.Tokens()) >= frac*float64(b.Tokens) {
		return true
	}
	if b.CostUSD > 0 && u.CostUSD >= frac*b.CostUSD {
		return true
	}
	return false
}

// TaskHandler returns the gateway as seen by one task: requests carrying any
// token but taskID's current one are refused like unknown tokens (401).
// Serve it on a listener only that task's sandbox reaches.
func (g *Gateway) TaskHandler(taskID string) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { g.serve(w, r, taskID) })
}

// authenticate returns the task of the request's token; with only set, a
// token of any other task counts as unknown.
func (g *Gateway) authenticate(r *http.Request, only string) (*task, string) {
	token := r.Header.Get("X-Api-Key")
	if token == "" {
		if a := r.Header.Get("Authorization"); len(a) > 7 && strings.EqualFold(a[:7], "bearer ") {
			token = strings.TrimSpace(a[7:])
		}
	}
	if token == "" {
		return nil, ""
	}
	g.mu.Lock()
	defer g.mu.Unlock()
	t := g.tokens[tokenKey(token)]
	if t != nil && only != "" && t.id != only {
		return nil, token
	}
	if t != nil && !t.expires.IsZero() && !g.cfg.Clock().Before(t.expires) {
		return nil, token
	}
	return t, token
}

// cleanPath reports whether p is an absolute, clean path of plain
// characters (letters, digits, "/", "_", "-", ".").
func cleanPath(p string) bool {
	if p == "" || p[0] != '/' || path.Clean(p) != p {
		return false
	}
	for _, c := range p {
		if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || strings.ContainsRune("/_-.", c)) {
			return false
		}
	}
	return true
}

// endpoint returns the upstream path of an allowed call, matching the
// request's raw path exactly: dot segments, encoded characters and doubled
// slashes never match.
func endpoint(up Upstream, r *http.Request, provider string) (string, bool) {
	if r.URL.RawPath != "" && r.URL.RawPath != r.URL.Path {
		return "", false
	}
	p := r.URL.EscapedPath()
	for _, e := range up.Endpoints {
		if r.Method == e.Method && p == "/"+provider+e.Path {
			return e.Path, true
		}
	}
	return "", false
}

// hopHeaders are not forwarded in either direction.
var hopHeaders = []string{"Connection", "Keep-Alive", "Proxy-Authenticate", "Proxy-Authorization",
	"Te", "Trailer", "Transfer-Encoding", "Upgrade", "Proxy-Connection"}

// ServeHTTP serves every registered task (see TaskHandler for one task).
func (g *Gateway) ServeHTTP(w http.ResponseWriter, r *http.Request) { g.serve(w, r, "") }

func (g *Gateway) serve(w http.ResponseWriter, r *http.Request, only string) {
	start := g.cfg.Clock()
	provider, rest, _ := strings.Cut(strings.TrimPrefix(r.URL.Path, "/"), "/")
	up, ok := g.cfg.Upstreams[provider]
	if !ok {
		writeError(w, provider, http.StatusNotFound, errNotFound, fmt.Sprintf("nightshift gateway: no upstream for %q; use /<provider>/... with one of the configured providers", provider))
		g.metrics.request("unknown", http.StatusNotFound)
		return
	}
	rest, ok = endpoint(up, r, provider)
	if !ok {
		g.metrics.refused("endpoint")
		g.metrics.request(provider, http.StatusNotFound)
		writeError(w, provider, http.StatusNotFound, errNotFound, "nightshift gateway: "+r.Method+" "+r.URL.EscapedPath()+" is not an endpoint agents may call")
		return
	}
	rest = strings.TrimPrefix(rest, "/")
	t, token := g.authenticate(r, only)
	if t == nil {
		g.metrics.refused("auth")
		g.metrics.request(provider, http.StatusUnauthorized)
		writeError(w, provider, http.StatusUnauthorized, errAuth, "nightshift gateway: missing or unknown task token")
		return
	}
	log := g.log.With("task_id", t.id, "provider", provider)

	g.mu.Lock()
	refused, u, b := t.hard, t.usage, t.budget
	g.mu.Unlock()
	if refused {
		g.metrics.refused("budget")
		g.metrics.request(provider, budgetStatus(provider))
		msg := budgetMessage(u, b)
		writeError(w, provider, budgetStatus(provider), errBudget, msg)
		g.store(t, Exchange{Time: start, Provider: provider, Method: r.Method, Path: "/" + rest, Status: budgetStatus(provider), Refused: msg}, token, "")
		return
	}

	body, err := io.ReadAll(http.MaxBytesReader(w, r.Body, g.cfg.MaxRequestBytes))
	if err != nil {
		var mbe *http.MaxBytesError
		if errors.As(err, &mbe) {
			writeError(w, provider, http.StatusRequestEntityTooLarge, errInvalid, "nightshift gateway: request body too large")
			g.metrics.request(provider, http.StatusRequestEntityTooLarge)
			return
		}
		return // client went away
	}
	plain, err := decodeRequest(body, r.Header.Get("Content-Encoding"))
	if err == nil && r.Method == http.MethodPost {
		err = checkBody(plain, up.AllowServerTools)
	}
	if err != nil {
		if plain == nil {
			plain = body
		}
		g.metrics.refused("policy")
		g.metrics.request(provider, http.StatusBadRequest)
		msg := err.Error()
		if errors.Is(err, errEncoding) {
			msg = "nightshift gateway: the request body's Content-Encoding must be gzip, zstd or none"
		}
		writeError(w, provider, http.StatusBadRequest, errInvalid, msg)
		g.store(t, Exchange{Time: start, Provider: provider, Method: r.Method, Path: "/" + rest, Model: modelOf(plain),
			Status: http.StatusBadRequest, Request: string(plain), Refused: msg}, token, "")
		return
	}
	model := modelOf(plain)

	key, err := up.Key(r.Context())
	if err != nil {
		log.Error("upstream key", "err", err)
		writeError(w, provider, http.StatusBadGateway, errUpstream, "nightshift gateway: the API key for "+provider+" is not available")
		g.metrics.request(provider, http.StatusBadGateway)
		return
	}
	g.remember(key)

	target := strings.TrimRight(up.BaseURL, "/") + "/" + rest
	if r.URL.RawQuery != "" {
		target += "?" + r.URL.RawQuery
	}
	ureq, err := http.NewRequestWithContext(r.Context(), r.Method, target, bytes.NewReader(body))
	if err != nil {
		writeError(w, provider, http.StatusBadGateway, errUpstream, "nightshift gateway: bad upstream URL")
		return
	}
	// Only allow-listed headers go upstream; Accept-Encoding is left to the
	// transport, which negotiates and decodes, so usage stays readable.
	var dropped []string
	ureq.Header, dropped = upstreamHeader(provider, r.Header, up, r.Header.Get("Content-Encoding") != "")
	if len(dropped) > 0 {
		log.Debug("request headers not forwarded", "headers", dropped)
	}
	ureq.ContentLength = int64(len(body))
	switch authStyle(provider, up) {
	case "x-api-key":
		ureq.Header.Set("X-Api-Key", key)
	default:
		ureq.Header.Set("Authorization", "Bearer "+key)
	}

	resp, err := g.cfg.HTTPClient.Do(ureq)
	if err != nil {
		if r.Context().Err() == nil {
			log.Warn("upstream request failed", "err", redactErr(err, key))
			writeError(w, provider, http.StatusBadGateway, errUpstream, "nightshift gateway: upstream unreachable")
		}
		g.metrics.request(provider, http.StatusBadGateway)
		g.store(t, Exchange{Time: start, Provider: provider, Method: r.Method, Path: "/" + rest, Model: model,
			Status: http.StatusBadGateway, Request: string(plain), Error: "upstream unreachable"}, token, key)
		return
	}
	defer resp.Body.Close()

	for k, vs := range resp.Header {
		w.Header()[k] = vs
	}
	for _, h := range hopHeaders {
		w.Header().Del(h)
	}
	if resp.Uncompressed {
		w.Header().Del("Content-Length")
		w.Header().Del("Content-Encoding")
	}
	w.WriteHeader(resp.StatusCode)
	rc := http.NewResponseController(w)
	_ = rc.Flush()

	// Usage is charged (and the hooks run) before the last bytes of the
	// response reach the agent: SSE streams are charged when their final
	// event (message_stop, response.completed, [DONE]) passes through, other
	// bodies are read whole first. A budget's hard-limit hook therefore runs
	// before the agent can act on the answer that exhausted it.
	m := newMeter(provider, resp.Header.Get("Content-Type"))
	rec := &capped{max: g.cfg.MaxTranscriptBytes}
	var used Usage
	charged := false
	finish := func() {
		if charged {
			return
		}
		charged = true
		used = Usage{Requests: 1}
		if resp.StatusCode < 300 {
			tu := m.usage()
			if tu.model == "" {
				tu.model = model
			}
			used = Usage{InputTokens: tu.input + tu.cacheRead + tu.cacheWrite, OutputTokens: tu.output,
				CostUSD: g.cost(tu), Requests: 1}
		}
		g.charge(t, used)
	}
	var copyErr error
	write := func(chunk []byte) bool {
		rec.Write(chunk)
		if _, err := w.Write(chunk); err != nil {
			copyErr = err
			return false
		}
		_ = rc.Flush()
		return true
	}
	if !m.sse {
		body, err := io.ReadAll(io.LimitReader(resp.Body, maxMeterBody))
		if err != nil {
			copyErr = err
		}
		if resp.StatusCode < 300 {
			m.Write(body)
		}
		finish()
		if write(body) && copyErr == nil {
			if _, err := io.Copy(w, resp.Body); err != nil { // beyond the meter's limit: pass through
				copyErr = err
			}
		}
	} else {
		buf := make([]byte, 32<<10)
		for {
			n, rerr := resp.Body.Read(buf)
			if n > 0 {
				chunk := buf[:n]
				if resp.StatusCode < 300 {
					m.Write(chunk)
				}
				if m.done {
					finish()
				}
				if !write(chunk) {
					break
				}
			}
			if rerr != nil {
				if rerr != io.EOF {
					copyErr = rerr
				}
				break
			}
		}
	}
	finish()
	g.metrics.request(provider, resp.StatusCode)
	g.metrics.usage(provider, used)
	g.metrics.duration(provider, g.cfg.Clock().Sub(start))

	ex := Exchange{Time: start, Provider: provider, Method: r.Method, Path: "/" + rest, Model: model,
		Status: resp.StatusCode, DurationMS: g.cfg.Clock().Sub(start).Milliseconds(),
		RequestContentType: r.Header.Get("Content-Type"), Request: string(plain),
		ResponseContentType: resp.Header.Get("Content-Type"), Response: rec.String(), Truncated: rec.truncated,
		Usage: used}
	if copyErr != nil {
		ex.Error = "stream interrupted: " + redactErr(copyErr, key)
	}
	g.store(t, ex, token, key)
}

// charge adds used to the task and fires the hooks it crossed.
func (g *Gateway) charge(t *task, used Usage) {
	g.mu.Lock()
	t.usage = t.usage.add(used)
	u, b := t.usage, t.budget
	var onSoft, onHard func(Usage)
	if !t.soft && overLimit(u, b, b.SoftFraction) {
		t.soft, onSoft = true, t.hooks.OnSoftLimit
	}
	if !t.hard && overLimit(u, b, 1) {
		t.hard, onHard = true, t.hooks.OnHardLimit
	}
	g.mu.Unlock()
	if onSoft != nil {
		onSoft(u)
	}
	if onHard != nil {
		g.log.Info("task budget exhausted", "task_id", t.id, "tokens", u.Tokens(), "cost_usd", u.CostUSD)
		onHard(u)
	}
}

func budgetMessage(u Usage, b Budget) string {
	var parts []string
	if b.Tokens > 0 {
		parts = append(parts, fmt.Sprintf("%d of %d tokens", u.Tokens(), b.Tokens))
	}
	if b.CostUSD > 0 {
		parts = append(parts, fmt.Sprintf("$%.4f of $%.4f", u.CostUSD, b.CostUSD))
	}
	return "nightshift gateway: this task's model budget is exhausted (" + strings.Join(parts, ", ") + " used); the run is being stopped"
}

func authStyle(provider string, up Upstream) string {
	if up.Auth != "" {
		return up.Auth
	}
	if provider == "anthropic" {
		return "x-api-key"
	}
	return "bearer"
}

// remember records an upstream key so transcripts never contain it.
func (g *Gateway) remember(key string) {
	if key == "" {
		return
	}
	g.mu.Lock()
	defer g.mu.Unlock()
	for _, s := range g.secrets {
		if s == key {
			return
		}
	}
	g.secrets = append(g.secrets, key)
}

func redactErr(err error, key string) string {
	s := err.Error()
	if key != "" {
		s = strings.ReplaceAll(s, key, "REDACTED")
	}
	return s
}

// modelOf returns the "model" field of a JSON request body.
func modelOf(body []byte) string {
	var m struct {
		Model string `json:"model"`
	}
	_ = json.Unmarshal(body, &m)
	return m.Model
}

// capped records up to max bytes.
type capped struct {
	max       int
	buf       bytes.Buffer
	truncated bool
}

func (c *capped) Write(p []byte) {
	if room := c.max - c.buf.Len(); room < len(p) {
		c.truncated = true
		if room > 0 {
			c.buf.Write(p[:room])
		}
		return
	}
	c.buf.Write(p)
}

func (c *capped) String() string { return c.buf.String() }
