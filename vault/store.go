package vault

import (
	"context"
	"errors"
)

// Store is the storage driver under a Vault. It holds sealed records only:
// the keyring (the root check, the audit key and the key-encryption keys,
// each sealed under the root key), one record per secret name with every
// version's sealed data key and ciphertext, and the hash-chained audit log.
// The root key never reaches a Store, so a Store's contents may be copied
// between hosts (a replicated JetStream bucket holds them on a cluster).
//
// Every update is atomic and revision-checked: Update* calls fn with the
// record as stored and stores fn's result only if nobody changed the record
// meanwhile, calling fn again on what the other writer stored. fn returning
// ErrUnchanged stores nothing. AppendAudit appends at the head it showed fn,
// or calls fn again, so two writers can never fork the chain.
//
// Two drivers exist: the SQLite one in this package (NewSQLiteStore; one
// process and the vault CLI beside it) and the JetStream one in
// vault/natsstore (every role on a NATS cluster).
type Store interface {
	// Keyring returns the stored keyring; ok is false for a new vault.
	Keyring(ctx context.Context) (kr Keyring, ok bool, err error)
	// UpdateKeyring stores fn's change to the keyring (ok false: none yet).
	UpdateKeyring(ctx context.Context, fn func(kr *Keyring, ok bool) error) error
	// Secret returns every stored version of name, in every scope; a name
	// never set gives a record without versions.
	Secret(ctx context.Context, name string) (SecretRecord, error)
	// UpdateSecret stores fn's change to name's record.
	UpdateSecret(ctx context.Context, name string, fn func(rec *SecretRecord) error) error
	// Names returns the name of every stored secret record, sorted.
	Names(ctx context.Context) ([]string, error)
	// AppendAudit appends the row fn builds on head, the newest row (zero
	// for an empty log).
	AppendAudit(ctx context.Context, fn func(head AuditHead) (AuditRow, error)) error
	// AuditLog calls fn for every row up to the head, in sequence order, and
	// returns the head: the newest row the log says it has (rows deleted at
	// the tail leave it ahead of the last row).
	AuditLog(ctx context.Context, fn func(AuditRow) error) (AuditHead, error)
}

// ErrUnchanged is returned by an update function to store nothing.
var ErrUnchanged = errors.New("vault: unchanged")

// ErrMoved is returned when opening a SQLite vault whose records were moved
// to another store (a NATS cluster): the vault lives there now.
var ErrMoved = errors.New("vault: this vault was moved to the NATS cluster (nats.url); open it there")

// Keyring is a vault's key material, all sealed under the root key.
type Keyring struct {
	// RootCheck is a known value sealed under the root key, to recognise it.
	RootCheck []byte `json:"root_check"`
	// AuditKey is the audit chain's HMAC key, sealed.
	AuditKey []byte `json:"audit_key"`
	// KEKs are the key-encryption keys, ascending by id; the last is the
	// current one, which seals new data keys.
	KEKs []WrappedKEK `json:"keks"`
}

// WrappedKEK is one key-encryption key sealed under the root key.
type WrappedKEK struct {
	ID        int64  `json:"id"`
	Wrapped   []byte `json:"wrapped"`
	CreatedAt string `json:"created_at"`
}

// Current returns the current KEK; ok is false when there is none.
func (k Keyring) Current() (WrappedKEK, bool) {
	if len(k.KEKs) == 0 {
		return WrappedKEK{}, false
	}
	return k.KEKs[len(k.KEKs)-1], true
}

func (k Keyring) find(id int64) ([]byte, bool) {
	for _, w := range k.KEKs {
		if w.ID == id {
			return w.Wrapped, true
		}
	}
	return nil, false
}

// SecretRecord is every version of one secret name, in every scope.
type SecretRecord struct {
	Name     string          `json:"name"`
	Versions []SealedVersion `json:"versions"`
}

// SealedVersion is one stored version. A destroyed version keeps its
// number and metadata; its KEKID is 0 and its sealed bytes are gone.
type SealedVersion struct {
	// Scope is the scope as stored, which its seals name ("global" for
	// server secrets set before the server scope existed).
	Scope       string `json:"scope"`
	Version     int    `json:"version"`
	KEKID       int64  `json:"kek_id,omitempty"`
	WrappedDEK  []byte `json:"wrapped_dek,omitempty"`
	Ciphertext  []byte `json:"ciphertext,omitempty"`
	CreatedAt   string `json:"created_at"`
	CreatedBy   string `json:"created_by"`
	DestroyedAt string `json:"destroyed_at,omitempty"`
}

// Live reports whether the version has not been destroyed.
func (s SealedVersion) Live() bool { return s.DestroyedAt == "" }

// AuditHead is the newest row of the audit chain.
type AuditHead struct {
	Seq  int64  `json:"seq"`
	Hash []byte `json:"hash"`
}

// AuditRow is one stored audit entry with its chain links.
type AuditRow struct {
	Seq       int64  `json:"seq"`
	At        string `json:"at"`
	ActorKind string `json:"actor_kind"`
	ActorID   string `json:"actor_id"`
	Action    string `json:"action"`
	Name      string `json:"name,omitempty"`
	Scope     string `json:"scope,omitempty"`
	Version   int    `json:"version,omitempty"`
	Outcome   string `json:"outcome"`
	Detail    string `json:"detail,omitempty"`
	PrevHash  []byte `json:"prev_hash"`
	Hash      []byte `json:"hash"`
}
