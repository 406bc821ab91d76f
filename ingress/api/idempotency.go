package api

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/nats-io/nats.go/jetstream"
)

// IdempotencyBucket holds, for every Idempotency-Key POST /api/v1/tasks
// has seen, the SHA-256 of the normalized request body. Entries do not
// expire: a key names one task for good, as the store's idempotency key
// does.
const IdempotencyBucket = "nightshift_idempotency"

// errKeyReused is claimKey's answer for a key first used with another body.
var errKeyReused = errors.New("api: idempotency key reused with a different body")

// idempotency remembers which request body each Idempotency-Key came with,
// in a JetStream bucket every ingress process on the same NATS shares.
type idempotency struct {
	js jetstream.JetStream
	mu sync.Mutex
	kv jetstream.KeyValue // opened on first use
}

func (i *idempotency) bucket(ctx context.Context) (jetstream.KeyValue, error) {
	i.mu.Lock()
	defer i.mu.Unlock()
	if i.kv != nil {
		return i.kv, nil
	}
	kv, err := i.js.CreateOrUpdateKeyValue(ctx, jetstream.KeyValueConfig{Bucket: IdempotencyBucket,
		Storage: jetstream.FileStorage, Description: "request body hash per Idempotency-Key"})
	if err != nil {
		return nil, fmt.Errorf("create bucket %s: %w", IdempotencyBucket, err)
	}
	i.kv = kv
	return kv, nil
}

// bodyHash is the SHA-256 of req normalized: decoded, trimmed as
// createTask trims it, and encoded again, so whitespace, key order and
// surrounding blanks in values do not make two requests differ.
func bodyHash(req CreateRequest) string {
	b, _ := json.Marshal(req)
	sum := sha256.Sum256(b)
	return hex.EncodeToString(sum[:])
}

// claim records that key came with a body hashing to sum. It returns
// errKeyReused when the key was first used with another body; the same
// body again is fine (a retry). release undoes a claim whose request could
// not be stored, so a retry with a corrected body is not refused.
func (i *idempotency) claim(ctx context.Context, key, sum string) (release func(), err error) {
	kv, err := i.bucket(ctx)
	if err != nil {
		return nil, err
	}
	// Bucket keys allow a restricted alphabet; the header allows more.
	h := sha256.Sum256([]byte(key))
	k := hex.EncodeToString(h[:])
	rev, err := kv.Create(ctx, k, []byte(sum))
	if err == nil {
		return func() {
			ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 5*time.Second)
			defer cancel()
			_ = kv.Delete(ctx, k, jetstream.LastRevision(rev))
		}, nil
	}
	if !errors.Is(err, jetstream.ErrKeyExists) {
		return nil, fmt.Errorf("store idempotency key: %w", err)
	}
	e, err := kv.Get(ctx, k)
	if err != nil {
		return nil, fmt.Errorf("read idempotency key: %w", err)
	}
	if string(e.Value()) != sum {
		return nil, errKeyReused
	}
	return func() {}, nil
}
