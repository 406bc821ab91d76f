package gateway_test

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/nightshift/nightshift/orchestrator/agent/modelserver"
	"github.com/nightshift/nightshift/orchestrator/gateway"
)

const canary = "sk-ant-canary-8d1f0c2b9e"

type env struct {
	gw       *gateway.Gateway
	srv      *httptest.Server
	ms       *modelserver.Server
	upstream *httptest.Server
	dir      string
	reg      *prometheus.Registry
}

func newEnv(t *testing.T, redact func(string) string) *env {
	t.Helper()
	ms := modelserver.New(modelserver.Config{})
	up := httptest.NewServer(ms)
	t.Cleanup(up.Close)
	dir := t.TempDir()
	reg := prometheus.NewRegistry()
	key := func(context.Context) (string, error) { return canary, nil }
	gw, err := gateway.New(gateway.Config{
		Upstreams: map[string]gateway.Upstream{
			"anthropic": {BaseURL: up.URL, Key: key},
			"openai":    {BaseURL: up.URL + "/v1", Key: key},
		},
		TranscriptDir: dir,
		Redact:        redact,
		Metrics:       reg,
	})
	if err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewServer(gw)
	t.Cleanup(srv.Close)
	return &env{gw: gw, srv: srv, ms: ms, upstream: up, dir: dir, reg: reg}
}

func post(t *testing.T, url, token string, header string, body any) (*http.Response, string) {
	t.Helper()
	b, _ := json.Marshal(body)
	req, _ := http.NewRequest(http.MethodPost, url, strings.NewReader(string(b)))
	req.Header.Set("Content-Type", "application/json")
	switch header {
	case "x-api-key":
		req.Header.Set("X-Api-Key", token)
	case "bearer":
		req.Header.Set("Authorization", "Bearer "+token)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	out, _ := io.ReadAll(resp.Body)
	return resp, string(out)
}

func anthropicBody(stream bool) map[string]any {
	return map[string]any{"model": "claude-sonnet-4-5", "max_tokens": 100, "stream": stream,
		"tools":    []any{map[string]any{"name": "Bash", "input_schema": map[string]any{"type": "object"}}},
		"messages": []any{map[string]any{"role": "user", "content": "hi"}}}
}

func TestAuth(t *testing.T) {
	t.Parallel()
	e := newEnv(t, nil)
	for _, tc := range []struct{ name, header, token string }{{"missing", "", ""}, {"unknown", "x-api-key", "nsgw_nope"}} {
		resp, body := post(t, e.srv.URL+"/anthropic/v1/messages", tc.token, tc.header, anthropicBody(false))
		if resp.StatusCode != http.StatusUnauthorized || !strings.Contains(body, `"authentication_error"`) || !strings.Contains(body, `"type":"error"`) {
			t.Errorf("%s: %d %s", tc.name, resp.StatusCode, body)
		}
	}
	resp, body := post(t, e.srv.URL+"/openai/responses", "", "", map[string]any{})
	if resp.StatusCode != http.StatusUnauthorized || !strings.Contains(body, `"invalid_api_key"`) {
		t.Errorf("openai: %d %s", resp.StatusCode, body)
	}
	resp, _ = post(t, e.srv.URL+"/bogus/v1/x", "", "", map[string]any{})
	if resp.StatusCode != http.StatusNotFound {
		t.Errorf("unknown provider: %d", resp.StatusCode)
	}
	tok := e.gw.Register("t1", gateway.Budget{}, gateway.Hooks{})
	e.gw.Unregister("t1")
	if resp, _ := post(t, e.srv.URL+"/anthropic/v1/messages", tok, "x-api-key", anthropicBody(false)); resp.StatusCode != http.StatusUnauthorized {
		t.Errorf("unregistered token: %d", resp.StatusCode)
	}
	if len(e.ms.Requests()) != 0 {
		t.Errorf("upstream saw %d requests from unauthenticated clients", len(e.ms.Requests()))
	}
}

func TestProxyInjectsKeyAndMeters(t *testing.T) {
	t.Parallel()
	e := newEnv(t, nil)
	e.ms.Script(
		modelserver.Step{Text: "one", InputTokens: 1000, OutputTokens: 50},
		modelserver.Step{Text: "two", InputTokens: 2000, OutputTokens: 70},
		modelserver.Step{Text: "three", InputTokens: 300, OutputTokens: 30},
	)
	tok := e.gw.Register("t1", gateway.Budget{}, gateway.Hooks{})
	if !strings.HasPrefix(tok, gateway.TokenPrefix) {
		t.Errorf("token %q lacks prefix", tok)
	}
	resp, body := post(t, e.srv.URL+"/anthropic/v1/messages", tok, "x-api-key", anthropicBody(true))
	if resp.StatusCode != 200 || !strings.Contains(body, "event: message_start") || resp.Header.Get("Content-Type") != "text/event-stream" {
		t.Fatalf("stream: %d %s %s", resp.StatusCode, resp.Header.Get("Content-Type"), body)
	}
	resp, body = post(t, e.srv.URL+"/anthropic/v1/messages", tok, "bearer", anthropicBody(false))
	if resp.StatusCode != 200 || !strings.Contains(body, `"two"`) {
		t.Fatalf("json: %d %s", resp.StatusCode, body)
	}
	// Token counting is not model usage.
	if resp, _ := post(t, e.srv.URL+"/anthropic/v1/messages/count_tokens", tok, "x-api-key", anthropicBody(false)); resp.StatusCode != 200 {
		t.Fatalf("count_tokens: %d", resp.StatusCode)
	}
	resp, body = post(t, e.srv.URL+"/openai/responses", tok, "bearer", map[string]any{"model": "gpt-5", "stream": true,
		"tools": []any{map[string]any{"type": "function", "name": "exec_command"}}, "input": "hi"})
	if resp.StatusCode != 200 || !strings.Contains(body, "response.completed") {
		t.Fatalf("openai: %d %s", resp.StatusCode, body)
	}
	for _, r := range e.ms.Requests() {
		if got := r.Header.Get("X-Api-Key") + r.Header.Get("Authorization"); got != canary && got != "Bearer "+canary {
			t.Errorf("%s %s: upstream auth = %q, want the real key", r.Provider, r.Path, got)
		}
		if strings.Contains(fmt.Sprint(r.Header), tok) {
			t.Errorf("task token leaked upstream in %v", r.Header)
		}
	}
	if p := e.ms.Requests()[3].Path; p != "/v1/responses" {
		t.Errorf("openai upstream path = %q", p)
	}
	u := e.gw.Usage("t1")
	want := gateway.Usage{InputTokens: 3300, OutputTokens: 150, Requests: 4}
	wantCost := (1000*3.0+50*15+2000*3+70*15)/1e6 + (300*1.25+30*10)/1e6
	if u.InputTokens != want.InputTokens || u.OutputTokens != want.OutputTokens || u.Requests != want.Requests {
		t.Errorf("usage = %+v, want %+v", u, want)
	}
	if d := u.CostUSD - wantCost; d > 1e-9 || d < -1e-9 {
		t.Errorf("cost = %v, want %v", u.CostUSD, wantCost)
	}
	if got := counter(t, e.reg, "nightshift_gateway_tokens_total", map[string]string{"provider": "anthropic", "direction": "input"}); got != 3000 {
		t.Errorf("metric anthropic input tokens = %v", got)
	}
}

// counter returns the value of the counter name with the given labels.
func counter(t *testing.T, reg *prometheus.Registry, name string, labels map[string]string) float64 {
	t.Helper()
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() != name {
			continue
		}
	metric:
		for _, m := range mf.GetMetric() {
			for _, lp := range m.GetLabel() {
				if v, ok := labels[lp.GetName()]; ok && v != lp.GetValue() {
					continue metric
				}
			}
			return m.GetCounter().GetValue()
		}
	}
	t.Fatalf("metric %s%v not found", name, labels)
	return 0
}

// TestStreamsEventByEvent proves the gateway flushes each SSE event: the
// upstream holds the stream open after message_start until the client has
// seen it.
func TestStreamsEventByEvent(t *testing.T) {
	t.Parallel()
	release := make(chan struct{})
	up := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "text/event-stream")
		fmt.Fprint(w, "event: message_start\ndata: {\"type\":\"message_start\",\"message\":{\"model\":\"claude-haiku-4-5\",\"usage\":{\"input_tokens\":7,\"output_tokens\":1}}}\n\n")
		w.(http.Flusher).Flush()
		select {
		case <-release:
		case <-r.Context().Done():
			return
		}
		fmt.Fprint(w, "event: message_delta\ndata: {\"type\":\"message_delta\",\"delta\":{\"stop_reason\":\"end_turn\"},\"usage\":{\"output_tokens\":9}}\n\nevent: message_stop\ndata: {\"type\":\"message_stop\"}\n\n")
	}))
	defer up.Close()
	gw, err := gateway.New(gateway.Config{Upstreams: map[string]gateway.Upstream{"anthropic": {BaseURL: up.URL, Key: func(context.Context) (string, error) { return canary, nil }}}})
	if err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewServer(gw)
	defer srv.Close()
	tok := gw.Register("t", gateway.Budget{}, gateway.Hooks{})
	req, _ := http.NewRequest(http.MethodPost, srv.URL+"/anthropic/v1/messages", strings.NewReader(`{"model":"claude-haiku-4-5","stream":true}`))
	req.Header.Set("X-Api-Key", tok)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	br := bufio.NewReader(resp.Body)
	first, err := br.ReadString('\n')
	if err != nil || !strings.HasPrefix(first, "event: message_start") {
		t.Fatalf("first line %q, %v", first, err)
	}
	close(release)
	rest, _ := io.ReadAll(br)
	if !strings.Contains(string(rest), "message_stop") {
		t.Fatalf("rest = %q", rest)
	}
	if u := gw.Usage("t"); u.InputTokens != 7 || u.OutputTokens != 9 {
		t.Errorf("usage = %+v", u)
	}
}

func TestBudget(t *testing.T) {
	t.Parallel()
	e := newEnv(t, nil)
	for range 3 {
		e.ms.Script(modelserver.Step{Text: "x", InputTokens: 100, OutputTokens: 20})
	}
	var soft, hard atomic.Int32
	var hardUsage gateway.Usage
	var mu sync.Mutex
	tok := e.gw.Register("t1", gateway.Budget{Tokens: 250}, gateway.Hooks{
		OnSoftLimit: func(gateway.Usage) { soft.Add(1) },
		OnHardLimit: func(u gateway.Usage) { mu.Lock(); hardUsage = u; mu.Unlock(); hard.Add(1) },
	})
	step := func() (int, string) {
		resp, body := post(t, e.srv.URL+"/anthropic/v1/messages", tok, "x-api-key", anthropicBody(true))
		return resp.StatusCode, body
	}
	if code, _ := step(); code != 200 || soft.Load() != 0 {
		t.Fatalf("1: %d soft=%d", code, soft.Load())
	}
	if code, _ := step(); code != 200 || soft.Load() != 1 || hard.Load() != 0 {
		t.Fatalf("2 (240 >= 80%% of 250): %d soft=%d hard=%d", code, soft.Load(), hard.Load())
	}
	if code, _ := step(); code != 200 || hard.Load() != 1 {
		t.Fatalf("3 (360 >= 250): %d hard=%d", code, hard.Load())
	}
	code, body := step()
	if code != http.StatusBadRequest || !strings.Contains(body, `"invalid_request_error"`) || !strings.Contains(body, "budget is exhausted") {
		t.Fatalf("4: %d %s", code, body)
	}
	resp, body := post(t, e.srv.URL+"/openai/responses", tok, "bearer", map[string]any{"model": "gpt-5"})
	if resp.StatusCode != http.StatusBadRequest || !strings.Contains(body, `"budget_exceeded"`) {
		t.Fatalf("openai refusal: %d %s", resp.StatusCode, body)
	}
	if soft.Load() != 1 || hard.Load() != 1 {
		t.Errorf("hooks fired soft=%d hard=%d, want once each", soft.Load(), hard.Load())
	}
	mu.Lock()
	if hardUsage.Tokens() != 360 {
		t.Errorf("hard-limit usage = %+v", hardUsage)
	}
	mu.Unlock()
	if n := len(e.ms.Requests()); n != 3 {
		t.Errorf("upstream saw %d requests, want 3", n)
	}
	// Renewing the registration with a larger budget keeps the usage, revokes
	// the old token and lets the task continue.
	tok2 := e.gw.Register("t1", gateway.Budget{Tokens: 1000}, gateway.Hooks{})
	if r, _ := post(t, e.srv.URL+"/anthropic/v1/messages", tok, "x-api-key", anthropicBody(false)); r.StatusCode != http.StatusUnauthorized {
		t.Errorf("old token after renewal: %d", r.StatusCode)
	}
	e.ms.Script(modelserver.Step{Text: "y", InputTokens: 100, OutputTokens: 20})
	if r, b := post(t, e.srv.URL+"/anthropic/v1/messages", tok2, "x-api-key", anthropicBody(false)); r.StatusCode != 200 {
		t.Errorf("renewed: %d %s", r.StatusCode, b)
	}
	if u := e.gw.Usage("t1"); u.Tokens() != 480 {
		t.Errorf("usage after renewal = %+v", u)
	}
	// A cost budget.
	tok3 := e.gw.Register("t2", gateway.Budget{CostUSD: 0.0001}, gateway.Hooks{})
	e.ms.Script(modelserver.Step{Text: "z", InputTokens: 100, OutputTokens: 20})
	post(t, e.srv.URL+"/anthropic/v1/messages", tok3, "x-api-key", anthropicBody(false)) // 100*3e-6+20*15e-6 = 0.0006
	if r, _ := post(t, e.srv.URL+"/anthropic/v1/messages", tok3, "x-api-key", anthropicBody(false)); r.StatusCode != http.StatusBadRequest {
		t.Errorf("cost budget: %d", r.StatusCode)
	}
}

func TestTranscriptRedactedAndReplayable(t *testing.T) {
	t.Parallel()
	e := newEnv(t, func(s string) string { return strings.ReplaceAll(s, "hunter2", "[secret]") })
	e.ms.Script(modelserver.Step{Text: "the password is hunter2 and the key " + canary})
	tok := e.gw.Register("task/1", gateway.Budget{}, gateway.Hooks{})
	body := anthropicBody(true)
	body["messages"] = []any{map[string]any{"role": "user", "content": "use hunter2 with token " + tok}}
	resp, live := post(t, e.srv.URL+"/anthropic/v1/messages?beta=true", tok, "x-api-key", body)
	if resp.StatusCode != 200 {
		t.Fatal(resp.StatusCode)
	}
	path := gateway.TranscriptPath(e.dir, "task/1")
	if filepath.Dir(path) != e.dir {
		t.Fatalf("transcript path %q escapes %q", path, e.dir)
	}
	raw, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	for _, bad := range []string{"hunter2", canary, tok} {
		if strings.Contains(string(raw), bad) {
			t.Errorf("transcript contains %q", bad)
		}
	}
	f, _ := os.Open(path)
	defer f.Close()
	xs, err := gateway.ReadTranscript(f)
	if err != nil || len(xs) != 1 {
		t.Fatalf("read transcript: %v, %d", err, len(xs))
	}
	x := xs[0]
	if x.Seq != 1 || x.TaskID != "task/1" || x.Provider != "anthropic" || x.Path != "/v1/messages" || x.Status != 200 ||
		x.Model != "claude-sonnet-4-5" || !strings.Contains(x.Request, "[secret]") || x.Usage.Requests != 1 {
		t.Errorf("exchange = %+v", x)
	}
	// Replay the transcript: the same SSE comes back (redacted).
	rs := httptest.NewServer(gateway.NewReplayer(xs))
	defer rs.Close()
	resp, replayed := post(t, rs.URL+"/anthropic/v1/messages?beta=true", "", "", body)
	if resp.StatusCode != 200 || resp.Header.Get("Content-Type") != "text/event-stream" {
		t.Fatalf("replay: %d %s", resp.StatusCode, resp.Header.Get("Content-Type"))
	}
	if want := strings.NewReplacer("hunter2", "[secret]", canary, "REDACTED").Replace(live); replayed != want {
		t.Errorf("replayed:\n%s\nwant:\n%s", replayed, want)
	}
	if resp, _ := post(t, rs.URL+"/anthropic/v1/messages", "", "", body); resp.StatusCode != http.StatusNotFound {
		t.Errorf("second replay: %d", resp.StatusCode)
	}
}

func TestConfigValidation(t *testing.T) {
	t.Parallel()
	key := func(context.Context) (string, error) { return "k", nil }
	for name, cfg := range map[string]gateway.Config{
		"none":    {},
		"baseurl": {Upstreams: map[string]gateway.Upstream{"anthropic": {BaseURL: "ftp://x", Key: key}}},
		"key":     {Upstreams: map[string]gateway.Upstream{"anthropic": {BaseURL: "http://x"}}},
		"auth":    {Upstreams: map[string]gateway.Upstream{"anthropic": {BaseURL: "http://x", Key: key, Auth: "basic"}}},
	} {
		if _, err := gateway.New(cfg); err == nil {
			t.Errorf("%s: no error", name)
		}
	}
}

// BenchmarkProxyStream measures a streamed Anthropic exchange through the
// gateway against the same exchange sent to the model server directly.
func BenchmarkProxyStream(b *testing.B) {
	ms := modelserver.New(modelserver.Config{})
	up := httptest.NewServer(ms)
	defer up.Close()
	gw, err := gateway.New(gateway.Config{Upstreams: map[string]gateway.Upstream{"anthropic": {BaseURL: up.URL, Key: func(context.Context) (string, error) { return canary, nil }}}})
	if err != nil {
		b.Fatal(err)
	}
	srv := httptest.NewServer(gw)
	defer srv.Close()
	tok := gw.Register("bench", gateway.Budget{}, gateway.Hooks{})
	body, _ := json.Marshal(map[string]any{"model": "claude-sonnet-4-5", "stream": true, "messages": []any{}})
	for _, tc := range []struct{ name, url string }{{"direct", up.URL}, {"gateway", srv.URL + "/anthropic"}} {
		b.Run(tc.name, func(b *testing.B) {
			for b.Loop() {
				req, _ := http.NewRequest(http.MethodPost, tc.url+"/v1/messages", strings.NewReader(string(body)))
				req.Header.Set("X-Api-Key", tok)
				resp, err := http.DefaultClient.Do(req)
				if err != nil {
					b.Fatal(err)
				}
				_, _ = io.Copy(io.Discard, resp.Body)
				resp.Body.Close()
			}
		})
	}
}

// TestAbandonedStreamIsCharged checks that tokens the upstream reported
// before the agent hung up still count.
func TestAbandonedStreamIsCharged(t *testing.T) {
	t.Parallel()
	up := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "text/event-stream")
		fmt.Fprint(w, "event: message_start\ndata: {\"type\":\"message_start\",\"message\":{\"model\":\"claude-sonnet-4-5\",\"usage\":{\"input_tokens\":50,\"output_tokens\":1}}}\n\n")
		w.(http.Flusher).Flush()
		<-r.Context().Done()
	}))
	defer up.Close()
	gw, err := gateway.New(gateway.Config{Upstreams: map[string]gateway.Upstream{"anthropic": {BaseURL: up.URL, Key: func(context.Context) (string, error) { return canary, nil }}}})
	if err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewServer(gw)
	defer srv.Close()
	tok := gw.Register("t", gateway.Budget{}, gateway.Hooks{})
	ctx, cancel := context.WithCancel(context.Background())
	req, _ := http.NewRequestWithContext(ctx, http.MethodPost, srv.URL+"/anthropic/v1/messages", strings.NewReader(`{"model":"claude-sonnet-4-5","stream":true}`))
	req.Header.Set("X-Api-Key", tok)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	if line, err := bufio.NewReader(resp.Body).ReadString('\n'); err != nil || !strings.HasPrefix(line, "event: message_start") {
		t.Fatalf("first line %q, %v", line, err)
	}
	cancel()
	resp.Body.Close()
	deadline := time.Now().Add(10 * time.Second)
	for gw.Usage("t").Requests == 0 {
		if time.Now().After(deadline) {
			t.Fatal("abandoned stream was never charged")
		}
		time.Sleep(5 * time.Millisecond)
	}
	if u := gw.Usage("t"); u.InputTokens != 50 || u.OutputTokens != 1 {
		t.Errorf("usage %+v", u)
	}
}
