package vault

import (
	"encoding/json"
	"fmt"

	"github.com/nightshift/nightshift/vault/redact"
)

// Redactor removes secret values, raw or encoded, from text; see package
// vault/redact.
type Redactor = redact.Redactor

// NewRedactor returns a Redactor for secrets (name -> value). Values shorter
// than redact.MinLen bytes are not matched.
func NewRedactor(secrets map[string]string) *Redactor { return redact.New(secrets) }

// RedactorFor returns a Redactor for secrets as LookupAll returns them. An
// OAuth token record (see Token) contributes its access and refresh tokens
// too, as NAME_ACCESS_TOKEN and NAME_REFRESH_TOKEN, since those, not the
// JSON record, are what a task prints.
func RedactorFor(secrets map[string]Secret) *Redactor { return redact.New(RedactionValues(secrets)) }

// RedactionValues returns the name -> value map a Redactor is built from
// for several sets of secrets as LookupAll and ServerSecrets return them
// (a task's grants and the server's own), with an OAuth token record's
// access and refresh tokens added as RedactorFor does. A name already
// taken by another value is kept as "NAME (scope)".
func RedactionValues(sets ...map[string]Secret) map[string]string {
	m := map[string]string{}
	add := func(name, scope, value string) {
		key := name
		for i := 1; ; i++ {
			old, taken := m[key]
			if !taken || old == value {
				break
			}
			key = fmt.Sprintf("%s (%s)", name, scope)
			if i > 1 {
				key = fmt.Sprintf("%s (%s %d)", name, scope, i)
			}
		}
		m[key] = value
	}
	for _, secrets := range sets {
		for name, s := range secrets {
			add(name, s.Scope, string(s.Value))
			var t Token
			if json.Unmarshal(s.Value, &t) == nil && t.AccessToken != "" && t.Provider != "" {
				add(name+"_ACCESS_TOKEN", s.Scope, t.AccessToken)
				if t.RefreshToken != "" {
					add(name+"_REFRESH_TOKEN", s.Scope, t.RefreshToken)
				}
			}
		}
	}
	return m
}
