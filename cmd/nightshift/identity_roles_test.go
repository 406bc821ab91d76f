package main

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/nightshift/nightshift/bench/cluster"
	"github.com/nightshift/nightshift/identity"
)

// TestIdentityOfAWorkerIsListedByTheIngress: ingress, scheduler and worker
// as separate processes with separate data dirs against one external NATS.
// The identity the worker creates for a task (in its own process, on its
// own data dir) is listed by the ingress's /api/v1/identities; before
// identities lived in NATS, the ingress's SQLite never saw it.
func TestIdentityOfAWorkerIsListedByTheIngress(t *testing.T) {
	if testing.Short() {
		t.Skip("three serve processes and a task")
	}
	dir := t.TempDir()
	forge := cluster.NewForge(t, dir)
	nats := cluster.StartNATS(t, filepath.Join(dir, "nats"), 1)
	agent := cluster.NewAgent(t, dir, "1")
	cfg := forge.Config(cluster.ConfigOptions{Agent: agent.Script, Replicas: 1})
	start := func(name, role string) *cluster.Role {
		return cluster.StartRole(t, filepath.Join(dir, name), cluster.RoleOptions{Name: name, Role: role, NATS: nats.URL, Config: cfg})
	}
	ingress := start("ingress", "ingress")
	sched := start("scheduler", "scheduler")
	worker := start("worker", "worker")
	logs := func() string {
		var b strings.Builder
		for _, r := range []*cluster.Role{ingress, sched, worker} {
			fmt.Fprintf(&b, "--- %s (tail)\n%s\n", r.Name, r.Tail(4000))
		}
		return b.String()
	}
	ctx := context.Background()
	id, code, err := ingress.API.CreateTask(ctx, forge.RepoURL(), "write the identity note", "script", "identity-roles-1")
	if err != nil {
		t.Fatalf("create task: %d %v", code, err)
	}
	var seen identity.Identity
	cluster.Eventually(t, 90*time.Second, "the task's identity listed by the ingress", func() (bool, string) {
		resp, err := http.Get(ingress.URL + "/api/v1/identities?all=true")
		if err != nil {
			return false, err.Error()
		}
		defer resp.Body.Close()
		var out struct{ Identities []identity.Identity }
		if err := json.NewDecoder(resp.Body).Decode(&out); err != nil || resp.StatusCode != 200 {
			return false, fmt.Sprintf("%s %v", resp.Status, err)
		}
		for _, x := range out.Identities {
			if x.TaskID == id {
				seen = x
				return true, ""
			}
		}
		return false, fmt.Sprintf("%d identities, none of task %s\n%s", len(out.Identities), id, logs())
	})
	if !strings.HasPrefix(seen.Name, "agent-") || seen.Email == "" {
		t.Fatalf("identity as the ingress sees it: %+v", seen)
	}
}
