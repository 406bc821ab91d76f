package webhook

import (
	"net/url"
	"strings"

	"github.com/nightshift/nightshift/config"
)

// Webhook events never name a repository on this machine: an event's Repo
// is built from configuration (GitHub.GitURL + repository.full_name, the
// Linear repos) or from a slash command argument checked against the
// configured forge hosts, and accept refuses any event whose repository is
// not a remote http(s) or ssh URL. A signed payload's clone_url, html_url
// or a file:// URL therefore cannot point a task at a planted repository.

// forgeOptions say which forges an event may name.
type forgeOptions struct {
	gitURL *url.URL // GitHub's clone base, always http(s) with a host
	hosts  []string // forge hosts (host[:port]), lower case
}

func (c Config) forge() forgeOptions {
	u, err := url.Parse(c.GitHub.GitURL)
	if err != nil || u.Host == "" {
		u, _ = url.Parse("https://github.com/")
	}
	opt := forgeOptions{gitURL: u}
	for _, h := range c.Slack.Hosts {
		opt.hosts = append(opt.hosts, strings.ToLower(strings.TrimSpace(h)))
	}
	return opt
}

func (o forgeOptions) knownHost(host string) bool {
	host = strings.ToLower(host)
	if strings.EqualFold(host, o.gitURL.Host) {
		return true
	}
	for _, h := range o.hosts {
		if h == host {
			return true
		}
	}
	return false
}

// onGitHub is the clone URL of owner/name on the configured GitHub.
func (o forgeOptions) onGitHub(owner, name string) string {
	return strings.TrimSuffix(o.gitURL.String(), "/") + "/" + owner + "/" + name + ".git"
}

// githubRepo turns a payload's repository.full_name into the clone URL on
// the configured GitHub, or false when it is not a plain owner/name.
func githubRepo(opt forgeOptions, fullName string) (owner, name, repo string, ok bool) {
	owner, name, ok = strings.Cut(fullName, "/")
	if !ok || !repoSegment(owner) || !repoSegment(name) {
		return "", "", "", false
	}
	return owner, name, opt.onGitHub(owner, name), true
}

// repoSegment reports whether s may be one element of owner/name: ASCII
// letters, digits, '.', '_' and '-', not "." or "..", not starting with '-'.
func repoSegment(s string) bool {
	if s == "" || s == "." || s == ".." || len(s) > 100 || s[0] == '-' {
		return false
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '.' || c == '_' || c == '-') {
			return false
		}
	}
	return true
}

// forgeRepo turns a repository named by a person (a slash command, the
// Linear config) into a clone URL: "owner/name" on the configured GitHub,
// "host/owner/name" on a configured forge host, and, when urls is set, an
// https URL (or one with GitHub.GitURL's scheme and host) on a configured
// forge host. Anything else, paths and file:// above all, is refused.
func forgeRepo(arg string, opt forgeOptions, urls bool) (string, bool) {
	s := strings.TrimSpace(arg)
	if s == "" {
		return "", false
	}
	if strings.Contains(s, "://") {
		if !urls {
			return "", false
		}
		u, err := url.Parse(s)
		if err != nil || u.User != nil || u.RawQuery != "" || u.Fragment != "" || u.Opaque != "" || !opt.knownHost(u.Host) {
			return "", false
		}
		sameAsGit := strings.EqualFold(u.Scheme, opt.gitURL.Scheme) && strings.EqualFold(u.Host, opt.gitURL.Host)
		if !strings.EqualFold(u.Scheme, "https") && !sameAsGit {
			return "", false
		}
		parts := strings.Split(strings.TrimSuffix(strings.Trim(u.Path, "/"), ".git"), "/")
		if len(parts) < 2 || !allSegments(parts) {
			return "", false
		}
		return s, config.RemoteRepo(s)
	}
	parts := strings.Split(strings.TrimSuffix(s, ".git"), "/")
	switch {
	case len(parts) == 2 && allSegments(parts):
		return opt.onGitHub(parts[0], parts[1]), true
	case len(parts) >= 3 && opt.knownHost(parts[0]) && allSegments(parts[1:]):
		if strings.EqualFold(parts[0], opt.gitURL.Host) && len(parts) == 3 {
			return opt.onGitHub(parts[1], parts[2]), true
		}
		return "https://" + strings.ToLower(parts[0]) + "/" + strings.Join(parts[1:], "/") + ".git", true
	}
	return "", false
}

func allSegments(parts []string) bool {
	for _, p := range parts {
		if !repoSegment(p) {
			return false
		}
	}
	return true
}

// remoteOnly returns why an event's repositories must not be used, or ""
// when each is empty or a remote http(s) or ssh URL.
func remoteOnly(repos ...string) string {
	for _, r := range repos {
		if r != "" && !config.RemoteRepo(r) {
			return "repository " + r + " is not a remote http(s) or ssh URL; webhook events never name local paths"
		}
	}
	return ""
}
