package vault

import (
	"bytes"
	"context"
	"errors"
	"fmt"
)

// ErrMigrateConflict is returned by Migrate when the target already holds a
// different vault and the source has secrets that would be lost.
var ErrMigrateConflict = errors.New("vault: the target already holds another vault")

// MigrateResult says what Migrate copied.
type MigrateResult struct {
	// Secrets is how many secret names were copied (or found copied).
	Secrets int
	// AuditRows is how many audit rows were appended to the target.
	AuditRows int
	// Skipped says why nothing was copied ("" when something was).
	Skipped string
	// AuditSkipped says why the audit rows were not copied: the target's
	// chain went on without them (another host appended first). The
	// source's rows are then not carried over; the secrets are.
	AuditSkipped string
}

// Migrate copies the vault in from into to: the keyring as is (so the same
// root key opens it), every secret version the target lacks, and the audit
// rows the target's chain lacks. Only sealed bytes move; no key is needed.
// It is idempotent: run again (after a crash half-way, or on a second
// start) it copies only what is missing. A target that holds a different
// vault is left alone when the source has no secrets, and refused with
// ErrMigrateConflict otherwise.
func Migrate(ctx context.Context, from, to Store) (MigrateResult, error) {
	var res MigrateResult
	kr, ok, err := from.Keyring(ctx)
	if err != nil {
		return res, fmt.Errorf("vault: migrate: read source: %w", err)
	}
	if !ok {
		res.Skipped = "no vault to migrate"
		return res, nil
	}
	names, err := from.Names(ctx)
	if err != nil {
		return res, fmt.Errorf("vault: migrate: read source: %w", err)
	}
	same := true
	err = to.UpdateKeyring(ctx, func(cur *Keyring, exists bool) error {
		if !exists {
			*cur = kr
			return nil
		}
		same = bytes.Equal(cur.RootCheck, kr.RootCheck)
		return ErrUnchanged
	})
	if err != nil {
		return res, fmt.Errorf("vault: migrate keyring: %w", err)
	}
	if !same {
		if len(names) == 0 {
			res.Skipped = "the target holds another vault and the source has no secrets"
			return res, nil
		}
		return res, fmt.Errorf("%w: the source has %d secrets; copy them with nightshift vault get/set, then remove the source's vault", ErrMigrateConflict, len(names))
	}
	for _, name := range names {
		src, err := from.Secret(ctx, name)
		if err != nil {
			return res, fmt.Errorf("vault: migrate %s: %w", name, err)
		}
		err = to.UpdateSecret(ctx, name, func(rec *SecretRecord) error {
			have := map[string]bool{}
			for _, v := range rec.Versions {
				have[v.Scope+"\x00"+fmt.Sprint(v.Version)] = true
			}
			added := 0
			for _, v := range src.Versions {
				if !have[v.Scope+"\x00"+fmt.Sprint(v.Version)] {
					rec.Versions = append(rec.Versions, v)
					added++
				}
			}
			if added == 0 {
				return ErrUnchanged
			}
			sortVersions(rec.Versions)
			return nil
		})
		if err != nil {
			return res, fmt.Errorf("vault: migrate %s: %w", name, err)
		}
		res.Secrets++
	}
	n, err := migrateAudit(ctx, from, to)
	res.AuditRows = n
	if errors.Is(err, ErrMigrateConflict) {
		res.AuditSkipped, err = err.Error(), nil
	}
	return res, err
}

// migrateAudit appends the source's rows after the target's head, when the
// target's chain is a prefix of the source's.
func migrateAudit(ctx context.Context, from, to Store) (int, error) {
	var toHead AuditHead
	if _, err := to.AuditLog(ctx, func(r AuditRow) error { toHead = AuditHead{Seq: r.Seq, Hash: r.Hash}; return nil }); err != nil {
		return 0, fmt.Errorf("vault: migrate audit: %w", err)
	}
	var rows []AuditRow
	prefix := toHead.Seq == 0
	if _, err := from.AuditLog(ctx, func(r AuditRow) error {
		switch {
		case r.Seq == toHead.Seq && bytes.Equal(r.Hash, toHead.Hash):
			prefix = true
		case r.Seq > toHead.Seq:
			rows = append(rows, r)
		}
		return nil
	}); err != nil && !errors.Is(err, ErrIntegrity) {
		return 0, fmt.Errorf("vault: migrate audit: %w", err)
	}
	if !prefix {
		return 0, fmt.Errorf("%w: the target's audit chain is not a continuation of the source's", ErrMigrateConflict)
	}
	for i, r := range rows {
		err := to.AppendAudit(ctx, func(h AuditHead) (AuditRow, error) {
			if h.Seq >= r.Seq {
				return AuditRow{}, fmt.Errorf("%w: another writer appended to the target's audit chain during the migration", ErrMigrateConflict)
			}
			return r, nil
		})
		if err != nil {
			return i, fmt.Errorf("vault: migrate audit: %w", err)
		}
	}
	return len(rows), nil
}
