package api

import (
	"errors"
	"fmt"
	"io/fs"
	"net/http"
	"path/filepath"
	"strings"

	"github.com/nightshift/nightshift/config"
)

// A task's repository is a remote URL (https://, ssh://, git@host:path) or
// a local repository. A local repository is where an agent could plant a
// repository of its own (a bare repository with hooks inside its worktree),
// so POST /api/v1/tasks accepts one only when all of these hold:
//   - it is an absolute path or file:// URL (a relative one would be read
//     relative to the server's working directory);
//   - the caller is an admin;
//   - Config.LocalRepoAllowed names it (serve: a repos[].match entry that
//     is the path or a path glob; "*" does not name local paths);
//   - it does not resolve, symlinks evaluated, inside Config.DataDir, where
//     task worktrees, agent homes and mirrors live.

// repoRefusal is why a repository may not be dispatched, with its status.
type repoRefusal struct {
	status int
	msg    string
}

// checkRepo returns nil when r's caller may dispatch a task on repo.
func (s *Server) checkRepo(r *http.Request, repo string) *repoRefusal {
	if config.RemoteRepo(repo) {
		return nil
	}
	p, local := config.LocalRepoPath(repo)
	switch {
	case !local:
		return &repoRefusal{http.StatusBadRequest, fmt.Sprintf("repo %q is not a repository URL (https://, ssh://, git@host:path) or an absolute local path", repo)}
	case !filepath.IsAbs(p):
		return &repoRefusal{http.StatusBadRequest, fmt.Sprintf("repo %q is a relative path; a local repository must be an absolute path or a file:// URL", repo)}
	}
	if pr, ok := PrincipalFrom(r.Context()); !ok || pr.Role != RoleAdmin {
		return &repoRefusal{http.StatusForbidden, "only an admin may dispatch a task on a local repository"}
	}
	// Inside the data dir first: naming such a path would not help, so
	// the refusal must not suggest a repos[].match entry.
	if s.insideDataDir(p) {
		return &repoRefusal{http.StatusForbidden, fmt.Sprintf("local repository %s is inside the server's data directory (task worktrees, agent homes and mirrors live there); it cannot be a task's repository", p)}
	}
	if s.cfg.LocalRepoAllowed == nil || !s.cfg.LocalRepoAllowed(p) {
		return &repoRefusal{http.StatusForbidden, fmt.Sprintf("local repository %s is not named by the server's configuration: add a repos[].match entry with this path or a path glob (e.g. %q); \"*\" does not name local paths", p, filepath.Dir(p)+"/*")}
	}
	if _, err := filepath.EvalSymlinks(p); err != nil {
		return &repoRefusal{http.StatusBadRequest, fmt.Sprintf("local repository %s cannot be opened on the server: %v", p, unwrapPathError(err))}
	}
	return nil
}

// insideDataDir reports whether the local path p is, as given or with its
// symlinks evaluated, Config.DataDir or beneath it.
func (s *Server) insideDataDir(p string) bool {
	if s.cfg.DataDir == "" {
		return false
	}
	data := filepath.Clean(s.cfg.DataDir)
	dataReal, err := filepath.EvalSymlinks(data)
	if err != nil {
		dataReal = data
	}
	real, err := filepath.EvalSymlinks(p)
	if err != nil {
		real = p
	}
	return within(p, data) || within(real, dataReal) || within(real, data)
}

// within reports whether path p is dir or lies beneath it.
func within(p, dir string) bool {
	rel, err := filepath.Rel(dir, p)
	return err == nil && rel != ".." && !strings.HasPrefix(rel, ".."+string(filepath.Separator))
}

// unwrapPathError drops the operation and path an *fs.PathError repeats.
func unwrapPathError(err error) error {
	var pe *fs.PathError
	if errors.As(err, &pe) {
		return pe.Err
	}
	return err
}
