// Package identity gives every task a fresh agent identity: a name that is
// also its git author, an email address and, when the provider has one, a
// phone number for one-time codes. Identities come from a Provider (the
// built-in local provider in identity/local, or Ravi in identity/ravi);
// the Service records them — in one process's SQLite (tables prefixed
// identity_; NewService), or in the replicated JetStream bucket every host
// shares (NewKVService), where a revision-checked write decides each race
// and token checks read the stream leader — issues
// task-scoped bearer tokens stored only as SHA-256 hashes (every token
// expires, and can be revoked on its own), and extracts
// one-time codes from the messages an identity receives.
//
// Guarantees: ForTask and Release are idempotent; a task has at most one
// live identity, named agent-<first 8 characters of the task id,
// lowercased>; releasing an identity revokes its tokens and returns its
// provider resources (phone lease, remote identity). Waiting for a message
// wakes as soon as the provider is notified of one; nothing polls locally.
package identity
