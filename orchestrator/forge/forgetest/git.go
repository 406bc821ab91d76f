package forgetest

import (
	"io"
	"net/http/cgi"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

// The test forges (githubtest, gitlabtest) serve real git: these are the
// pieces they share.

// GitBackend serves the bare repositories under root over smart HTTP with
// git's own http-backend (through net/http/cgi), reading and pushing.
func GitBackend(t testing.TB, root string) *cgi.Handler {
	t.Helper()
	execPath := strings.TrimSpace(Git(t, "", "--exec-path"))
	return &cgi.Handler{
		Path:   filepath.Join(execPath, "git-http-backend"),
		Env:    []string{"GIT_PROJECT_ROOT=" + root, "GIT_HTTP_EXPORT_ALL=1", "GIT_CONFIG_NOSYSTEM=1", "HOME=" + root},
		Stderr: io.Discard,
	}
}

// Git runs git in dir as a seed user (no system config, no prompts) and
// returns its output; a failure fails t.
func Git(t testing.TB, dir string, args ...string) string {
	t.Helper()
	cmd := exec.Command("git", args...)
	cmd.Dir = dir
	cmd.Env = append(os.Environ(), "GIT_CONFIG_NOSYSTEM=1", "GIT_TERMINAL_PROMPT=0",
		"GIT_AUTHOR_NAME=Seed", "GIT_AUTHOR_EMAIL=seed@example.test", "GIT_COMMITTER_NAME=Seed", "GIT_COMMITTER_EMAIL=seed@example.test")
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("git %v: %v\n%s", args, err, out)
	}
	return string(out)
}

// GitTry runs git in dir and returns its standard output and error.
func GitTry(dir string, args ...string) (string, error) {
	cmd := exec.Command("git", args...)
	cmd.Dir = dir
	cmd.Env = append(os.Environ(), "GIT_CONFIG_NOSYSTEM=1")
	out, err := cmd.Output()
	return string(out), err
}
