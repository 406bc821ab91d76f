package vault

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"sync"
	"time"

	"golang.org/x/oauth2"
)

// OAuth providers with built-in endpoints.
const (
	ProviderGitHub = "github"
	ProviderLinear = "linear"
	ProviderSlack  = "slack"
)

// Endpoint returns the OAuth endpoint of a built-in provider. Tests and
// GitHub Enterprise override TokenURL on the returned value.
func Endpoint(provider string) (oauth2.Endpoint, error) {
	switch provider {
	case ProviderGitHub:
		return oauth2.Endpoint{AuthURL: "https://github.com/login/oauth/authorize", TokenURL: "https://github.com/login/oauth/access_token", AuthStyle: oauth2.AuthStyleInParams}, nil
	case ProviderLinear:
		return oauth2.Endpoint{AuthURL: "https://linear.app/oauth/authorize", TokenURL: "https://api.linear.app/oauth/token", AuthStyle: oauth2.AuthStyleInParams}, nil
	case ProviderSlack:
		return oauth2.Endpoint{AuthURL: "https://slack.com/oauth/v2/authorize", TokenURL: "https://slack.com/api/oauth.v2.access", AuthStyle: oauth2.AuthStyleInParams}, nil
	}
	return oauth2.Endpoint{}, fmt.Errorf("vault: unknown oauth provider %q", provider)
}

// Token is an OAuth connection stored in the vault as one secret whose value
// is this record in JSON.
type Token struct {
	Provider     string    `json:"provider"`
	AccessToken  string    `json:"access_token"`
	RefreshToken string    `json:"refresh_token,omitempty"`
	TokenType    string    `json:"token_type,omitempty"`
	Expiry       time.Time `json:"expiry,omitzero"`
}

// LogValue keeps the tokens out of logs.
func (t Token) LogValue() slog.Value {
	return slog.GroupValue(slog.String("provider", t.Provider), slog.Time("expiry", t.Expiry), slog.String("access_token", "REDACTED"))
}

func (t Token) oauth2() *oauth2.Token {
	return &oauth2.Token{AccessToken: t.AccessToken, RefreshToken: t.RefreshToken, TokenType: t.TokenType, Expiry: t.Expiry}
}

// ErrNoRefreshToken is returned when a token expired and cannot be renewed.
var ErrNoRefreshToken = errors.New("vault: oauth token expired and has no refresh token")

// SetToken stores tok as a new version of name in scope.
func (v *Vault) SetToken(ctx context.Context, actor Actor, name, scope string, tok Token) (int, error) {
	if tok.Provider == "" || tok.AccessToken == "" {
		return 0, errors.New("vault: oauth token needs a provider and an access token")
	}
	b, err := json.Marshal(tok)
	if err != nil {
		return 0, err
	}
	return v.Set(ctx, actor, name, scope, b)
}

// GetToken returns the OAuth token stored as name in scope, as is (it may
// have expired; use TokenSource for a fresh one).
func (v *Vault) GetToken(ctx context.Context, actor Actor, name, scope string) (Token, error) {
	b, err := v.Get(ctx, actor, name, scope)
	if err != nil {
		return Token{}, err
	}
	return decodeToken(name, b)
}

func decodeToken(name string, b []byte) (Token, error) {
	var t Token
	if err := json.Unmarshal(b, &t); err != nil || t.AccessToken == "" {
		return Token{}, fmt.Errorf("vault: secret %s is not an oauth token record", name)
	}
	return t, nil
}

// TokenSourceConfig tunes TokenSource. The zero value is usable.
type TokenSourceConfig struct {
	// HTTPClient talks to the token endpoint. Nil means a client with a 30s
	// timeout.
	HTTPClient *http.Client
	// Leeway refreshes this long before expiry. Zero means one minute.
	Leeway time.Duration
}

// TokenSource returns an oauth2.TokenSource for the token stored as name in
// scope. Token returns the stored access token while it is valid for longer
// than the leeway (by the vault's clock); otherwise it refreshes it through
// oauth (its Endpoint and client credentials), stores the result as a new
// version (keeping the old refresh token when the provider does not send a
// new one) and destroys the older versions. Refreshes are serialised within
// the process; every read and write is audited as actor.
func (v *Vault) TokenSource(actor Actor, name, scope string, oauth *oauth2.Config, cfg TokenSourceConfig) oauth2.TokenSource {
	if cfg.HTTPClient == nil {
		cfg.HTTPClient = &http.Client{Timeout: 30 * time.Second}
	}
	if cfg.Leeway == 0 {
		cfg.Leeway = time.Minute
	}
	return &tokenSource{v: v, actor: actor, name: name, scope: scope, oauth: oauth, cfg: cfg}
}

type tokenSource struct {
	v     *Vault
	actor Actor
	name  string
	scope string
	oauth *oauth2.Config
	cfg   TokenSourceConfig

	mu     sync.Mutex
	cached *Token
}

func (s *tokenSource) fresh(t *Token) bool {
	return t != nil && t.AccessToken != "" && (t.Expiry.IsZero() || s.v.cfg.Clock().Add(s.cfg.Leeway).Before(t.Expiry))
}

// Token implements oauth2.TokenSource.
func (s *tokenSource) Token() (*oauth2.Token, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.fresh(s.cached) {
		return s.cached.oauth2(), nil
	}
	ctx, cancel := context.WithTimeout(context.Background(), s.v.cfg.Timeout)
	defer cancel()
	// Another process may have refreshed it already.
	stored, err := s.v.GetToken(ctx, s.actor, s.name, s.scope)
	if err != nil {
		return nil, err
	}
	if s.fresh(&stored) {
		s.cached = &stored
		return stored.oauth2(), nil
	}
	if stored.RefreshToken == "" {
		return nil, fmt.Errorf("%w: %s", ErrNoRefreshToken, s.name)
	}
	hctx := context.WithValue(ctx, oauth2.HTTPClient, s.cfg.HTTPClient)
	// Only the refresh token: the library then refreshes unconditionally.
	nt, err := s.oauth.TokenSource(hctx, &oauth2.Token{RefreshToken: stored.RefreshToken}).Token()
	if err != nil {
		return nil, fmt.Errorf("vault: refresh oauth token %s: %w", s.name, err)
	}
	next := Token{Provider: stored.Provider, AccessToken: nt.AccessToken, RefreshToken: nt.RefreshToken, TokenType: nt.TokenType, Expiry: nt.Expiry}
	if next.RefreshToken == "" {
		next.RefreshToken = stored.RefreshToken
	}
	if nt.ExpiresIn > 0 {
		// Use the vault's clock, not the library's wall clock.
		next.Expiry = s.v.cfg.Clock().Add(time.Duration(nt.ExpiresIn) * time.Second)
	}
	ver, err := s.v.SetToken(ctx, s.actor, s.name, s.scope, next)
	if err != nil {
		return nil, fmt.Errorf("vault: store refreshed oauth token %s: %w", s.name, err)
	}
	if _, err := s.v.destroy(ctx, s.actor, s.name, s.scope, 0, ver); err != nil && !errors.Is(err, ErrNotFound) {
		return nil, err
	}
	s.cached = &next
	return next.oauth2(), nil
}
