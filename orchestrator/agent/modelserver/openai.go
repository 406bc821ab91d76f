package modelserver

import (
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"strings"
)

type openaiTool struct {
	Type  string       `json:"type"`
	Name  string       `json:"name"`
	Tools []openaiTool `json:"tools"`
}

type openaiItem struct {
	Type    string          `json:"type"`
	Role    string          `json:"role"`
	Content json.RawMessage `json:"content"`
	CallID  string          `json:"call_id"`
	Output  json.RawMessage `json:"output"`
	Tools   []openaiTool    `json:"tools"`
}

type openaiRequest struct {
	Model  string          `json:"model"`
	Stream bool            `json:"stream"`
	Tools  []openaiTool    `json:"tools"`
	Input  json.RawMessage `json:"input"`
}

func flattenTools(ts []openaiTool, out []string) []string {
	for _, t := range ts {
		if t.Type == "namespace" {
			out = flattenTools(t.Tools, out)
			continue
		}
		name := t.Name
		if name == "" {
			name = t.Type
		}
		out = append(out, name)
	}
	return out
}

// openaiText flattens message content or a function_call_output to text.
func openaiText(raw json.RawMessage) string {
	if len(raw) == 0 {
		return ""
	}
	var s string
	if json.Unmarshal(raw, &s) == nil {
		return s
	}
	var parts []struct {
		Type string `json:"type"`
		Text string `json:"text"`
	}
	if json.Unmarshal(raw, &parts) != nil {
		return string(raw)
	}
	var out []string
	for _, p := range parts {
		if p.Text != "" {
			out = append(out, p.Text)
		}
	}
	return strings.Join(out, "\n")
}

func parseOpenAI(r *http.Request, body []byte) (*Request, error) {
	var or openaiRequest
	if err := json.Unmarshal(body, &or); err != nil {
		return nil, fmt.Errorf("openai request: %w", err)
	}
	req := &Request{Provider: "openai", Path: r.URL.Path, Header: r.Header.Clone(), Body: body,
		Model: or.Model, Stream: or.Stream, ToolResults: map[string]string{}, ToolErrors: map[string]bool{}}
	req.ToolNames = flattenTools(or.Tools, nil)
	var items []openaiItem
	var s string
	switch {
	case len(or.Input) == 0:
	case json.Unmarshal(or.Input, &s) == nil:
		req.Texts = append(req.Texts, s)
	default:
		if err := json.Unmarshal(or.Input, &items); err != nil {
			return nil, fmt.Errorf("openai input: %w", err)
		}
	}
	for _, it := range items {
		switch it.Type {
		case "additional_tools":
			req.ToolNames = flattenTools(it.Tools, req.ToolNames)
		case "message", "":
			if it.Role == "user" || it.Role == "assistant" {
				req.Texts = append(req.Texts, openaiText(it.Content))
			}
		case "function_call_output", "custom_tool_call_output":
			req.ToolResults[it.CallID] = openaiText(it.Output)
		}
	}
	req.Main = len(req.ToolNames) > 0
	return req, nil
}

func openaiError(w http.ResponseWriter, code int, typ, msg string) {
	writeJSON(w, code, map[string]any{"error": map[string]any{"type": typ, "message": msg, "code": nil, "param": nil}})
}

func (s *Server) serveOpenAI(w http.ResponseWriter, r *http.Request) {
	body, err := io.ReadAll(r.Body)
	if err != nil {
		return
	}
	req, err := parseOpenAI(r, body)
	if err != nil {
		s.fail(err)
		openaiError(w, http.StatusBadRequest, "invalid_request_error", err.Error())
		return
	}
	st, n := s.answer(req)
	if !hold(r, st) {
		return
	}
	in, out := st.usage()
	respID := fmt.Sprintf("resp_%03d", n)
	type item map[string]any
	var items []item
	if st.Text != "" {
		items = append(items, item{"id": fmt.Sprintf("msg_%03d", n), "type": "message", "role": "assistant", "status": "completed",
			"content": []any{map[string]any{"type": "output_text", "text": st.Text, "annotations": []any{}}}})
	}
	for i, tc := range st.ToolCalls {
		id := tc.ID
		if id == "" {
			id = fmt.Sprintf("call_%03d_%d", n, i)
		}
		if tc.Custom != "" {
			items = append(items, item{"id": fmt.Sprintf("ctc_%03d_%d", n, i), "type": "custom_tool_call", "status": "completed",
				"call_id": id, "name": tc.Name, "input": tc.Custom})
			continue
		}
		fc := item{"id": fmt.Sprintf("fc_%03d_%d", n, i), "type": "function_call", "status": "completed",
			"call_id": id, "name": tc.Name, "arguments": inputJSON(tc.Input)}
		if tc.Namespace != "" {
			fc["namespace"] = tc.Namespace
		}
		items = append(items, fc)
	}
	usage := map[string]any{"input_tokens": in, "input_tokens_details": map[string]any{"cached_tokens": 0},
		"output_tokens": out, "output_tokens_details": map[string]any{"reasoning_tokens": 0}, "total_tokens": in + out}
	resp := func(status string, output []item, withUsage bool) map[string]any {
		m := map[string]any{"id": respID, "object": "response", "created_at": 0, "status": status, "model": req.Model, "output": output}
		if withUsage {
			m["usage"] = usage
		}
		return m
	}
	if !req.Stream {
		writeJSON(w, http.StatusOK, resp("completed", items, true))
		return
	}
	w.Header().Set("Content-Type", "text/event-stream")
	w.Header().Set("Cache-Control", "no-cache")
	w.WriteHeader(http.StatusOK)
	seq := 0
	ev := func(m map[string]any) {
		m["sequence_number"] = seq
		seq++
		sse(w, m["type"].(string), m)
	}
	ev(map[string]any{"type": "response.created", "response": resp("in_progress", []item{}, false)})
	ev(map[string]any{"type": "response.in_progress", "response": resp("in_progress", []item{}, false)})
	for i, it := range items {
		switch it["type"] {
		case "message":
			text := st.Text
			ev(map[string]any{"type": "response.output_item.added", "output_index": i,
				"item": item{"id": it["id"], "type": "message", "role": "assistant", "status": "in_progress", "content": []any{}}})
			ev(map[string]any{"type": "response.content_part.added", "output_index": i, "item_id": it["id"], "content_index": 0,
				"part": map[string]any{"type": "output_text", "text": "", "annotations": []any{}}})
			for _, c := range chunks(text, 3) {
				ev(map[string]any{"type": "response.output_text.delta", "output_index": i, "item_id": it["id"], "content_index": 0, "delta": c})
			}
			ev(map[string]any{"type": "response.output_text.done", "output_index": i, "item_id": it["id"], "content_index": 0, "text": text})
			ev(map[string]any{"type": "response.content_part.done", "output_index": i, "item_id": it["id"], "content_index": 0,
				"part": map[string]any{"type": "output_text", "text": text, "annotations": []any{}}})
		case "function_call":
			args := it["arguments"].(string)
			added := item{"id": it["id"], "type": "function_call", "status": "in_progress", "call_id": it["call_id"], "name": it["name"], "arguments": ""}
			if ns, ok := it["namespace"]; ok {
				added["namespace"] = ns
			}
			ev(map[string]any{"type": "response.output_item.added", "output_index": i, "item": added})
			for _, c := range chunks(args, 3) {
				ev(map[string]any{"type": "response.function_call_arguments.delta", "output_index": i, "item_id": it["id"], "delta": c})
			}
			ev(map[string]any{"type": "response.function_call_arguments.done", "output_index": i, "item_id": it["id"], "arguments": args})
		case "custom_tool_call":
			input := it["input"].(string)
			ev(map[string]any{"type": "response.output_item.added", "output_index": i,
				"item": item{"id": it["id"], "type": "custom_tool_call", "status": "in_progress", "call_id": it["call_id"], "name": it["name"], "input": ""}})
			for _, c := range chunks(input, 3) {
				ev(map[string]any{"type": "response.custom_tool_call_input.delta", "output_index": i, "item_id": it["id"], "delta": c})
			}
			ev(map[string]any{"type": "response.custom_tool_call_input.done", "output_index": i, "item_id": it["id"], "input": input})
		}
		ev(map[string]any{"type": "response.output_item.done", "output_index": i, "item": it})
	}
	ev(map[string]any{"type": "response.completed", "response": resp("completed", items, true)})
}
