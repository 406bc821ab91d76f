package worktree

import (
	"context"
	"go/parser"
	"go/token"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
)

func TestBaseRefs(t *testing.T) {
	t.Parallel()
	origin := newOrigin(t, map[string]string{"a.txt": "main\n"})
	src := filepath.Join(filepath.Dir(origin), "src")
	git(t, src, "remote", "add", "origin", origin)
	git(t, src, "checkout", "-q", "-b", "feature")
	writeFiles(t, src, map[string]string{"a.txt": "feature\n"})
	git(t, src, "commit", "-q", "-am", "feature")
	git(t, src, "push", "-q", "origin", "feature")
	featureSHA := git(t, src, "rev-parse", "HEAD")
	git(t, src, "checkout", "-q", "-b", "pr")
	writeFiles(t, src, map[string]string{"a.txt": "pr\n"})
	git(t, src, "commit", "-q", "-am", "pr")
	git(t, src, "push", "-q", "origin", "pr:refs/pull/7/head")
	git(t, src, "tag", "v1", featureSHA)
	git(t, src, "push", "-q", "origin", "v1")
	mainSHA := git(t, origin, "rev-parse", "main")

	m := newManager(t)
	ctx := context.Background()
	for i, c := range []struct{ base, wantRef, want string }{
		{"", "main", "main\n"},
		{"feature", "feature", "feature\n"},
		{"refs/pull/7/head", "refs/pull/7/head", "pr\n"},
		{"v1", "v1", "feature\n"},
		{mainSHA, mainSHA, "main\n"},
	} {
		wt, err := m.Provision(ctx, Ref{TaskID: "t" + strconv.Itoa(i), Repo: origin, Base: c.base}, nil)
		if err != nil {
			t.Fatalf("base %q: %v", c.base, err)
		}
		b, _ := os.ReadFile(filepath.Join(wt.Dir, "a.txt"))
		if wt.BaseRef != c.wantRef || string(b) != c.want {
			t.Errorf("base %q: ref %q content %q", c.base, wt.BaseRef, b)
		}
	}
	if _, err := m.Provision(ctx, Ref{TaskID: "bad", Repo: origin, Base: "nope"}, nil); !errorsIs(err, ErrBaseNotFound) {
		t.Fatalf("missing base err = %v", err)
	}
}

func TestDetachedHeadCommit(t *testing.T) {
	t.Parallel()
	origin := newOrigin(t, map[string]string{"a.txt": "a\n"})
	m := newManager(t)
	ctx := context.Background()
	wt := provision(t, m, Ref{TaskID: "t1", Repo: origin})
	git(t, wt.Dir, "checkout", "-q", "--detach")
	writeFiles(t, wt.Dir, map[string]string{"b.txt": "b\n"})
	git(t, wt.Dir, "add", "b.txt")
	git(t, wt.Dir, "commit", "-q", "-m", "detached work")
	detached := git(t, wt.Dir, "rev-parse", "HEAD")
	writeFiles(t, wt.Dir, map[string]string{"c.txt": "c\n"})
	c, err := m.Commit(ctx, wt, CommitRequest{Author: agent, Message: "checkpoint"})
	if err != nil {
		t.Fatal(err)
	}
	// The detached commit is squashed: the checkpoint's parent is the base
	// and its tree holds both the committed and the uncommitted file.
	if !c.Created || git(t, wt.Dir, "rev-parse", c.SHA+"^") != wt.BaseCommit || c.SHA == detached ||
		git(t, wt.Dir, "ls-tree", "--name-only", c.SHA) != "a.txt\nb.txt\nc.txt" {
		t.Fatalf("checkpoint %+v (detached %s): %s", c, detached, git(t, wt.Dir, "ls-tree", "--name-only", c.SHA))
	}
	if got := git(t, wt.Dir, "symbolic-ref", "HEAD"); got != "refs/heads/"+wt.Branch {
		t.Fatalf("HEAD = %s", got)
	}
	if got := git(t, wt.Dir, "status", "--porcelain"); got != "" {
		t.Fatalf("status after checkpoint = %q", got)
	}
}

// TestImports keeps worktree a leaf: it imports nothing from the project.
func TestImports(t *testing.T) {
	t.Parallel()
	err := filepath.WalkDir(".", func(p string, d os.DirEntry, err error) error {
		if err != nil || d.IsDir() || !strings.HasSuffix(p, ".go") {
			return err
		}
		f, err := parser.ParseFile(token.NewFileSet(), p, nil, parser.ImportsOnly)
		if err != nil {
			return err
		}
		for _, imp := range f.Imports {
			path, _ := strconv.Unquote(imp.Path.Value)
			if strings.HasPrefix(path, "github.com/nightshift/nightshift/") && !strings.HasPrefix(path, "github.com/nightshift/nightshift/worktree") {
				t.Errorf("%s imports %s", p, path)
			}
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
}

func TestFileTooLarge(t *testing.T) {
	t.Parallel()
	origin := newOrigin(t, map[string]string{"a.txt": "a\n"})
	m := newManager(t, func(c *Config) { c.MaxFileSize = 1000 })
	ctx := context.Background()
	wt := provision(t, m, Ref{TaskID: "t1", Repo: origin})
	writeFiles(t, wt.Dir, map[string]string{"big.bin": strings.Repeat("x", 2000)})
	if _, err := m.Commit(ctx, wt, CommitRequest{Author: agent}); !errorsIs(err, ErrFileTooLarge) {
		t.Fatalf("commit err = %v", err)
	}
	// Ignored, it is fine.
	writeFiles(t, wt.Dir, map[string]string{
		".gitignore":            "*.bin\n",
		"sub/.gitignore":        "build/\n",
		"sub/build/out.js":      "x",
		"sub/keep.txt":          "k",
		"node_modules/.keep":    "",
		"nested/repo/.git/HEAD": "ref: refs/heads/main\n",
	})
	if err := os.WriteFile(filepath.Join(wt.Dir, ".git", "info", "exclude"), []byte("node_modules/\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	if _, err := m.Commit(ctx, wt, CommitRequest{Author: agent}); err != nil {
		t.Fatal(err)
	}
	if got := git(t, wt.Dir, "ls-files"); got != ".gitignore\na.txt\nsub/.gitignore\nsub/keep.txt" {
		t.Fatalf("committed files = %q", got)
	}
}

func TestNonBareLocalRepo(t *testing.T) {
	t.Parallel()
	origin := newOrigin(t, map[string]string{"a.txt": "a\n"})
	src := filepath.Join(filepath.Dir(origin), "src")
	m := newManager(t)
	ctx := context.Background()
	wt := provision(t, m, Ref{TaskID: "t1", Repo: src})
	writeFiles(t, wt.Dir, map[string]string{"NOTES.md": "hello\n"})
	c, err := m.Commit(ctx, wt, CommitRequest{Author: agent})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := m.Push(ctx, wt, PushRequest{}); err != nil {
		t.Fatal(err)
	}
	if got := git(t, src, "rev-parse", "nightshift/t1"); got != c.SHA {
		t.Fatalf("src has %s, want %s", got, c.SHA)
	}
	if got := git(t, src, "status", "--porcelain"); got != "" {
		t.Fatalf("push disturbed the source checkout: %q", got)
	}
}
