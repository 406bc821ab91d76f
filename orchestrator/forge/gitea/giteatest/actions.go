package giteatest

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strings"
	"sync"
	"time"
)

// RunnerLabel is the runs-on label of the stand-in runner.
const RunnerLabel = "nightshift-test"

// Runner is a stand-in Gitea Actions runner: it registers with Gitea and
// speaks the runner protocol (Connect, JSON encoding: Register, FetchTask,
// UpdateLog, UpdateTask) the way act_runner does, but runs nothing: each
// job it fetches ends the way the test says, with the log the test gives.
// Gitea does the rest as for a real runner (job and run state, commit
// status, workflow_run and workflow_job webhooks, the logs API).
type Runner struct {
	s            *Server
	uuid, token  string
	tasksVersion int64
	mu           sync.Mutex
}

// Runner registers (once per server) the stand-in runner for RunnerLabel
// jobs of every repository.
func (s *Server) Runner(ctx context.Context) (*Runner, error) {
	s.runnerMu.Lock()
	defer s.runnerMu.Unlock()
	if s.runner != nil {
		return s.runner, nil
	}
	var reg struct {
		Token string `json:"token"`
	}
	if err := s.Do(ctx, http.MethodPost, "admin/actions/runners/registration-token", "", nil, &reg); err != nil {
		return nil, err
	}
	r := &Runner{s: s}
	var out struct {
		Runner struct {
			UUID  string `json:"uuid"`
			Token string `json:"token"`
		} `json:"runner"`
	}
	if err := r.rpc(ctx, "Register", map[string]any{"name": "nightshift-test-runner", "token": reg.Token, "version": "v0.0.0-nightshift",
		"labels": []string{RunnerLabel}}, &out); err != nil {
		return nil, err
	}
	r.uuid, r.token = out.Runner.UUID, out.Runner.Token
	if r.uuid == "" || r.token == "" {
		return nil, errors.New("giteatest: runner registration answered no uuid or token")
	}
	s.runner = r
	return r, nil
}

// rpc calls one RunnerService procedure with the Connect protocol's JSON
// encoding.
func (r *Runner) rpc(ctx context.Context, method string, in, out any) error {
	b, err := json.Marshal(in)
	if err != nil {
		return err
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, r.s.URL+"api/actions/runner.v1.RunnerService/"+method, bytes.NewReader(b))
	if err != nil {
		return err
	}
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("Connect-Protocol-Version", "1")
	if r.uuid != "" {
		req.Header.Set("x-runner-uuid", r.uuid)
		req.Header.Set("x-runner-token", r.token)
	}
	resp, err := r.s.client.Do(req)
	if err != nil {
		return fmt.Errorf("giteatest: runner %s: %w", method, err)
	}
	defer resp.Body.Close()
	data, _ := io.ReadAll(io.LimitReader(resp.Body, 16<<20))
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("giteatest: runner %s: %d %s", method, resp.StatusCode, tail(string(data), 500))
	}
	if out != nil {
		if err := json.Unmarshal(data, out); err != nil {
			return fmt.Errorf("giteatest: runner %s: decode: %w", method, err)
		}
	}
	return nil
}

// Job is a job the runner finished.
type Job struct {
	TaskID int64
	// Name is the job's name (from the workflow), SHA its commit, Event
	// what started its run (push, pull_request).
	Name, SHA, Event string
}

// Finish waits for the next job Gitea hands the runner (up to a minute),
// uploads log (one row per line) and ends it with result: "failure",
// "success" or "cancelled".
func (r *Runner) Finish(ctx context.Context, result, log string) (Job, error) {
	return r.FinishFunc(ctx, func(Job) (string, string) { return result, log })
}

// FinishFunc is Finish with the result and log chosen by decide, once it
// knows the job.
func (r *Runner) FinishFunc(ctx context.Context, decide func(Job) (result, log string)) (Job, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	deadline := time.Now().Add(time.Minute)
	var task struct {
		ID      int64          `json:"id,string"`
		Context map[string]any `json:"context"`
	}
	for {
		var out struct {
			Task         json.RawMessage `json:"task"`
			TasksVersion int64           `json:"tasksVersion,string"`
		}
		if err := r.rpc(ctx, "FetchTask", map[string]any{"tasksVersion": r.tasksVersion}, &out); err != nil {
			return Job{}, err
		}
		r.tasksVersion = out.TasksVersion
		if len(out.Task) > 0 && string(out.Task) != "null" {
			if err := json.Unmarshal(out.Task, &task); err != nil {
				return Job{}, fmt.Errorf("giteatest: runner task: %w", err)
			}
			break
		}
		if time.Now().After(deadline) {
			return Job{}, errors.New("giteatest: no Actions job for the runner within a minute")
		}
		r.tasksVersion = 0 // ask Gitea to look for queued jobs again
		select {
		case <-ctx.Done():
			return Job{}, ctx.Err()
		case <-time.After(200 * time.Millisecond):
		}
	}
	j := Job{TaskID: task.ID}
	j.SHA, _ = task.Context["sha"].(string)
	j.Name, _ = task.Context["job"].(string)
	j.Event, _ = task.Context["event_name"].(string)
	result, log := decide(j)
	now := time.Now().UTC()
	var rows []map[string]any
	for _, l := range strings.Split(strings.TrimRight(log, "\n"), "\n") {
		rows = append(rows, map[string]any{"time": now.Format(time.RFC3339Nano), "content": l})
	}
	if err := r.rpc(ctx, "UpdateLog", map[string]any{"taskId": task.ID, "index": 0, "rows": rows, "noMore": true}, nil); err != nil {
		return Job{}, err
	}
	res := map[string]string{"failure": "RESULT_FAILURE", "success": "RESULT_SUCCESS", "cancelled": "RESULT_CANCELLED"}[result]
	if res == "" {
		return Job{}, fmt.Errorf("giteatest: unknown job result %q", result)
	}
	state := map[string]any{"id": task.ID, "result": res, "startedAt": now.Format(time.RFC3339Nano), "stoppedAt": time.Now().UTC().Format(time.RFC3339Nano)}
	if err := r.rpc(ctx, "UpdateTask", map[string]any{"state": state}, nil); err != nil {
		return Job{}, err
	}
	return j, nil
}

// Workflow is a workflow file (.gitea/workflows/<name>.yml) with one job
// per name, each running on the stand-in runner on every push and pull
// request.
func Workflow(name string, jobs ...string) (path, content string) {
	var b strings.Builder
	fmt.Fprintf(&b, "name: %s\non: [push, pull_request]\njobs:\n", name)
	for _, j := range jobs {
		fmt.Fprintf(&b, "  %s:\n    runs-on: %s\n    steps:\n      - run: echo %s\n", j, RunnerLabel, j)
	}
	return ".gitea/workflows/" + strings.ToLower(name) + ".yml", b.String()
}
