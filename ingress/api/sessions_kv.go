package api

import (
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"time"

	"github.com/nats-io/nats.go/jetstream"
)

// Buckets of the JetStream session store.
const (
	// SessionsBucket holds sessions, keyed by the SHA-256 of their id; its
	// entries expire with the session TTL.
	SessionsBucket = "nightshift_sessions"
	// SessionKeysBucket holds the cookie signing key, without expiry.
	SessionKeysBucket = "nightshift_session_keys"
)

// KVSessionStore keeps sessions in a JetStream key-value bucket: they
// survive restarts and every ingress process on the same NATS sees them.
// Keys are hashes of the session ids, so the bucket never holds a usable
// cookie value.
type KVSessionStore struct {
	kv  jetstream.KeyValue
	now func() time.Time
}

var _ SessionStore = (*KVSessionStore)(nil)

// NewKVSessionStore creates (or opens) the session buckets and returns the
// store and the cookie signing key, created once and shared by every
// process. ttl is the session lifetime (Config.SessionTTL; default 12h);
// now may be nil (time.Now).
func NewKVSessionStore(ctx context.Context, js jetstream.JetStream, ttl time.Duration, now func() time.Time) (*KVSessionStore, []byte, error) {
	if ttl <= 0 {
		ttl = 12 * time.Hour
	}
	if now == nil {
		now = time.Now
	}
	kv, err := js.CreateOrUpdateKeyValue(ctx, jetstream.KeyValueConfig{Bucket: SessionsBucket, TTL: ttl,
		Storage: jetstream.FileStorage, Description: "board login sessions"})
	if err != nil {
		return nil, nil, fmt.Errorf("create bucket %s: %w", SessionsBucket, err)
	}
	keys, err := js.CreateOrUpdateKeyValue(ctx, jetstream.KeyValueConfig{Bucket: SessionKeysBucket,
		Storage: jetstream.FileStorage, Description: "board session cookie signing key"})
	if err != nil {
		return nil, nil, fmt.Errorf("create bucket %s: %w", SessionKeysBucket, err)
	}
	key, err := signingKey(ctx, keys)
	if err != nil {
		return nil, nil, err
	}
	return &KVSessionStore{kv: kv, now: now}, key, nil
}

// signingKey returns the stored key, creating it if no process has yet.
func signingKey(ctx context.Context, kv jetstream.KeyValue) ([]byte, error) {
	fresh := make([]byte, 32)
	if _, err := rand.Read(fresh); err != nil {
		return nil, err
	}
	_, err := kv.Create(ctx, "cookie", fresh)
	if err == nil {
		return fresh, nil
	}
	if !errors.Is(err, jetstream.ErrKeyExists) {
		return nil, fmt.Errorf("store session signing key: %w", err)
	}
	e, err := kv.Get(ctx, "cookie")
	if err != nil {
		return nil, fmt.Errorf("read session signing key: %w", err)
	}
	return e.Value(), nil
}

func sessionKey(id string) string {
	sum := sha256.Sum256([]byte(id))
	return hex.EncodeToString(sum[:])
}

type storedSession struct {
	CSRF      string    `json:"csrf"`
	Principal Principal `json:"principal"`
	CreatedAt time.Time `json:"created_at"`
	ExpiresAt time.Time `json:"expires_at"`
}

// Save stores s.
func (k *KVSessionStore) Save(ctx context.Context, s Session) error {
	b, err := json.Marshal(storedSession{CSRF: s.CSRF, Principal: s.Principal, CreatedAt: s.CreatedAt, ExpiresAt: s.ExpiresAt})
	if err != nil {
		return err
	}
	_, err = k.kv.Put(ctx, sessionKey(s.ID), b)
	return err
}

// Load returns the session with id.
func (k *KVSessionStore) Load(ctx context.Context, id string) (Session, error) {
	e, err := k.kv.Get(ctx, sessionKey(id))
	if errors.Is(err, jetstream.ErrKeyNotFound) {
		return Session{}, ErrNoSession
	}
	if err != nil {
		return Session{}, err
	}
	var st storedSession
	if err := json.Unmarshal(e.Value(), &st); err != nil {
		return Session{}, ErrNoSession
	}
	if k.now().After(st.ExpiresAt) {
		return Session{}, ErrNoSession
	}
	return Session{ID: id, CSRF: st.CSRF, Principal: st.Principal, CreatedAt: st.CreatedAt, ExpiresAt: st.ExpiresAt}, nil
}

// Delete forgets the session with id.
func (k *KVSessionStore) Delete(ctx context.Context, id string) error {
	err := k.kv.Purge(ctx, sessionKey(id))
	if errors.Is(err, jetstream.ErrKeyNotFound) {
		return nil
	}
	return err
}
