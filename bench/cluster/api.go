package cluster

import (
	"bytes"
	"context"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"time"
)

// Task is a task as the REST API answers it (only the fields the suites
// check; names are the contract's JSON names).
type Task struct {
	ID        string    `json:"id"`
	State     string    `json:"state"`
	Repo      string    `json:"repo"`
	Branch    string    `json:"branch"`
	Commit    string    `json:"commit"`
	PRURL     string    `json:"pr_url"`
	Run       int       `json:"run"`
	Error     string    `json:"error"`
	Reason    string    `json:"reason"`
	Source    string    `json:"source"`
	Prompt    string    `json:"prompt"`
	CreatedAt time.Time `json:"created_at"`
	UpdatedAt time.Time `json:"updated_at"`
}

// Transition is one stored state change of a task.
type Transition struct {
	From   string    `json:"from"`
	To     string    `json:"to"`
	Reason string    `json:"reason"`
	Run    int       `json:"run"`
	At     time.Time `json:"at"`
}

// Final states a task rests in.
var Final = map[string]bool{"review": true, "done": true, "failed": true, "cancelled": true, "needs_input": true}

// API is a client of one process's REST API (no token: the suites run
// servers on loopback without api.tokens).
type API struct {
	Base string
}

var client = &http.Client{Timeout: 15 * time.Second}

func (a *API) do(ctx context.Context, method, path string, body []byte, hdr map[string]string, out any) (int, error) {
	if _, ok := ctx.Deadline(); !ok {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, 15*time.Second)
		defer cancel()
	}
	var rd io.Reader
	if body != nil {
		rd = bytes.NewReader(body)
	}
	req, err := http.NewRequestWithContext(ctx, method, a.Base+path, rd)
	if err != nil {
		return 0, err
	}
	if body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	for k, v := range hdr {
		req.Header.Set(k, v)
	}
	resp, err := client.Do(req)
	if err != nil {
		return 0, err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(io.LimitReader(resp.Body, 64<<20))
	if err != nil {
		return resp.StatusCode, err
	}
	if resp.StatusCode >= 300 {
		return resp.StatusCode, fmt.Errorf("%s %s: %d %s", method, path, resp.StatusCode, bytes.TrimSpace(b))
	}
	if out != nil {
		if err := json.Unmarshal(b, out); err != nil {
			return resp.StatusCode, fmt.Errorf("%s %s: decode %q: %w", method, path, b, err)
		}
	}
	return resp.StatusCode, nil
}

// CreateTask posts a task with an Idempotency-Key and returns its id.
func (a *API) CreateTask(ctx context.Context, repo, prompt, agent, key string) (string, int, error) {
	body, _ := json.Marshal(map[string]string{"repo": repo, "prompt": prompt, "agent": agent})
	var out struct {
		ID    string `json:"id"`
		State string `json:"state"`
	}
	code, err := a.do(ctx, http.MethodPost, "/api/v1/tasks", body, map[string]string{"Idempotency-Key": key}, &out)
	if err == nil && out.ID == "" {
		err = fmt.Errorf("POST /api/v1/tasks: %d without an id", code)
	}
	return out.ID, code, err
}

// Task gets one task.
func (a *API) Task(ctx context.Context, id string) (Task, error) {
	var t Task
	_, err := a.do(ctx, http.MethodGet, "/api/v1/tasks/"+url.PathEscape(id), nil, nil, &t)
	return t, err
}

// Tasks lists every task (following the next cursor).
func (a *API) Tasks(ctx context.Context) ([]Task, error) {
	var all []Task
	q := "?limit=200"
	for range 100 {
		var page struct {
			Tasks []Task `json:"tasks"`
			Next  string `json:"next"`
		}
		var raw json.RawMessage
		if _, err := a.do(ctx, http.MethodGet, "/api/v1/tasks"+q, nil, nil, &raw); err != nil {
			return nil, err
		}
		// The list is either a bare array or {"tasks": [...], "next": ...}.
		if len(raw) > 0 && raw[0] == '[' {
			var ts []Task
			if err := json.Unmarshal(raw, &ts); err != nil {
				return nil, err
			}
			return append(all, ts...), nil
		}
		if err := json.Unmarshal(raw, &page); err != nil {
			return nil, err
		}
		all = append(all, page.Tasks...)
		if page.Next == "" || len(page.Tasks) == 0 {
			return all, nil
		}
		q = "?limit=200&before=" + url.QueryEscape(page.Next)
	}
	return all, nil
}

// Transitions lists a task's stored transitions.
func (a *API) Transitions(ctx context.Context, id string) ([]Transition, error) {
	var raw json.RawMessage
	if _, err := a.do(ctx, http.MethodGet, "/api/v1/tasks/"+url.PathEscape(id)+"/transitions", nil, nil, &raw); err != nil {
		return nil, err
	}
	var trs []Transition
	if len(raw) > 0 && raw[0] == '[' {
		err := json.Unmarshal(raw, &trs)
		return trs, err
	}
	var wrapped struct {
		Transitions []Transition `json:"transitions"`
	}
	err := json.Unmarshal(raw, &wrapped)
	return wrapped.Transitions, err
}

// Message posts a follow-up instruction.
func (a *API) Message(ctx context.Context, id, text string) (int, error) {
	body, _ := json.Marshal(map[string]string{"text": text})
	return a.do(ctx, http.MethodPost, "/api/v1/tasks/"+url.PathEscape(id)+"/messages", body, nil, nil)
}

// Cancel cancels a task.
func (a *API) Cancel(ctx context.Context, id string) (int, error) {
	return a.do(ctx, http.MethodPost, "/api/v1/tasks/"+url.PathEscape(id)+"/cancel", []byte("{}"), nil, nil)
}

// Ready asks /readyz.
func (a *API) Ready(ctx context.Context) error {
	_, err := a.do(ctx, http.MethodGet, "/readyz", nil, nil, nil)
	return err
}

// PostGitHub delivers a webhook as GitHub does: the body signed with
// secret in X-Hub-Signature-256. It returns the status and the JSON answer.
func (a *API) PostGitHub(ctx context.Context, secret, event, delivery string, body []byte) (int, map[string]string, error) {
	mac := hmac.New(sha256.New, []byte(secret))
	mac.Write(body)
	var out map[string]string
	code, err := a.do(ctx, http.MethodPost, "/hooks/github", body, map[string]string{
		"X-GitHub-Event": event, "X-GitHub-Delivery": delivery,
		"X-Hub-Signature-256": "sha256=" + hex.EncodeToString(mac.Sum(nil))}, &out)
	return code, out, err
}
