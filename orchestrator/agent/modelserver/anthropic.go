package modelserver

import (
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"strings"
)

type anthropicRequest struct {
	Model    string                  `json:"model"`
	Stream   bool                    `json:"stream"`
	Tools    []struct{ Name string } `json:"tools"`
	System   json.RawMessage         `json:"system"`
	Messages []struct {
		Role    string          `json:"role"`
		Content json.RawMessage `json:"content"`
	} `json:"messages"`
}

type anthropicBlock struct {
	Type      string          `json:"type"`
	Text      string          `json:"text"`
	ID        string          `json:"id"`
	ToolUseID string          `json:"tool_use_id"`
	Content   json.RawMessage `json:"content"`
	IsError   bool            `json:"is_error"`
}

// blockText flattens tool_result content (string or blocks) to text.
func blockText(raw json.RawMessage) string {
	if len(raw) == 0 {
		return ""
	}
	var s string
	if json.Unmarshal(raw, &s) == nil {
		return s
	}
	var blocks []anthropicBlock
	if json.Unmarshal(raw, &blocks) != nil {
		return string(raw)
	}
	var parts []string
	for _, b := range blocks {
		switch b.Type {
		case "text":
			parts = append(parts, b.Text)
		case "tool_result":
			parts = append(parts, blockText(b.Content))
		}
	}
	return strings.Join(parts, "\n")
}

func parseAnthropic(r *http.Request, body []byte) (*Request, error) {
	var ar anthropicRequest
	if err := json.Unmarshal(body, &ar); err != nil {
		return nil, fmt.Errorf("anthropic request: %w", err)
	}
	req := &Request{Provider: "anthropic", Path: r.URL.Path, Header: r.Header.Clone(), Body: body,
		Model: ar.Model, Stream: ar.Stream, ToolResults: map[string]string{}, ToolErrors: map[string]bool{}}
	for _, t := range ar.Tools {
		req.ToolNames = append(req.ToolNames, t.Name)
	}
	req.Main = len(ar.Tools) > 0
	for _, m := range ar.Messages {
		var s string
		if json.Unmarshal(m.Content, &s) == nil {
			req.Texts = append(req.Texts, s)
			continue
		}
		var blocks []anthropicBlock
		if err := json.Unmarshal(m.Content, &blocks); err != nil {
			return nil, fmt.Errorf("anthropic message content: %w", err)
		}
		for _, b := range blocks {
			switch b.Type {
			case "text":
				req.Texts = append(req.Texts, b.Text)
			case "tool_result":
				req.ToolResults[b.ToolUseID] = blockText(b.Content)
				if b.IsError {
					req.ToolErrors[b.ToolUseID] = true
				}
			}
		}
	}
	return req, nil
}

func anthropicError(w http.ResponseWriter, code int, typ, msg string) {
	writeJSON(w, code, map[string]any{"type": "error", "error": map[string]any{"type": typ, "message": msg}})
}

func (s *Server) serveAnthropic(w http.ResponseWriter, r *http.Request) {
	body, err := io.ReadAll(r.Body)
	if err != nil {
		return
	}
	req, err := parseAnthropic(r, body)
	if err != nil {
		s.fail(err)
		anthropicError(w, http.StatusBadRequest, "invalid_request_error", err.Error())
		return
	}
	st, n := s.answer(req)
	if !hold(r, st) {
		return
	}
	in, out := st.usage()
	msgID := fmt.Sprintf("msg_%03d", n)
	type block map[string]any
	var content []block
	if st.Text != "" {
		content = append(content, block{"type": "text", "text": st.Text})
	}
	for i, tc := range st.ToolCalls {
		id := tc.ID
		if id == "" {
			id = fmt.Sprintf("toolu_%03d_%d", n, i)
		}
		var input any = map[string]any{}
		if tc.Input != nil {
			_ = json.Unmarshal([]byte(inputJSON(tc.Input)), &input)
		}
		content = append(content, block{"type": "tool_use", "id": id, "name": tc.Name, "input": input})
	}
	stop := "end_turn"
	if len(st.ToolCalls) > 0 {
		stop = "tool_use"
	}
	if !req.Stream {
		writeJSON(w, http.StatusOK, map[string]any{
			"id": msgID, "type": "message", "role": "assistant", "model": req.Model,
			"content": content, "stop_reason": stop, "stop_sequence": nil,
			"usage": map[string]any{"input_tokens": in, "output_tokens": out},
		})
		return
	}
	w.Header().Set("Content-Type", "text/event-stream")
	w.Header().Set("Cache-Control", "no-cache")
	w.WriteHeader(http.StatusOK)
	sse(w, "message_start", map[string]any{"type": "message_start", "message": map[string]any{
		"id": msgID, "type": "message", "role": "assistant", "model": req.Model, "content": []any{},
		"stop_reason": nil, "stop_sequence": nil,
		"usage": map[string]any{"input_tokens": in, "output_tokens": 1, "cache_creation_input_tokens": 0, "cache_read_input_tokens": 0},
	}})
	sse(w, "ping", map[string]any{"type": "ping"})
	for i, b := range content {
		switch b["type"] {
		case "text":
			sse(w, "content_block_start", map[string]any{"type": "content_block_start", "index": i,
				"content_block": map[string]any{"type": "text", "text": ""}})
			for _, c := range chunks(b["text"].(string), 3) {
				sse(w, "content_block_delta", map[string]any{"type": "content_block_delta", "index": i,
					"delta": map[string]any{"type": "text_delta", "text": c}})
			}
		case "tool_use":
			sse(w, "content_block_start", map[string]any{"type": "content_block_start", "index": i,
				"content_block": map[string]any{"type": "tool_use", "id": b["id"], "name": b["name"], "input": map[string]any{}}})
			js, _ := json.Marshal(b["input"])
			for _, c := range chunks(string(js), 3) {
				sse(w, "content_block_delta", map[string]any{"type": "content_block_delta", "index": i,
					"delta": map[string]any{"type": "input_json_delta", "partial_json": c}})
			}
		}
		sse(w, "content_block_stop", map[string]any{"type": "content_block_stop", "index": i})
	}
	sse(w, "message_delta", map[string]any{"type": "message_delta",
		"delta": map[string]any{"stop_reason": stop, "stop_sequence": nil},
		"usage": map[string]any{"output_tokens": out}})
	sse(w, "message_stop", map[string]any{"type": "message_stop"})
}
