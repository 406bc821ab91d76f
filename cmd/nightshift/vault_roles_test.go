package main

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/nightshift/nightshift/bench/cluster"
)

// TestSecretSetOnOneHostReachesAWorkerOnAnother: an operator stores a
// secret with the vault CLI against the cluster from the ingress's data
// dir; a worker process with its own data dir resolves ${vault:PROBE} for
// its agent from the cluster's vault. Before the vault lived in NATS the
// worker's SQLite had no such secret and the run failed.
func TestSecretSetOnOneHostReachesAWorkerOnAnother(t *testing.T) {
	if testing.Short() {
		t.Skip("three serve processes and a task")
	}
	dir := t.TempDir()
	forge := cluster.NewForge(t, dir)
	nats := cluster.StartNATS(t, filepath.Join(dir, "nats"), 1)
	got := filepath.Join(dir, "probe.out")
	script := filepath.Join(dir, "probe.sh")
	if err := os.WriteFile(script, []byte("#!/bin/sh\nprintf '%s' \"$PROBE_SECRET\" > "+got+"\necho probe >> WORK.md\necho 'Add the probe'\n"), 0o755); err != nil {
		t.Fatal(err)
	}
	cfg := forge.Config(cluster.ConfigOptions{Agent: script, Replicas: 1})
	agentLine := fmt.Sprintf("script: {command: [\"sh\", %q]}", script)
	if !strings.Contains(cfg, agentLine) {
		t.Fatalf("config has no %s:\n%s", agentLine, cfg)
	}
	cfg = strings.Replace(cfg, agentLine, fmt.Sprintf("script: {command: [\"sh\", %q], env: {PROBE_SECRET: \"${vault:PROBE}\"}}", script), 1)
	start := func(name, role string) *cluster.Role {
		return cluster.StartRole(t, filepath.Join(dir, name), cluster.RoleOptions{Name: name, Role: role, NATS: nats.URL, Config: cfg})
	}
	ingress := start("ingress", "ingress")
	// Host A: the operator, in the ingress's data dir.
	env := []string{"NIGHTSHIFT_DATA_DIR=" + ingress.DataDir, "NIGHTSHIFT_VAULT_KEY=" + cluster.VaultKey, "NIGHTSHIFT_NATS_URL=" + nats.URL}
	if out, stderr, err := vaultRun(t, env, "probe-value-7f3a", "set", "PROBE", "--scope", "agents"); err != nil {
		t.Fatalf("vault set: %q %s %v", out, stderr, err)
	}
	sched := start("scheduler", "scheduler")
	worker := start("worker", "worker")
	id, code, err := ingress.API.CreateTask(context.Background(), forge.RepoURL(), "probe the secret", "script", "vault-roles-1")
	if err != nil {
		t.Fatalf("create task: %d %v", code, err)
	}
	cluster.Eventually(t, 90*time.Second, "the agent on the worker to read the secret", func() (bool, string) {
		b, err := os.ReadFile(got)
		if err == nil && string(b) == "probe-value-7f3a" {
			return true, ""
		}
		return false, fmt.Sprintf("probe: %q %v (task %s)\n--- worker\n%s\n--- scheduler\n%s", b, err, id, worker.Tail(3000), sched.Tail(1500))
	})
}
