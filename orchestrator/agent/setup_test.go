package agent

import (
	"errors"
	"os"
	"path/filepath"
	"reflect"
	"testing"
)

func TestSetupCommands(t *testing.T) {
	t.Parallel()
	outside := t.TempDir()
	if err := os.WriteFile(filepath.Join(outside, "secret.json"), []byte(`{"setup-worktree":["cat /etc/shadow"]}`), 0o600); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name       string
		files      map[string]string // path -> content; mode 0755 when the name ends in "*"
		configured string
		want       [][]string
		err        error
	}{
		{name: "nothing", want: nil},
		{name: "configured only", configured: " go mod download ", want: [][]string{{"sh", "-c", "go mod download"}}},
		{name: "setup.sh", files: map[string]string{".nightshift/setup.sh": "echo hi"}, configured: "make deps",
			want: [][]string{{"sh", "-c", "make deps"}, {"sh", ".nightshift/setup.sh"}}},
		{name: "executable setup.sh", files: map[string]string{".nightshift/setup.sh*": "#!/bin/bash\necho hi"},
			want: [][]string{{"./.nightshift/setup.sh"}}},
		{name: "cursor list", files: map[string]string{".cursor/worktrees.json": `{"setup-worktree":["npm ci","cp $ROOT_WORKTREE_PATH/.env .env",""]}`},
			want: [][]string{{"sh", "-c", "npm ci"}, {"sh", "-c", "cp $ROOT_WORKTREE_PATH/.env .env"}}},
		{name: "unix wins", files: map[string]string{".cursor/worktrees.json": `{"setup-worktree":["generic"],"setup-worktree-unix":["unix"],"setup-worktree-windows":["win"]}`},
			want: [][]string{{"sh", "-c", "unix"}}},
		{name: "cursor script path relative to .cursor", files: map[string]string{
			".cursor/worktrees.json": `{"setup-worktree-unix":"setup-worktree-unix.sh"}`, ".cursor/setup-worktree-unix.sh": "npm ci"},
			want: [][]string{{"sh", ".cursor/setup-worktree-unix.sh"}}},
		{name: "script path relative to root", files: map[string]string{
			".1code/worktree.json": `{"setup-worktree":"scripts/setup.sh"}`, "scripts/setup.sh*": "npm ci"},
			want: [][]string{{"./scripts/setup.sh"}}},
		{name: "1code string command", files: map[string]string{".1code/worktree.json": `{"setup-worktree":"bun install"}`},
			want: [][]string{{"sh", "-c", "bun install"}}},
		{name: "cursor before 1code", files: map[string]string{
			".cursor/worktrees.json": `{"setup-worktree":["cursor"]}`, ".1code/worktree.json": `{"setup-worktree":["onecode"]}`},
			want: [][]string{{"sh", "-c", "cursor"}}},
		{name: "all sources", configured: "a", files: map[string]string{".nightshift/setup.sh": "b", ".1code/worktree.json": `{"setup-worktree":["c"]}`},
			want: [][]string{{"sh", "-c", "a"}, {"sh", ".nightshift/setup.sh"}, {"sh", "-c", "c"}}},
		{name: "no setup key", files: map[string]string{".cursor/worktrees.json": `{"other":1}`}, want: nil},
		{name: "escaping script path is a command", files: map[string]string{".cursor/worktrees.json": `{"setup-worktree":"../../etc/passwd"}`},
			want: [][]string{{"sh", "-c", "../../etc/passwd"}}},
		{name: "bad json", files: map[string]string{".cursor/worktrees.json": `{`}, err: ErrBadSetup},
		{name: "bad type", files: map[string]string{".1code/worktree.json": `{"setup-worktree":42}`}, err: ErrBadSetup},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			dir := t.TempDir()
			for name, content := range tc.files {
				mode := os.FileMode(0o644)
				if n := len(name); name[n-1] == '*' {
					name, mode = name[:n-1], 0o755
				}
				p := filepath.Join(dir, name)
				if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
					t.Fatal(err)
				}
				if err := os.WriteFile(p, []byte(content), mode); err != nil {
					t.Fatal(err)
				}
			}
			got, err := SetupCommands(dir, tc.configured)
			if !errors.Is(err, tc.err) {
				t.Fatalf("err = %v, want %v", err, tc.err)
			}
			if !reflect.DeepEqual(got, tc.want) {
				t.Errorf("got %q, want %q", got, tc.want)
			}
		})
	}
	// A symlinked config pointing outside the worktree is not followed.
	t.Run("symlink escape", func(t *testing.T) {
		t.Parallel()
		dir := t.TempDir()
		if err := os.Mkdir(filepath.Join(dir, ".cursor"), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.Symlink(filepath.Join(outside, "secret.json"), filepath.Join(dir, ".cursor", "worktrees.json")); err != nil {
			t.Fatal(err)
		}
		got, err := SetupCommands(dir, "")
		if !errors.Is(err, ErrBadSetup) || got != nil {
			t.Fatalf("got %q, %v; want ErrBadSetup", got, err)
		}
	})
	if env := SetupEnv("/w"); env["ROOT_WORKTREE_PATH"] != "/w" {
		t.Errorf("SetupEnv = %v", env)
	}
}
