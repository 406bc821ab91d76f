package modelserver_test

import (
	"bufio"
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/nightshift/nightshift/orchestrator/agent/modelserver"
)

func post(t *testing.T, url string, body any) (*http.Response, string) {
	t.Helper()
	b, _ := json.Marshal(body)
	resp, err := http.Post(url, "application/json", strings.NewReader(string(b)))
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	out, _ := io.ReadAll(resp.Body)
	return resp, string(out)
}

// events parses an SSE body into its data objects.
func events(t *testing.T, body string) []map[string]any {
	t.Helper()
	var out []map[string]any
	sc := bufio.NewScanner(strings.NewReader(body))
	for sc.Scan() {
		if d, ok := strings.CutPrefix(sc.Text(), "data: "); ok {
			var m map[string]any
			if err := json.Unmarshal([]byte(d), &m); err != nil {
				t.Fatalf("bad data %q: %v", d, err)
			}
			out = append(out, m)
		}
	}
	return out
}

func TestAnthropicScript(t *testing.T) {
	t.Parallel()
	ms := modelserver.New(modelserver.Config{})
	srv := httptest.NewServer(ms)
	defer srv.Close()
	checked := errors.New("checked")
	ms.Script(
		modelserver.Step{Text: "run it", ToolCalls: []modelserver.ToolCall{{ID: "toolu_1", Name: "Bash", Input: map[string]any{"command": "ls"}}}},
		modelserver.Step{Check: func(r *modelserver.Request) error {
			if out, err := r.Result("toolu_1"); err != nil || out != "a.txt\nb.txt" || !r.ToolErrors["toolu_1"] {
				return errors.Join(checked, err)
			}
			return nil
		}, Text: "done", InputTokens: 7, OutputTokens: 3},
	)
	tools := []any{map[string]any{"name": "Bash"}}
	// A side request (no tools) does not consume a step.
	if _, body := post(t, srv.URL+"/v1/messages", map[string]any{"model": "claude-haiku-4-5", "messages": []any{map[string]any{"role": "user", "content": "title?"}}}); !strings.Contains(body, `"OK"`) {
		t.Errorf("side request: %s", body)
	}
	resp, body := post(t, srv.URL+"/v1/messages?beta=true", map[string]any{"model": "m", "stream": true, "tools": tools,
		"messages": []any{map[string]any{"role": "user", "content": "list files"}}})
	if resp.Header.Get("Content-Type") != "text/event-stream" {
		t.Fatalf("content type %q", resp.Header.Get("Content-Type"))
	}
	evs := events(t, body)
	var types []string
	var args strings.Builder
	for _, e := range evs {
		types = append(types, e["type"].(string))
		if d, ok := e["delta"].(map[string]any); ok && d["type"] == "input_json_delta" {
			args.WriteString(d["partial_json"].(string))
		}
	}
	want := "message_start ping content_block_start content_block_delta content_block_delta content_block_delta content_block_stop content_block_start content_block_delta content_block_delta content_block_delta content_block_stop message_delta message_stop"
	if got := strings.Join(types, " "); got != want {
		t.Errorf("events:\n%s\nwant\n%s", got, want)
	}
	if args.String() != `{"command":"ls"}` {
		t.Errorf("tool input %q", args.String())
	}
	if d := evs[len(evs)-2]["delta"].(map[string]any); d["stop_reason"] != "tool_use" {
		t.Errorf("stop_reason %v", d["stop_reason"])
	}
	_, body = post(t, srv.URL+"/v1/messages", map[string]any{"model": "m", "tools": tools, "messages": []any{
		map[string]any{"role": "user", "content": "list files"},
		map[string]any{"role": "assistant", "content": []any{map[string]any{"type": "tool_use", "id": "toolu_1", "name": "Bash", "input": map[string]any{}}}},
		map[string]any{"role": "user", "content": []any{map[string]any{"type": "tool_result", "tool_use_id": "toolu_1", "is_error": true,
			"content": []any{map[string]any{"type": "text", "text": "a.txt\nb.txt"}}}}},
	}})
	var msg struct {
		Content []struct{ Text string } `json:"content"`
		Usage   struct {
			InputTokens  int `json:"input_tokens"`
			OutputTokens int `json:"output_tokens"`
		} `json:"usage"`
	}
	if err := json.Unmarshal([]byte(body), &msg); err != nil || msg.Content[0].Text != "done" || msg.Usage.InputTokens != 7 || msg.Usage.OutputTokens != 3 {
		t.Errorf("json answer %s (%v)", body, err)
	}
	if errs := ms.Errors(); len(errs) != 0 {
		t.Errorf("errors: %v", errs)
	}
	// The script is exhausted: the next main request is answered and recorded as an error.
	post(t, srv.URL+"/v1/messages", map[string]any{"model": "m", "tools": tools, "messages": []any{}})
	if errs := ms.Errors(); len(errs) != 1 || !strings.Contains(errs[0].Error(), "exhausted") {
		t.Errorf("errors after exhaustion: %v", errs)
	}
	if n, m := len(ms.Requests()), len(ms.MainRequests()); n != 4 || m != 3 {
		t.Errorf("requests %d, main %d", n, m)
	}
}

func TestOpenAIScript(t *testing.T) {
	t.Parallel()
	ms := modelserver.New(modelserver.Config{})
	srv := httptest.NewServer(ms)
	defer srv.Close()
	ms.Script(
		modelserver.Step{Text: "calling", ToolCalls: []modelserver.ToolCall{
			{ID: "call_1", Name: "exec_command", Input: map[string]any{"cmd": "ls"}},
			{ID: "call_2", Name: "get_identity", Namespace: "mcp__nightshift"},
			{ID: "call_3", Name: "apply_patch", Custom: "*** Begin Patch\n*** End Patch"},
		}},
		modelserver.Step{Check: func(r *modelserver.Request) error {
			if out, err := r.Result("call_1"); err != nil || out != "a.txt" {
				return errors.New("missing call_1 output")
			}
			if !r.HasText("list files") {
				return errors.New("missing user text")
			}
			return nil
		}, Text: "done"},
	)
	tools := []any{map[string]any{"type": "function", "name": "exec_command"},
		map[string]any{"type": "namespace", "name": "mcp__nightshift", "tools": []any{map[string]any{"type": "function", "name": "get_identity"}}}}
	_, body := post(t, srv.URL+"/v1/responses", map[string]any{"model": "gpt-5", "stream": true, "tools": tools,
		"input": []any{map[string]any{"type": "message", "role": "user", "content": []any{map[string]any{"type": "input_text", "text": "list files"}}}}})
	evs := events(t, body)
	last := evs[len(evs)-1]
	if last["type"] != "response.completed" {
		t.Fatalf("last event %v", last["type"])
	}
	out := last["response"].(map[string]any)["output"].([]any)
	if len(out) != 4 || out[1].(map[string]any)["arguments"] != `{"cmd":"ls"}` || out[2].(map[string]any)["namespace"] != "mcp__nightshift" ||
		out[3].(map[string]any)["type"] != "custom_tool_call" {
		t.Errorf("output items %v", out)
	}
	if u := last["response"].(map[string]any)["usage"].(map[string]any); u["input_tokens"] != 100.0 || u["output_tokens"] != 20.0 {
		t.Errorf("usage %v", u)
	}
	if r := ms.MainRequests()[0]; len(r.ToolNames) != 2 || r.ToolNames[1] != "get_identity" {
		t.Errorf("tool names %v", r.ToolNames)
	}
	_, body = post(t, srv.URL+"/v1/responses", map[string]any{"model": "gpt-5", "tools": tools, "input": []any{
		map[string]any{"type": "message", "role": "user", "content": "list files"},
		map[string]any{"type": "function_call_output", "call_id": "call_1", "output": "a.txt"},
	}})
	if !strings.Contains(body, `"object":"response"`) || !strings.Contains(body, `"done"`) {
		t.Errorf("json answer %s", body)
	}
	if errs := ms.Errors(); len(errs) != 0 {
		t.Errorf("errors: %v", errs)
	}
}
