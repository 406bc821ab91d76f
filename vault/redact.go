package vault

import "github.com/nightshift/nightshift/vault/redact"

// Redactor removes secret values, raw or encoded, from text; see package
// vault/redact.
type Redactor = redact.Redactor

// NewRedactor returns a Redactor for secrets (name -> value). Values shorter
// than redact.MinLen bytes are not matched.
func NewRedactor(secrets map[string]string) *Redactor { return redact.New(secrets) }
