package ingress

import (
	"net/http"
	"net/http/httptest"
	"testing"
)

// TestLoopbackHostOnly: without API tokens, API and board requests addressed
// to another host name (DNS rebinding) are refused; webhooks and health are not.
func TestLoopbackHostOnly(t *testing.T) {
	t.Parallel()
	ok := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { w.WriteHeader(http.StatusTeapot) })
	h := NewHandler(Routes{API: ok, Board: ok, Hooks: ok, LoopbackHostOnly: true})
	cases := []struct {
		host, path string
		want       int
	}{
		{"127.0.0.1:8080", "/api/v1/tasks", http.StatusTeapot},
		{"localhost:8080", "/", http.StatusTeapot},
		{"[::1]:8080", "/api/v1/tasks", http.StatusTeapot},
		{"evil.example:8080", "/api/v1/tasks", http.StatusMisdirectedRequest},
		{"evil.example", "/", http.StatusMisdirectedRequest},
		{"10.0.0.5:8080", "/api/v1/tasks", http.StatusMisdirectedRequest},
		{"hooks.example.com", "/hooks/github", http.StatusTeapot},
		{"evil.example", "/healthz", http.StatusOK},
	}
	for _, c := range cases {
		req := httptest.NewRequest("GET", "http://"+c.host+c.path, nil)
		rec := httptest.NewRecorder()
		h.ServeHTTP(rec, req)
		if rec.Code != c.want {
			t.Errorf("%s%s: %d, want %d", c.host, c.path, rec.Code, c.want)
		}
	}
	open := NewHandler(Routes{API: ok})
	req := httptest.NewRequest("GET", "http://nightshift.example.com/api/v1/tasks", nil)
	rec := httptest.NewRecorder()
	open.ServeHTTP(rec, req)
	if rec.Code != http.StatusTeapot {
		t.Errorf("with tokens configured any host name is served: %d", rec.Code)
	}
}
