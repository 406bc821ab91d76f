package main

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"gopkg.in/yaml.v3"

	"github.com/nightshift/nightshift/bench/cluster"
	"github.com/nightshift/nightshift/orchestrator"
)

// tempRepos is a repos[].match naming every local repository under the
// temp dir, where newOrigin creates the tests' origins.
var tempRepos = filepath.Join(os.TempDir(), "**")

// withTempRepos appends a repos[] entry {match: <tmp>/**} to a test config:
// "*" does not name local paths, and the API dispatches a local repository
// only when a repos[].match entry names it. Appended last, the entry
// changes no other entry's settings.
func withTempRepos(t *testing.T, cfg string) string {
	t.Helper()
	var doc yaml.Node
	if err := yaml.Unmarshal([]byte(cfg), &doc); err != nil {
		t.Fatalf("test config is not YAML: %v\n%s", err, cfg)
	}
	entry := &yaml.Node{Kind: yaml.MappingNode, Content: []*yaml.Node{
		{Kind: yaml.ScalarNode, Value: "match"}, {Kind: yaml.ScalarNode, Value: tempRepos, Style: yaml.DoubleQuotedStyle}}}
	if len(doc.Content) == 0 {
		doc = yaml.Node{Kind: yaml.DocumentNode, Content: []*yaml.Node{{Kind: yaml.MappingNode}}}
	}
	root := doc.Content[0]
	for i := 0; i+1 < len(root.Content); i += 2 {
		if root.Content[i].Value == "repos" {
			root.Content[i+1].Content = append(root.Content[i+1].Content, entry)
			return marshalYAML(t, &doc)
		}
	}
	root.Content = append(root.Content, &yaml.Node{Kind: yaml.ScalarNode, Value: "repos"},
		&yaml.Node{Kind: yaml.SequenceNode, Content: []*yaml.Node{entry}})
	return marshalYAML(t, &doc)
}

func marshalYAML(t *testing.T, doc *yaml.Node) string {
	t.Helper()
	b, err := yaml.Marshal(doc)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

// TestDispatchLocalRepoPolicy: serve hands the API its repos[].match
// entries and data dir: a local path no entry names, and a repository
// inside the data dir (where worktrees and agent homes live) are refused
// with a clear message; a named origin is dispatched.
func TestDispatchLocalRepoPolicy(t *testing.T) {
	t.Parallel()
	s := startTestServer(t, yamlWith("true", "2m"))
	origin := newOrigin(t)
	s.dispatch(t, origin, "script", "named by <tmp>/**")

	planted := filepath.Join(s.DataDir, "tasks", "planted.git")
	if err := os.MkdirAll(planted, 0o755); err != nil {
		t.Fatal(err)
	}
	outside, err := os.Getwd() // the package's source dir: exists, and no entry names it
	if err != nil || strings.HasPrefix(outside, os.TempDir()) {
		outside = "/"
	}
	for repo, want := range map[string]string{planted: "data directory", outside: "repos[].match"} {
		out, err := s.cli(t, "dispatch", "--repo", repo, "--agent", "script", "x")
		if err == nil || !strings.Contains(out+err.Error(), want) {
			t.Errorf("dispatch --repo %s: %v %s; want a refusal naming %q", repo, err, out, want)
		}
	}
}

// TestWorkerRefusesARepositoryInTheDataDir: the API is not the only way an
// event reaches the scheduler (a webhook, another ingress, a NATS client
// on the cluster), and a path the API checked can be swapped for a symlink
// before the worker clones it. The worker refuses on its own: an event
// published straight to JetStream that names a bare repository planted in
// the data dir (with a hook that would mark a file if git ran it on the
// host) fails at provisioning, and the hook never runs.
func TestWorkerRefusesARepositoryInTheDataDir(t *testing.T) {
	t.Parallel()
	natsAddr := fmt.Sprintf("127.0.0.1:%d", cluster.FreePort(t))
	s := startTestServer(t, fmt.Sprintf("nats: {listen: %q}\n", natsAddr)+yamlWith("true", "2m"))

	// Repositories planted where an agent could have written them (its
	// worktree) and elsewhere in the data dir, one also reached through a
	// symlink outside the data dir (as if swapped after the API checked it).
	marker := filepath.Join(t.TempDir(), "hook-ran")
	seed := newOrigin(t)
	plant := func(dir string) string {
		gitRun(t, "", "init", "-q", "--bare", "-b", "main", dir)
		for _, hook := range []string{"pre-receive", "update", "post-receive", "post-update", "reference-transaction"} {
			script := "#!/bin/sh\ntouch " + marker + "\n"
			if err := os.WriteFile(filepath.Join(dir, "hooks", hook), []byte(script), 0o755); err != nil {
				t.Fatal(err)
			}
		}
		gitRun(t, "", "--git-dir", seed, "push", "-q", dir, "main")
		os.Remove(marker) // the seeding push ran the hooks natively, on purpose
		return dir
	}
	inWorktree := plant(filepath.Join(s.DataDir, "tasks", "planted", "worktree", "evil.git"))
	inDataDir := plant(filepath.Join(s.DataDir, "evil.git"))
	link := filepath.Join(t.TempDir(), "looks-fine.git")
	if err := os.Symlink(inDataDir, link); err != nil {
		t.Fatal(err)
	}

	nc, err := nats.Connect("nats://" + natsAddr)
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatal(err)
	}
	for i, repo := range []string{inWorktree, inDataDir, link} {
		id := orchestrator.NewID()
		ev := &orchestrator.Event{ID: id, TaskID: id, Source: orchestrator.SourceAPI, Kind: orchestrator.KindTaskRequested,
			Repo: repo, Instruction: "x", Agent: "script", DeliveryID: fmt.Sprintf("test:%d:%s", i, id),
			IdempotencyKey: fmt.Sprintf("test:%d:%s", i, id), ReceivedAt: time.Now().UTC()}
		if err := orchestrator.PublishEvent(context.Background(), js, ev); err != nil {
			t.Fatal(err)
		}
		task := s.waitState(t, id, 2*time.Minute, orchestrator.StateFailed, orchestrator.StateReview)
		if task.State != orchestrator.StateFailed || !strings.Contains(task.Error, "data") && !strings.Contains(task.Error, "forbidden") {
			t.Errorf("task on %s: %s (%s) %q; want failed, refused as a repository in the data dir", repo, task.State, task.Reason, task.Error)
		}
	}
	if _, err := os.Stat(marker); err == nil {
		t.Fatal("a hook of the planted repository ran on the host")
	}
	for _, planted := range []string{inWorktree, inDataDir} {
		if out := gitRun(t, "", "--git-dir", planted, "branch", "--list", "nightshift/*"); strings.TrimSpace(out) != "" {
			t.Fatalf("something was pushed to %s: %s", planted, out)
		}
	}
}
