package main

import (
	"context"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/nightshift/nightshift/config"
)

// TestGitHubTeamMember speaks GitHub's team membership API: an active
// membership counts, a pending one and a 404 do not, anything else is an
// error; the token is sent as a bearer.
func TestGitHubTeamMember(t *testing.T) {
	t.Parallel()
	gh := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Header.Get("Authorization") != "Bearer ghp-team" {
			http.Error(w, `{"message":"Bad credentials"}`, http.StatusUnauthorized)
			return
		}
		w.Header().Set("Content-Type", "application/json")
		switch r.URL.Path {
		case "/api/v3/orgs/acme/teams/core/memberships/carol":
			w.Write([]byte(`{"url":"x","role":"member","state":"active"}`))
		case "/api/v3/orgs/acme/teams/core/memberships/erin":
			w.Write([]byte(`{"url":"x","role":"member","state":"pending"}`))
		case "/api/v3/orgs/acme/teams/core/memberships/boom":
			http.Error(w, `{"message":"Server Error"}`, http.StatusBadGateway)
		default:
			http.Error(w, `{"message":"Not Found"}`, http.StatusNotFound)
		}
	}))
	defer gh.Close()
	cfg := &config.Config{GitHub: config.GitHub{APIURL: gh.URL + "/api/v3/", Token: "ghp-team"}}
	resolve := func(s config.Secret) (string, error) { return string(s), nil }
	member := githubTeamMember(cfg, resolve, gh.Client())
	for login, want := range map[string]bool{"carol": true, "erin": false, "dave": false} {
		got, err := member(context.Background(), "acme", "core", login)
		if err != nil || got != want {
			t.Errorf("%s: %v %v, want %v", login, got, err, want)
		}
	}
	if _, err := member(context.Background(), "acme", "core", "boom"); err == nil || !strings.Contains(err.Error(), "502") {
		t.Errorf("a server error: %v", err)
	}
	if githubTeamMember(&config.Config{}, resolve, nil) != nil {
		t.Error("a team check without github.token")
	}
}
