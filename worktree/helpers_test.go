package worktree

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/go-git/go-git/v5/plumbing"
	"github.com/go-git/go-git/v5/plumbing/storer"
)

// git runs native git in dir (tests only; never in production code paths
// on a task clone).
func git(t testing.TB, dir string, args ...string) string {
	t.Helper()
	out, err := runGit(dir, args...)
	if err != nil {
		t.Fatal(err)
	}
	return out
}

// runGit is git for goroutines other than the test's own, which must
// report a failure rather than end the test (t.Fatal may not be called
// there).
func runGit(dir string, args ...string) (string, error) {
	cmd := exec.Command("git", args...)
	cmd.Dir = dir
	cmd.Env = append(os.Environ(),
		"GIT_CONFIG_NOSYSTEM=1", "HOME="+dir, "GIT_TERMINAL_PROMPT=0",
		"GIT_AUTHOR_NAME=Origin Dev", "GIT_AUTHOR_EMAIL=dev@example.test",
		"GIT_COMMITTER_NAME=Origin Dev", "GIT_COMMITTER_EMAIL=dev@example.test")
	var out, errb bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errb
	if err := cmd.Run(); err != nil {
		return "", fmt.Errorf("git %s: %v\n%s", strings.Join(args, " "), err, errb.String())
	}
	return strings.TrimSpace(out.String()), nil
}

// newOrigin makes a bare repository with a main branch holding files.
func newOrigin(t testing.TB, files map[string]string) string {
	t.Helper()
	root := t.TempDir()
	src := filepath.Join(root, "src")
	bare := filepath.Join(root, "origin.git")
	if err := os.MkdirAll(src, 0o755); err != nil {
		t.Fatal(err)
	}
	git(t, src, "init", "-q", "-b", "main")
	writeFiles(t, src, files)
	git(t, src, "add", "-A")
	git(t, src, "commit", "-q", "-m", "initial")
	git(t, root, "clone", "-q", "--bare", src, bare)
	return bare
}

func writeFiles(t testing.TB, dir string, files map[string]string) {
	t.Helper()
	for p, c := range files {
		full := filepath.Join(dir, filepath.FromSlash(p))
		if err := os.MkdirAll(filepath.Dir(full), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(full, []byte(c), 0o644); err != nil {
			t.Fatal(err)
		}
	}
}

func newManager(t testing.TB, mut ...func(*Config)) *Manager {
	t.Helper()
	root := t.TempDir()
	cfg := Config{MirrorDir: filepath.Join(root, "mirrors"), TaskDir: filepath.Join(root, "tasks")}
	for _, f := range mut {
		f(&cfg)
	}
	m, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { m.Close() })
	return m
}

var agent = Signature{Name: "Nightshift Agent t1", Email: "t1@agents.localhost"}

func errorsIs(err, target error) bool { return errors.Is(err, target) }

// writeBlob stores content as a blob in st.
func writeBlob(st storer.EncodedObjectStorer, content []byte) (plumbing.Hash, error) {
	o := st.NewEncodedObject()
	o.SetType(plumbing.BlobObject)
	o.SetSize(int64(len(content)))
	w, err := o.Writer()
	if err != nil {
		return plumbing.ZeroHash, err
	}
	if _, err := w.Write(content); err != nil {
		return plumbing.ZeroHash, err
	}
	if err := w.Close(); err != nil {
		return plumbing.ZeroHash, err
	}
	return st.SetEncodedObject(o)
}

// provision provisions ref with m and fails the test on an error.
func provision(t testing.TB, m *Manager, ref Ref) *Worktree {
	t.Helper()
	wt, err := m.Provision(context.Background(), ref, nil)
	if err != nil {
		t.Fatal(err)
	}
	return wt
}
