package gateway

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"unicode/utf8"
)

// This file is the gateway's request policy: which headers reach the
// upstream and which request bodies do. A sandbox has no network; the
// provider must not become its network. Provider-side ("server") tools
// such as web search and fetch, code execution, the MCP connector,
// containers, skills, stored files and URL sources make the provider open
// connections or read data the agent chooses, so requests using them are
// refused, and only the headers and anthropic-beta flags the CLIs send in
// normal operation are forwarded.

// DefaultBetas returns the anthropic-beta flags forwarded for provider
// ("anthropic"; other providers have none): the ones Claude Code 2.1.x
// sends (recorded against the gateway for Sonnet, Opus and Haiku models)
// and a few more that only change how the model answers (caching,
// streaming, context size, thinking, structured output). Betas that make
// the provider reach out or keep data (web fetch and search, code
// execution, the MCP connector, files, skills, batches, managed agents)
// are not among them.
func DefaultBetas(provider string) []string {
	if provider != "anthropic" {
		return nil
	}
	return []string{
		// Sent by Claude Code 2.1.328.
		"claude-code-20250219",
		"interleaved-thinking-2025-05-14",
		"context-management-2025-06-27",
		"thinking-token-count-2026-05-13",
		"thinking-display-updates-2026-08-18",
		"advanced-tool-use-2025-11-20",
		"effort-2025-11-24",
		"per-turn-control-2026-07-01",
		"mid-conversation-tool-changes-2026-07-01",
		// Answer-shaping betas without side effects.
		"fine-grained-tool-streaming-2025-05-14",
		"token-efficient-tools-2025-02-19",
		"prompt-caching-2024-07-31",
		"prompt-caching-scope-2026-01-05",
		"extended-cache-ttl-2025-04-11",
		"context-1m-2025-08-07",
		"output-128k-2025-02-19",
		"redact-thinking-2026-02-12",
		"structured-outputs-2025-11-13",
		"structured-outputs-2025-12-15",
		"tool-search-tool-2025-10-19",
		"token-counting-2024-11-01",
	}
}

// forwardedHeaders are the request headers forwarded to every upstream
// (canonical names); headerPrefixes are forwarded by prefix.
var (
	forwardedHeaders = map[string][]string{
		"":          {"Accept", "Content-Type", "User-Agent"},
		"anthropic": {"Anthropic-Version", "X-App", "X-Claude-Code-Session-Id"},
		// Codex 0.169.
		"openai": {"Originator", "Session-Id", "Thread-Id", "Version", "X-Client-Request-Id",
			"X-Openai-Internal-Codex-Responses-Lite"},
	}
	headerPrefixes = map[string][]string{
		"":       {"X-Stainless-"}, // the Anthropic and OpenAI SDKs' client description
		"openai": {"X-Codex-"},
	}
)

// upstreamHeader returns the headers of r forwarded to the upstream of
// provider: the allow-listed ones, anthropic-beta reduced to up.Betas
// (unless up.AllowServerTools), and
// Content-Encoding when the body was decoded. Everything else (method
// overrides, Forwarded and X-Forwarded-*, OpenAI-Organization and
// OpenAI-Project, custom headers) is dropped. The second result names (at
// most 20 of) the dropped headers and betas, for the log.
func upstreamHeader(provider string, in http.Header, up Upstream, encoded bool) (http.Header, []string) {
	out := http.Header{}
	var dropped []string
	for k, vs := range in {
		ck := http.CanonicalHeaderKey(k)
		switch {
		case ck == "Anthropic-Beta" && provider == "anthropic":
			var keep []string
			for _, v := range vs {
				for b := range strings.SplitSeq(v, ",") {
					b = strings.TrimSpace(b)
					switch {
					case b == "":
					case up.AllowServerTools || slices.Contains(up.Betas, strings.ToLower(b)):
						keep = append(keep, b)
					default:
						dropped = append(dropped, "anthropic-beta "+b)
					}
				}
			}
			if len(keep) > 0 {
				out.Set(ck, strings.Join(keep, ","))
			}
		case ck == "Content-Encoding" && encoded:
			out[ck] = vs
		case forwarded(provider, ck):
			out[ck] = vs
		case ck == "X-Api-Key" || ck == "Authorization" || ck == "Content-Length" || ck == "Accept-Encoding":
			// Replaced by the gateway or its transport.
		default:
			dropped = append(dropped, ck)
		}
	}
	slices.Sort(dropped)
	if len(dropped) > 20 {
		dropped = dropped[:20]
	}
	for i, d := range dropped {
		if len(d) > 80 {
			dropped[i] = d[:80] + "…"
		}
	}
	return out, dropped
}

func forwarded(provider, name string) bool {
	for _, p := range []string{"", provider} {
		if slices.Contains(forwardedHeaders[p], name) {
			return true
		}
		for _, pre := range headerPrefixes[p] {
			if strings.HasPrefix(name, pre) {
				return true
			}
		}
	}
	return false
}

// errEncoding reports a request body in an encoding the gateway cannot read.
var errEncoding = errors.New("gateway: unsupported or corrupt request Content-Encoding")

// decodeRequest returns the request body decoded from its Content-Encoding
// (none, identity, gzip or zstd), or errEncoding: a body the gateway cannot
// read is never forwarded.
func decodeRequest(b []byte, encoding string) ([]byte, error) {
	switch strings.ToLower(strings.TrimSpace(encoding)) {
	case "", "identity":
		return b, nil
	case "gzip", "zstd":
		out := decodeBody(b, encoding)
		if bytes.Equal(out, b) && len(b) > 0 {
			return nil, errEncoding
		}
		return out, nil
	}
	return nil, errEncoding
}

// refusal is a request body the gateway does not forward.
type refusal struct {
	path string // where in the body, e.g. tools[2].type
	msg  string
}

func (r *refusal) Error() string {
	if r.path == "" {
		return "nightshift gateway: " + r.msg
	}
	return "nightshift gateway: " + r.path + ": " + r.msg
}

// maxDepth bounds the nesting of a request body.
const maxDepth = 512

// checkBody parses a JSON request body and refuses the features that make
// the provider act on the network or on stored data for the agent. It
// reads the whole body strictly: invalid JSON or UTF-8, duplicate object
// keys (which another parser may resolve differently) and trailing data
// are refused too. With allowServerTools only the parse is checked.
func checkBody(body []byte, allowServerTools bool) error {
	if !utf8.Valid(body) {
		return &refusal{msg: "the request body is not valid UTF-8"}
	}
	dec := json.NewDecoder(bytes.NewReader(body))
	dec.UseNumber()
	v, err := parseValue(dec, 0)
	if err == nil {
		if _, terr := dec.Token(); terr != io.EOF {
			err = errors.New("data after the JSON value")
		}
	}
	if err != nil {
		return &refusal{msg: "the request body is not a valid JSON document: " + err.Error()}
	}
	root, ok := v.(map[string]any)
	if !ok {
		return &refusal{msg: "the request body is not a JSON object"}
	}
	if allowServerTools {
		return nil
	}
	// A parser that folds case (or a future API version) must not find a
	// feature under a spelling the checks below do not look at.
	for k := range root {
		for _, checked := range []string{"tools", "mcp_servers", "container", "web_search_options", "prompt", "background", "messages", "input", "system"} {
			if k != checked && strings.EqualFold(k, checked) {
				return &refusal{path: k, msg: "unknown top-level key (did you mean " + checked + "?)"}
			}
		}
	}
	for _, k := range []string{"mcp_servers", "container", "web_search_options"} {
		if v, ok := root[k]; ok && (present(v) || k == "web_search_options" && v != nil) {
			return &refusal{path: k, msg: "provider-side tools and containers are not available to agents (the provider must not be the sandbox's network)"}
		}
	}
	if _, ok := root["prompt"].(map[string]any); ok {
		return &refusal{path: "prompt", msg: "prompts stored at the provider are not available to agents"}
	}
	if root["background"] == true {
		return &refusal{path: "background", msg: "background responses are not available to agents"}
	}
	return walk(root, nil, "")
}

// present reports whether a field is set to something other than null, an
// empty array or an empty object.
func present(v any) bool {
	switch v := v.(type) {
	case nil:
		return false
	case []any:
		return len(v) > 0
	case map[string]any:
		return len(v) > 0
	}
	return true
}

// parseValue reads one JSON value, refusing duplicate keys and nesting
// deeper than maxDepth.
func parseValue(dec *json.Decoder, depth int) (any, error) {
	if depth > maxDepth {
		return nil, errors.New("nested too deeply")
	}
	tok, err := dec.Token()
	if err != nil {
		return nil, err
	}
	d, ok := tok.(json.Delim)
	if !ok {
		return tok, nil
	}
	switch d {
	case '{':
		m := map[string]any{}
		for dec.More() {
			kt, err := dec.Token()
			if err != nil {
				return nil, err
			}
			k, _ := kt.(string)
			if _, dup := m[k]; dup {
				return nil, fmt.Errorf("duplicate key %q", k)
			}
			if m[k], err = parseValue(dec, depth+1); err != nil {
				return nil, err
			}
		}
		_, err := dec.Token()
		return m, err
	case '[':
		a := []any{}
		for dec.More() {
			v, err := parseValue(dec, depth+1)
			if err != nil {
				return nil, err
			}
			a = append(a, v)
		}
		_, err := dec.Token()
		return a, err
	}
	return nil, fmt.Errorf("unexpected %v", d)
}

// clientToolTypes are tool types the agent's side executes (or, for tool
// search, that search only the request's own tools); every other typed
// tool runs at the provider.
var (
	clientToolTypes = []string{
		"custom", "function", "namespace", // OpenAI function and freeform tools, Codex's tool groups
		"tool_search",                         // OpenAI tool search over the request's deferred tools (Codex: execution "client")
		"local_shell", "apply_patch", "shell", // OpenAI tools the client runs ("shell" only without a hosted environment)
		"computer_use_preview", "computer", "computer_use", // the client performs the actions
	}
	// Anthropic client tools (bash_20250124, text_editor_20250728,
	// computer_20250124, memory_20250818) and tool search over the
	// request's tools.
	clientToolType = regexp.MustCompile(`^((bash|text_editor|computer|memory)_\d{8}|tool_search_tool_(regex|bm25)(_\d{8})?)$`)
)

// skipKeys hold JSON schemas and the model's own tool arguments: their
// contents are data, not request features.
var skipKeys = map[string]bool{"input_schema": true, "parameters": true, "schema": true, "output_schema": true}

// walk checks every object below v; key is the field v is the value of.
func walk(v any, path []string, key string) error {
	switch v := v.(type) {
	case []any:
		for i, e := range v {
			p := append(path, "["+strconv.Itoa(i)+"]")
			if key == "tools" {
				if err := checkTool(e, p); err != nil {
					return err
				}
			}
			if err := walk(e, p, key); err != nil {
				return err
			}
		}
	case map[string]any:
		typ, _ := v["type"].(string)
		switch typ {
		case "url", "mcp_tool_use", "mcp_tool_result", "container_upload":
			return refuse(path, "type", fmt.Sprintf("%q content makes the provider fetch a URL or read stored data; send the content inline", typ))
		}
		if present(v["file_id"]) {
			return refuse(path, "file_id", "files stored at the provider are not available to agents; send the content inline")
		}
		if present(v["file_url"]) {
			return refuse(path, "file_url", "the provider must not fetch URLs for agents; send the content inline")
		}
		if err := checkImageURL(v["image_url"], path); err != nil {
			return err
		}
		for k, e := range v {
			if skipKeys[k] || (k == "input" && (typ == "tool_use" || typ == "server_tool_use")) {
				continue
			}
			if err := walk(e, append(path, "."+k), k); err != nil {
				return err
			}
		}
	}
	return nil
}

// checkTool refuses a provider-side tool.
func checkTool(t any, path []string) error {
	m, ok := t.(map[string]any)
	if !ok {
		return nil
	}
	typ, _ := m["type"].(string)
	if typ == "" || clientToolType.MatchString(typ) {
		return nil
	}
	if slices.Contains(clientToolTypes, typ) {
		env, _ := m["environment"].(map[string]any)
		if typ == "shell" && present(m["environment"]) && env["type"] != "local" {
			return refuse(path, "environment", "a hosted shell runs at the provider; agents run commands in their sandbox")
		}
		return nil
	}
	return refuse(path, "type", fmt.Sprintf("%q is a provider-side tool; agents may only use tools they run themselves (the provider must not be the sandbox's network)", typ))
}

// checkImageURL allows images sent inline (data: URLs) only.
func checkImageURL(v any, path []string) error {
	u, _ := v.(string)
	if m, ok := v.(map[string]any); ok {
		u, _ = m["url"].(string)
	}
	if v == nil || strings.HasPrefix(strings.ToLower(strings.TrimSpace(u)), "data:") {
		return nil
	}
	return refuse(path, "image_url", "the provider must not fetch URLs for agents; send images inline as data: URLs")
}

func refuse(path []string, field, msg string) error {
	p := strings.TrimPrefix(strings.Join(path, "")+"."+field, ".")
	return &refusal{path: p, msg: msg}
}
