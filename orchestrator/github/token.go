package github

import (
	"context"
	"crypto/rsa"
	"encoding/json"
	"fmt"
	"maps"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/golang-jwt/jwt/v5"
	gh "github.com/google/go-github/v60/github"
)

// Permissions maps a GitHub App permission name (contents, pull_requests,
// issues, checks, actions, statuses, ...) to its access level (read or
// write).
type Permissions map[string]string

func (p Permissions) key() string {
	var b strings.Builder
	for _, k := range slices.Sorted(maps.Keys(p)) {
		b.WriteString(k + "=" + p[k] + ",")
	}
	return b.String()
}

func (p Permissions) installation() (*gh.InstallationPermissions, error) {
	data, err := json.Marshal(p)
	if err != nil {
		return nil, err
	}
	var out gh.InstallationPermissions
	return &out, json.Unmarshal(data, &out)
}

// tokenExpiryMargin is how long before its expiry a cached token is dropped.
const tokenExpiryMargin = 5 * time.Minute

// tokenSource hands out tokens: the configured token, or installation
// tokens of the App narrowed to one repository and a permission set,
// cached until shortly before they expire.
type tokenSource struct {
	static func(ctx context.Context) (string, error)
	appID  int64
	key    *rsa.PrivateKey
	clock  func() time.Time
	newAPI func(token string) *gh.Client

	mu      sync.Mutex
	install map[string]int64 // owner/name → installation id
	cache   map[string]cachedToken
}

type cachedToken struct {
	token   string
	expires time.Time
}

func newTokenSource(cfg Config, newAPI func(string) *gh.Client) (*tokenSource, error) {
	static := cfg.TokenFunc
	if static == nil {
		tok := cfg.Token
		static = func(context.Context) (string, error) { return tok, nil }
	}
	ts := &tokenSource{static: static, clock: cfg.Clock, newAPI: newAPI,
		install: map[string]int64{}, cache: map[string]cachedToken{}}
	if cfg.AppID == 0 {
		return ts, nil
	}
	key, err := jwt.ParseRSAPrivateKeyFromPEM([]byte(cfg.PrivateKey))
	if err != nil {
		return nil, fmt.Errorf("github: config github.private_key is not an RSA private key in PEM: %w", err)
	}
	ts.appID, ts.key = cfg.AppID, key
	return ts, nil
}

// appJWT signs the App's JSON Web Token (RS256, 9 minutes, issued a minute
// in the past to absorb clock drift).
func (s *tokenSource) appJWT() (string, error) {
	now := s.clock()
	claims := jwt.RegisteredClaims{
		Issuer:    strconv.FormatInt(s.appID, 10),
		IssuedAt:  jwt.NewNumericDate(now.Add(-60 * time.Second)),
		ExpiresAt: jwt.NewNumericDate(now.Add(9 * time.Minute)),
	}
	return jwt.NewWithClaims(jwt.SigningMethodRS256, claims).SignedString(s.key)
}

// token returns a token for repository r with perms that stays valid for
// at least minTTL (and at least the expiry margin).
func (s *tokenSource) token(ctx context.Context, r Repo, perms Permissions, minTTL time.Duration) (string, error) {
	if s.key == nil {
		tok, err := s.static(ctx)
		if err != nil {
			return "", fmt.Errorf("github: token: %w", err)
		}
		return tok, nil
	}
	minTTL = max(minTTL, tokenExpiryMargin)
	ck := strings.ToLower(r.FullName()) + "|" + perms.key()
	s.mu.Lock()
	defer s.mu.Unlock()
	if t, ok := s.cache[ck]; ok && t.expires.Sub(s.clock()) > minTTL {
		return t.token, nil
	}
	jwtTok, err := s.appJWT()
	if err != nil {
		return "", fmt.Errorf("github: sign app jwt: %w", err)
	}
	app := s.newAPI(jwtTok)
	ik := strings.ToLower(r.FullName())
	id, ok := s.install[ik]
	if !ok {
		inst, _, err := app.Apps.FindRepositoryInstallation(ctx, r.Owner, r.Name)
		if err != nil {
			return "", wrap("find app installation", r, err)
		}
		id = inst.GetID()
		s.install[ik] = id
	}
	ip, err := perms.installation()
	if err != nil {
		return "", err
	}
	it, resp, err := app.Apps.CreateInstallationToken(ctx, id, &gh.InstallationTokenOptions{
		Repositories: []string{r.Name}, Permissions: ip})
	if err != nil {
		if resp != nil && resp.StatusCode == http.StatusNotFound {
			delete(s.install, ik) // the App was reinstalled
		}
		return "", wrap("create installation token", r, err)
	}
	exp := it.GetExpiresAt().Time
	if exp.IsZero() {
		exp = s.clock().Add(time.Hour)
	}
	s.cache[ck] = cachedToken{token: it.GetToken(), expires: exp}
	if len(s.cache) > 4096 {
		now := s.clock()
		for k, t := range s.cache {
			if t.expires.Sub(now) < tokenExpiryMargin {
				delete(s.cache, k)
			}
		}
	}
	return it.GetToken(), nil
}
