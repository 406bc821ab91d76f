package identity_test

import (
	"context"
	"errors"
	"testing"

	"github.com/nightshift/nightshift/identity"
)

// TestRevokeTaskTokensRevokesOnlyThatTask: RevokeTaskTokens ends every
// token of one task (scoped to it, or issued to its identity) and no other
// task's; the task's identity stays live and a token issued afterwards
// works.
func TestRevokeTaskTokensRevokesOnlyThatTask(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	s, _ := newService(t)
	a, err := s.ForTask(ctx, "TASKA001")
	if err != nil {
		t.Fatal(err)
	}
	b, err := s.ForTask(ctx, "TASKB001")
	if err != nil {
		t.Fatal(err)
	}
	issue := func(identityID string, scope identity.Scope) string {
		t.Helper()
		tok, err := s.IssueToken(ctx, identityID, scope)
		if err != nil {
			t.Fatal(err)
		}
		return tok
	}
	aRun := issue(a.ID, identity.Scope{TaskID: "TASKA001", Repo: "acme/app", Agent: "claude"})
	aDefault := issue(a.ID, identity.Scope{})
	bRun := issue(b.ID, identity.Scope{TaskID: "TASKB001", Agent: "claude"})
	if err := s.RevokeTaskTokens(ctx, "TASKA001"); err != nil {
		t.Fatal(err)
	}
	for _, tok := range []string{aRun, aDefault} {
		if _, _, err := s.Authenticate(ctx, tok); !errors.Is(err, identity.ErrUnauthorized) {
			t.Errorf("a token of the task survived: %v", err)
		}
	}
	if _, _, err := s.Authenticate(ctx, bRun); err != nil {
		t.Errorf("another task's token was revoked: %v", err)
	}
	if _, _, err := s.Authenticate(ctx, issue(a.ID, identity.Scope{})); err != nil {
		t.Errorf("a token issued after the revocation: %v", err)
	}
	if err := s.RevokeTaskTokens(ctx, ""); !errors.Is(err, identity.ErrNoTaskID) {
		t.Errorf("empty task id: %v", err)
	}
}
