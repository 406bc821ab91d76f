package config

import (
	"net/url"
	"path"
	"regexp"
	"strings"
)

// A repository reference is one of three things, classified the way git
// (and go-git, which the worktree package uses) reads it:
//   - a remote URL: http://, https://, ssh:// or git:// with a host, or
//     scp-like [user@]host:path (no '/' before the first ':');
//   - a local repository: a file:// URL or anything else without a scheme,
//     which git opens as a path on this machine (relative to the process's
//     working directory when it is not absolute);
//   - neither: another scheme (ext::, fd::, ...), refused everywhere.

var (
	schemeRe  = regexp.MustCompile(`^[^:]+://`)
	scpLikeRe = regexp.MustCompile(`^(?:[^@]+@)?[^:\s]+:(?:[0-9]{1,5}:)?[^\\].*$`)
	hostRe    = regexp.MustCompile(`^[A-Za-z0-9]([A-Za-z0-9.-]*[A-Za-z0-9])?$`)
)

// RemoteRepo reports whether repo is a URL of a repository on another
// machine that Nightshift may clone: http(s)://host/..., ssh://host/...
// or scp-like user@host:path. Local paths, file:// URLs and other schemes
// are not remote.
func RemoteRepo(repo string) bool {
	if schemeRe.MatchString(repo) {
		u, err := url.Parse(repo)
		if err != nil || u.Host == "" {
			return false
		}
		switch strings.ToLower(u.Scheme) {
		case "http", "https", "ssh":
			return true
		}
		return false
	}
	return scpLike(repo)
}

// scpLike reports whether repo is an scp-like ssh address we accept:
// [user@]host:path with a plain host name.
func scpLike(repo string) bool {
	if !gitSCP(repo) {
		return false
	}
	before, after, _ := strings.Cut(repo, ":")
	host := before[strings.LastIndexByte(before, '@')+1:]
	// Only host names: "ext::cmd" and the like are git remote helpers.
	return hostRe.MatchString(host) && !strings.HasPrefix(after, ":")
}

// gitSCP reports whether git would read repo as scp-like ssh rather than
// as a local path: it matches [user@]host:path with no '/' before the ':'.
func gitSCP(repo string) bool {
	before, _, _ := strings.Cut(repo, ":")
	return scpLikeRe.MatchString(repo) && !strings.Contains(before, "/")
}

// LocalRepoPath returns the path a local repository reference names (a
// file:// URL's path, or the reference itself, cleaned) and true, or false
// when repo is a remote URL or has another scheme. The path may be relative
// (git opens it relative to the working directory); callers that accept
// local repositories should insist on an absolute one.
func LocalRepoPath(repo string) (string, bool) {
	if repo == "" {
		return "", false
	}
	if schemeRe.MatchString(repo) {
		u, err := url.Parse(repo)
		if err != nil || !strings.EqualFold(u.Scheme, "file") || u.Path == "" {
			return "", false
		}
		return path.Clean(u.Path), true
	}
	if gitSCP(repo) {
		return "", false
	}
	return path.Clean(repo), true
}

// NamesLocalRepo reports whether a repos[].match entry names the local
// repository at the absolute, cleaned path p. Only entries that are
// themselves absolute paths (or file:// URLs) name local repositories: "*"
// and host/owner/name globs never do. An entry names p when it is exactly
// p (/srv/app.git does not name /srv/app), when it matches p as a path
// glob (each * within one path element), or, ending in "/**", when p lies
// beneath the directory it names.
func (c *Config) NamesLocalRepo(p string) bool {
	for _, r := range c.Repos {
		if matchesLocalPath(r.Match, p) {
			return true
		}
	}
	return false
}

// matchesLocalPath reports whether the repos[].match entry match names the
// local repository at the absolute path p (see Config.NamesLocalRepo).
func matchesLocalPath(match, p string) bool {
	m := strings.TrimPrefix(match, "file://")
	if !strings.HasPrefix(m, "/") || !strings.HasPrefix(p, "/") {
		return false
	}
	p = path.Clean(p)
	if dir, ok := strings.CutSuffix(m, "/**"); ok {
		dir = path.Clean("/" + dir)
		for a := path.Dir(p); ; a = path.Dir(a) {
			if ok, _ := path.Match(dir, a); ok {
				return true
			}
			if a == "/" {
				return false
			}
		}
	}
	m = path.Clean(m)
	if m == p {
		return true
	}
	ok, _ := path.Match(m, p)
	return ok
}

// GitHubGitURL maps a GitHub API base URL to the base URL repositories are
// cloned from and pushed to (github.git_url's default): https://github.com/
// for api.github.com (or an unparsable URL), https://HOST/ for
// https://HOST/api/v3/ (GitHub Enterprise), else the API URL itself.
func GitHubGitURL(api string) string {
	u, err := url.Parse(api)
	if err != nil || u.Host == "" {
		return "https://github.com/"
	}
	if strings.EqualFold(u.Host, "api.github.com") {
		return "https://github.com/"
	}
	p := strings.TrimSuffix(u.Path, "/")
	p = strings.TrimSuffix(p, "/api/v3")
	p = strings.TrimSuffix(p, "/api")
	return u.Scheme + "://" + u.Host + p + "/"
}
