package identity_test

import (
	"context"
	"database/sql"
	"errors"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	_ "modernc.org/sqlite"

	"github.com/nightshift/nightshift/identity"
	"github.com/nightshift/nightshift/identity/local"
)

func openDB(t testing.TB) *sql.DB {
	t.Helper()
	path := filepath.Join(t.TempDir(), "nightshift.db")
	db, err := sql.Open("sqlite", "file:"+path+"?_pragma=journal_mode(WAL)&_pragma=busy_timeout(5000)&_pragma=foreign_keys(1)")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { db.Close() })
	return db
}

func newService(t *testing.T, pool ...string) (*identity.Service, *local.Provider) {
	t.Helper()
	return newBackend(t, local.Config{Domain: "agents.test", SMTPListen: "127.0.0.1:0", PhonePool: pool}, identity.Config{})
}

func TestNameForTask(t *testing.T) {
	for in, want := range map[string]string{
		"01JD3XK7ZQ9W8E5R4T3Y2U1I0O": "agent-01jd3xk7",
		"AbC":                        "agent-abc",
		"task_ABCD-12345678":         "agent-taskabcd",
	} {
		if got := identity.NameForTask(in); got != want {
			t.Errorf("NameForTask(%q) = %q, want %q", in, got, want)
		}
	}
}

func TestForTaskIdempotentAndRelease(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	s, p := newService(t, "+15550000001")

	var wg sync.WaitGroup
	got := make([]identity.Identity, 8)
	errs := make([]error, 8)
	for i := range got {
		wg.Add(1)
		go func() { defer wg.Done(); got[i], errs[i] = s.ForTask(ctx, "01JD3XK7ZQ9W8E5R4T3Y2U1I0O") }()
	}
	wg.Wait()
	for i := range got {
		if errs[i] != nil {
			t.Fatalf("ForTask %d: %v", i, errs[i])
		}
		if got[i].ID != got[0].ID {
			t.Fatalf("ForTask not idempotent: %s vs %s", got[i].ID, got[0].ID)
		}
	}
	id := got[0]
	if id.Name != "agent-01jd3xk7" || id.Email != "agent-01jd3xk7@agents.test" || id.Phone != "+15550000001" || id.Provider != "local" || id.TaskID != "01JD3XK7ZQ9W8E5R4T3Y2U1I0O" {
		t.Fatalf("identity = %+v", id)
	}
	// The pool has one number: a second task gets no phone.
	other, err := s.ForTask(ctx, "zz999999-other")
	if err != nil {
		t.Fatal(err)
	}
	if other.Phone != "" {
		t.Fatalf("second identity got phone %q from a one-number pool", other.Phone)
	}

	tok, err := s.IssueToken(ctx, id.ID, identity.Scope{Repo: "github.com/acme/app", Agent: "claude"})
	if err != nil {
		t.Fatal(err)
	}
	if !strings.HasPrefix(tok, "nsa_") || len(tok) < 40 {
		t.Fatalf("token %q", tok)
	}
	aid, sc, err := s.Authenticate(ctx, tok)
	if err != nil {
		t.Fatal(err)
	}
	if aid.ID != id.ID || sc.TaskID != id.TaskID || sc.Repo != "github.com/acme/app" || sc.Agent != "claude" {
		t.Fatalf("Authenticate = %+v %+v", aid, sc)
	}
	if _, _, err := s.Authenticate(ctx, tok+"x"); !errors.Is(err, identity.ErrUnauthorized) {
		t.Fatalf("bad token: %v", err)
	}

	if err := s.Release(ctx, id.TaskID); err != nil {
		t.Fatal(err)
	}
	if err := s.Release(ctx, id.TaskID); err != nil {
		t.Fatalf("second Release: %v", err)
	}
	if _, _, err := s.Authenticate(ctx, tok); !errors.Is(err, identity.ErrUnauthorized) {
		t.Fatalf("token after release: %v", err)
	}
	leases, err := p.PhoneLeases(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if len(leases) != 0 {
		t.Fatalf("leases after release: %v", leases)
	}
	// A new identity for the same task after release is a fresh one, and
	// the freed number goes to it.
	again, err := s.ForTask(ctx, id.TaskID)
	if err != nil {
		t.Fatal(err)
	}
	if again.ID == id.ID || again.Name != id.Name || again.Phone != "+15550000001" {
		t.Fatalf("after release: %+v (was %+v)", again, id)
	}
	list, err := s.List(ctx, identity.ListOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if len(list) != 2 {
		t.Fatalf("List = %d live identities, want 2", len(list))
	}
}

func TestNameCollision(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	s, _ := newService(t)
	a, err := s.ForTask(ctx, "ABCDEFGH-1")
	if err != nil {
		t.Fatal(err)
	}
	b, err := s.ForTask(ctx, "abcdefgh-2")
	if err != nil {
		t.Fatal(err)
	}
	if a.Name != "agent-abcdefgh" || b.Name != "agent-abcdefgh-2" || a.Email == b.Email {
		t.Fatalf("names %q %q emails %q %q", a.Name, b.Name, a.Email, b.Email)
	}
}

// TestTokenExpiresAndRevokes: a token is refused once its TTL has passed by
// the service's clock, and a revoked token is refused while the identity
// and its other tokens live on.
func TestTokenExpiresAndRevokes(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	var mu sync.Mutex
	now := time.Date(2026, 12, 6, 4, 0, 0, 0, time.UTC)
	clock := func() time.Time { mu.Lock(); defer mu.Unlock(); return now }
	advance := func(d time.Duration) { mu.Lock(); now = now.Add(d); mu.Unlock() }
	s, _ := newBackend(t, local.Config{Domain: "agents.test", SMTPListen: "127.0.0.1:0"}, identity.Config{Clock: clock, TokenTTL: time.Hour})
	id, err := s.ForTask(ctx, "TASKTTL1")
	if err != nil {
		t.Fatal(err)
	}
	short, err := s.IssueTokenTTL(ctx, id.ID, identity.Scope{}, 10*time.Minute)
	if err != nil {
		t.Fatal(err)
	}
	def, err := s.IssueToken(ctx, id.ID, identity.Scope{})
	if err != nil {
		t.Fatal(err)
	}
	revoked, err := s.IssueToken(ctx, id.ID, identity.Scope{})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := s.IssueTokenTTL(ctx, id.ID, identity.Scope{}, 0); err == nil {
		t.Error("a token without a lifetime was issued")
	}
	for _, tok := range []string{short, def, revoked} {
		if _, _, err := s.Authenticate(ctx, tok); err != nil {
			t.Fatalf("fresh token refused: %v", err)
		}
	}
	if err := s.RevokeToken(ctx, revoked); err != nil {
		t.Fatal(err)
	}
	if _, _, err := s.Authenticate(ctx, revoked); !errors.Is(err, identity.ErrUnauthorized) {
		t.Fatalf("revoked token: %v", err)
	}
	advance(10*time.Minute - time.Millisecond)
	if _, _, err := s.Authenticate(ctx, short); err != nil {
		t.Fatalf("token refused before its expiry: %v", err)
	}
	advance(time.Millisecond)
	if _, _, err := s.Authenticate(ctx, short); !errors.Is(err, identity.ErrUnauthorized) {
		t.Fatalf("token at its expiry: %v", err)
	}
	if _, _, err := s.Authenticate(ctx, def); err != nil {
		t.Fatalf("default-TTL token refused after 10 minutes: %v", err)
	}
	advance(50 * time.Minute)
	if _, _, err := s.Authenticate(ctx, def); !errors.Is(err, identity.ErrUnauthorized) {
		t.Fatalf("token after Config.TokenTTL: %v", err)
	}
}
