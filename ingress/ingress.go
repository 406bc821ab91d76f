// Package ingress is Nightshift's single HTTP listener: webhooks (/hooks/),
// the REST API (/api/v1/), the agents' MCP endpoint (/mcp), the board (/),
// and the operational endpoints /healthz, /readyz and /metrics. Its
// subpackages own each door; this package only composes them and applies
// what every request gets: panic recovery, security headers, and a
// whole-body read deadline on every route (Routes.BodyTimeout), so a
// sender cannot hold a connection and its buffers by trickling a body.
// The deadline covers only the request body: once it is read the deadline
// is lifted, so Server-Sent Events and MCP streams run as long as they
// need. Webhook responses, never streamed, also get a write deadline.
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
	// BodyTimeout is how long a request on any route has to deliver its
	// whole body, from the moment its handler starts (default 30s). Past
	// it, reading the body fails (the handler answers as for a broken
	// body) and the connection is closed after the answer. Requests
	// without a body are not affected. The webhook handler applies its
	// own, shorter webhook.Config.BodyTimeout on top.
	BodyTimeout time.Duration
	// HookWriteTimeout bounds writing a webhook answer, counted from the
	// start of the request (default 2m): webhook answers are small and
	// never streamed.
	HookWriteTimeout time.Duration

	// MetricsAuthFunc reports whether a request may read /metrics; others
	// get 401. Nil lets anyone read it, like /healthz (serve sets it when
	// API tokens are configured: an admin or read-only token is needed).
	MetricsAuthFunc func(r *http.Request) bool
}

// DefaultBodyTimeout is Routes.BodyTimeout's default.
const DefaultBodyTimeout = 30 * time.Second

// NewHandler composes the routes into one handler.
func NewHandler(r Routes) http.Handler {
	if r.Logger == nil {
		r.Logger = slog.New(slog.DiscardHandler)
	}
	if r.BodyTimeout <= 0 {
		r.BodyTimeout = DefaultBodyTimeout
	}
	if r.HookWriteTimeout <= 0 {
		r.HookWriteTimeout = 2 * time.Minute
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
		metrics := promhttp.HandlerFor(r.Registry, promhttp.HandlerOpts{Registry: r.Registry})
		mux.HandleFunc("GET /metrics", func(w http.ResponseWriter, req *http.Request) {
			if r.MetricsAuthFunc != nil && !r.MetricsAuthFunc(req) {
				w.Header().Set("WWW-Authenticate", `Bearer realm="nightshift"`)
				writeJSON(w, http.StatusUnauthorized, map[string]string{"error": "missing or invalid token: /metrics takes an API token (admin or read-only)"})
				return
			}
			metrics.ServeHTTP(w, req)
		})
	}
	if r.Hooks != nil {
		mux.Handle("/hooks/", writeDeadline(r.HookWriteTimeout, r.Hooks))
	}
	if r.SMS != nil {
		mux.Handle("/hooks/sms", writeDeadline(r.HookWriteTimeout, r.SMS))
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
	return recoverer(r.Logger, securityHeaders(bodyDeadline(r.BodyTimeout, mux)))
}

// bodyDeadline sets a read deadline for the request body: the whole body
// must arrive within d. Reaching its end lifts the deadline (net/http
// clears it when it starts watching the connection for the next request),
// so a handler that goes on to stream an answer (SSE, MCP) is not cut off;
// TestBodyDeadlineSparesStreams guards that.
func bodyDeadline(d time.Duration, h http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Body != nil && r.Body != http.NoBody {
			// Fails only on writers without a connection (recorders).
			_ = http.NewResponseController(w).SetReadDeadline(time.Now().Add(d))
		}
		h.ServeHTTP(w, r)
	})
}

// writeDeadline bounds writing the answer of a handler that never streams.
func writeDeadline(d time.Duration, h http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		_ = http.NewResponseController(w).SetWriteDeadline(time.Now().Add(d))
		h.ServeHTTP(w, r)
	})
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
