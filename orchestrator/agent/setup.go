package agent

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path"
	"strings"
)

// Setup files read by SetupCommands, relative to the worktree.
const (
	// SetupScript is Nightshift's own per-repo setup script.
	SetupScript = ".nightshift/setup.sh"
	// CursorWorktreeConfig is Cursor's worktree setup file.
	CursorWorktreeConfig = ".cursor/worktrees.json"
	// OneCodeWorktreeConfig is 1Code's worktree setup file.
	OneCodeWorktreeConfig = ".1code/worktree.json"
)

// ErrBadSetup reports a setup file that cannot be used.
var ErrBadSetup = errors.New("agent: bad setup file")

// SetupCommands returns the commands that prepare a fresh worktree at dir,
// in order, each an argv to run with dir as the working directory:
//
//  1. configured, the repo's `setup` from nightshift.yaml, as `sh -c configured`;
//
//  2. .nightshift/setup.sh, run directly when executable, else with sh;
//
//  3. the setup commands of the first worktree config found, the format
//     shared by Cursor (.cursor/worktrees.json) and 1Code
//     (.1code/worktree.json, which also reads Cursor's file first):
//
//     {"setup-worktree-unix": [...] | "script", "setup-worktree-windows": ..., "setup-worktree": [...] | "script"}
//
//     On Linux "setup-worktree-unix" wins over "setup-worktree"; Windows
//     entries are ignored. An array holds shell commands, each run as
//     `sh -c CMD`. A string names a script relative to the config file's
//     directory or the repo root (Cursor's reading); when no such file
//     exists it is run as one shell command (1Code's reading).
//
// Those tools export ROOT_WORKTREE_PATH (the main checkout) to the
// commands; run them with SetupEnv(dir). Files are read through an
// os.Root, so symlinks cannot make SetupCommands read outside dir.
func SetupCommands(dir string, configured string) ([][]string, error) {
	var cmds [][]string
	if s := strings.TrimSpace(configured); s != "" {
		cmds = append(cmds, []string{"sh", "-c", s})
	}
	root, err := os.OpenRoot(dir)
	if err != nil {
		return nil, fmt.Errorf("agent: open worktree for setup: %w", err)
	}
	defer root.Close()
	if fi, err := root.Stat(SetupScript); err == nil && fi.Mode().IsRegular() {
		cmds = append(cmds, script(SetupScript, fi))
	}
	for _, name := range []string{CursorWorktreeConfig, OneCodeWorktreeConfig} {
		more, found, err := worktreeConfig(root, name)
		if err != nil {
			return nil, err
		}
		if found {
			cmds = append(cmds, more...)
			break
		}
	}
	return cmds, nil
}

// SetupEnv returns the environment setup commands expect: ROOT_WORKTREE_PATH,
// which Cursor and 1Code set to the main checkout; a task clone is its own.
func SetupEnv(dir string) map[string]string {
	return map[string]string{"ROOT_WORKTREE_PATH": dir}
}

// script returns the argv running the repo-relative script p.
func script(p string, fi fs.FileInfo) []string {
	if fi.Mode()&0o111 != 0 {
		return []string{"./" + p}
	}
	return []string{"sh", p}
}

// worktreeConfig reads the Cursor/1Code setup file name from root.
func worktreeConfig(root *os.Root, name string) ([][]string, bool, error) {
	f, err := root.Open(name)
	if errors.Is(err, fs.ErrNotExist) {
		return nil, false, nil
	}
	if err != nil {
		return nil, false, fmt.Errorf("%w: %s: %v", ErrBadSetup, name, err)
	}
	defer f.Close()
	b, err := io.ReadAll(io.LimitReader(f, 1<<20))
	if err != nil {
		return nil, false, fmt.Errorf("%w: %s: %v", ErrBadSetup, name, err)
	}
	var cfg map[string]json.RawMessage
	if err := json.Unmarshal(b, &cfg); err != nil {
		return nil, false, fmt.Errorf("%w: %s is not a JSON object: %v", ErrBadSetup, name, err)
	}
	raw, key := cfg["setup-worktree-unix"], "setup-worktree-unix"
	if raw == nil {
		raw, key = cfg["setup-worktree"], "setup-worktree"
	}
	if raw == nil || string(raw) == "null" {
		return nil, true, nil
	}
	var list []string
	if err := json.Unmarshal(raw, &list); err == nil {
		var cmds [][]string
		for _, c := range list {
			if c = strings.TrimSpace(c); c != "" {
				cmds = append(cmds, []string{"sh", "-c", c})
			}
		}
		return cmds, true, nil
	}
	var s string
	if err := json.Unmarshal(raw, &s); err != nil {
		return nil, false, fmt.Errorf("%w: %s: %q must be a list of commands or a script path", ErrBadSetup, name, key)
	}
	if s = strings.TrimSpace(s); s == "" {
		return nil, true, nil
	}
	for _, p := range []string{path.Join(path.Dir(name), s), s} {
		if !fs.ValidPath(p) {
			continue
		}
		if fi, err := root.Stat(p); err == nil && fi.Mode().IsRegular() {
			return [][]string{script(p, fi)}, true, nil
		}
	}
	return [][]string{{"sh", "-c", s}}, true, nil
}
