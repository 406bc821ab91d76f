package gateway_test

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/nightshift/nightshift/orchestrator/agent/modelserver"
	"github.com/nightshift/nightshift/orchestrator/gateway"
)

// rawRequest sends method and target exactly as written (no client-side
// path cleaning or escaping) and returns the status.
func rawRequest(t *testing.T, addr, method, target, token string) int {
	t.Helper()
	c, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	body := `{"model":"claude-sonnet-4-5"}`
	fmt.Fprintf(c, "%s %s HTTP/1.1\r\nHost: gateway\r\nX-Api-Key: %s\r\nAuthorization: Bearer %s\r\nContent-Type: application/json\r\nContent-Length: %d\r\nConnection: close\r\n\r\n%s",
		method, target, token, token, len(body), body)
	resp, err := http.ReadResponse(bufio.NewReader(c), nil)
	if err != nil {
		t.Fatalf("%s %s: %v", method, target, err)
	}
	io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	return resp.StatusCode
}

// TestOnlyAgentEndpointsAreForwarded: with a valid task token, only the
// calls Claude Code and Codex make reach the upstream (each one metered);
// every other method or path, and every spelling that would resolve
// elsewhere upstream, is 404 and never reaches it.
func TestOnlyAgentEndpointsAreForwarded(t *testing.T) {
	t.Parallel()
	var hits atomic.Int64
	var last atomic.Value
	up := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		hits.Add(1)
		last.Store(r.Method + " " + r.URL.RequestURI())
		w.Header().Set("Content-Type", "application/json")
		switch {
		case strings.HasSuffix(r.URL.Path, "/chat/completions"):
			fmt.Fprint(w, `{"object":"chat.completion","model":"gpt-5","usage":{"prompt_tokens":10,"completion_tokens":5}}`)
		case strings.HasSuffix(r.URL.Path, "/responses"):
			fmt.Fprint(w, `{"object":"response","model":"gpt-5","usage":{"input_tokens":10,"output_tokens":5}}`)
		default:
			fmt.Fprint(w, `{"type":"message","model":"claude-sonnet-4-5","usage":{"input_tokens":10,"output_tokens":5}}`)
		}
	}))
	t.Cleanup(up.Close)
	key := func(context.Context) (string, error) { return canary, nil }
	gw, err := gateway.New(gateway.Config{Upstreams: map[string]gateway.Upstream{
		"anthropic": {BaseURL: up.URL, Key: key},
		"openai":    {BaseURL: up.URL + "/v1", Key: key},
	}})
	if err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewServer(gw)
	t.Cleanup(srv.Close)
	addr := strings.TrimPrefix(srv.URL, "http://")
	tok := gw.Register("t1", gateway.Budget{}, gateway.Hooks{})

	allowed := 0
	for _, tc := range []struct {
		method, target string
		upstream       string // the call the upstream must see; "" = refused
	}{
		{"POST", "/anthropic/v1/messages", "POST /v1/messages"},
		{"POST", "/anthropic/v1/messages?beta=true", "POST /v1/messages?beta=true"},
		{"POST", "/anthropic/v1/messages/count_tokens", "POST /v1/messages/count_tokens"},
		{"GET", "/anthropic/v1/models", "GET /v1/models"},
		{"POST", "/openai/responses", "POST /v1/responses"},
		{"POST", "/openai/chat/completions", "POST /v1/chat/completions"},
		{"GET", "/openai/models", "GET /v1/models"},

		{"DELETE", "/anthropic/v1/files/file_123", ""},
		{"GET", "/anthropic/v1/files", ""},
		{"POST", "/anthropic/v1/messages/batches", ""},
		{"GET", "/anthropic/v1/messages/batches/msgbatch_1/results", ""},
		{"GET", "/anthropic/v1/messages", ""},
		{"DELETE", "/anthropic/v1/messages", ""},
		{"POST", "/anthropic/v1/../v1/files", ""},
		{"POST", "/anthropic/v1/messages/../../v1/files", ""},
		{"POST", "/anthropic/v1/messages/..", ""},
		{"POST", "/anthropic/./v1/messages", ""},
		{"POST", "/anthropic//v1/messages", ""},
		{"POST", "/anthropic/v1//messages", ""},
		{"POST", "/anthropic/v1/messages/", ""},
		{"POST", "/anthropic/v1%2Fmessages", ""},
		{"POST", "/anthropic/v1/%6Dessages", ""},
		{"POST", "/anthropic/v1/messages%2F..%2F..%2Fv1%2Ffiles", ""},
		{"POST", "/anthropic%2Fv1/messages", ""},
		{"POST", "/anthropic/v1/messages;x", ""},
		{"POST", "/openai/v1/responses", ""},
		{"POST", "/openai/files", ""},
		{"DELETE", "/openai/files/file-1", ""},
		{"GET", "/openai/responses/resp_1", ""},
		{"POST", "/openai/batches", ""},
		{"GET", "/anthropic", ""},
		{"GET", "/anthropic/", ""},
		{"GET", "/", ""},
	} {
		before := hits.Load()
		status := rawRequest(t, addr, tc.method, tc.target, tok)
		reached := hits.Load() - before
		if tc.upstream != "" {
			allowed++
			if status != http.StatusOK || reached != 1 || last.Load() != tc.upstream {
				t.Errorf("%s %s: status %d, upstream saw %d calls (last %v), want 200 and %q", tc.method, tc.target, status, reached, last.Load(), tc.upstream)
			}
			if u := gw.Usage("t1"); u.Requests != allowed {
				t.Errorf("%s %s: %d requests metered, want %d", tc.method, tc.target, u.Requests, allowed)
			}
			continue
		}
		if status != http.StatusNotFound || reached != 0 {
			t.Errorf("%s %s: status %d and %d upstream calls, want 404 and none", tc.method, tc.target, status, reached)
		}
	}
	// Every answer of this upstream carries 10+5 tokens.
	if u := gw.Usage("t1"); u.Requests != allowed || u.InputTokens != int64(10*allowed) || u.OutputTokens != int64(5*allowed) {
		t.Errorf("usage %+v after %d allowed calls", u, allowed)
	}
}

// TestTaskHandlerRefusesOtherTasks: a task's own handler accepts only that
// task's token; another task's valid token is 401 there and reaches
// nothing.
func TestTaskHandlerRefusesOtherTasks(t *testing.T) {
	t.Parallel()
	e := newEnv(t, nil)
	tokA := e.gw.Register("task-a", gateway.Budget{}, gateway.Hooks{})
	tokB := e.gw.Register("task-b", gateway.Budget{}, gateway.Hooks{})
	srvA := httptest.NewServer(e.gw.TaskHandler("task-a"))
	t.Cleanup(srvA.Close)
	if resp, body := post(t, srvA.URL+"/anthropic/v1/messages/count_tokens", tokB, "x-api-key", anthropicBody(false)); resp.StatusCode != http.StatusUnauthorized {
		t.Errorf("task B's token on task A's handler: %d %s", resp.StatusCode, body)
	}
	if resp, body := post(t, srvA.URL+"/openai/responses", tokB, "bearer", map[string]any{"model": "gpt-5"}); resp.StatusCode != http.StatusUnauthorized {
		t.Errorf("task B's bearer token on task A's handler: %d %s", resp.StatusCode, body)
	}
	if n := len(e.ms.Requests()); n != 0 {
		t.Fatalf("the upstream saw %d requests made with another task's token", n)
	}
	if resp, body := post(t, srvA.URL+"/anthropic/v1/messages/count_tokens", tokA, "x-api-key", anthropicBody(false)); resp.StatusCode != http.StatusOK {
		t.Errorf("task A's own token: %d %s", resp.StatusCode, body)
	}
	if u := e.gw.Usage("task-b"); u.Requests != 0 {
		t.Errorf("task B was charged for a refused request: %+v", u)
	}
}

func TestEndpointsValidated(t *testing.T) {
	t.Parallel()
	key := func(context.Context) (string, error) { return "k", nil }
	for name, up := range map[string]gateway.Upstream{
		"no defaults":  {BaseURL: "http://127.0.0.1:1", Key: key},
		"dot segment":  {BaseURL: "http://127.0.0.1:1", Key: key, Endpoints: []gateway.Endpoint{{"POST", "/v1/../files"}}},
		"no method":    {BaseURL: "http://127.0.0.1:1", Key: key, Endpoints: []gateway.Endpoint{{"", "/v1/chat"}}},
		"encoded":      {BaseURL: "http://127.0.0.1:1", Key: key, Endpoints: []gateway.Endpoint{{"POST", "/v1%2Fchat"}}},
		"double slash": {BaseURL: "http://127.0.0.1:1", Key: key, Endpoints: []gateway.Endpoint{{"POST", "//v1/chat"}}},
	} {
		if _, err := gateway.New(gateway.Config{Upstreams: map[string]gateway.Upstream{"mistral": up}}); err == nil {
			t.Errorf("%s: accepted", name)
		}
	}
	if _, err := gateway.New(gateway.Config{Upstreams: map[string]gateway.Upstream{"mistral": {BaseURL: "http://127.0.0.1:1", Key: key,
		Endpoints: []gateway.Endpoint{{"POST", "/v1/chat/completions"}}}}}); err != nil {
		t.Errorf("explicit endpoints refused: %v", err)
	}
}

// TestUnknownEndpointsAre404WithoutAToken: a call outside the allow-list
// is 404 whoever makes it; the token is not even looked at.
func TestUnknownEndpointsAre404WithoutAToken(t *testing.T) {
	t.Parallel()
	e := newEnv(t, nil)
	addr := strings.TrimPrefix(e.srv.URL, "http://")
	for _, target := range []string{"/anthropic/../api/v1/tasks", "/anthropic/v1/files", "/openai/v1/responses"} {
		if status := rawRequest(t, addr, "POST", target, ""); status != http.StatusNotFound {
			t.Errorf("POST %s without a token: %d, want 404", target, status)
		}
	}
	if status := rawRequest(t, addr, "POST", "/anthropic/v1/messages", ""); status != http.StatusUnauthorized {
		t.Errorf("an allowed call without a token: %d, want 401", status)
	}
}

// TestTokenExpires: a token registered with a lifetime is refused once it
// has passed by the gateway's clock, before anything reaches the upstream.
func TestTokenExpires(t *testing.T) {
	t.Parallel()
	ms := modelserver.New(modelserver.Config{})
	up := httptest.NewServer(ms)
	t.Cleanup(up.Close)
	var now atomic.Int64
	now.Store(time.Date(2026, 12, 6, 4, 0, 0, 0, time.UTC).UnixNano())
	gw, err := gateway.New(gateway.Config{Clock: func() time.Time { return time.Unix(0, now.Load()) },
		Upstreams: map[string]gateway.Upstream{"anthropic": {BaseURL: up.URL, Key: func(context.Context) (string, error) { return canary, nil }}}})
	if err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewServer(gw)
	t.Cleanup(srv.Close)
	tok := gw.RegisterTTL("t", gateway.Budget{}, gateway.Hooks{}, time.Minute)
	forever := gw.Register("u", gateway.Budget{}, gateway.Hooks{})
	if resp, body := post(t, srv.URL+"/anthropic/v1/messages/count_tokens", tok, "x-api-key", anthropicBody(false)); resp.StatusCode != http.StatusOK {
		t.Fatalf("fresh token: %d %s", resp.StatusCode, body)
	}
	now.Add(int64(time.Minute))
	if resp, _ := post(t, srv.URL+"/anthropic/v1/messages/count_tokens", tok, "x-api-key", anthropicBody(false)); resp.StatusCode != http.StatusUnauthorized {
		t.Errorf("expired token: %d", resp.StatusCode)
	}
	if n := len(ms.Requests()); n != 1 {
		t.Errorf("upstream saw %d requests, want the fresh token's one", n)
	}
	now.Add(int64(1000 * time.Hour))
	if resp, _ := post(t, srv.URL+"/anthropic/v1/messages/count_tokens", forever, "x-api-key", anthropicBody(false)); resp.StatusCode != http.StatusOK {
		t.Errorf("a token without a lifetime expired: %d", resp.StatusCode)
	}
}
