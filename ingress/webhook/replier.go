package webhook

import (
	"context"
	"fmt"
	"net/http"
	"net/url"
	"strings"

	"github.com/google/go-github/v60/github"

	"github.com/nightshift/nightshift/config"
	"github.com/nightshift/nightshift/orchestrator"
)

// GitHubReplier is a Replier that answers with a comment on the issue or
// pull request the trigger came from.
type GitHubReplier struct {
	client *github.Client
}

var _ Replier = (*GitHubReplier)(nil)

// NewGitHubReplier returns a replier calling the REST API at apiURL
// (e.g. https://api.github.com/) through hc, which carries the
// authentication (a GitHub App installation transport), or with token.
func NewGitHubReplier(hc *http.Client, apiURL, token string) (*GitHubReplier, error) {
	if !strings.HasSuffix(apiURL, "/") {
		apiURL += "/"
	}
	base, err := url.Parse(apiURL)
	if err != nil || base.Scheme == "" || base.Host == "" {
		return nil, fmt.Errorf("webhook: github api url %q is not an absolute URL", apiURL)
	}
	client := github.NewClient(hc)
	if token != "" {
		client = client.WithAuthToken(token)
	}
	client.BaseURL = base
	return &GitHubReplier{client: client}, nil
}

// Reply implements Replier.
func (r *GitHubReplier) Reply(ctx context.Context, ev *orchestrator.Event, message string) error {
	parts := strings.Split(config.RepoKey(ev.Repo), "/")
	if len(parts) < 3 || ev.Target.Number == 0 {
		return fmt.Errorf("reply to event %s: no issue to comment on", ev.ID)
	}
	owner, name := parts[len(parts)-2], parts[len(parts)-1]
	if ev.Actor.Login != "" {
		message = "@" + ev.Actor.Login + " " + message
	}
	if _, _, err := r.client.Issues.CreateComment(ctx, owner, name, ev.Target.Number, &github.IssueComment{Body: &message}); err != nil {
		return fmt.Errorf("reply on %s/%s#%d: %w", owner, name, ev.Target.Number, err)
	}
	return nil
}
