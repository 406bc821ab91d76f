package config

import (
	"fmt"
	"net/url"
	"strings"
)

// Forge is one forge host work comes from and goes back to: an entry of
// forges:. Several entries of one kind (GitHub Enterprise hosts, GitLab and
// Gitea/Forgejo servers) work at once; each host appears once. The github:
// block is shorthand for one GitHub entry: Load puts it first in Forges
// (Shorthand set), and a forges: entry on the same host is an error.
//
//	forges:
//	  - kind: gitea
//	    api_url: https://git.example.com/api/v1/
//	    git_url: https://git.example.com/
//	    webhook_secrets: ["${vault:GITEA_WEBHOOK_SECRET}"]
//	    token: "${vault:GITEA_TOKEN}"
//	    trigger: "@nightshift"
//
// Forges are not overridable from the environment (a list of structures);
// use ${env:NAME} references in the values instead.
type Forge struct {
	// Kind is github, gitlab or gitea (forgejo is accepted as gitea: one
	// API). Required. Load lower-cases it and turns forgejo into gitea.
	Kind string `yaml:"kind"`
	// APIURL is the REST API base: https://api.github.com/ or
	// https://HOST/api/v3/ (GitHub, default api.github.com),
	// https://HOST/api/v4/ (GitLab, default gitlab.com's),
	// https://HOST/api/v1/ (Gitea, required).
	APIURL string `yaml:"api_url"`
	// GitURL is the base repositories are cloned from and pushed to over
	// https: a repository's clone URL is GitURL + owner/name + ".git", and
	// its identity for repos[].match is host/owner/name. Default: derived
	// from api_url (https://github.com/ for api.github.com, the API URL
	// without /api/v3, /api/v4 or /api/v1 otherwise).
	GitURL string `yaml:"git_url"`
	// WebhookSecrets verify deliveries (X-Hub-Signature-256 HMAC on
	// GitHub, X-Gitlab-Token on GitLab, X-Gitea-Signature HMAC on Gitea);
	// any one matches, so a secret can be rotated by listing both. Empty:
	// every delivery for this host is refused (401).
	WebhookSecrets []Secret `yaml:"webhook_secrets"`
	// Token authenticates API calls, fetches and pushes: a GitHub personal
	// or fine-grained token, a GitLab project or group access token (api
	// scope, Developer role), a Gitea/Forgejo access token
	// (write:repository, write:issue, read:user). Without a token (or a
	// GitHub App) the forge's webhooks still work but nothing is posted
	// back and pushes carry no credentials.
	Token Secret `yaml:"token"`
	// AppID and PrivateKey authenticate as a GitHub App (github only;
	// preferred over a token: every call gets a token narrowed to one
	// repository and the permissions of that call).
	AppID      int64  `yaml:"app_id"`
	PrivateKey Secret `yaml:"private_key"`
	// Trigger is the mention that starts work in a comment ("/nightshift"
	// works too). Default @nightshift.
	Trigger string `yaml:"trigger"`
	// Label starts work when put on an issue. Default nightshift.
	Label string `yaml:"label"`
	// BotLogin is Nightshift's own account on this forge; its comments
	// never trigger work.
	BotLogin string `yaml:"bot_login"`
	// ReplyOnRefusal answers refused comment triggers with a short comment.
	ReplyOnRefusal bool `yaml:"reply_on_refusal"`
	// TriggerLevel is the lowest GitLab member access level that may start
	// work with a comment (gitlab only): 10 guest, 15 planner, 20
	// reporter, 30 developer (the default), 40 maintainer, 50 owner.
	TriggerLevel int `yaml:"trigger_level"`

	// Shorthand marks the entry Load made from the github: block.
	Shorthand bool `yaml:"-"`
	// Index is the entry's position in the forges: list as written (the
	// github: block, put first, does not shift it); Key names it.
	Index int `yaml:"-"`
}

// Forge kinds (Forge.Kind after Load).
const (
	ForgeGitHub = "github"
	ForgeGitLab = "gitlab"
	ForgeGitea  = "gitea"
)

// Host returns the host[:port] of the forge's git URL, lower case.
func (f Forge) Host() string {
	u, err := url.Parse(f.GitURL)
	if err != nil {
		return ""
	}
	return strings.ToLower(u.Host)
}

// Key returns the dotted config key of the entry as written: "github"
// for the github: block, "forges[2]" for the third entry of forges:.
func (f Forge) Key() string {
	if f.Shorthand {
		return "github"
	}
	return fmt.Sprintf("forges[%d]", f.Index)
}

// set reports whether the github: block says anything that makes it a
// forge entry (before defaults).
func (g GitHub) set() bool {
	return len(g.WebhookSecrets) > 0 || g.Token.IsSet() || g.AppID != 0 || g.PrivateKey.IsSet() ||
		g.APIURL != "" || g.GitURL != ""
}

// mergeForges puts the github: block first in Forges and applies the
// entries' defaults. It runs before the github: block's own defaults.
func (c *Config) mergeForges() {
	for i := range c.Forges {
		c.Forges[i].Index = i
	}
	if c.GitHub.set() {
		g := c.GitHub
		c.Forges = append([]Forge{{Kind: ForgeGitHub, APIURL: g.APIURL, GitURL: g.GitURL, WebhookSecrets: g.WebhookSecrets,
			Token: g.Token, AppID: g.AppID, PrivateKey: g.PrivateKey, Trigger: g.Trigger, Label: g.Label, BotLogin: g.BotLogin,
			ReplyOnRefusal: g.ReplyOnRefusal, Shorthand: true}}, c.Forges...)
	}
	for i := range c.Forges {
		f := &c.Forges[i]
		f.Kind = strings.ToLower(strings.TrimSpace(f.Kind))
		if f.Kind == "forgejo" {
			f.Kind = ForgeGitea
		}
		switch f.Kind {
		case ForgeGitHub:
			if f.APIURL == "" {
				f.APIURL = "https://api.github.com/"
			}
			if f.GitURL == "" {
				f.GitURL = GitHubGitURL(f.APIURL)
			}
		case ForgeGitLab:
			if f.APIURL == "" {
				f.APIURL = "https://gitlab.com/api/v4/"
			}
			if f.GitURL == "" {
				f.GitURL = apiRoot(f.APIURL, "/api/v4")
			}
		case ForgeGitea:
			if f.GitURL == "" && f.APIURL != "" {
				f.GitURL = apiRoot(f.APIURL, "/api/v1")
			}
		}
		if f.APIURL != "" && !strings.HasSuffix(f.APIURL, "/") {
			f.APIURL += "/"
		}
		if f.GitURL != "" && !strings.HasSuffix(f.GitURL, "/") {
			f.GitURL += "/"
		}
		if f.Trigger == "" {
			f.Trigger = "@nightshift"
		}
		if f.Label == "" {
			f.Label = "nightshift"
		}
	}
}

// apiRoot is api without its suffix path (/api/v4), with a trailing slash.
func apiRoot(api, suffix string) string {
	u, err := url.Parse(api)
	if err != nil || u.Host == "" {
		return api
	}
	u.Path = strings.TrimSuffix(strings.TrimSuffix(u.Path, "/"), suffix) + "/"
	u.RawQuery, u.Fragment = "", ""
	return u.String()
}

// validateForges checks every entry by its key (forges[1].kind: ...) and
// that each host appears once.
func (c *Config) validateForges() error {
	hosts := map[string]int{}
	for i, f := range c.Forges {
		key := f.Key()
		switch f.Kind {
		case ForgeGitHub, ForgeGitLab, ForgeGitea:
		case "":
			return &Error{Key: key + ".kind", Msg: "required (github, gitlab or gitea)"}
		default:
			return &Error{Key: key + ".kind", Msg: fmt.Sprintf("unknown forge kind %q (want github, gitlab, gitea or forgejo)", f.Kind)}
		}
		if f.Kind == ForgeGitea && f.APIURL == "" {
			return &Error{Key: key + ".api_url", Msg: "required for gitea (https://HOST/api/v1/)"}
		}
		for _, u := range []struct{ name, v string }{{"api_url", f.APIURL}, {"git_url", f.GitURL}} {
			if err := checkHTTPURL(u.v); err != "" {
				return &Error{Key: key + "." + u.name, Msg: err}
			}
		}
		if f.Kind != ForgeGitHub && (f.AppID != 0 || f.PrivateKey.IsSet()) {
			return &Error{Key: key + ".app_id", Msg: "GitHub Apps are for kind github; use token"}
		}
		switch {
		case f.AppID < 0:
			return &Error{Key: key + ".app_id", Msg: "must not be negative"}
		case f.AppID > 0 && !f.PrivateKey.IsSet():
			return &Error{Key: key + ".private_key", Msg: "required with app_id"}
		case f.AppID == 0 && f.PrivateKey.IsSet():
			return &Error{Key: key + ".app_id", Msg: "required with private_key"}
		}
		if f.TriggerLevel != 0 && f.Kind != ForgeGitLab {
			return &Error{Key: key + ".trigger_level", Msg: "only for kind gitlab"}
		}
		switch f.TriggerLevel {
		case 0, 10, 15, 20, 30, 40, 50:
		default:
			return &Error{Key: key + ".trigger_level", Msg: fmt.Sprintf("%d is not a GitLab access level (10, 15, 20, 30, 40 or 50)", f.TriggerLevel)}
		}
		if name := strings.TrimLeft(strings.TrimSpace(f.Trigger), "@/"); name == "" {
			return &Error{Key: key + ".trigger", Msg: fmt.Sprintf("%q has no name", f.Trigger)}
		}
		h := f.Host()
		if j, dup := hosts[h]; dup {
			other := c.Forges[j]
			if other.Shorthand {
				return &Error{Key: key + ".git_url", Msg: fmt.Sprintf("host %s is also configured by the github: block; configure it in one place", h)}
			}
			return &Error{Key: key + ".git_url", Msg: fmt.Sprintf("host %s is already configured by %s", h, other.Key())}
		}
		hosts[h] = i
	}
	return nil
}

// checkHTTPURL returns why s is not an absolute http(s) URL without
// credentials, or "".
func checkHTTPURL(s string) string {
	u, err := url.Parse(s)
	switch {
	case err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "":
		return fmt.Sprintf("%q is not an absolute http(s) URL", s)
	case u.User != nil:
		return "must not carry credentials (use token)"
	case u.RawQuery != "" || u.Fragment != "":
		return fmt.Sprintf("%q must not have a query or fragment", s)
	}
	return ""
}

// forgeSecrets lists the secrets of forges: entries (the github: block's
// are listed under github.*).
func (c *Config) forgeSecrets() []namedSecret {
	var out []namedSecret
	for _, f := range c.Forges {
		if f.Shorthand {
			continue
		}
		key := f.Key()
		for j, s := range f.WebhookSecrets {
			out = append(out, namedSecret{fmt.Sprintf("%s.webhook_secrets[%d]", key, j), s})
		}
		out = append(out, namedSecret{key + ".token", f.Token}, namedSecret{key + ".private_key", f.PrivateKey})
	}
	return out
}
