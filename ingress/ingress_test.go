package ingress

import (
	"bufio"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"
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

// TestBodyDeadline: on every route a body must arrive within BodyTimeout;
// a sender that stops mid-body gets its read cut off (here the handler
// answers 400) instead of holding the connection. Without the deadline
// the server waited for the rest of the body forever.
func TestBodyDeadline(t *testing.T) {
	t.Parallel()
	readAll := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if _, err := io.ReadAll(r.Body); err != nil {
			http.Error(w, err.Error(), http.StatusBadRequest)
			return
		}
		w.WriteHeader(http.StatusNoContent)
	})
	srv := httptest.NewServer(NewHandler(Routes{API: readAll, Board: readAll, MCP: readAll, Hooks: readAll, BodyTimeout: 100 * time.Millisecond}))
	t.Cleanup(srv.Close)
	for _, path := range []string{"/api/v1/tasks", "/mcp", "/", "/hooks/github"} {
		conn, err := net.Dial("tcp", srv.Listener.Addr().String())
		if err != nil {
			t.Fatal(err)
		}
		fmt.Fprintf(conn, "POST %s HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: 1000\r\n\r\n{\"repo\":", path)
		conn.SetReadDeadline(time.Now().Add(30 * time.Second)) // safety net only
		resp, err := http.ReadResponse(bufio.NewReader(conn), nil)
		if err != nil {
			t.Fatalf("%s: no answer to a stalled body: %v", path, err)
		}
		resp.Body.Close()
		conn.Close()
		if resp.StatusCode != http.StatusBadRequest {
			t.Errorf("%s: stalled body answered %d, want the handler's 400", path, resp.StatusCode)
		}
	}
}

// TestBodyDeadlineSparesStreams: once the body is read the deadline is
// lifted, so an answer streamed for longer than BodyTimeout (SSE, MCP)
// is not cut off, and requests without a body never get a deadline.
func TestBodyDeadlineSparesStreams(t *testing.T) {
	t.Parallel()
	const timeout = 50 * time.Millisecond
	stream := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		io.ReadAll(r.Body)
		w.Header().Set("Content-Type", "text/event-stream")
		w.WriteHeader(http.StatusOK)
		fmt.Fprint(w, "event: first\n\n")
		http.NewResponseController(w).Flush()
		// Outlive the body deadline several times over: if it still held,
		// the server's background read would fail and cancel the request.
		select {
		case <-r.Context().Done():
			fmt.Fprint(w, "event: cancelled\n\n")
		case <-time.After(5 * timeout):
			fmt.Fprint(w, "event: alive\n\n")
		}
	})
	srv := httptest.NewServer(NewHandler(Routes{API: stream, MCP: stream, BodyTimeout: timeout}))
	t.Cleanup(srv.Close)
	for _, tc := range []struct{ method, path, body string }{
		{"GET", "/api/v1/tasks/x/events", ""},
		{"POST", "/mcp", `{"jsonrpc":"2.0","id":1,"method":"tools/call"}`},
	} {
		req, _ := http.NewRequest(tc.method, srv.URL+tc.path, strings.NewReader(tc.body))
		if tc.body == "" {
			req.Body = http.NoBody
		}
		resp, err := srv.Client().Do(req)
		if err != nil {
			t.Fatal(err)
		}
		b, err := io.ReadAll(resp.Body)
		resp.Body.Close()
		if err != nil || !strings.Contains(string(b), "event: alive") {
			t.Errorf("%s %s: stream %q (%v), want it to outlive the body deadline", tc.method, tc.path, b, err)
		}
	}
}
