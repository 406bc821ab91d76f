package vault

import (
	"encoding/json"

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
func RedactorFor(secrets map[string]Secret) *Redactor {
	m := make(map[string]string, len(secrets))
	for name, s := range secrets {
		m[name] = string(s.Value)
		var t Token
		if json.Unmarshal(s.Value, &t) == nil && t.AccessToken != "" && t.Provider != "" {
			m[name+"_ACCESS_TOKEN"] = t.AccessToken
			if t.RefreshToken != "" {
				m[name+"_REFRESH_TOKEN"] = t.RefreshToken
			}
		}
	}
	return redact.New(m)
}
