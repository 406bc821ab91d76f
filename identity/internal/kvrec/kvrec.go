// Package kvrec reads and writes the JSON records of a JetStream key-value
// bucket under revision checks: the shared-records backends of the identity
// Service and the local provider decide every race with them.
package kvrec

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/nightshift/nightshift/vault/natsstore"
)

// Get reads key into v and returns its revision; 0 means absent.
func Get(ctx context.Context, kv jetstream.KeyValue, key string, v any) (uint64, error) {
	e, err := kv.Get(ctx, key)
	if errors.Is(err, jetstream.ErrKeyNotFound) {
		return 0, nil
	}
	if err != nil {
		return 0, err
	}
	if err := json.Unmarshal(e.Value(), v); err != nil {
		return 0, fmt.Errorf("decode %s: %w", key, err)
	}
	return e.Revision(), nil
}

// Write stores v at key if its revision is still rev (0: create); ok false
// means another writer won.
func Write(ctx context.Context, kv jetstream.KeyValue, key string, v any, rev uint64) (bool, error) {
	data, err := json.Marshal(v)
	if err != nil {
		return false, err
	}
	if rev == 0 {
		_, err = kv.Create(ctx, key, data)
	} else {
		_, err = kv.Update(ctx, key, data, rev)
	}
	if err == nil {
		return true, nil
	}
	if natsstore.IsConflict(err) {
		return false, nil
	}
	return false, err
}
