package identity

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"math/rand/v2"
	"sort"
	"strings"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/nightshift/nightshift/identity/internal/kvrec"
	"github.com/nightshift/nightshift/vault/natsstore"
)

// Bucket is the key-value bucket that holds identities and token records
// when they are shared by every host (NewKVService).
const Bucket = "NIGHTSHIFT_IDENTITIES"

// Keys in Bucket:
//
//	id.<identity id>   the identity (kvIdentity), or a tombstone: an id
//	                   whose address was taken over because it had no
//	                   record; it can never be stored
//	task.<hash>        the live identity of a task (created once: of two
//	                   hosts creating a task's identity, one wins)
//	name.<name>        the identity last given a name
//	tok.<hash>         a token record (only the token's SHA-256 is stored)
//	gen.<hash>         a task's token generation: RevokeTaskTokens bumps it,
//	                   and a token issued under an older one is refused
type kvIdentity struct {
	Identity
	ProviderRef string `json:"provider_ref,omitempty"`
	// TokenGen is bumped to revoke every token issued to the identity.
	TokenGen int `json:"token_gen,omitempty"`
	// DisplacedAt marks a tombstone (see Service.create): the record holds
	// nothing else.
	DisplacedAt *time.Time `json:"displaced_at,omitempty"`
}

type kvToken struct {
	IdentityID  string    `json:"identity_id"`
	IdentityGen int       `json:"identity_gen,omitempty"`
	TaskID      string    `json:"task_id,omitempty"`
	TaskGen     int       `json:"task_gen,omitempty"`
	Repo        string    `json:"repo,omitempty"`
	Agent       string    `json:"agent,omitempty"`
	CreatedAt   time.Time `json:"created_at"`
	ExpiresAt   time.Time `json:"expires_at"`
	Revoked     bool      `json:"revoked,omitempty"`
}

type kvGen struct {
	Gen int `json:"gen"`
}

// KVConfig says where NewKVService keeps its records.
type KVConfig struct {
	// Replicas of the bucket; 0 means 1. Use the cluster's nats.replicas.
	Replicas int
}

// NewKVService returns a Service whose identities and tokens live in the
// replicated bucket Bucket (created when missing), shared by every role on
// every host: an identity created by a worker is listed by the API on
// another host, and a token revoked anywhere is refused everywhere from the
// moment the revocation is stored (token checks read the stream leader,
// never a cached or follower copy).
func NewKVService(ctx context.Context, js jetstream.JetStream, p Provider, kc KVConfig, cfg Config) (*Service, error) {
	cfg = cfg.withDefaults()
	if err := cfg.validate(); err != nil {
		return nil, err
	}
	if js == nil || p == nil {
		return nil, errors.New("identity: NewKVService needs a JetStream and a provider")
	}
	kv, err := natsstore.LeaderBucket(ctx, js, jetstream.KeyValueConfig{Bucket: Bucket, History: 1, Storage: jetstream.FileStorage,
		Replicas: max(kc.Replicas, 1), Description: "nightshift identities and agent tokens"})
	if err != nil {
		return nil, fmt.Errorf("identity: %w", err)
	}
	return &Service{kv: kv, p: p, cfg: cfg, log: cfg.Logger.With("component", "identity", "provider", p.Name()), claimWait: defaultClaimWait}, nil
}

func hashKey(prefix, s string) string {
	sum := sha256.Sum256([]byte(s))
	return prefix + "." + hex.EncodeToString(sum[:16])
}

var errUnchanged = errors.New("unchanged")

// kvUpdate is the revision-checked read-decide-write loop of one key.
func kvUpdate[T any](ctx context.Context, kv jetstream.KeyValue, key string, fn func(v *T, exists bool) error) error {
	for attempt := 0; ; attempt++ {
		var v T
		rev, err := kvrec.Get(ctx, kv, key, &v)
		if err != nil {
			return err
		}
		if err := fn(&v, rev != 0); errors.Is(err, errUnchanged) {
			return nil
		} else if err != nil {
			return err
		}
		ok, err := kvrec.Write(ctx, kv, key, v, rev)
		if ok || err != nil {
			return err
		}
		if attempt >= 100 {
			return fmt.Errorf("write %s: too many concurrent writers", key)
		}
		time.Sleep(time.Duration(rand.IntN(2+attempt)) * time.Millisecond)
	}
}

func (s *Service) kvIdentity(ctx context.Context, id string) (kvIdentity, bool, error) {
	if id == "" || strings.ContainsAny(id, ".*> \t") {
		return kvIdentity{}, false, nil
	}
	var rec kvIdentity
	rev, err := kvrec.Get(ctx, s.kv, "id."+id, &rec)
	if err != nil {
		return rec, false, fmt.Errorf("identity: get %s: %w", id, err)
	}
	rec.Identity.ref = rec.ProviderRef
	return rec, rev != 0 && rec.DisplacedAt == nil, nil
}

func (s *Service) kvOwnerState(ctx context.Context, id string) (idState, Identity, error) {
	if id == "" || strings.ContainsAny(id, ".*> \t") {
		return stateLive, Identity{}, nil // not a key we can tombstone: never displace it
	}
	rec, ok, err := s.kvIdentity(ctx, id)
	switch {
	case err != nil:
		return 0, Identity{}, err
	case ok && rec.Live():
		return stateLive, rec.Identity, nil
	case ok || rec.DisplacedAt != nil: // released, or tombstoned
		return stateDead, Identity{}, nil
	}
	return stateAbsent, Identity{}, nil
}

// kvTombstone creates id's tombstone unless a record (or tombstone) of it
// exists: kvStore's create of the record then fails.
func (s *Service) kvTombstone(ctx context.Context, id string, at time.Time) error {
	if _, err := kvrec.Write(ctx, s.kv, "id."+id, kvIdentity{DisplacedAt: &at}, 0); err != nil {
		return fmt.Errorf("identity: tombstone %s: %w", id, err)
	}
	return nil
}

func (s *Service) kvLiveForTask(ctx context.Context, taskID string) (Identity, error) {
	var owner string
	rev, err := kvrec.Get(ctx, s.kv, hashKey("task", taskID), &owner)
	if err != nil {
		return Identity{}, fmt.Errorf("identity: look up task %s: %w", taskID, err)
	}
	if rev == 0 || owner == "" {
		return Identity{}, ErrNotFound
	}
	rec, ok, err := s.kvIdentity(ctx, owner)
	if err != nil {
		return Identity{}, err
	}
	if !ok || !rec.Live() || rec.TaskID != taskID {
		return Identity{}, ErrNotFound
	}
	return rec.Identity, nil
}

// kvNameHolder returns the live identity named name, if any.
func (s *Service) kvNameHolder(ctx context.Context, name string) (Identity, bool, error) {
	var owner string
	rev, err := kvrec.Get(ctx, s.kv, "name."+name, &owner)
	if err != nil || rev == 0 {
		return Identity{}, false, err
	}
	rec, ok, err := s.kvIdentity(ctx, owner)
	if err != nil || !ok || !rec.Live() {
		return Identity{}, false, err
	}
	return rec.Identity, true, nil
}

// kvStore records a provisioned identity and, for a task, claims the task
// for it; when another host claimed the task first it returns that
// identity and ok=false.
func (s *Service) kvStore(ctx context.Context, ident Identity) (Identity, bool, error) {
	if err := s.kvStoreRecord(ctx, ident); err != nil {
		return Identity{}, false, err
	}
	if ident.TaskID == "" {
		return ident, true, nil
	}
	return s.kvClaimTask(ctx, ident)
}

// kvStoreRecord stores ident's record and points its name at it.
func (s *Service) kvStoreRecord(ctx context.Context, ident Identity) error {
	rec := kvIdentity{Identity: ident, ProviderRef: ident.ref}
	if ok, err := kvrec.Write(ctx, s.kv, "id."+ident.ID, rec, 0); err != nil {
		return fmt.Errorf("identity: store %s: %w", ident.Name, err)
	} else if !ok {
		// Ids are random: the record there is ours (written by an
		// earlier attempt) or the tombstone another host wrote when it
		// judged this identity dead.
		var have kvIdentity
		if _, err := kvrec.Get(ctx, s.kv, "id."+ident.ID, &have); err != nil {
			return fmt.Errorf("identity: store %s: %w", ident.Name, err)
		}
		if have.DisplacedAt != nil {
			return errDisplaced
		}
	}
	if _, err := s.kv.Put(ctx, "name."+ident.Name, mustJSON(ident.ID)); err != nil {
		return fmt.Errorf("identity: store %s: %w", ident.Name, err)
	}
	return nil
}

// kvClaimTask makes ident (stored) its task's identity unless another
// live identity is; then it returns that one and ok=false.
func (s *Service) kvClaimTask(ctx context.Context, ident Identity) (Identity, bool, error) {
	key := hashKey("task", ident.TaskID)
	for {
		var owner string
		rev, err := kvrec.Get(ctx, s.kv, key, &owner)
		if err != nil {
			return Identity{}, false, err
		}
		if rev != 0 && owner == ident.ID {
			return ident, true, nil
		}
		if rev != 0 && owner != "" {
			other, ok, err := s.kvIdentity(ctx, owner)
			if err != nil {
				return Identity{}, false, err
			}
			if ok && other.Live() {
				return other.Identity, false, nil
			}
		}
		ok, err := kvrec.Write(ctx, s.kv, key, ident.ID, rev)
		if err != nil {
			return Identity{}, false, err
		}
		if ok {
			return ident, true, nil
		}
	}
}

func mustJSON(v any) []byte {
	b, _ := json.Marshal(v)
	return b
}

// kvRevokeIdentity bumps the identity's token generation: every token
// issued to it so far is refused from now on.
func (s *Service) kvRevokeIdentity(ctx context.Context, id string) error {
	return kvUpdate(ctx, s.kv, "id."+id, func(rec *kvIdentity, exists bool) error {
		if !exists || rec.DisplacedAt != nil {
			return errUnchanged
		}
		rec.TokenGen++
		return nil
	})
}

func (s *Service) kvMarkReleased(ctx context.Context, id Identity, at time.Time) error {
	err := kvUpdate(ctx, s.kv, "id."+id.ID, func(rec *kvIdentity, exists bool) error {
		if !exists || rec.ReleasedAt != nil || rec.DisplacedAt != nil {
			return errUnchanged
		}
		rec.ReleasedAt = &at
		rec.TokenGen++
		return nil
	})
	if err != nil || id.TaskID == "" {
		return err
	}
	// Free the task's claim (only if it is still ours).
	return kvUpdate(ctx, s.kv, hashKey("task", id.TaskID), func(owner *string, exists bool) error {
		if !exists || *owner != id.ID {
			return errUnchanged
		}
		*owner = ""
		return nil
	})
}

func (s *Service) kvList(ctx context.Context, opt ListOptions) ([]Identity, error) {
	// One watcher delivers every identity's current record, then nil: a
	// single consumer instead of one read per identity.
	w, err := s.kv.WatchFiltered(ctx, []string{"id.>"}, jetstream.IgnoreDeletes())
	if err != nil {
		return nil, fmt.Errorf("identity: list: %w", err)
	}
	defer w.Stop()
	var out []Identity
	for {
		var e jetstream.KeyValueEntry
		select {
		case e = <-w.Updates():
		case <-ctx.Done():
			return nil, fmt.Errorf("identity: list: %w", ctx.Err())
		}
		if e == nil {
			break
		}
		var rec kvIdentity
		if err := json.Unmarshal(e.Value(), &rec); err != nil {
			return nil, fmt.Errorf("identity: list: decode %s: %w", e.Key(), err)
		}
		rec.Identity.ref = rec.ProviderRef
		if rec.DisplacedAt != nil {
			continue
		}
		if opt.IncludeReleased || rec.Live() {
			out = append(out, rec.Identity)
		}
	}
	sort.Slice(out, func(i, j int) bool {
		if !out[i].CreatedAt.Equal(out[j].CreatedAt) {
			return out[i].CreatedAt.After(out[j].CreatedAt)
		}
		return out[i].ID > out[j].ID
	})
	if len(out) > opt.Limit {
		out = out[:opt.Limit]
	}
	return out, nil
}

func (s *Service) kvTaskGen(ctx context.Context, taskID string) (int, error) {
	if taskID == "" {
		return 0, nil
	}
	var g kvGen
	if _, err := kvrec.Get(ctx, s.kv, hashKey("gen", taskID), &g); err != nil {
		return 0, err
	}
	return g.Gen, nil
}

func (s *Service) kvIssue(ctx context.Context, hash string, id Identity, scope Scope, now time.Time, ttl time.Duration) error {
	rec, ok, err := s.kvIdentity(ctx, id.ID)
	if err != nil {
		return err
	}
	if !ok {
		return fmt.Errorf("%w: %s", ErrNotFound, id.ID)
	}
	gen, err := s.kvTaskGen(ctx, scope.TaskID)
	if err != nil {
		return err
	}
	tok := kvToken{IdentityID: id.ID, IdentityGen: rec.TokenGen, TaskID: scope.TaskID, TaskGen: gen, Repo: scope.Repo, Agent: scope.Agent,
		CreatedAt: now, ExpiresAt: now.Add(ttl)}
	ok, err = kvrec.Write(ctx, s.kv, "tok."+hash, tok, 0)
	if err == nil && !ok {
		err = errors.New("token collision")
	}
	return err
}

func (s *Service) kvRevokeToken(ctx context.Context, hash string) error {
	return kvUpdate(ctx, s.kv, "tok."+hash, func(t *kvToken, exists bool) error {
		if !exists || t.Revoked {
			return errUnchanged
		}
		t.Revoked = true
		return nil
	})
}

// kvRevokeTask bumps the task's generation (tokens scoped to it) and its
// live identity's (tokens issued to that identity).
func (s *Service) kvRevokeTask(ctx context.Context, taskID string) error {
	err := kvUpdate(ctx, s.kv, hashKey("gen", taskID), func(g *kvGen, _ bool) error {
		g.Gen++
		return nil
	})
	if err != nil {
		return err
	}
	id, err := s.kvLiveForTask(ctx, taskID)
	if errors.Is(err, ErrNotFound) {
		return nil
	}
	if err != nil {
		return err
	}
	return s.kvRevokeIdentity(ctx, id.ID)
}

// kvAuthenticate checks a token against its record, its identity's
// generation and its task's generation, all read from the leader.
func (s *Service) kvAuthenticate(ctx context.Context, hash string, now time.Time) (Identity, Scope, error) {
	var t kvToken
	rev, err := kvrec.Get(ctx, s.kv, "tok."+hash, &t)
	if err != nil {
		return Identity{}, Scope{}, fmt.Errorf("identity: authenticate: %w", err)
	}
	if rev == 0 || t.Revoked || !now.Before(t.ExpiresAt) {
		return Identity{}, Scope{}, ErrUnauthorized
	}
	rec, ok, err := s.kvIdentity(ctx, t.IdentityID)
	if err != nil {
		return Identity{}, Scope{}, err
	}
	if !ok || !rec.Live() || rec.TokenGen != t.IdentityGen {
		return Identity{}, Scope{}, ErrUnauthorized
	}
	gen, err := s.kvTaskGen(ctx, t.TaskID)
	if err != nil {
		return Identity{}, Scope{}, fmt.Errorf("identity: authenticate: %w", err)
	}
	if gen != t.TaskGen {
		return Identity{}, Scope{}, ErrUnauthorized
	}
	return rec.Identity, Scope{TaskID: t.TaskID, Repo: t.Repo, Agent: t.Agent}, nil
}
