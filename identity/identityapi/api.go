// Package identityapi serves the operator REST API for identities under
// /api/v1/identities. The server in front of it authenticates operators;
// this handler trusts every request that reaches it.
//
//	POST /api/v1/identities                      {"task_id"?, "repo"?, "agent"?} → 201 identity + agent token
//	GET  /api/v1/identities[?all=true]           {"identities":[...]}
//	GET  /api/v1/identities/{id}                 identity
//	DELETE /api/v1/identities/{id}               release
//	GET  /api/v1/identities/{id}/messages[?kind=email|sms&since=RFC3339&wait=30s]  {"messages":[...]}
//	GET  /api/v1/identities/{id}/otp[?kind=&since=&wait=30s]                       {"found":bool,"otp":{...}}
//
// Errors are {"error": "..."} with 400 for bad parameters, 404 for an
// unknown identity, 409 for a released one and 500 otherwise.
package identityapi

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"strconv"
	"strings"
	"time"

	"github.com/nightshift/nightshift/identity"
)

// Config configures the handler.
type Config struct {
	// Prefix is the path the handler is mounted at. Default "/api/v1/identities".
	Prefix string
	// MaxWait caps the wait parameter. Default 5m.
	MaxWait time.Duration
	// Logger receives errors. Nil discards.
	Logger *slog.Logger
}

// Handler serves the identities API.
type Handler struct {
	ids *identity.Service
	cfg Config
	log *slog.Logger
	mux *http.ServeMux
}

var _ http.Handler = (*Handler)(nil)

// New returns the API handler. Mount it for both Prefix and Prefix+"/".
func New(ids *identity.Service, cfg Config) *Handler {
	if cfg.Prefix == "" {
		cfg.Prefix = "/api/v1/identities"
	}
	cfg.Prefix = strings.TrimSuffix(cfg.Prefix, "/")
	if cfg.MaxWait <= 0 {
		cfg.MaxWait = 5 * time.Minute
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	h := &Handler{ids: ids, cfg: cfg, log: cfg.Logger.With("component", "identity_api"), mux: http.NewServeMux()}
	p := cfg.Prefix
	h.mux.HandleFunc("POST "+p, h.create)
	h.mux.HandleFunc("GET "+p, h.list)
	h.mux.HandleFunc("GET "+p+"/{id}", h.get)
	h.mux.HandleFunc("DELETE "+p+"/{id}", h.release)
	h.mux.HandleFunc("GET "+p+"/{id}/messages", h.messages)
	h.mux.HandleFunc("GET "+p+"/{id}/otp", h.otp)
	return h
}

// ServeHTTP routes the request.
func (h *Handler) ServeHTTP(w http.ResponseWriter, r *http.Request) { h.mux.ServeHTTP(w, r) }

// CreateRequest is the body of POST /api/v1/identities. With a task id
// the task's identity is returned (created if needed); without one a new
// stand-alone identity is made.
type CreateRequest struct {
	TaskID string `json:"task_id,omitempty"`
	Repo   string `json:"repo,omitempty"`
	Agent  string `json:"agent,omitempty"`
}

// Created is the answer to POST: the identity and an agent token scoped to it.
type Created struct {
	identity.Identity
	Token string `json:"token"`
}

// List is the answer to GET /api/v1/identities.
type List struct {
	Identities []identity.Identity `json:"identities"`
}

// Messages is the answer to GET .../messages.
type Messages struct {
	Messages []identity.Message `json:"messages"`
}

// OTP is the answer to GET .../otp.
type OTP struct {
	Found bool          `json:"found"`
	OTP   *identity.OTP `json:"otp,omitempty"`
}

type badRequest struct{ msg string }

func (e badRequest) Error() string { return e.msg }

func (h *Handler) create(w http.ResponseWriter, r *http.Request) {
	var req CreateRequest
	if r.ContentLength != 0 {
		dec := json.NewDecoder(http.MaxBytesReader(w, r.Body, 64<<10))
		dec.DisallowUnknownFields()
		if err := dec.Decode(&req); err != nil && !errors.Is(err, io.EOF) {
			h.fail(w, r, badRequest{"malformed JSON body: " + err.Error()})
			return
		}
	}
	var id identity.Identity
	var err error
	if req.TaskID != "" {
		id, err = h.ids.ForTask(r.Context(), req.TaskID)
	} else {
		id, err = h.ids.Create(r.Context())
	}
	if err != nil {
		h.fail(w, r, err)
		return
	}
	tok, err := h.ids.IssueToken(r.Context(), id.ID, identity.Scope{TaskID: req.TaskID, Repo: req.Repo, Agent: req.Agent})
	if err != nil {
		h.fail(w, r, err)
		return
	}
	writeJSON(w, http.StatusCreated, Created{Identity: id, Token: tok})
}

func (h *Handler) list(w http.ResponseWriter, r *http.Request) {
	all, _ := strconv.ParseBool(r.URL.Query().Get("all"))
	ids, err := h.ids.List(r.Context(), identity.ListOptions{IncludeReleased: all})
	if err != nil {
		h.fail(w, r, err)
		return
	}
	if ids == nil {
		ids = []identity.Identity{}
	}
	writeJSON(w, http.StatusOK, List{Identities: ids})
}

func (h *Handler) get(w http.ResponseWriter, r *http.Request) {
	id, err := h.ids.Get(r.Context(), r.PathValue("id"))
	if err != nil {
		h.fail(w, r, err)
		return
	}
	writeJSON(w, http.StatusOK, id)
}

func (h *Handler) release(w http.ResponseWriter, r *http.Request) {
	if err := h.ids.ReleaseIdentity(r.Context(), r.PathValue("id")); err != nil {
		h.fail(w, r, err)
		return
	}
	w.WriteHeader(http.StatusNoContent)
}

// query parses kind, since and wait.
func (h *Handler) query(r *http.Request) (identity.MessageQuery, time.Duration, error) {
	v := r.URL.Query()
	var q identity.MessageQuery
	switch k := v.Get("kind"); k {
	case "", "email", "sms":
		q.Kind = identity.MessageKind(k)
	default:
		return q, 0, badRequest{fmt.Sprintf("kind %q: want email or sms", k)}
	}
	if s := v.Get("since"); s != "" {
		t, err := time.Parse(time.RFC3339Nano, s)
		if err != nil {
			return q, 0, badRequest{fmt.Sprintf("since %q: want an RFC 3339 time", s)}
		}
		q.Since = t
	}
	if s := v.Get("limit"); s != "" {
		n, err := strconv.Atoi(s)
		if err != nil || n < 0 {
			return q, 0, badRequest{fmt.Sprintf("limit %q: want a non-negative integer", s)}
		}
		q.Limit = n
	}
	var wait time.Duration
	if s := v.Get("wait"); s != "" {
		d, err := time.ParseDuration(s)
		if err != nil {
			secs, serr := strconv.Atoi(s)
			if serr != nil {
				return q, 0, badRequest{fmt.Sprintf("wait %q: want a duration such as 30s", s)}
			}
			d = time.Duration(secs) * time.Second
		}
		if d < 0 {
			return q, 0, badRequest{fmt.Sprintf("wait %q is negative", s)}
		}
		wait = min(d, h.cfg.MaxWait)
	}
	return q, wait, nil
}

func (h *Handler) messages(w http.ResponseWriter, r *http.Request) {
	q, wait, err := h.query(r)
	if err != nil {
		h.fail(w, r, err)
		return
	}
	msgs, err := h.ids.WaitMessages(r.Context(), r.PathValue("id"), q, wait)
	if err != nil {
		h.fail(w, r, err)
		return
	}
	writeJSON(w, http.StatusOK, Messages{Messages: msgs})
}

func (h *Handler) otp(w http.ResponseWriter, r *http.Request) {
	q, wait, err := h.query(r)
	if err != nil {
		h.fail(w, r, err)
		return
	}
	otp, found, err := h.ids.OTP(r.Context(), r.PathValue("id"), q, wait)
	if err != nil {
		h.fail(w, r, err)
		return
	}
	out := OTP{Found: found}
	if found {
		out.OTP = &otp
	}
	writeJSON(w, http.StatusOK, out)
}

// fail maps an error to its status in one place; users get a clear
// message, the log gets the cause of server errors.
func (h *Handler) fail(w http.ResponseWriter, r *http.Request, err error) {
	status, msg := http.StatusInternalServerError, "internal error"
	var br badRequest
	switch {
	case errors.As(err, &br):
		status, msg = http.StatusBadRequest, br.msg
	case errors.Is(err, identity.ErrNotFound):
		status, msg = http.StatusNotFound, "identity not found"
	case errors.Is(err, identity.ErrReleased):
		status, msg = http.StatusConflict, "identity released"
	case errors.Is(err, context.Canceled), errors.Is(err, context.DeadlineExceeded):
		status, msg = http.StatusServiceUnavailable, "request cancelled"
	default:
		h.log.ErrorContext(r.Context(), "identity api", "method", r.Method, "path", r.URL.Path, "err", err)
	}
	writeJSON(w, status, map[string]string{"error": msg})
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(v)
}
