package gateway

import (
	"bytes"
	"compress/gzip"
	"encoding/json"
	"io"
	"strings"

	"github.com/klauspost/compress/zstd"
)

// tokens is what one response reported.
type tokens struct {
	model                 string
	input, output         int64
	cacheRead, cacheWrite int64
}

// meter extracts usage from a response body as it streams: SSE events
// (Anthropic message_start/message_delta, OpenAI response.completed and chat
// completion chunks) or, for other content types, the whole JSON body.
type meter struct {
	provider string
	sse      bool
	line     []byte
	body     bytes.Buffer // non-SSE bodies, up to maxMeterBody
	t        tokens
	// done is set when an SSE stream's final event has been seen.
	done bool
}

const maxMeterBody = 32 << 20

func newMeter(provider, contentType string) *meter {
	return &meter{provider: provider, sse: strings.HasPrefix(contentType, "text/event-stream")}
}

func (m *meter) Write(p []byte) {
	if !m.sse {
		if m.body.Len()+len(p) <= maxMeterBody {
			m.body.Write(p)
		}
		return
	}
	for len(p) > 0 {
		i := bytes.IndexByte(p, '\n')
		if i < 0 {
			m.line = append(m.line, p...)
			return
		}
		m.line = append(m.line, p[:i]...)
		m.sseLine(m.line)
		m.line = m.line[:0]
		p = p[i+1:]
	}
}

func (m *meter) sseLine(l []byte) {
	l = bytes.TrimRight(l, "\r")
	data, ok := bytes.CutPrefix(l, []byte("data:"))
	if !ok {
		return
	}
	data = bytes.TrimSpace(data)
	if string(data) == "[DONE]" {
		m.done = true
		return
	}
	if len(data) == 0 || data[0] != '{' {
		return
	}
	m.event(data)
}

// usageJSON covers the usage objects of both APIs.
type usageJSON struct {
	InputTokens              *int64 `json:"input_tokens"`
	OutputTokens             *int64 `json:"output_tokens"`
	CacheReadInputTokens     *int64 `json:"cache_read_input_tokens"`
	CacheCreationInputTokens *int64 `json:"cache_creation_input_tokens"`
	PromptTokens             *int64 `json:"prompt_tokens"`
	CompletionTokens         *int64 `json:"completion_tokens"`
	InputTokensDetails       *struct {
		CachedTokens int64 `json:"cached_tokens"`
	} `json:"input_tokens_details"`
}

type eventJSON struct {
	Type    string     `json:"type"`
	Object  string     `json:"object"`
	Model   string     `json:"model"`
	Usage   *usageJSON `json:"usage"`
	Message *struct {
		Model string     `json:"model"`
		Usage *usageJSON `json:"usage"`
	} `json:"message"`
	Response *struct {
		Model string     `json:"model"`
		Usage *usageJSON `json:"usage"`
	} `json:"response"`
}

// event applies one JSON event (or a whole non-streaming body).
func (m *meter) event(data []byte) {
	var ev eventJSON
	if json.Unmarshal(data, &ev) != nil {
		return
	}
	switch ev.Type {
	case "message_stop", "response.completed", "response.failed", "response.incomplete", "error":
		m.done = true
	}
	switch {
	case ev.Type == "message_start" && ev.Message != nil:
		// Anthropic: input and cache tokens, and a first output count.
		m.setModel(ev.Message.Model)
		m.apply(ev.Message.Usage)
	case ev.Type == "message_delta":
		// Anthropic: cumulative output (and, in newer API versions, input) counts.
		m.apply(ev.Usage)
	case ev.Type == "message" && ev.Usage != nil:
		// Anthropic non-streaming body.
		m.setModel(ev.Model)
		m.apply(ev.Usage)
	case strings.HasPrefix(ev.Type, "response.") && ev.Response != nil && ev.Response.Usage != nil:
		// OpenAI Responses: response.completed / incomplete / failed.
		m.setModel(ev.Response.Model)
		m.applyOpenAI(ev.Response.Usage)
	case ev.Object == "response" && ev.Usage != nil:
		// OpenAI Responses non-streaming body.
		m.setModel(ev.Model)
		m.applyOpenAI(ev.Usage)
	case strings.HasPrefix(ev.Object, "chat.completion") && ev.Usage != nil:
		// OpenAI Chat Completions body or final stream chunk.
		m.setModel(ev.Model)
		m.applyOpenAI(ev.Usage)
	}
}

func (m *meter) setModel(s string) {
	if s != "" {
		m.t.model = s
	}
}

// apply overwrites counts present in u (Anthropic counts are cumulative).
func (m *meter) apply(u *usageJSON) {
	if u == nil {
		return
	}
	if u.InputTokens != nil {
		m.t.input = *u.InputTokens
	}
	if u.OutputTokens != nil {
		m.t.output = *u.OutputTokens
	}
	if u.CacheReadInputTokens != nil {
		m.t.cacheRead = *u.CacheReadInputTokens
	}
	if u.CacheCreationInputTokens != nil {
		m.t.cacheWrite = *u.CacheCreationInputTokens
	}
}

// applyOpenAI sets counts from an OpenAI usage object, whose input count
// includes cached tokens.
func (m *meter) applyOpenAI(u *usageJSON) {
	in, out := u.InputTokens, u.OutputTokens
	if in == nil {
		in = u.PromptTokens
	}
	if out == nil {
		out = u.CompletionTokens
	}
	var cached int64
	if u.InputTokensDetails != nil {
		cached = u.InputTokensDetails.CachedTokens
	}
	if in != nil {
		m.t.input = *in - cached
		m.t.cacheRead = cached
	}
	if out != nil {
		m.t.output = *out
	}
}

// usage returns the counts seen; for non-SSE bodies it parses the body.
func (m *meter) usage() tokens {
	if m.sse {
		if len(m.line) > 0 {
			m.sseLine(m.line)
			m.line = nil
		}
	} else if m.body.Len() > 0 {
		m.event(m.body.Bytes())
	}
	return m.t
}

// decodeBody returns the request body decoded from its Content-Encoding
// (gzip, zstd), or as is.
func decodeBody(b []byte, encoding string) []byte {
	var r io.Reader
	switch strings.ToLower(strings.TrimSpace(encoding)) {
	case "", "identity":
		return b
	case "gzip":
		zr, err := gzip.NewReader(bytes.NewReader(b))
		if err != nil {
			return b
		}
		r = zr
	case "zstd":
		zr, err := zstd.NewReader(bytes.NewReader(b))
		if err != nil {
			return b
		}
		defer zr.Close()
		r = zr
	default:
		return b
	}
	out, err := io.ReadAll(io.LimitReader(r, 256<<20))
	if err != nil {
		return b
	}
	return out
}
