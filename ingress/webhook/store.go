package webhook

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"time"

	"github.com/nats-io/nats.go/jetstream"
)

// kvKey hashes an arbitrary identifier into a valid, fixed-length KV key
// under a readable prefix.
func kvKey(prefix, id string) string {
	sum := sha256.Sum256([]byte(id))
	return prefix + "." + hex.EncodeToString(sum[:20])
}

// deliveries remembers transport delivery ids in a JetStream KV bucket whose
// TTL outlives JetStream's duplicate window. Every ingress process shares it.
type deliveries struct {
	kv jetstream.KeyValue
}

func openBucket(ctx context.Context, js jetstream.JetStream, cfg jetstream.KeyValueConfig) (jetstream.KeyValue, error) {
	kv, err := js.CreateOrUpdateKeyValue(ctx, cfg)
	if err != nil {
		return nil, fmt.Errorf("open kv bucket %s: %w", cfg.Bucket, err)
	}
	return kv, nil
}

// remember records the delivery key of a delivery that is answered without
// publishing (a refused trigger), so a redelivery is answered as a
// duplicate. It reports whether the key was recorded before. Published
// deliveries need no record: the events stream keeps their ids.
func (d *deliveries) remember(ctx context.Context, key, eventID string) (dup bool, err error) {
	_, err = d.kv.Create(ctx, key, []byte(eventID))
	switch {
	case err == nil:
		return false, nil
	case errors.Is(err, jetstream.ErrKeyExists):
		return true, nil
	default:
		return false, fmt.Errorf("remember delivery: %w", err)
	}
}

// attempts counts, per pull request (or branch), the distinct head commits
// whose CI failure started work. Several failure events for one commit
// (each failing check, the workflow run, a status) share one attempt.
type attempts struct {
	kv jetstream.KeyValue
}

type attemptRecord struct {
	SHAs []string `json:"shas"`
}

// next returns the attempt number of commit sha on target key, recording
// it when new. over is true when a new commit would exceed limit.
func (a *attempts) next(ctx context.Context, key, sha string, limit int) (attempt int, over bool, err error) {
	k := kvKey("ci", key)
	for range 8 {
		var rec attemptRecord
		var rev uint64
		e, err := a.kv.Get(ctx, k)
		switch {
		case err == nil:
			rev = e.Revision()
			if jerr := json.Unmarshal(e.Value(), &rec); jerr != nil {
				rec = attemptRecord{}
			}
		case errors.Is(err, jetstream.ErrKeyNotFound), errors.Is(err, jetstream.ErrKeyDeleted):
		default:
			return 0, false, fmt.Errorf("read attempts: %w", err)
		}
		if i := slices.Index(rec.SHAs, sha); i >= 0 {
			return i + 1, false, nil
		}
		if len(rec.SHAs) >= limit {
			return len(rec.SHAs) + 1, true, nil
		}
		rec.SHAs = append(rec.SHAs, sha)
		data, _ := json.Marshal(rec)
		if rev == 0 {
			_, err = a.kv.Create(ctx, k, data)
		} else {
			_, err = a.kv.Update(ctx, k, data, rev)
		}
		switch {
		case err == nil:
			return len(rec.SHAs), false, nil
		case errors.Is(err, jetstream.ErrKeyExists), isRevisionMismatch(err):
			continue // another process raced us; read again
		default:
			return 0, false, fmt.Errorf("record attempt: %w", err)
		}
	}
	return 0, false, errors.New("record attempt: too much contention")
}

func isRevisionMismatch(err error) bool {
	return errors.Is(err, jetstream.ErrKeyRevisionMismatch) || errors.Is(err, jetstream.ErrKeyExists)
}

const attemptsTTL = 30 * 24 * time.Hour
