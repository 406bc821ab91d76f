package vault

import (
	"context"
	"errors"
	"fmt"
)

// RotateKEK creates a new key-encryption key, re-wraps every live version's
// data key under it and deletes the old KEKs. Values are not re-encrypted
// (their data keys are unchanged), so every version stays readable. A data
// key that fails to open aborts the rotation with an *IntegrityError naming
// the record; destroy that version and retry. It returns the new KEK's id
// and how many data keys were re-wrapped.
//
// Each step is one revision-checked update (the keyring, then each secret
// record), so a rotation runs while other hosts read and write: a reader
// whose KEK went away reads the record again, and a writer that sealed
// under the old KEK re-wraps its own version once it sees the new one. The
// old KEKs are deleted only after a pass finds nothing left to re-wrap.
func (v *Vault) RotateKEK(ctx context.Context, actor Actor) (kekID int64, rewrapped int, err error) {
	if err := actor.validate(); err != nil {
		return 0, 0, err
	}
	ctx, cancel := v.timeout(ctx)
	defer cancel()
	v.mu.Lock()
	root := v.root
	v.mu.Unlock()
	var newKEK []byte
	err = v.store.UpdateKeyring(ctx, func(kr *Keyring, ok bool) error {
		if !ok {
			return fmt.Errorf("%w: the vault has no keyring", ErrIntegrity)
		}
		cur, _ := kr.Current()
		w, k, err := v.newKEK(root, cur.ID+1)
		if err != nil {
			return err
		}
		kekID, newKEK = w.ID, k
		kr.KEKs = append(kr.KEKs, w)
		return nil
	})
	if err != nil {
		return 0, 0, err
	}
	v.mu.Lock()
	v.keks[kekID] = newKEK
	v.mu.Unlock()
	for pass := 0; ; pass++ {
		n, err := v.rewrapAll(ctx, kekID, newKEK)
		if err != nil {
			return 0, 0, err
		}
		if pass == 0 {
			rewrapped = n
		}
		if n == 0 || pass >= 10 {
			break
		}
	}
	err = v.store.UpdateKeyring(ctx, func(kr *Keyring, ok bool) error {
		cur, _ := kr.Current()
		if cur.ID != kekID {
			// A newer rotation started: it deletes what is old.
			return ErrUnchanged
		}
		kr.KEKs = []WrappedKEK{cur}
		return nil
	})
	if err != nil {
		return 0, 0, fmt.Errorf("vault: delete old keks: %w", err)
	}
	if err := v.appendAudit(ctx, auditRecord{actor: actor, action: "rotate_kek", outcome: "ok",
		detail: fmt.Sprintf("kek %d, %d data keys re-wrapped", kekID, rewrapped)}); err != nil {
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

// rewrapAll wraps every live data key not under kekID under it and returns
// how many it re-wrapped.
func (v *Vault) rewrapAll(ctx context.Context, kekID int64, kek []byte) (int, error) {
	names, err := v.store.Names(ctx)
	if err != nil {
		return 0, err
	}
	total := 0
	for _, name := range names {
		n := 0
		err := v.store.UpdateSecret(ctx, name, func(rec *SecretRecord) error {
			n = 0
			for i, sv := range rec.Versions {
				if !sv.Live() || sv.KEKID == kekID {
					continue
				}
				ie := &IntegrityError{Name: name, Scope: CanonicalScope(sv.Scope), Version: sv.Version, Part: "data key", KEKID: sv.KEKID}
				old, err := v.kek(ctx, sv.KEKID)
				if errors.Is(err, ErrNotFound) {
					return ie
				} else if err != nil {
					return err
				}
				dek, err := unseal(old, sv.WrappedDEK, adDEK(name, sv.Scope, sv.Version, sv.KEKID))
				if err != nil {
					return ie
				}
				w, err := seal(v.cfg.Rand, kek, dek, adDEK(name, sv.Scope, sv.Version, kekID))
				clear(dek)
				if err != nil {
					return err
				}
				rec.Versions[i].KEKID, rec.Versions[i].WrappedDEK = kekID, w
				n++
			}
			if n == 0 {
				return ErrUnchanged
			}
			return nil
		})
		if err != nil {
			return 0, err
		}
		total += n
	}
	return total, nil
}

// RotateRoot re-seals every KEK, the audit key and the root check under the
// root key from next, in one update of the keyring. After it returns only
// next opens the vault: the caller must make next the configured source
// (for a key file, write the new file first and rename it over the old one
// after this returns; see the CLI's rotate-key --root). Other processes
// holding the vault open, on every host, must be given the new key and
// restarted.
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
	n := 0
	err = v.store.UpdateKeyring(ctx, func(kr *Keyring, ok bool) error {
		if !ok {
			return fmt.Errorf("%w: the vault has no keyring", ErrIntegrity)
		}
		n = len(kr.KEKs)
		for i, w := range kr.KEKs {
			k, err := v.unwrapKEK(*kr, w.ID)
			if err != nil {
				return err
			}
			if kr.KEKs[i].Wrapped, err = seal(v.cfg.Rand, newRoot, k, adKEK(w.ID)); err != nil {
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
		kr.RootCheck, kr.AuditKey = check, wak
		return nil
	})
	if err != nil {
		return err
	}
	v.mu.Lock()
	v.root = newRoot
	v.mu.Unlock()
	return v.appendAudit(ctx, auditRecord{actor: actor, action: "rotate_root", outcome: "ok",
		detail: fmt.Sprintf("%d keks re-sealed", n)})
}
