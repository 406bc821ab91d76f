package vault_test

import (
	"context"
	"errors"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"golang.org/x/oauth2"

	"github.com/nightshift/nightshift/vault"
)

type clock struct {
	mu sync.Mutex
	t  time.Time
}

func (c *clock) Now() time.Time      { c.mu.Lock(); defer c.mu.Unlock(); return c.t }
func (c *clock) Add(d time.Duration) { c.mu.Lock(); c.t = c.t.Add(d); c.mu.Unlock() }

// tokenServer speaks the OAuth 2 refresh_token grant (RFC 6749 section 6).
type tokenServer struct {
	mu       sync.Mutex
	calls    int
	seen     []string // refresh tokens received
	response func(n int) (int, string)
}

func (s *tokenServer) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if r.Method != http.MethodPost || r.URL.Path != "/token" {
		http.Error(w, "not found", 404)
		return
	}
	r.ParseForm()
	if r.PostForm.Get("grant_type") != "refresh_token" || r.PostForm.Get("client_id") != "cid" || r.PostForm.Get("client_secret") != "csecret" {
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(401)
		w.Write([]byte(`{"error":"invalid_client"}`))
		return
	}
	s.mu.Lock()
	s.calls++
	n := s.calls
	s.seen = append(s.seen, r.PostForm.Get("refresh_token"))
	s.mu.Unlock()
	code, body := s.response(n)
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(code)
	w.Write([]byte(body))
}

func TestOAuthTokenSourceRefreshesAndPersists(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	clk := &clock{t: time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)}
	ts := &tokenServer{response: func(n int) (int, string) {
		switch n {
		case 1: // GitHub-style, with a rotated refresh token
			return 200, `{"access_token":"access-two","token_type":"bearer","expires_in":28800,"refresh_token":"refresh-two","refresh_token_expires_in":15811200,"scope":""}`
		case 2: // Slack-style rotation answer, without a new refresh token
			return 200, `{"ok":true,"access_token":"access-three","token_type":"bot","expires_in":43200}`
		default:
			return 400, `{"error":"invalid_grant","error_description":"The refresh token is invalid"}`
		}
	}}
	srv := httptest.NewServer(ts)
	defer srv.Close()
	api := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Write([]byte(r.Header.Get("Authorization")))
	}))
	defer api.Close()

	f := &fixture{dir: t.TempDir()}
	f.dbPath = f.dir + "/nightshift.db"
	f.db = openDB(t, f.dbPath)
	f.keys = vault.EnvKey(strings.Repeat("11", 32))
	v, err := vault.Open(ctx, f.db, f.keys, vault.Config{Clock: clk.Now})
	if err != nil {
		t.Fatal(err)
	}
	ep, err := vault.Endpoint(vault.ProviderGitHub)
	if err != nil || ep.TokenURL == "" {
		t.Fatal(err)
	}
	ep.TokenURL = srv.URL + "/token"
	conf := &oauth2.Config{ClientID: "cid", ClientSecret: "csecret", Endpoint: ep}
	sys := vault.Actor{Kind: vault.ActorSystem, ID: "github"}
	if _, err := v.SetToken(ctx, op, "GITHUB_OAUTH", "global", vault.Token{Provider: "github", AccessToken: "access-one", RefreshToken: "refresh-one", TokenType: "bearer", Expiry: clk.Now().Add(10 * time.Minute)}); err != nil {
		t.Fatal(err)
	}
	src := v.TokenSource(sys, "GITHUB_OAUTH", "global", conf, vault.TokenSourceConfig{HTTPClient: srv.Client()})
	get := func(want string) {
		t.Helper()
		tok, err := src.Token()
		if err != nil || tok.AccessToken != want {
			t.Fatalf("want %s, got %+v %v", want, tok, err)
		}
	}
	get("access-one") // valid: no call
	if ts.calls != 0 {
		t.Fatalf("refreshed a valid token: %d calls", ts.calls)
	}
	clk.Add(9*time.Minute + 30*time.Second) // inside the one-minute leeway
	get("access-two")
	get("access-two") // cached
	// The refreshed token is what an HTTP client sends.
	resp, err := oauth2.NewClient(context.WithValue(ctx, oauth2.HTTPClient, api.Client()), src).Get(api.URL)
	if err != nil {
		t.Fatal(err)
	}
	buf := make([]byte, 100)
	n, _ := resp.Body.Read(buf)
	resp.Body.Close()
	if got := string(buf[:n]); got != "Bearer access-two" {
		t.Fatalf("authorization header %q", got)
	}
	// Another process (a fresh source over a fresh Vault) sees it stored.
	v2, err := vault.Open(ctx, f.db, f.keys, vault.Config{Clock: clk.Now})
	if err != nil {
		t.Fatal(err)
	}
	stored, err := v2.GetToken(ctx, op, "GITHUB_OAUTH", "global")
	if err != nil || stored.AccessToken != "access-two" || stored.RefreshToken != "refresh-two" || !stored.Expiry.Equal(clk.Now().Add(8*time.Hour)) {
		t.Fatalf("stored: %+v %v", stored, err)
	}
	src2 := v2.TokenSource(sys, "GITHUB_OAUTH", "global", conf, vault.TokenSourceConfig{HTTPClient: srv.Client()})
	if tok, err := src2.Token(); err != nil || tok.AccessToken != "access-two" || ts.calls != 1 {
		t.Fatalf("second source: %+v %v calls %d", tok, err, ts.calls)
	}
	// Superseded versions (stale refresh tokens) are destroyed.
	if _, err := v.GetVersion(ctx, op, "GITHUB_OAUTH", "global", 1); !errors.Is(err, vault.ErrNotFound) {
		t.Fatalf("old token version: %v", err)
	}
	clk.Add(9 * time.Hour)
	get("access-three")
	stored, _ = v.GetToken(ctx, op, "GITHUB_OAUTH", "global")
	if stored.RefreshToken != "refresh-two" {
		t.Fatalf("refresh token lost when the provider sent none: %+v", stored)
	}
	clk.Add(13 * time.Hour)
	if _, err := src.Token(); err == nil || !strings.Contains(err.Error(), "invalid_grant") {
		t.Fatalf("refresh failure: %v", err)
	}
	if got := strings.Join(ts.seen, ","); got != "refresh-one,refresh-two,refresh-two" {
		t.Fatalf("refresh tokens sent: %s", got)
	}
	stored, _ = v.GetToken(ctx, op, "GITHUB_OAUTH", "global")
	if stored.AccessToken != "access-three" {
		t.Fatalf("failed refresh changed the stored token: %+v", stored)
	}

	// Expired with no refresh token.
	v.SetToken(ctx, op, "LINEAR_OAUTH", "global", vault.Token{Provider: "linear", AccessToken: "lin", Expiry: clk.Now().Add(-time.Hour)})
	if _, err := v.TokenSource(sys, "LINEAR_OAUTH", "global", conf, vault.TokenSourceConfig{}).Token(); !errors.Is(err, vault.ErrNoRefreshToken) {
		t.Fatalf("no refresh token: %v", err)
	}
	for _, p := range []string{vault.ProviderGitHub, vault.ProviderLinear, vault.ProviderSlack} {
		if ep, err := vault.Endpoint(p); err != nil || !strings.HasPrefix(ep.TokenURL, "https://") {
			t.Errorf("%s: %+v %v", p, ep, err)
		}
	}
	if _, err := vault.Endpoint("myspace"); err == nil {
		t.Error("unknown provider accepted")
	}
}
