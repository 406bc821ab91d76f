package api

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"strconv"
	"time"

	"github.com/nightshift/nightshift/config"
	"github.com/nightshift/nightshift/orchestrator/automation"
)

// Automations is what the automation routes need: the engine
// (orchestrator/automation.Engine) satisfies it.
type Automations interface {
	List(ctx context.Context) ([]automation.Record, error)
	Get(ctx context.Context, name string) (automation.Record, error)
	History(ctx context.Context, name string) ([]automation.Record, error)
	Put(ctx context.Context, def config.Automation, by string) (automation.Record, error)
	State(ctx context.Context, name string) (automation.State, error)
	NextFire(r automation.Record, st automation.State) time.Time
	SetEnabled(ctx context.Context, name string, on bool, by string) (automation.Record, error)
	RunNow(ctx context.Context, name, who string) ([]automation.Run, error)
	Runs(ctx context.Context, name string, limit int) ([]automation.Run, error)
	Inbox(ctx context.Context, subject string, limit int) ([]automation.Run, error)
	MarkRead(ctx context.Context, subject, id string, read bool) error
}

var _ Automations = (*automation.Engine)(nil)

// AutomationView is an automation as the API shows it: its current
// definition and switch, its guard-rail state and its next fire time.
type AutomationView struct {
	Name         string            `json:"name"`
	Enabled      bool              `json:"enabled"`
	Paused       bool              `json:"paused"`
	PausedReason string            `json:"paused_reason,omitempty"`
	Failures     int               `json:"failures"`
	Active       int               `json:"active"`
	DayCostUSD   float64           `json:"day_cost_usd"`
	NextFire     *time.Time        `json:"next_fire,omitempty"`
	Version      uint64            `json:"version"`
	Origin       string            `json:"origin"`
	UpdatedAt    time.Time         `json:"updated_at"`
	UpdatedBy    string            `json:"updated_by,omitempty"`
	Definition   config.Automation `json:"definition"`
}

// MountAutomations serves the automation routes over a (nil answers 503:
// this process has no automation engine).
func (s *Server) MountAutomations(a Automations) {
	h := &automationRoutes{s: s, a: a}
	s.handle("GET /api/v1/automations", s.read(h.guard(h.list)))
	s.handle("GET /api/v1/automations/{name}", s.read(h.guard(h.get)))
	s.handle("PUT /api/v1/automations/{name}", s.admin(h.guard(h.put)))
	s.handle("GET /api/v1/automations/{name}/versions", s.read(h.guard(h.versions)))
	s.handle("POST /api/v1/automations/{name}/enable", s.admin(h.guard(h.enable(true))))
	s.handle("POST /api/v1/automations/{name}/disable", s.admin(h.guard(h.enable(false))))
	s.handle("POST /api/v1/automations/{name}/run", s.admin(h.guard(h.run)))
	s.handle("GET /api/v1/automations/{name}/runs", s.read(h.guard(h.runs)))
	s.handle("GET /api/v1/inbox", s.read(h.guard(h.inbox)))
	s.handle("POST /api/v1/inbox/{id}/read", s.read(h.guard(h.mark(true))))
	s.handle("POST /api/v1/inbox/{id}/unread", s.read(h.guard(h.mark(false))))
}

type automationRoutes struct {
	s *Server
	a Automations
}

func (h *automationRoutes) guard(fn http.HandlerFunc) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		if h.a == nil {
			writeError(w, http.StatusServiceUnavailable, "automations are not available on this server")
			return
		}
		fn(w, r)
	}
}

func (h *automationRoutes) fail(w http.ResponseWriter, err error) {
	var ce *config.Error
	switch {
	case errors.Is(err, automation.ErrNotFound):
		writeError(w, http.StatusNotFound, "automation not found")
	case errors.As(err, &ce):
		writeError(w, http.StatusBadRequest, "bad automation: "+ce.Key+": "+ce.Msg)
	case errors.Is(err, automation.ErrDisabled), errors.Is(err, automation.ErrPaused), errors.Is(err, automation.ErrNoRepo):
		writeError(w, http.StatusConflict, err.Error())
	default:
		h.s.fail(w, err)
	}
}

func (h *automationRoutes) view(r *http.Request, rec automation.Record) (AutomationView, error) {
	st, err := h.a.State(r.Context(), rec.Definition.Name)
	if err != nil {
		return AutomationView{}, err
	}
	v := AutomationView{Name: rec.Definition.Name, Enabled: rec.Enabled, Paused: st.Paused, PausedReason: st.PausedReason,
		Failures: st.Failures, Active: len(st.Active), DayCostUSD: st.DayCostUSD, Version: rec.Version, Origin: rec.Origin,
		UpdatedAt: rec.UpdatedAt, UpdatedBy: rec.UpdatedBy, Definition: rec.Definition.WithDefaults()}
	if n := h.a.NextFire(rec, st); !n.IsZero() {
		v.NextFire = &n
	}
	return v, nil
}

func (h *automationRoutes) list(w http.ResponseWriter, r *http.Request) {
	recs, err := h.a.List(r.Context())
	if err != nil {
		h.fail(w, err)
		return
	}
	out := make([]AutomationView, 0, len(recs))
	for _, rec := range recs {
		v, err := h.view(r, rec)
		if err != nil {
			h.fail(w, err)
			return
		}
		out = append(out, v)
	}
	writeJSON(w, http.StatusOK, map[string]any{"automations": out})
}

func (h *automationRoutes) get(w http.ResponseWriter, r *http.Request) {
	rec, err := h.a.Get(r.Context(), r.PathValue("name"))
	if err != nil {
		h.fail(w, err)
		return
	}
	h.writeView(w, r, http.StatusOK, rec)
}

func (h *automationRoutes) writeView(w http.ResponseWriter, r *http.Request, code int, rec automation.Record) {
	v, err := h.view(r, rec)
	if err != nil {
		h.fail(w, err)
		return
	}
	writeJSON(w, code, v)
}

func (h *automationRoutes) put(w http.ResponseWriter, r *http.Request) {
	var def config.Automation
	dec := json.NewDecoder(http.MaxBytesReader(w, r.Body, h.s.maxBody()))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&def); err != nil {
		writeError(w, http.StatusBadRequest, "bad automation: "+err.Error())
		return
	}
	name := r.PathValue("name")
	if def.Name == "" {
		def.Name = name
	}
	if def.Name != name {
		writeError(w, http.StatusBadRequest, fmt.Sprintf("bad automation: name %q does not match the path's %q", def.Name, name))
		return
	}
	rec, err := h.a.Put(r.Context(), def, actorLogin(r))
	if err != nil {
		h.fail(w, err)
		return
	}
	h.writeView(w, r, http.StatusOK, rec)
}

func (h *automationRoutes) versions(w http.ResponseWriter, r *http.Request) {
	recs, err := h.a.History(r.Context(), r.PathValue("name"))
	if err != nil {
		h.fail(w, err)
		return
	}
	writeJSON(w, http.StatusOK, map[string]any{"versions": recs})
}

func (h *automationRoutes) enable(on bool) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		rec, err := h.a.SetEnabled(r.Context(), r.PathValue("name"), on, actorLogin(r))
		if err != nil {
			h.fail(w, err)
			return
		}
		h.writeView(w, r, http.StatusOK, rec)
	}
}

func (h *automationRoutes) run(w http.ResponseWriter, r *http.Request) {
	runs, err := h.a.RunNow(r.Context(), r.PathValue("name"), actorLogin(r))
	if err != nil {
		h.fail(w, err)
		return
	}
	writeJSON(w, http.StatusAccepted, map[string]any{"runs": runs})
}

func limitOf(r *http.Request) int {
	n, err := strconv.Atoi(r.URL.Query().Get("limit"))
	if err != nil || n <= 0 || n > 500 {
		return 100
	}
	return n
}

func (h *automationRoutes) runs(w http.ResponseWriter, r *http.Request) {
	runs, err := h.a.Runs(r.Context(), r.PathValue("name"), limitOf(r))
	if err != nil {
		h.fail(w, err)
		return
	}
	writeJSON(w, http.StatusOK, map[string]any{"runs": nonNil(runs)})
}

func (h *automationRoutes) inbox(w http.ResponseWriter, r *http.Request) {
	p, _ := PrincipalFrom(r.Context())
	runs, err := h.a.Inbox(r.Context(), p.Subject, limitOf(r))
	if err != nil {
		h.fail(w, err)
		return
	}
	unread := 0
	for _, run := range runs {
		if !run.Read {
			unread++
		}
	}
	writeJSON(w, http.StatusOK, map[string]any{"runs": nonNil(runs), "unread": unread})
}

func (h *automationRoutes) mark(read bool) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		p, _ := PrincipalFrom(r.Context())
		if err := h.a.MarkRead(r.Context(), p.Subject, r.PathValue("id"), read); err != nil {
			h.fail(w, err)
			return
		}
		writeJSON(w, http.StatusOK, map[string]any{"id": r.PathValue("id"), "read": read})
	}
}

func nonNil(runs []automation.Run) []automation.Run {
	if runs == nil {
		return []automation.Run{}
	}
	return runs
}
