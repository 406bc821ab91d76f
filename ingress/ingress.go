// Package ingress is Nightshift's single HTTP listener: webhooks (/hooks/),
// the REST API (/api/v1/), the agents' MCP endpoint (/mcp), the board (/),
// and the operational endpoints /healthz, /readyz and /metrics. Its
// subpackages own each door; this package only composes them and applies
// what every request gets (panic recovery, request timeouts for non-streams,
// security headers).
package ingress

import (
	"context"
	"encoding/json"
	"log/slog"
	"net"
	"net/http"
	"strings"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"
)

// Routes are the handlers to mount. Nil handlers are not mounted.
type Routes struct {
	Hooks      http.Handler // /hooks/github, /hooks/linear, /hooks/slack/...
	SMS        http.Handler // /hooks/sms
	API        http.Handler // /api/v1/
	Identities http.Handler // /api/v1/identities (already authenticated)
	MCP        http.Handler // /mcp
	Board      http.Handler // /
	// Ready checks the dependencies /readyz reports on.
	Ready    func(ctx context.Context) map[string]error
	Registry *prometheus.Registry
	Logger   *slog.Logger
	// LoopbackHostOnly refuses API and board requests whose Host header is
	// not a loopback name (localhost, 127.0.0.0/8, ::1). serve sets it when
	// the API runs without tokens, so a web page cannot reach the open API
	// through DNS rebinding. Webhooks and health checks are not affected.
	LoopbackHostOnly bool
}

// NewHandler composes the routes into one handler.
func NewHandler(r Routes) http.Handler {
	if r.Logger == nil {
		r.Logger = slog.New(slog.DiscardHandler)
	}
	mux := http.NewServeMux()
	mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, _ *http.Request) {
		writeJSON(w, http.StatusOK, map[string]string{"status": "ok"})
	})
	mux.HandleFunc("GET /readyz", func(w http.ResponseWriter, req *http.Request) {
		ctx, cancel := context.WithTimeout(req.Context(), 3*time.Second)
		defer cancel()
		checks := map[string]string{}
		code := http.StatusOK
		if r.Ready != nil {
			for name, err := range r.Ready(ctx) {
				if err != nil {
					checks[name] = err.Error()
					code = http.StatusServiceUnavailable
				} else {
					checks[name] = "ok"
				}
			}
		}
		status := "ready"
		if code != http.StatusOK {
			status = "not ready"
		}
		writeJSON(w, code, map[string]any{"status": status, "checks": checks})
	})
	if r.Registry != nil {
		mux.Handle("GET /metrics", promhttp.HandlerFor(r.Registry, promhttp.HandlerOpts{Registry: r.Registry}))
	}
	if r.Hooks != nil {
		mux.Handle("/hooks/", r.Hooks)
	}
	if r.SMS != nil {
		mux.Handle("/hooks/sms", r.SMS)
	}
	guard := func(h http.Handler) http.Handler {
		if !r.LoopbackHostOnly {
			return h
		}
		return loopbackHostOnly(h)
	}
	if r.API != nil {
		mux.Handle("/api/v1/", guard(r.API))
	}
	if r.Identities != nil {
		mux.Handle("/api/v1/identities", guard(r.Identities))
		mux.Handle("/api/v1/identities/", guard(r.Identities))
	}
	if r.MCP != nil {
		mux.Handle("/mcp", r.MCP)
		mux.Handle("/mcp/", r.MCP)
	}
	if r.Board != nil {
		mux.Handle("/", guard(r.Board))
	} else {
		mux.HandleFunc("GET /{$}", func(w http.ResponseWriter, _ *http.Request) {
			writeJSON(w, http.StatusOK, map[string]string{"name": "nightshift", "api": "/api/v1/tasks"})
		})
	}
	return recoverer(r.Logger, securityHeaders(mux))
}

// loopbackHostOnly refuses requests addressed to a non-loopback host name.
func loopbackHostOnly(h http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if !IsLoopback(r.Host) {
			writeJSON(w, http.StatusMisdirectedRequest, map[string]string{
				"error": "this server has no API tokens and answers only requests addressed to localhost; configure api.tokens to serve other names"})
			return
		}
		h.ServeHTTP(w, r)
	})
}

// IsLoopback reports whether a host or host:port names this machine's
// loopback (localhost, 127.0.0.0/8, ::1).
func IsLoopback(hostport string) bool {
	host := hostport
	if h, _, err := net.SplitHostPort(hostport); err == nil {
		host = h
	}
	host = strings.Trim(host, "[]")
	if strings.EqualFold(host, "localhost") {
		return true
	}
	ip := net.ParseIP(host)
	return ip != nil && ip.IsLoopback()
}

func securityHeaders(h http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("X-Content-Type-Options", "nosniff")
		w.Header().Set("Referrer-Policy", "same-origin")
		h.ServeHTTP(w, r)
	})
}

func recoverer(log *slog.Logger, h http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		defer func() {
			if v := recover(); v != nil {
				if v == http.ErrAbortHandler {
					panic(v)
				}
				log.Error("panic in handler", "path", r.URL.Path, "panic", v)
				writeJSON(w, http.StatusInternalServerError, map[string]string{"error": "internal error"})
			}
		}()
		h.ServeHTTP(w, r)
	})
}

func writeJSON(w http.ResponseWriter, code int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(code)
	json.NewEncoder(w).Encode(v)
}
