package api

import (
	"context"
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"net/url"
	"strings"
	"sync"
	"time"
)

// Authentication has two doors. Machines send a bearer token on every
// request (Authorization: Bearer ...). People log in once on the board by
// pasting a token (later: through OIDC); the server then keeps a session and
// gives the browser an HttpOnly, SameSite=Strict cookie naming it. Every
// state-changing request made with the cookie must also carry the session's
// CSRF token in the X-CSRF-Token header, and an Origin header, when present,
// must name this server. Bearer requests need neither: browsers never attach
// them on their own.

// ErrNoCredentials is returned by an Authenticator when the request carries
// no credential it understands.
var ErrNoCredentials = errors.New("api: no credentials")

// ErrBadCredentials is returned for a credential that does not check out.
var ErrBadCredentials = errors.New("api: invalid credentials")

// ErrNoSession is returned by a SessionStore for an unknown or expired session.
var ErrNoSession = errors.New("api: no such session")

// String returns the role's name as the API shows it.
func (r Role) String() string {
	switch r {
	case RoleAdmin:
		return "admin"
	case RoleReadOnly:
		return "read_only"
	}
	return "none"
}

// MarshalText encodes the role as its name.
func (r Role) MarshalText() ([]byte, error) { return []byte(r.String()), nil }

// UnmarshalText decodes a role name.
func (r *Role) UnmarshalText(b []byte) error {
	switch string(b) {
	case "admin":
		*r = RoleAdmin
	case "read_only":
		*r = RoleReadOnly
	case "none", "":
		*r = RoleNone
	default:
		return fmt.Errorf("api: unknown role %q", b)
	}
	return nil
}

// Principal is who a request acts as.
type Principal struct {
	// Subject identifies the caller: "token:<8 hex of its SHA-256>" for an
	// API token, the OIDC subject for a person, "anonymous" in open mode.
	Subject string `json:"subject"`
	// Name is what the board shows; may be empty.
	Name string `json:"name,omitempty"`
	Role Role   `json:"role"`
	// Method is how the request was authenticated: bearer, session or open.
	Method string `json:"method"`
}

// Authenticator checks the credential a request carries. It returns
// ErrNoCredentials when there is none it understands, so the next
// authenticator may try. API tokens are one; an OIDC bearer (JWT) verifier
// can be another.
type Authenticator interface {
	Authenticate(r *http.Request) (Principal, error)
}

// TokenAuthenticator checks static admin and read-only API tokens, sent as
// a bearer token or pasted on the login page.
type TokenAuthenticator struct {
	admin, readOnly []string
}

var _ Authenticator = (*TokenAuthenticator)(nil)

// NewTokenAuthenticator returns an authenticator for the given tokens.
func NewTokenAuthenticator(admin, readOnly []string) *TokenAuthenticator {
	return &TokenAuthenticator{admin: nonEmpty(admin), readOnly: nonEmpty(readOnly)}
}

func nonEmpty(list []string) []string {
	var out []string
	for _, s := range list {
		if s != "" {
			out = append(out, s)
		}
	}
	return out
}

// Empty reports whether no token is configured.
func (a *TokenAuthenticator) Empty() bool { return len(a.admin)+len(a.readOnly) == 0 }

// Authenticate checks the request's bearer token.
func (a *TokenAuthenticator) Authenticate(r *http.Request) (Principal, error) {
	tok, ok := bearer(r)
	if !ok {
		return Principal{}, ErrNoCredentials
	}
	p, err := a.Check(tok)
	p.Method = "bearer"
	return p, err
}

// Check returns the principal an API token stands for.
func (a *TokenAuthenticator) Check(tok string) (Principal, error) {
	sum := sha256.Sum256([]byte(tok))
	p := Principal{Subject: "token:" + hex.EncodeToString(sum[:4])}
	switch {
	case tok == "":
		return Principal{}, ErrBadCredentials
	case matchToken(tok, a.admin):
		p.Role = RoleAdmin
	case matchToken(tok, a.readOnly):
		p.Role = RoleReadOnly
	default:
		return Principal{}, ErrBadCredentials
	}
	return p, nil
}

func bearer(r *http.Request) (string, bool) {
	h := r.Header.Get("Authorization")
	if len(h) < 7 || !strings.EqualFold(h[:7], "bearer ") {
		return "", false
	}
	return strings.TrimSpace(h[7:]), true
}

// Session is a logged-in person's server-side state.
type Session struct {
	ID        string    `json:"-"`
	CSRF      string    `json:"-"`
	Principal Principal `json:"principal"`
	CreatedAt time.Time `json:"created_at"`
	ExpiresAt time.Time `json:"expires_at"`
}

// LogValue keeps the session id and CSRF token out of logs.
func (s Session) LogValue() slog.Value {
	return slog.GroupValue(slog.String("subject", s.Principal.Subject), slog.String("id", "REDACTED"))
}

// SessionStore keeps sessions. Load returns ErrNoSession for an unknown or
// expired id. Implementations must be safe for concurrent use.
type SessionStore interface {
	Save(ctx context.Context, s Session) error
	Load(ctx context.Context, id string) (Session, error)
	Delete(ctx context.Context, id string) error
}

// MemorySessionStore keeps sessions in memory: they end when the process
// does, which for a single-binary server means a new login after a restart.
type MemorySessionStore struct {
	mu  sync.Mutex
	m   map[string]Session
	now func() time.Time
}

var _ SessionStore = (*MemorySessionStore)(nil)

// NewMemorySessionStore returns an empty store; now may be nil (time.Now).
func NewMemorySessionStore(now func() time.Time) *MemorySessionStore {
	if now == nil {
		now = time.Now
	}
	return &MemorySessionStore{m: map[string]Session{}, now: now}
}

// Save stores s, dropping expired sessions on the way.
func (m *MemorySessionStore) Save(_ context.Context, s Session) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	now := m.now()
	for id, old := range m.m {
		if now.After(old.ExpiresAt) {
			delete(m.m, id)
		}
	}
	m.m[s.ID] = s
	return nil
}

// Load returns the session with id.
func (m *MemorySessionStore) Load(_ context.Context, id string) (Session, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	s, ok := m.m[id]
	if !ok || m.now().After(s.ExpiresAt) {
		return Session{}, ErrNoSession
	}
	return s, nil
}

// Delete forgets the session with id.
func (m *MemorySessionStore) Delete(_ context.Context, id string) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	delete(m.m, id)
	return nil
}

// SessionCookie is the name of the board's session cookie.
const SessionCookie = "nightshift_session"

// CSRFHeader is the header carrying the session's CSRF token.
const CSRFHeader = "X-CSRF-Token"

// auth is the request authentication the API and the board share.
type auth struct {
	tokens   *TokenAuthenticator
	extra    []Authenticator
	sessions SessionStore
	key      []byte
	ttl      time.Duration
	now      func() time.Time
}

// open reports whether no credential is configured (loopback-only mode).
func (a *auth) open() bool { return a.tokens.Empty() && len(a.extra) == 0 }

// authenticate returns who r acts as, and its session when it came with the
// session cookie. A request with a bad bearer token is not authenticated,
// even if it also has a cookie.
func (a *auth) authenticate(r *http.Request) (Principal, *Session) {
	if a.open() {
		return Principal{Subject: "anonymous", Role: RoleAdmin, Method: "open"}, nil
	}
	for _, au := range append([]Authenticator{a.tokens}, a.extra...) {
		p, err := au.Authenticate(r)
		if errors.Is(err, ErrNoCredentials) {
			continue
		}
		if err != nil {
			return Principal{}, nil
		}
		return p, nil
	}
	if _, ok := bearer(r); ok {
		return Principal{}, nil
	}
	c, err := r.Cookie(SessionCookie)
	if err != nil {
		return Principal{}, nil
	}
	id, ok := a.verify(c.Value)
	if !ok {
		return Principal{}, nil
	}
	s, err := a.sessions.Load(r.Context(), id)
	if err != nil {
		return Principal{}, nil
	}
	s.Principal.Method = "session"
	return s.Principal, &s
}

func (a *auth) sign(id string) string {
	m := hmac.New(sha256.New, a.key)
	m.Write([]byte(id))
	return id + "." + base64.RawURLEncoding.EncodeToString(m.Sum(nil))
}

func (a *auth) verify(v string) (string, bool) {
	id, _, ok := strings.Cut(v, ".")
	if !ok || id == "" {
		return "", false
	}
	return id, hmac.Equal([]byte(a.sign(id)), []byte(v))
}

func randomToken() string {
	var b [24]byte
	if _, err := rand.Read(b[:]); err != nil {
		panic(err) // crypto/rand never fails on supported platforms
	}
	return base64.RawURLEncoding.EncodeToString(b[:])
}

// start creates a session for p and sets its cookie on w.
func (a *auth) start(w http.ResponseWriter, r *http.Request, p Principal) (Session, error) {
	now := a.now()
	p.Method = "session"
	s := Session{ID: randomToken(), CSRF: randomToken(), Principal: p, CreatedAt: now, ExpiresAt: now.Add(a.ttl)}
	if err := a.sessions.Save(r.Context(), s); err != nil {
		return Session{}, fmt.Errorf("save session: %w", err)
	}
	http.SetCookie(w, &http.Cookie{Name: SessionCookie, Value: a.sign(s.ID), Path: "/", HttpOnly: true,
		SameSite: http.SameSiteStrictMode, Secure: secureRequest(r), Expires: s.ExpiresAt, MaxAge: int(a.ttl.Seconds())})
	return s, nil
}

// end deletes r's session, if any, and clears the cookie.
func (a *auth) end(w http.ResponseWriter, r *http.Request) error {
	var err error
	if c, cerr := r.Cookie(SessionCookie); cerr == nil {
		if id, ok := a.verify(c.Value); ok {
			err = a.sessions.Delete(r.Context(), id)
		}
	}
	http.SetCookie(w, &http.Cookie{Name: SessionCookie, Value: "", Path: "/", HttpOnly: true,
		SameSite: http.SameSiteStrictMode, Secure: secureRequest(r), MaxAge: -1})
	return err
}

// secureRequest reports whether the browser reached us over TLS (directly
// or through a proxy saying so), so the cookie gets the Secure attribute.
func secureRequest(r *http.Request) bool {
	return r.TLS != nil || strings.EqualFold(r.Header.Get("X-Forwarded-Proto"), "https")
}

// SameOrigin reports whether a browser request's Origin header (or, lacking
// it, its Referer) names the host the request was sent to. Requests without
// either (curl, the CLI) pass: browsers send Origin on every POST.
func SameOrigin(r *http.Request) bool {
	o := r.Header.Get("Origin")
	if o == "" {
		o = r.Header.Get("Referer")
	}
	if o == "" {
		return true
	}
	if o == "null" {
		return false
	}
	u, err := url.Parse(o)
	if err != nil {
		return false
	}
	return strings.EqualFold(u.Host, r.Host)
}

func safeMethod(m string) bool {
	return m == http.MethodGet || m == http.MethodHead || m == http.MethodOptions
}

// checkCSRF refuses a state-changing browser request that lacks proof it
// came from the board: a foreign Origin, or, with a session cookie, a
// missing or wrong X-CSRF-Token.
func checkCSRF(r *http.Request, p Principal, s *Session) error {
	if safeMethod(r.Method) || p.Method == "bearer" {
		return nil
	}
	if !SameOrigin(r) {
		return errors.New("cross-origin request refused")
	}
	if s != nil {
		got := r.Header.Get(CSRFHeader)
		if got == "" || subtle.ConstantTimeCompare([]byte(got), []byte(s.CSRF)) != 1 {
			return errors.New("missing or invalid CSRF token (send the X-CSRF-Token header from GET /api/v1/session)")
		}
	}
	return nil
}

// SessionInfo answers GET and POST /api/v1/session.
type SessionInfo struct {
	Authenticated bool      `json:"authenticated"`
	Principal     Principal `json:"principal"`
	// Open is true when no token is configured (loopback-only mode).
	Open bool `json:"open"`
	// CSRFToken must be sent as X-CSRF-Token on POST/DELETE made with the
	// session cookie. Empty for bearer and open access.
	CSRFToken string     `json:"csrf_token,omitempty"`
	ExpiresAt *time.Time `json:"expires_at,omitempty"`
}

// LoginRequest is the body of POST /api/v1/session.
type LoginRequest struct {
	Token string `json:"token"`
}

// LoginWithToken checks tok and, when it is a configured API token, starts a
// session for it with a cookie set on w. The board's login form calls it.
func (s *Server) LoginWithToken(w http.ResponseWriter, r *http.Request, tok string) (SessionInfo, error) {
	if s.auth.open() {
		return SessionInfo{Authenticated: true, Open: true, Principal: Principal{Subject: "anonymous", Role: RoleAdmin, Method: "open"}}, nil
	}
	p, err := s.auth.tokens.Check(strings.TrimSpace(tok))
	if err != nil {
		s.log.Warn("login refused", "remote", r.RemoteAddr)
		return SessionInfo{}, err
	}
	return s.StartSession(w, r, p)
}

// StartSession starts a session for a principal another login flow (OIDC)
// has established, and sets its cookie on w.
func (s *Server) StartSession(w http.ResponseWriter, r *http.Request, p Principal) (SessionInfo, error) {
	sess, err := s.auth.start(w, r, p)
	if err != nil {
		return SessionInfo{}, err
	}
	s.log.Info("login", "subject", p.Subject, "role", p.Role.String())
	return SessionInfo{Authenticated: true, Principal: sess.Principal, CSRFToken: sess.CSRF, ExpiresAt: &sess.ExpiresAt}, nil
}

// Logout ends r's session and clears its cookie.
func (s *Server) Logout(w http.ResponseWriter, r *http.Request) error { return s.auth.end(w, r) }

// Authenticate returns who r acts as and what it may do (RoleNone when it
// is not authenticated).
func (s *Server) Authenticate(r *http.Request) Principal {
	p, _ := s.auth.authenticate(r)
	return p
}

// Open reports whether the API runs without tokens (loopback-only mode).
func (s *Server) Open() bool { return s.auth.open() }

func (s *Server) login(w http.ResponseWriter, r *http.Request) {
	if !SameOrigin(r) {
		writeError(w, http.StatusForbidden, "cross-origin request refused")
		return
	}
	var req LoginRequest
	if err := json.NewDecoder(http.MaxBytesReader(w, r.Body, 64<<10)).Decode(&req); err != nil {
		writeError(w, http.StatusBadRequest, `body must be {"token": "..."}`)
		return
	}
	info, err := s.LoginWithToken(w, r, req.Token)
	switch {
	case errors.Is(err, ErrBadCredentials):
		writeError(w, http.StatusUnauthorized, "that token is not valid")
	case err != nil:
		s.fail(w, err)
	default:
		writeJSON(w, http.StatusOK, info)
	}
}

func (s *Server) session(w http.ResponseWriter, r *http.Request) {
	p, sess := s.auth.authenticate(r)
	info := SessionInfo{Authenticated: true, Principal: p, Open: s.auth.open()}
	if sess != nil {
		info.CSRFToken = sess.CSRF
		info.ExpiresAt = &sess.ExpiresAt
	}
	writeJSON(w, http.StatusOK, info)
}

func (s *Server) logout(w http.ResponseWriter, r *http.Request) {
	if err := s.Logout(w, r); err != nil {
		s.fail(w, err)
		return
	}
	w.WriteHeader(http.StatusNoContent)
}
