// Package vault owns Nightshift's encrypted secrets: values handed to tasks
// (API keys, tokens), OAuth connections (GitHub, Linear, Slack) refreshed
// before expiry, and the values behind ${vault:NAME} and ${ravi:NAME}
// configuration references.
//
// Storage is a Store driver holding sealed records only: SQLite (tables
// prefixed vault_ that this package migrates itself, on a *sql.DB the caller
// shares with the rest of the server; Open) for one process and the vault
// CLI beside it, or a replicated JetStream bucket and stream
// (vault/natsstore; OpenStore) when the roles run on several hosts. Every
// change is one revision-checked update of one record, so writers on
// several hosts never lose each other's versions. Migrate copies a SQLite
// vault into another store once, idempotently. Nothing is stored in clear
// except names, scopes, version numbers, timestamps and audit metadata; the
// root key never reaches a Store.
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
// Set adds a version; old versions stay readable until destroyed. Names
// follow Ravi's rule: ^[A-Z][A-Z0-9_]*$. A scope says who may read:
//
//   - "server" (the default of nightshift vault set): the server alone,
//     for the values behind ${vault:NAME} in its configuration (model API
//     keys, forge tokens, API tokens, webhook secrets). Get and Resolve
//     read it; it is never served to an agent.
//   - "agents": every agent.
//   - "repo:<name-or-glob>": tasks on matching repositories (the globs of
//     repos[].match).
//   - "agent:<name>": tasks run by that configured agent.
//   - "task:<id>": one task.
//
// Lookup, LookupAll and TaskResolver are the reads made on behalf of a task
// (MCP get_secret, ravi secrets get, ${vault:NAME} in an agent's env): they
// refuse the server scope outright and resolve a name most specific first,
// task, agent, repo (exact name before globs, fewer wildcards first),
// agents; a server-only secret is ErrNotFound, like a missing one.
//
// Before these scopes there was one shared scope, "global", read by the
// server and every task alike. "global" is now an alias of "server": Set
// stores it as "server", and rows stored as "global" stay as they are (their
// seals name that scope) and are read, listed and destroyed as server
// secrets, so an upgrade takes those secrets away from agents.
//
// # Audit
//
// Every read and write (including failed ones) appends an audit entry, and
// a value is returned only after its read is recorded (a write whose entry
// cannot be appended is reported as failed, though its version stays).
// Entries form an HMAC-SHA256 chain keyed by an audit key sealed under the
// root key; each is appended at the head the writer saw or not at all, so
// writers on several hosts never fork it. VerifyAudit reports an edited
// row, a deleted row, or deleted rows at the tail, even when the editor
// recomputes plain hashes.
//
// Redaction of secret values in task output lives in vault/redact;
// NewRedactor is re-exported here.
package vault
