package config

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"regexp"
	"sort"
	"strings"
)

// Secret is a configuration value that may hold or reference a secret:
// a literal, or ${vault:NAME}, ${ravi:NAME}, ${env:NAME}, ${file:PATH}, or a
// mix of text and references. It is resolved at use and prints as REDACTED.
type Secret string

// LogValue keeps secrets out of logs.
func (s Secret) LogValue() slog.Value { return slog.StringValue("REDACTED") }

// String keeps secrets out of fmt output.
func (s Secret) String() string {
	if s == "" {
		return ""
	}
	return "REDACTED"
}

// IsSet reports whether a value or reference is configured.
func (s Secret) IsSet() bool { return s != "" }

// Resolver resolves references of kinds it knows (vault, ravi).
type Resolver interface {
	Resolve(ctx context.Context, kind, name string) (string, error)
}

// ErrNoResolver is returned when a ${vault:..} reference is used without a vault.
var ErrNoResolver = errors.New("config: no resolver for reference")

var refRe = regexp.MustCompile(`\$\{([a-z]+):([^}]*)\}`)

func (s Secret) check() error {
	for _, m := range refRe.FindAllStringSubmatch(string(s), -1) {
		if !knownRefKind(m[1]) {
			return fmt.Errorf("unknown reference kind %q (want vault, ravi, env or file)", m[1])
		}
		if m[2] == "" {
			return fmt.Errorf("empty reference ${%s:}", m[1])
		}
	}
	if strings.Count(string(s), "${") != len(refRe.FindAllString(string(s), -1)) {
		return fmt.Errorf("malformed reference")
	}
	return nil
}

// Resolve returns the secret's value. env and file references are resolved
// here (env from the given map, never the process); vault and ravi through r.
func (s Secret) Resolve(ctx context.Context, env map[string]string, r Resolver) (string, error) {
	return expandRefs(ctx, string(s), env, r, false)
}

// expandRefs replaces each ${kind:name} reference in s with its value.
// With keepOther, references of kinds other than vault, ravi, env and file
// are left as they are; without it, they go to r like vault and ravi.
func expandRefs(ctx context.Context, s string, env map[string]string, r Resolver, keepOther bool) (string, error) {
	var firstErr error
	out := refRe.ReplaceAllStringFunc(s, func(ref string) string {
		m := refRe.FindStringSubmatch(ref)
		if keepOther && !knownRefKind(m[1]) {
			return ref
		}
		v, err := resolveRef(ctx, m[1], m[2], env, r)
		if err != nil && firstErr == nil {
			firstErr = err
		}
		return v
	})
	if firstErr != nil {
		return "", firstErr
	}
	return out, nil
}

func resolveRef(ctx context.Context, kind, name string, env map[string]string, r Resolver) (string, error) {
	switch kind {
	case "env":
		v, ok := env[name]
		if !ok {
			return "", fmt.Errorf("config: environment variable %s is not set", name)
		}
		return v, nil
	case "file":
		b, err := os.ReadFile(name)
		if err != nil {
			return "", fmt.Errorf("config: read secret file: %w", err)
		}
		return strings.TrimRight(string(b), "\r\n"), nil
	default:
		if r == nil {
			return "", fmt.Errorf("%w ${%s:%s}", ErrNoResolver, kind, name)
		}
		v, err := r.Resolve(ctx, kind, name)
		if err != nil {
			return "", fmt.Errorf("config: resolve ${%s:%s}: %w", kind, name, err)
		}
		return v, nil
	}
}

// ResolveAll resolves a list of secrets, skipping empty entries.
func ResolveAll(ctx context.Context, list []Secret, env map[string]string, r Resolver) ([]string, error) {
	var out []string
	for _, s := range list {
		if s == "" {
			continue
		}
		v, err := s.Resolve(ctx, env, r)
		if err != nil {
			return nil, err
		}
		out = append(out, v)
	}
	return out, nil
}

type namedSecret struct {
	key string
	v   Secret
}

func (c *Config) allSecrets() []namedSecret {
	var out []namedSecret
	add := func(key string, list ...Secret) {
		for i, s := range list {
			k := key
			if len(list) > 1 {
				k = fmt.Sprintf("%s[%d]", key, i)
			}
			out = append(out, namedSecret{k, s})
		}
	}
	add("api.tokens", c.API.Tokens...)
	add("api.read_only_tokens", c.API.ReadOnlyTokens...)
	add("github.webhook_secrets", c.GitHub.WebhookSecrets...)
	add("github.private_key", c.GitHub.PrivateKey)
	add("github.token", c.GitHub.Token)
	add("linear.webhook_secrets", c.Linear.WebhookSecrets...)
	add("linear.api_key", c.Linear.APIKey)
	add("slack.signing_secrets", c.Slack.SigningSecrets...)
	add("slack.bot_token", c.Slack.BotToken)
	add("models.anthropic.api_key", c.Models.Anthropic.APIKey)
	add("models.openai.api_key", c.Models.OpenAI.APIKey)
	add("identity.twilio_auth_token", c.Identity.TwilioAuthToken)
	add("identity.ravi.key", c.Identity.Ravi.Key)
	return append(out, c.forgeSecrets()...)
}

// AgentEnv returns the environment configured for agent name
// (agents.<name>.env) with its references resolved for one task:
// ${vault:NAME} and ${ravi:NAME} through r, which must read only the
// scopes granted to that task (the vault's TaskResolver), never the
// server's own secrets; ${env:NAME} from env and ${file:PATH} from disk, as
// everywhere else. Text that is not such a reference (a shell ${HOME}, say)
// is kept as it is. An error names the variable, never a value, and wraps
// the resolver's error, which names the secret.
func (c *Config) AgentEnv(ctx context.Context, name string, env map[string]string, r Resolver) (map[string]string, error) {
	ag, ok := c.AgentFor(name)
	if !ok || len(ag.Env) == 0 {
		return nil, nil
	}
	keys := make([]string, 0, len(ag.Env))
	for k := range ag.Env {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	out := make(map[string]string, len(ag.Env))
	for _, k := range keys {
		v, err := expandRefs(ctx, ag.Env[k], env, r, true)
		if err != nil {
			return nil, fmt.Errorf("config: agents.%s.env.%s: %w", name, k, err)
		}
		out[k] = v
	}
	return out, nil
}

// knownRefKind reports whether kind is a reference kind Nightshift resolves.
func knownRefKind(kind string) bool {
	switch kind {
	case "vault", "ravi", "env", "file":
		return true
	}
	return false
}

// checkEnvRefs reports a vault, ravi, env or file reference without a name
// in an agent env value.
func checkEnvRefs(s string) error {
	for _, m := range refRe.FindAllStringSubmatch(s, -1) {
		if knownRefKind(m[1]) && strings.TrimSpace(m[2]) == "" {
			return fmt.Errorf("empty reference ${%s:}", m[1])
		}
	}
	return nil
}
