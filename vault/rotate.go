package vault

import (
	"context"
	"database/sql"
	"fmt"
)

// RotateKEK creates a new key-encryption key, re-wraps every live version's
// data key under it and deletes the old KEKs, in one transaction. Values are
// not re-encrypted (their data keys are unchanged), so every version stays
// readable. A data key that fails to open aborts the rotation with an
// *IntegrityError naming the record; destroy that version and retry.
// It returns the new KEK's id and how many data keys were re-wrapped.
func (v *Vault) RotateKEK(ctx context.Context, actor Actor) (kekID int64, rewrapped int, err error) {
	if err := actor.validate(); err != nil {
		return 0, 0, err
	}
	ctx, cancel := v.timeout(ctx)
	defer cancel()
	err = v.writeTx(ctx, func(c *sql.Conn) error {
		if err := c.QueryRowContext(ctx, `SELECT COALESCE(MAX(id), 0) + 1 FROM vault_keks`).Scan(&kekID); err != nil {
			return err
		}
		v.mu.Lock()
		root := v.root
		v.mu.Unlock()
		newKEK, err := v.newKEK(ctx, c, root, kekID)
		if err != nil {
			return err
		}
		type rec struct {
			name, scope string
			version     int
			kekID       int64
			wdek        []byte
		}
		rows, err := c.QueryContext(ctx, `SELECT name, scope, version, kek_id, wrapped_dek FROM vault_secrets WHERE destroyed_at IS NULL`)
		if err != nil {
			return err
		}
		var recs []rec
		for rows.Next() {
			var r rec
			if err := rows.Scan(&r.name, &r.scope, &r.version, &r.kekID, &r.wdek); err != nil {
				rows.Close()
				return err
			}
			recs = append(recs, r)
		}
		rows.Close()
		if err := rows.Err(); err != nil {
			return err
		}
		for _, r := range recs {
			old, err := v.kek(ctx, c, r.kekID)
			if err != nil {
				return err
			}
			dek, err := unseal(old, r.wdek, adDEK(r.name, r.scope, r.version, r.kekID))
			if err != nil {
				return &IntegrityError{Name: r.name, Scope: r.scope, Version: r.version, Part: "data key", KEKID: r.kekID}
			}
			w, err := seal(v.cfg.Rand, newKEK, dek, adDEK(r.name, r.scope, r.version, kekID))
			clear(dek)
			if err != nil {
				return err
			}
			if _, err := c.ExecContext(ctx, `UPDATE vault_secrets SET kek_id = ?, wrapped_dek = ? WHERE name = ? AND scope = ? AND version = ?`,
				kekID, w, r.name, r.scope, r.version); err != nil {
				return err
			}
		}
		if _, err := c.ExecContext(ctx, `DELETE FROM vault_keks WHERE id <> ?`, kekID); err != nil {
			return fmt.Errorf("vault: delete old keks: %w", err)
		}
		rewrapped = len(recs)
		return v.appendAudit(ctx, c, auditRecord{actor: actor, action: "rotate_kek", outcome: "ok",
			detail: fmt.Sprintf("kek %d, %d data keys re-wrapped", kekID, rewrapped)})
	})
	if err != nil {
		return 0, 0, err
	}
	v.mu.Lock()
	for id := range v.keks {
		if id != kekID {
			clear(v.keks[id])
			delete(v.keks, id)
		}
	}
	v.mu.Unlock()
	return kekID, rewrapped, nil
}

// RotateRoot re-seals every KEK, the audit key and the root check under the
// root key from next, in one transaction. After it commits only next opens
// the vault: the caller must make next the configured source (for a key
// file, write the new file first and rename it over the old one after this
// returns; see the CLI's rotate-key --root). Other processes holding the
// vault open must be restarted.
func (v *Vault) RotateRoot(ctx context.Context, actor Actor, next KeySource) error {
	if err := actor.validate(); err != nil {
		return err
	}
	ctx, cancel := v.timeout(ctx)
	defer cancel()
	newRoot, err := next.RootKey(ctx)
	if err != nil {
		return err
	}
	if len(newRoot) != KeySize {
		return fmt.Errorf("%w: root key is %d bytes, want %d", ErrKeySource, len(newRoot), KeySize)
	}
	err = v.writeTx(ctx, func(c *sql.Conn) error {
		rows, err := c.QueryContext(ctx, `SELECT id FROM vault_keks`)
		if err != nil {
			return err
		}
		var ids []int64
		for rows.Next() {
			var id int64
			if err := rows.Scan(&id); err != nil {
				rows.Close()
				return err
			}
			ids = append(ids, id)
		}
		rows.Close()
		if err := rows.Err(); err != nil {
			return err
		}
		for _, id := range ids {
			k, err := v.kek(ctx, c, id)
			if err != nil {
				return err
			}
			w, err := seal(v.cfg.Rand, newRoot, k, adKEK(id))
			if err != nil {
				return err
			}
			if _, err := c.ExecContext(ctx, `UPDATE vault_keks SET wrapped = ? WHERE id = ?`, w, id); err != nil {
				return err
			}
		}
		check, err := seal(v.cfg.Rand, newRoot, rootCheckPlain, adRootCheck())
		if err != nil {
			return err
		}
		wak, err := seal(v.cfg.Rand, newRoot, v.auditKey, adAuditKey())
		if err != nil {
			return err
		}
		if _, err := c.ExecContext(ctx, `UPDATE vault_meta SET value = ? WHERE key = 'root_check'`, check); err != nil {
			return err
		}
		if _, err := c.ExecContext(ctx, `UPDATE vault_meta SET value = ? WHERE key = 'audit_key'`, wak); err != nil {
			return err
		}
		return v.appendAudit(ctx, c, auditRecord{actor: actor, action: "rotate_root", outcome: "ok",
			detail: fmt.Sprintf("%d keks re-sealed", len(ids))})
	})
	if err != nil {
		return err
	}
	v.mu.Lock()
	v.root = newRoot
	v.mu.Unlock()
	return nil
}
