// Package vault owns Nightshift's encrypted secrets: values handed to tasks
// (API keys, tokens), OAuth connections (GitHub, Linear, Slack) refreshed
// before expiry, and the values behind ${vault:NAME} and ${ravi:NAME}
// configuration references.
//
// Storage is SQLite, in tables prefixed vault_ that this package migrates
// itself, on a *sql.DB the caller opens and shares with the rest of the
// server. Nothing is stored in clear except names, scopes, version numbers,
// timestamps and audit metadata.
//
// # Encryption
//
// Envelope encryption with three layers:
//
//   - a 32-byte root key from a KeySource (a key file, a passphrase through
//     Argon2id, or an environment value for development); it is never stored
//     in the database, which holds only a sealed check value to recognise it;
//   - key-encryption keys (KEKs), stored sealed by the root key; RotateKEK
//     adds a new one, re-wraps every data key under it and deletes the old;
//   - a fresh data key per secret version, stored sealed by the current KEK.
//
// Every seal is XChaCha20-Poly1305 with a random 24-byte nonce and the
// record's identity (name, scope, version, KEK id) as associated data, so a
// ciphertext or wrapped key copied to another record fails to open with an
// *IntegrityError instead of yielding another secret's value. A root key
// that does not match the vault fails Open with ErrWrongKey. Writes run with
// PRAGMA secure_delete=ON so destroyed versions are zeroed in the file.
//
// # Versions and scopes
//
// Set adds a version; old versions stay readable until destroyed. Scopes are
// "global", "repo:<name-or-glob>", "agent:<name>" and "task:<id>"; Lookup
// resolves a name for a task most specific first: task, agent, repo (exact
// name before globs, fewer wildcards first), global. Names follow Ravi's
// rule: ^[A-Z][A-Z0-9_]*$.
//
// # Audit
//
// Every read and write (including failed ones) appends an audit entry in the
// same transaction, so a value is never returned without its read recorded.
// Entries form an HMAC-SHA256 chain keyed by an audit key sealed under the
// root key; the chain head is kept in vault_meta. VerifyAudit reports an
// edited row, a deleted row, or deleted rows at the tail, even when the
// editor recomputes plain hashes.
//
// Redaction of secret values in task output lives in vault/redact;
// NewRedactor is re-exported here.
package vault
