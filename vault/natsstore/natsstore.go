// Package natsstore is the vault's JetStream storage driver: the sealed
// records every role on every host shares on a NATS cluster. The keyring
// and one record per secret name live in the key-value bucket
// NIGHTSHIFT_VAULT (history 1, so a destroyed version's sealed bytes are
// dropped with the revision that held them); the audit chain lives in the
// stream NIGHTSHIFT_VAULT_AUDIT, which refuses deletes and purges. Both are
// replicated (Config.Replicas) and read from the stream leader, never a
// follower's direct copy, so a value written on one host is what the next
// read on any other host sees.
//
// Guarantees: every record update is revision-checked (kv Update with the
// revision read); every audit row is published with the stream's expected
// last sequence, so two writers on two hosts cannot fork the chain. Only
// sealed bytes travel: the root key that opens them stays with each host's
// operator (see vault.KeySource).
package natsstore

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"math/rand/v2"
	"sort"
	"strings"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/nightshift/nightshift/vault"
)

// Names of the bucket and stream.
const (
	Bucket       = "NIGHTSHIFT_VAULT"
	AuditStream  = "NIGHTSHIFT_VAULT_AUDIT"
	AuditSubject = "nightshift.vault.audit"
	keyringKey   = "keyring"
	secretPrefix = "s."
)

// Config configures the driver.
type Config struct {
	// Replicas of the bucket and the audit stream; 0 means 1. Use the
	// cluster's nats.replicas.
	Replicas int
}

// Store is the JetStream vault.Store.
type Store struct {
	js    jetstream.JetStream
	kv    jetstream.KeyValue
	audit jetstream.Stream
}

var _ vault.Store = (*Store)(nil)

// New creates (or opens) the bucket and the audit stream and returns the
// driver. Existing ones are used as configured.
func New(ctx context.Context, js jetstream.JetStream, cfg Config) (*Store, error) {
	if js == nil {
		return nil, errors.New("natsstore: nil JetStream")
	}
	if cfg.Replicas <= 0 {
		cfg.Replicas = 1
	}
	kv, err := LeaderBucket(ctx, js, jetstream.KeyValueConfig{Bucket: Bucket, History: 1, MaxValueSize: 8 << 20,
		Storage: jetstream.FileStorage, Replicas: cfg.Replicas, Description: "nightshift vault: sealed records"})
	if err != nil {
		return nil, err
	}
	st, err := js.Stream(ctx, AuditStream)
	if errors.Is(err, jetstream.ErrStreamNotFound) {
		st, err = js.CreateStream(ctx, jetstream.StreamConfig{Name: AuditStream, Subjects: []string{AuditSubject},
			Storage: jetstream.FileStorage, Replicas: cfg.Replicas, DenyDelete: true, DenyPurge: true,
			Description: "nightshift vault: hash-chained audit log"})
		if errors.Is(err, jetstream.ErrStreamNameAlreadyInUse) {
			st, err = js.Stream(ctx, AuditStream)
		}
	}
	if err != nil {
		return nil, fmt.Errorf("natsstore: audit stream: %w", err)
	}
	return &Store{js: js, kv: kv, audit: st}, nil
}

// LeaderBucket creates (or opens) a key-value bucket whose reads go to the
// stream leader: direct gets, which any replica may answer from a copy
// that lags, are turned off.
func LeaderBucket(ctx context.Context, js jetstream.JetStream, cfg jetstream.KeyValueConfig) (jetstream.KeyValue, error) {
	_, err := js.KeyValue(ctx, cfg.Bucket)
	if errors.Is(err, jetstream.ErrBucketNotFound) {
		_, err = js.CreateKeyValue(ctx, cfg)
		if errors.Is(err, jetstream.ErrBucketExists) || errors.Is(err, jetstream.ErrStreamNameAlreadyInUse) {
			err = nil
		}
	}
	if err != nil {
		return nil, fmt.Errorf("bucket %s: %w", cfg.Bucket, err)
	}
	st, err := js.Stream(ctx, "KV_"+cfg.Bucket)
	if err != nil {
		return nil, fmt.Errorf("bucket %s: %w", cfg.Bucket, err)
	}
	// A bucket created with fewer replicas (by a vault command before the
	// servers started, say) is raised to the configured number.
	if info := st.CachedInfo(); info.Config.AllowDirect || info.Config.Replicas < cfg.Replicas {
		sc := info.Config
		sc.AllowDirect = false
		sc.Replicas = max(sc.Replicas, cfg.Replicas)
		if _, err := js.UpdateStream(ctx, sc); err != nil {
			return nil, fmt.Errorf("bucket %s: read from the leader: %w", cfg.Bucket, err)
		}
	}
	kv, err := js.KeyValue(ctx, cfg.Bucket)
	if err != nil {
		return nil, fmt.Errorf("bucket %s: %w", cfg.Bucket, err)
	}
	return kv, nil
}

func (s *Store) get(ctx context.Context, key string, into any) (uint64, error) {
	e, err := s.kv.Get(ctx, key)
	if errors.Is(err, jetstream.ErrKeyNotFound) {
		return 0, nil
	}
	if err != nil {
		return 0, fmt.Errorf("natsstore: read %s: %w", key, err)
	}
	if err := json.Unmarshal(e.Value(), into); err != nil {
		return 0, fmt.Errorf("natsstore: decode %s: %w", key, err)
	}
	return e.Revision(), nil
}

// update is the revision-checked read-decide-write loop of one key.
func update[T any](ctx context.Context, s *Store, key string, fn func(v *T, ok bool) error) error {
	for attempt := 0; ; attempt++ {
		var v T
		rev, err := s.get(ctx, key, &v)
		if err != nil {
			return err
		}
		if err := fn(&v, rev != 0); errors.Is(err, vault.ErrUnchanged) {
			return nil
		} else if err != nil {
			return err
		}
		data, err := json.Marshal(v)
		if err != nil {
			return err
		}
		if rev == 0 {
			_, err = s.kv.Create(ctx, key, data)
		} else {
			_, err = s.kv.Update(ctx, key, data, rev)
		}
		if err == nil {
			return nil
		}
		if !IsConflict(err) || attempt >= 100 {
			return fmt.Errorf("natsstore: write %s: %w", key, err)
		}
		// Another writer won: decide again on what it stored.
		time.Sleep(time.Duration(rand.IntN(2+attempt)) * time.Millisecond)
	}
}

// IsConflict reports whether err is a revision check that failed.
func IsConflict(err error) bool {
	var apiErr *jetstream.APIError
	if errors.As(err, &apiErr) && (apiErr.ErrorCode == jetstream.JSErrCodeStreamWrongLastSequence ||
		apiErr.ErrorCode == jetstream.JSErrCodeStreamWrongLastSequenceConstant) {
		return true
	}
	return errors.Is(err, jetstream.ErrKeyExists)
}

// Keyring implements vault.Store.
func (s *Store) Keyring(ctx context.Context) (vault.Keyring, bool, error) {
	var kr vault.Keyring
	rev, err := s.get(ctx, keyringKey, &kr)
	return kr, rev != 0, err
}

// UpdateKeyring implements vault.Store.
func (s *Store) UpdateKeyring(ctx context.Context, fn func(kr *vault.Keyring, ok bool) error) error {
	return update(ctx, s, keyringKey, fn)
}

// Secret implements vault.Store.
func (s *Store) Secret(ctx context.Context, name string) (vault.SecretRecord, error) {
	rec := vault.SecretRecord{Name: name}
	if err := vault.ValidateName(name); err != nil {
		return rec, err
	}
	_, err := s.get(ctx, secretPrefix+name, &rec)
	rec.Name = name
	return rec, err
}

// UpdateSecret implements vault.Store.
func (s *Store) UpdateSecret(ctx context.Context, name string, fn func(rec *vault.SecretRecord) error) error {
	if err := vault.ValidateName(name); err != nil {
		return err
	}
	return update(ctx, s, secretPrefix+name, func(rec *vault.SecretRecord, _ bool) error {
		rec.Name = name
		return fn(rec)
	})
}

// Names implements vault.Store.
func (s *Store) Names(ctx context.Context) ([]string, error) {
	l, err := s.kv.ListKeysFiltered(ctx, secretPrefix+">")
	if err != nil {
		return nil, fmt.Errorf("natsstore: list secrets: %w", err)
	}
	defer l.Stop()
	var out []string
	for k := range l.Keys() {
		out = append(out, strings.TrimPrefix(k, secretPrefix))
	}
	sort.Strings(out)
	return out, nil
}

// head returns the chain's newest row and its stream sequence (0: empty).
func (s *Store) head(ctx context.Context) (vault.AuditRow, uint64, error) {
	m, err := s.audit.GetLastMsgForSubject(ctx, AuditSubject)
	if errors.Is(err, jetstream.ErrMsgNotFound) {
		return vault.AuditRow{}, 0, nil
	}
	if err != nil {
		return vault.AuditRow{}, 0, fmt.Errorf("natsstore: audit head: %w", err)
	}
	var r vault.AuditRow
	if err := json.Unmarshal(m.Data, &r); err != nil {
		return vault.AuditRow{}, 0, fmt.Errorf("%w: audit row at %d: %v", vault.ErrIntegrity, m.Sequence, err)
	}
	return r, m.Sequence, nil
}

// AppendAudit implements vault.Store: the row is published with the
// sequence of the head it was built on as the expected last sequence.
func (s *Store) AppendAudit(ctx context.Context, fn func(head vault.AuditHead) (vault.AuditRow, error)) error {
	for attempt := 0; ; attempt++ {
		last, seq, err := s.head(ctx)
		if err != nil {
			return err
		}
		h := vault.AuditHead{Seq: last.Seq, Hash: last.Hash}
		if seq == 0 {
			h.Hash = make([]byte, 32)
		}
		row, err := fn(h)
		if err != nil {
			return err
		}
		data, err := json.Marshal(row)
		if err != nil {
			return err
		}
		_, err = s.js.Publish(ctx, AuditSubject, data, jetstream.WithExpectLastSequence(seq), jetstream.WithExpectStream(AuditStream))
		if err == nil {
			return nil
		}
		if !IsConflict(err) || attempt >= 200 {
			return fmt.Errorf("natsstore: append audit: %w", err)
		}
		time.Sleep(time.Duration(rand.IntN(2+attempt/4)) * time.Millisecond)
	}
}

// AuditLog implements vault.Store: the rows up to the head at the call.
func (s *Store) AuditLog(ctx context.Context, fn func(vault.AuditRow) error) (vault.AuditHead, error) {
	last, seq, err := s.head(ctx)
	if err != nil || seq == 0 {
		return vault.AuditHead{Seq: last.Seq, Hash: last.Hash}, err
	}
	info, err := s.audit.Info(ctx)
	if err != nil {
		return vault.AuditHead{}, fmt.Errorf("natsstore: audit log: %w", err)
	}
	head := vault.AuditHead{Seq: last.Seq, Hash: last.Hash}
	if info.State.FirstSeq > seq {
		return head, nil
	}
	cons, err := s.audit.OrderedConsumer(ctx, jetstream.OrderedConsumerConfig{DeliverPolicy: jetstream.DeliverAllPolicy})
	if err != nil {
		return head, fmt.Errorf("natsstore: audit log: %w", err)
	}
	for {
		batch, err := cons.Fetch(256, jetstream.FetchMaxWait(5*time.Second))
		if err != nil {
			return head, fmt.Errorf("natsstore: audit log: %w", err)
		}
		n := 0
		for m := range batch.Messages() {
			n++
			md, err := m.Metadata()
			if err != nil {
				return head, err
			}
			if md.Sequence.Stream > seq {
				return head, nil
			}
			var r vault.AuditRow
			if err := json.Unmarshal(m.Data(), &r); err != nil {
				return head, fmt.Errorf("%w: audit row at %d: %v", vault.ErrIntegrity, md.Sequence.Stream, err)
			}
			if err := fn(r); err != nil {
				return head, err
			}
			if md.Sequence.Stream == seq {
				return head, nil
			}
		}
		if err := batch.Error(); err != nil {
			return head, fmt.Errorf("natsstore: audit log: %w", err)
		}
		if n == 0 {
			return head, fmt.Errorf("natsstore: audit log: stream ended before sequence %d", seq)
		}
	}
}
