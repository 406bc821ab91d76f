package identity_test

import (
	"slices"
	"testing"

	"github.com/nightshift/nightshift/identity"
)

func TestSecretScopesNeverIncludeTheServer(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		sc    identity.Scope
		forms []string
		want  []string
	}{
		{identity.Scope{TaskID: "T1", Agent: "claude", Repo: "https://github.com/acme/app.git"}, []string{"github.com/acme/app"},
			[]string{"task:T1", "agent:claude", "repo:https://github.com/acme/app.git", "repo:github.com/acme/app", "agents"}},
		{identity.Scope{TaskID: "T1", Repo: "github.com/acme/app"}, []string{"github.com/acme/app"},
			[]string{"task:T1", "repo:github.com/acme/app", "agents"}},
		{identity.Scope{}, nil, []string{"agents"}},
	} {
		got := tc.sc.SecretScopes(tc.forms...)
		if !slices.Equal(got, tc.want) {
			t.Errorf("%+v %v: got %v, want %v", tc.sc, tc.forms, got, tc.want)
		}
		if slices.Contains(got, "server") || slices.Contains(got, "global") {
			t.Errorf("%+v: server scope granted to a task: %v", tc.sc, got)
		}
	}
}
