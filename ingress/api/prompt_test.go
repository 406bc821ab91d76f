package api

import (
	"encoding/json"
	"strings"
	"testing"

	"github.com/nightshift/nightshift/orchestrator"
)

// TestPromptLimit: a prompt over the limit is refused with 413 and a JSON
// error naming the limit, before anything is stored; one at the limit, even
// when JSON escaping makes its body much larger, is accepted. Follow-up
// messages have the same limit.
func TestPromptLimit(t *testing.T) {
	t.Parallel()
	w := newWorld(t)
	w.runScheduler(t)
	ts := serve(t, New(w.bus, w.store, Config{}))
	body := func(prompt string) string {
		b, _ := json.Marshal(CreateRequest{Repo: "https://example.com/o/r.git", Prompt: prompt})
		return string(b)
	}
	over := strings.Repeat("x", DefaultMaxPromptBytes+1)
	r := call(t, "POST", ts.URL+"/api/v1/tasks", body(over))
	var e ErrorBody
	if r.code != 413 || json.Unmarshal([]byte(r.body), &e) != nil || !strings.Contains(e.Error, "1 MiB") {
		t.Fatalf("prompt over the limit: %d %s", r.code, r.body)
	}
	if tasks, _ := w.store.List(t.Context(), orchestrator.Filter{}); len(tasks) != 0 {
		t.Fatalf("a refused prompt was stored: %d tasks", len(tasks))
	}
	// A body far past any sane size is cut off while reading, with 413 too.
	r = call(t, "POST", ts.URL+"/api/v1/tasks", `{"repo":"r","prompt":"`+strings.Repeat("y", 8<<20)+`"}`)
	if r.code != 413 || !strings.Contains(r.body, `"error"`) {
		t.Fatalf("oversized body: %d %.200s", r.code, r.body)
	}
	// At the limit, with control characters JSON escapes as \u00XX (six
	// bytes each): accepted.
	at := strings.Repeat("\x01", DefaultMaxPromptBytes-1) + "z"
	r = call(t, "POST", ts.URL+"/api/v1/tasks", body(at))
	if r.code != 202 {
		t.Fatalf("prompt at the limit: %d %.300s", r.code, r.body)
	}
	task := w.addTask(t, orchestrator.SourceAPI, "https://example.com/o/r.git", "p")
	r = call(t, "POST", ts.URL+"/api/v1/tasks/"+task.ID+"/messages", `{"text":"`+strings.Repeat("m", DefaultMaxPromptBytes+1)+`"}`)
	if r.code != 413 || !strings.Contains(r.body, "limit") {
		t.Fatalf("message over the limit: %d %.300s", r.code, r.body)
	}
	// A retry takes an optional {"from_base": bool} and nothing else.
	r = call(t, "POST", ts.URL+"/api/v1/tasks/"+task.ID+"/retry", `{"from_bass": true}`)
	if r.code != 400 || !strings.Contains(r.body, "from_base") {
		t.Fatalf("retry with an unknown field: %d %s", r.code, r.body)
	}
}
