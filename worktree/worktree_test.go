package worktree

import (
	"bytes"
	"context"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestProvisionCommitPushLocal(t *testing.T) {
	t.Parallel()
	origin := newOrigin(t, map[string]string{
		"README.md":         "# demo\n",
		"NOTES.md":          "notes\n",
		"src/main.go":       "package main\n",
		"scripts/run.sh":    "#!/bin/sh\necho hi\n",
		"docs/deep/a/b.txt": "b\n",
	})
	if err := os.Chmod(filepath.Join(filepath.Dir(origin), "src", "scripts", "run.sh"), 0o755); err != nil {
		t.Fatal(err)
	}
	m := newManager(t)
	ctx := context.Background()
	for i, repo := range []string{origin, "file://" + origin} {
		id := []string{"t1", "t2"}[i]
		var progress bytes.Buffer
		wt, err := m.Provision(ctx, Ref{TaskID: id, Repo: repo}, &progress)
		if err != nil {
			t.Fatalf("provision %s: %v", repo, err)
		}
		if wt.Branch != "nightshift/"+id || wt.BaseRef != "main" || len(wt.BaseCommit) != 40 {
			t.Fatalf("worktree = %+v", wt)
		}
		if got := git(t, wt.Dir, "status", "--porcelain"); got != "" {
			t.Fatalf("git status in fresh clone not clean:\n%s", got)
		}
		if got := git(t, wt.Dir, "rev-parse", "--abbrev-ref", "HEAD"); got != wt.Branch {
			t.Fatalf("HEAD branch = %q", got)
		}
		if !strings.Contains(progress.String(), "checked out") {
			t.Errorf("progress = %q", progress.String())
		}
		b, err := os.ReadFile(filepath.Join(wt.Dir, "docs/deep/a/b.txt"))
		if err != nil || string(b) != "b\n" {
			t.Fatalf("read checked out file: %q %v", b, err)
		}
		// Objects are shared, not copied.
		alt, _ := os.ReadFile(filepath.Join(wt.Dir, ".git/objects/info/alternates"))
		if strings.TrimSpace(string(alt)) != wt.ReadOnlyPaths[0] {
			t.Fatalf("alternates = %q, read-only paths = %v", alt, wt.ReadOnlyPaths)
		}

		f, err := os.OpenFile(filepath.Join(wt.Dir, "NOTES.md"), os.O_APPEND|os.O_WRONLY, 0)
		if err != nil {
			t.Fatal(err)
		}
		f.WriteString("agent was here\n")
		f.Close()
		writeFiles(t, wt.Dir, map[string]string{"new/file.txt": "fresh\n"})
		if err := os.Remove(filepath.Join(wt.Dir, "README.md")); err != nil {
			t.Fatal(err)
		}

		c, err := m.Commit(ctx, wt, CommitRequest{
			Author:    agent,
			Message:   "Append to notes",
			CoAuthors: []Signature{{Name: "Ada Human", Email: "ada@example.test"}},
		})
		if err != nil {
			t.Fatalf("commit: %v", err)
		}
		if !c.Created || !c.Changed {
			t.Fatalf("commit = %+v", c)
		}
		want := []string{"NOTES.md", "README.md", "new/file.txt"}
		if strings.Join(c.Files, ",") != strings.Join(want, ",") {
			t.Fatalf("files = %v, want %v", c.Files, want)
		}
		if got := git(t, wt.Dir, "status", "--porcelain"); got != "" {
			t.Fatalf("git status after commit not clean:\n%s", got)
		}
		git(t, wt.Dir, "fsck", "--no-progress")

		res, err := m.Push(ctx, wt, PushRequest{})
		if err != nil {
			t.Fatalf("push: %v", err)
		}
		if res.New != c.SHA || res.Old != "" || res.Objects == 0 {
			t.Fatalf("push result = %+v", res)
		}
		log := git(t, origin, "log", "-1", "--format=%an <%ae>%n%cn <%ce>%n%B", "refs/heads/nightshift/"+id)
		for _, w := range []string{agent.String(), "Append to notes", "Nightshift-Task: " + id, "Co-authored-by: Ada Human <ada@example.test>"} {
			if !strings.Contains(log, w) {
				t.Errorf("pushed commit lacks %q:\n%s", w, log)
			}
		}
		if got := git(t, origin, "show", "refs/heads/nightshift/"+id+":NOTES.md"); got != "notes\nagent was here" {
			t.Errorf("pushed NOTES.md = %q", got)
		}
		git(t, origin, "fsck", "--no-progress")

		// Pushing again is a no-op.
		res, err = m.Push(ctx, wt, PushRequest{})
		if err != nil || !res.UpToDate {
			t.Fatalf("second push = %+v, %v", res, err)
		}
	}
}

func TestCommitNothingAndAgentCommits(t *testing.T) {
	t.Parallel()
	origin := newOrigin(t, map[string]string{"a.txt": "a\n"})
	m := newManager(t)
	ctx := context.Background()
	wt := provision(t, m, Ref{TaskID: "t1", Repo: origin})
	c, err := m.Commit(ctx, wt, CommitRequest{Author: agent})
	if err != nil {
		t.Fatal(err)
	}
	if c.Changed || c.Created || c.SHA != wt.BaseCommit || len(c.Files) != 0 {
		t.Fatalf("commit with no changes = %+v", c)
	}
	// The agent commits with native git inside its clone (alternates work).
	writeFiles(t, wt.Dir, map[string]string{"b.txt": "b\n"})
	git(t, wt.Dir, "add", "b.txt")
	git(t, wt.Dir, "commit", "-q", "-m", "agent commit")
	agentSHA := git(t, wt.Dir, "rev-parse", "HEAD")
	c, err = m.Commit(ctx, wt, CommitRequest{Author: agent, Message: "Add b"})
	if err != nil {
		t.Fatal(err)
	}
	// The agent's commit is squashed into Nightshift's: same tree, the
	// base as parent, our author and message.
	if !c.Changed || !c.Created || c.SHA == agentSHA {
		t.Fatalf("commit after agent commit = %+v (agent %s)", c, agentSHA)
	}
	if git(t, wt.Dir, "rev-parse", c.SHA+"^{tree}") != git(t, wt.Dir, "rev-parse", agentSHA+"^{tree}") ||
		git(t, wt.Dir, "rev-parse", c.SHA+"^") != wt.BaseCommit ||
		git(t, wt.Dir, "log", "-1", "--format=%an%n%B", c.SHA) != agent.Name+"\nAdd b\n\nNightshift-Task: t1" {
		t.Fatalf("squashed commit:\n%s", git(t, wt.Dir, "log", "-1", "--format=%an%n%B", c.SHA))
	}
	if got := git(t, wt.Dir, "rev-parse", "HEAD"); got != c.SHA {
		t.Fatalf("HEAD = %s, want %s", got, c.SHA)
	}
	// Committing again with nothing new keeps the same commit.
	again, err := m.Commit(ctx, wt, CommitRequest{Author: agent, Message: "Add b"})
	if err != nil || again.SHA != c.SHA || again.Created {
		t.Fatalf("idempotent commit = %+v, %v", again, err)
	}
	if _, err := m.Push(ctx, wt, PushRequest{}); err != nil {
		t.Fatal(err)
	}
	if got := git(t, origin, "rev-parse", "refs/heads/nightshift/t1"); got != c.SHA {
		t.Fatalf("origin branch = %s, want %s", got, c.SHA)
	}
	if out := git(t, origin, "log", "--format=%s", "refs/heads/nightshift/t1"); strings.Contains(out, "agent commit") {
		t.Fatalf("the agent's commit reached the remote:\n%s", out)
	}
	// A later commit builds on the pushed one, and the agent moving its
	// branch after Commit does not change what Push sends.
	writeFiles(t, wt.Dir, map[string]string{"c.txt": "c\n"})
	git(t, wt.Dir, "add", "c.txt")
	git(t, wt.Dir, "commit", "-q", "-m", "second agent commit")
	c2, err := m.Commit(ctx, wt, CommitRequest{Author: agent})
	if err != nil {
		t.Fatal(err)
	}
	if !c2.Created || git(t, wt.Dir, "rev-parse", c2.SHA+"^") != c.SHA {
		t.Fatalf("second commit = %+v", c2)
	}
	writeFiles(t, wt.Dir, map[string]string{"d.txt": "d\n"})
	git(t, wt.Dir, "add", "d.txt")
	git(t, wt.Dir, "commit", "-q", "-m", "sneaked in after the commit")
	res, err := m.Push(ctx, wt, PushRequest{})
	if err != nil {
		t.Fatalf("fast-forward push: %v", err)
	}
	if res.New != c2.SHA || git(t, origin, "rev-parse", "refs/heads/nightshift/t1") != c2.SHA {
		t.Fatalf("pushed %s, want %s", res.New, c2.SHA)
	}
}

func TestDiff(t *testing.T) {
	t.Parallel()
	origin := newOrigin(t, map[string]string{"a.txt": "one\ntwo\nthree\n", "gone.txt": "x\n", "bin.dat": "a\x00b"})
	m := newManager(t)
	ctx := context.Background()
	wt := provision(t, m, Ref{TaskID: "t1", Repo: origin})
	writeFiles(t, wt.Dir, map[string]string{"a.txt": "one\n2\nthree\nfour\n", "new.txt": "n\n", "bin.dat": "a\x00c"})
	os.Remove(filepath.Join(wt.Dir, "gone.txt"))
	d, err := m.Diff(ctx, wt)
	if err != nil {
		t.Fatal(err)
	}
	if d.Added != 3 || d.Deleted != 2 || len(d.Files) != 4 {
		t.Fatalf("diff totals = +%d -%d files=%+v", d.Added, d.Deleted, d.Files)
	}
	for _, w := range []string{"diff --git a/a.txt b/a.txt", "-two\n+2\n", "+four\n", "new file mode 100644", "deleted file mode 100644", "Binary files"} {
		if !strings.Contains(d.Patch, w) {
			t.Errorf("patch lacks %q:\n%s", w, d.Patch)
		}
	}
	// Diff wrote nothing: the same diff after committing.
	if _, err := m.Commit(ctx, wt, CommitRequest{Author: agent}); err != nil {
		t.Fatal(err)
	}
	d2, err := m.Diff(ctx, wt)
	if err != nil {
		t.Fatal(err)
	}
	if d2.Patch != d.Patch {
		t.Fatalf("diff changed after commit:\n%s\nvs\n%s", d.Patch, d2.Patch)
	}
}

func TestProtectedPaths(t *testing.T) {
	t.Parallel()
	origin := newOrigin(t, map[string]string{".github/workflows/ci.yml": "on: push\n", "a.txt": "a\n"})
	m := newManager(t)
	ctx := context.Background()

	// Uncommitted change to a workflow.
	wt := provision(t, m, Ref{TaskID: "t1", Repo: origin})
	writeFiles(t, wt.Dir, map[string]string{".github/workflows/ci.yml": "on: [push, pull_request]\n", "a.txt": "b\n"})
	_, err := m.Commit(ctx, wt, CommitRequest{Author: agent})
	var pe *ProtectedPathError
	if !errors.As(err, &pe) || !errors.Is(err, ErrProtectedPath) || len(pe.Paths) != 1 || pe.Paths[0] != ".github/workflows/ci.yml" {
		t.Fatalf("commit err = %v", err)
	}
	if got := git(t, wt.Dir, "rev-parse", "HEAD"); got != wt.BaseCommit {
		t.Fatalf("HEAD moved to %s on a refused commit", got)
	}
	if _, err := m.Commit(ctx, wt, CommitRequest{Author: agent, AllowProtected: true}); err != nil {
		t.Fatalf("allowed commit: %v", err)
	}

	// A workflow added then removed in the agent's own commits never
	// leaves: those commits are squashed away.
	wt2 := provision(t, m, Ref{TaskID: "t2", Repo: origin})
	writeFiles(t, wt2.Dir, map[string]string{".github/workflows/evil.yml": "on: push\n", "a.txt": "c\n"})
	git(t, wt2.Dir, "add", "-A")
	git(t, wt2.Dir, "commit", "-q", "-m", "add")
	git(t, wt2.Dir, "rm", "-q", ".github/workflows/evil.yml")
	git(t, wt2.Dir, "commit", "-q", "-m", "remove")
	if _, err = m.Commit(ctx, wt2, CommitRequest{Author: agent}); err != nil {
		t.Fatalf("commit err = %v", err)
	}
	if _, err := m.Push(ctx, wt2, PushRequest{}); err != nil {
		t.Fatal(err)
	}
	if out := git(t, origin, "log", "--format=%H", "refs/heads/nightshift/t2", "--", ".github/workflows/evil.yml"); out != "" {
		t.Fatalf("the agent's workflow reached the remote in %s", out)
	}

	// A repository's own list replaces the default for one commit.
	wt3 := provision(t, m, Ref{TaskID: "t3", Repo: origin})
	writeFiles(t, wt3.Dir, map[string]string{"a.txt": "changed\n"})
	if _, err := m.Commit(ctx, wt3, CommitRequest{Author: agent, Protected: []string{"a.txt"}}); !errors.As(err, &pe) || pe.Paths[0] != "a.txt" {
		t.Fatalf("per-commit protected list: err = %v", err)
	}
	writeFiles(t, wt3.Dir, map[string]string{".github/workflows/ci.yml": "on: pull_request\n"})
	if _, err := m.Commit(ctx, wt3, CommitRequest{Author: agent, Protected: []string{}, AllowProtected: false}); err != nil {
		t.Fatalf("an empty per-commit list protects nothing: %v", err)
	}
}

func TestGlob(t *testing.T) {
	t.Parallel()
	cases := []struct {
		pat, name string
		want      bool
	}{
		{".github/workflows/**", ".github/workflows/ci.yml", true},
		{".github/workflows/**", ".github/workflows/a/b.yml", true},
		{".github/workflows/**", ".github/ci.yml", false},
		{"**/*.pem", "a/b/key.pem", true},
		{"**/*.pem", "key.pem", true},
		{"secrets/*", "secrets/a/b", false},
		{"Makefile", "Makefile", true},
	}
	for _, c := range cases {
		if got := matchGlob(c.pat, c.name); got != c.want {
			t.Errorf("matchGlob(%q, %q) = %v", c.pat, c.name, got)
		}
	}
}

func TestReuseOpenRemove(t *testing.T) {
	t.Parallel()
	origin := newOrigin(t, map[string]string{"a.txt": "a\n"})
	m := newManager(t)
	ctx := context.Background()
	if _, err := m.Open("t1"); !errors.Is(err, ErrNotFound) {
		t.Fatalf("open missing = %v", err)
	}
	wt := provision(t, m, Ref{TaskID: "t1", Repo: origin})
	writeFiles(t, wt.Dir, map[string]string{"work.txt": "in progress\n"})
	again := provision(t, m, Ref{TaskID: "t1", Repo: origin, Reuse: true})
	if _, err := os.Stat(filepath.Join(again.Dir, "work.txt")); err != nil {
		t.Fatalf("reuse lost work: %v", err)
	}
	fresh := provision(t, m, Ref{TaskID: "t1", Repo: origin})
	if _, err := os.Stat(filepath.Join(fresh.Dir, "work.txt")); !os.IsNotExist(err) {
		t.Fatalf("leftover not replaced: %v", err)
	}
	opened, err := m.Open("t1")
	if err != nil || opened.Dir != fresh.Dir || opened.BaseCommit != fresh.BaseCommit {
		t.Fatalf("open = %+v, %v", opened, err)
	}
	if err := m.Remove(ctx, "t1"); err != nil {
		t.Fatal(err)
	}
	if _, err := m.Open("t1"); !errors.Is(err, ErrNotFound) {
		t.Fatalf("open after remove = %v", err)
	}
	if _, err := m.Provision(ctx, Ref{TaskID: "../x", Repo: origin}, nil); !errors.Is(err, ErrInvalidTaskID) {
		t.Fatalf("bad id = %v", err)
	}
}

// TestDefaultBranchFallback: a bare repository whose HEAD names a branch that
// was never pushed (git init --bare defaulting to master, then main pushed)
// still provisions, from main.
func TestDefaultBranchFallback(t *testing.T) {
	t.Parallel()
	origin := newOrigin(t, map[string]string{"a.txt": "a\n"})
	git(t, origin, "symbolic-ref", "HEAD", "refs/heads/master")
	m := newManager(t)
	wt, err := m.Provision(context.Background(), Ref{TaskID: "t1", Repo: origin}, nil)
	if err != nil {
		t.Fatalf("provision: %v", err)
	}
	if wt.BaseRef != "main" || wt.BaseCommit != git(t, origin, "rev-parse", "main") {
		t.Fatalf("base %q %s", wt.BaseRef, wt.BaseCommit)
	}
	// With several branches and neither main nor master, there is no guess.
	other := newOrigin(t, map[string]string{"a.txt": "a\n"})
	git(t, other, "branch", "-m", "main", "trunk")
	git(t, other, "branch", "dev", "trunk")
	git(t, other, "symbolic-ref", "HEAD", "refs/heads/master")
	if _, err := m.Provision(context.Background(), Ref{TaskID: "t2", Repo: other}, nil); !errors.Is(err, ErrBaseNotFound) {
		t.Fatalf("ambiguous default branch: %v", err)
	}
}
