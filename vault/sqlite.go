package vault

import (
	"bytes"
	"context"
	"database/sql"
	"errors"
	"fmt"
	"io/fs"
	"sort"
	"strconv"
	"strings"
	"sync"
	"time"
)

// SQLiteStore is the Store of a single process: tables prefixed vault_ in
// a *sql.DB the caller opens and shares with the rest of the server (and
// with the vault CLI, which opens the same file). Updates run in BEGIN
// IMMEDIATE transactions with secure_delete on, so destroyed versions are
// zeroed in the file.
type SQLiteStore struct {
	db  *sql.DB
	now func() time.Time
	wmu sync.Mutex // serialises this process's write transactions
}

var _ Store = (*SQLiteStore)(nil)

// NewSQLiteStore migrates the vault tables in db and returns their Store.
func NewSQLiteStore(ctx context.Context, db *sql.DB) (*SQLiteStore, error) {
	if db == nil {
		return nil, errors.New("vault: nil db")
	}
	s := &SQLiteStore{db: db, now: time.Now}
	if err := s.migrate(ctx); err != nil {
		return nil, err
	}
	return s, nil
}

func (s *SQLiteStore) stamp() string { return s.now().UTC().Format(time.RFC3339Nano) }

func (s *SQLiteStore) migrate(ctx context.Context) error {
	entries, err := fs.ReadDir(migrationFS, "migrations")
	if err != nil {
		return err
	}
	return s.writeTx(ctx, func(c *sql.Conn) error {
		if _, err := c.ExecContext(ctx, `CREATE TABLE IF NOT EXISTS vault_schema_migrations (version INTEGER PRIMARY KEY, applied_at TEXT NOT NULL)`); err != nil {
			return fmt.Errorf("vault: migrate: %w", err)
		}
		var have int
		if err := c.QueryRowContext(ctx, `SELECT COALESCE(MAX(version), 0) FROM vault_schema_migrations`).Scan(&have); err != nil {
			return fmt.Errorf("vault: migrate: %w", err)
		}
		for _, e := range entries {
			n, err := strconv.Atoi(strings.SplitN(e.Name(), "_", 2)[0])
			if err != nil || n <= have {
				continue
			}
			q, err := migrationFS.ReadFile("migrations/" + e.Name())
			if err != nil {
				return err
			}
			if _, err := c.ExecContext(ctx, string(q)); err != nil {
				return fmt.Errorf("vault: migrate %s: %w", e.Name(), err)
			}
			if _, err := c.ExecContext(ctx, `INSERT INTO vault_schema_migrations(version, applied_at) VALUES (?, ?)`, n, s.stamp()); err != nil {
				return fmt.Errorf("vault: migrate: %w", err)
			}
		}
		return nil
	})
}

// writeTx runs fn in a BEGIN IMMEDIATE transaction on one connection with
// secure_delete on, committing when fn returns nil.
func (s *SQLiteStore) writeTx(ctx context.Context, fn func(c *sql.Conn) error) (err error) {
	s.wmu.Lock()
	defer s.wmu.Unlock()
	c, err := s.db.Conn(ctx)
	if err != nil {
		return fmt.Errorf("vault: %w", err)
	}
	defer c.Close()
	if _, err := c.ExecContext(ctx, `PRAGMA secure_delete = ON`); err != nil {
		return fmt.Errorf("vault: %w", err)
	}
	if _, err := c.ExecContext(ctx, `BEGIN IMMEDIATE`); err != nil {
		return fmt.Errorf("vault: begin: %w", err)
	}
	done := false
	defer func() {
		if !done {
			rctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 5*time.Second)
			defer cancel()
			c.ExecContext(rctx, `ROLLBACK`)
		}
	}()
	if err := fn(c); err != nil {
		return err
	}
	if _, err := c.ExecContext(ctx, `COMMIT`); err != nil {
		return fmt.Errorf("vault: commit: %w", err)
	}
	done = true
	return nil
}

// readTx runs fn in a read transaction (one snapshot of the WAL).
func (s *SQLiteStore) readTx(ctx context.Context, fn func(c *sql.Conn) error) error {
	c, err := s.db.Conn(ctx)
	if err != nil {
		return fmt.Errorf("vault: %w", err)
	}
	defer c.Close()
	if _, err := c.ExecContext(ctx, `BEGIN DEFERRED`); err != nil {
		return fmt.Errorf("vault: begin: %w", err)
	}
	defer func() {
		rctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 5*time.Second)
		defer cancel()
		c.ExecContext(rctx, `ROLLBACK`)
	}()
	return fn(c)
}

type querier interface {
	QueryRowContext(ctx context.Context, q string, args ...any) *sql.Row
	QueryContext(ctx context.Context, q string, args ...any) (*sql.Rows, error)
}

func metaValue(ctx context.Context, q querier, key string) ([]byte, bool, error) {
	var b []byte
	err := q.QueryRowContext(ctx, `SELECT value FROM vault_meta WHERE key = ?`, key).Scan(&b)
	if errors.Is(err, sql.ErrNoRows) {
		return nil, false, nil
	}
	return b, err == nil, err
}

func checkMoved(ctx context.Context, q querier) error {
	b, ok, err := metaValue(ctx, q, "moved_to")
	if err != nil {
		return err
	}
	if ok {
		return fmt.Errorf("%w (moved %s)", ErrMoved, b)
	}
	return nil
}

func readKeyring(ctx context.Context, q querier) (Keyring, bool, error) {
	if err := checkMoved(ctx, q); err != nil {
		return Keyring{}, false, err
	}
	var kr Keyring
	check, ok, err := metaValue(ctx, q, "root_check")
	if err != nil || !ok {
		var n int
		if err == nil {
			err = q.QueryRowContext(ctx, `SELECT count(*) FROM vault_keks`).Scan(&n)
		}
		if err == nil && n > 0 {
			err = fmt.Errorf("%w: vault_meta lost its root check while keys exist", ErrIntegrity)
		}
		return kr, false, err
	}
	kr.RootCheck = check
	if kr.AuditKey, _, err = metaValue(ctx, q, "audit_key"); err != nil {
		return kr, false, fmt.Errorf("vault: read audit key: %w", err)
	}
	rows, err := q.QueryContext(ctx, `SELECT id, wrapped, created_at FROM vault_keks ORDER BY id`)
	if err != nil {
		return kr, false, err
	}
	defer rows.Close()
	for rows.Next() {
		var w WrappedKEK
		if err := rows.Scan(&w.ID, &w.Wrapped, &w.CreatedAt); err != nil {
			return kr, false, err
		}
		kr.KEKs = append(kr.KEKs, w)
	}
	return kr, true, rows.Err()
}

// Keyring implements Store.
func (s *SQLiteStore) Keyring(ctx context.Context) (Keyring, bool, error) {
	return readKeyring(ctx, s.db)
}

// UpdateKeyring implements Store.
func (s *SQLiteStore) UpdateKeyring(ctx context.Context, fn func(kr *Keyring, ok bool) error) error {
	return s.writeTx(ctx, func(c *sql.Conn) error {
		kr, ok, err := readKeyring(ctx, c)
		if err != nil {
			return err
		}
		old := kr
		old.KEKs = append([]WrappedKEK(nil), kr.KEKs...)
		if err := fn(&kr, ok); errors.Is(err, ErrUnchanged) {
			return nil
		} else if err != nil {
			return err
		}
		for _, m := range []struct {
			key string
			val []byte
		}{{"root_check", kr.RootCheck}, {"audit_key", kr.AuditKey}} {
			if _, err := c.ExecContext(ctx, `INSERT INTO vault_meta(key, value) VALUES (?, ?) ON CONFLICT(key) DO UPDATE SET value = excluded.value`, m.key, m.val); err != nil {
				return fmt.Errorf("vault: store keyring: %w", err)
			}
		}
		keep := map[int64]bool{}
		for _, w := range kr.KEKs {
			keep[w.ID] = true
			if prev, had := old.find(w.ID); had && bytes.Equal(prev, w.Wrapped) {
				continue
			}
			if _, err := c.ExecContext(ctx, `INSERT INTO vault_keks(id, wrapped, created_at) VALUES (?, ?, ?) ON CONFLICT(id) DO UPDATE SET wrapped = excluded.wrapped`,
				w.ID, w.Wrapped, w.CreatedAt); err != nil {
				return fmt.Errorf("vault: store kek: %w", err)
			}
		}
		for _, w := range old.KEKs {
			if !keep[w.ID] {
				if _, err := c.ExecContext(ctx, `DELETE FROM vault_keks WHERE id = ?`, w.ID); err != nil {
					return fmt.Errorf("vault: delete kek %d: %w", w.ID, err)
				}
			}
		}
		return nil
	})
}

func readSecret(ctx context.Context, q querier, name string) (SecretRecord, error) {
	rec := SecretRecord{Name: name}
	rows, err := q.QueryContext(ctx, `SELECT scope, version, kek_id, wrapped_dek, ciphertext, created_at, created_by, destroyed_at FROM vault_secrets WHERE name = ? ORDER BY scope, version`, name)
	if err != nil {
		return rec, err
	}
	defer rows.Close()
	for rows.Next() {
		var v SealedVersion
		var kek sql.NullInt64
		var destroyed sql.NullString
		if err := rows.Scan(&v.Scope, &v.Version, &kek, &v.WrappedDEK, &v.Ciphertext, &v.CreatedAt, &v.CreatedBy, &destroyed); err != nil {
			return rec, err
		}
		v.KEKID, v.DestroyedAt = kek.Int64, destroyed.String
		rec.Versions = append(rec.Versions, v)
	}
	return rec, rows.Err()
}

// Secret implements Store.
func (s *SQLiteStore) Secret(ctx context.Context, name string) (SecretRecord, error) {
	if err := checkMoved(ctx, s.db); err != nil {
		return SecretRecord{}, err
	}
	return readSecret(ctx, s.db, name)
}

// UpdateSecret implements Store.
func (s *SQLiteStore) UpdateSecret(ctx context.Context, name string, fn func(rec *SecretRecord) error) error {
	return s.writeTx(ctx, func(c *sql.Conn) error {
		if err := checkMoved(ctx, c); err != nil {
			return err
		}
		rec, err := readSecret(ctx, c, name)
		if err != nil {
			return err
		}
		old := map[string]SealedVersion{}
		for _, v := range rec.Versions {
			old[v.Scope+"\x00"+strconv.Itoa(v.Version)] = v
		}
		if err := fn(&rec); errors.Is(err, ErrUnchanged) {
			return nil
		} else if err != nil {
			return err
		}
		for _, v := range rec.Versions {
			if o, had := old[v.Scope+"\x00"+strconv.Itoa(v.Version)]; had && sameVersion(o, v) {
				continue
			}
			var kek, destroyed any
			if v.KEKID != 0 {
				kek = v.KEKID
			}
			if v.DestroyedAt != "" {
				destroyed = v.DestroyedAt
			}
			var wdek, ct any
			if v.WrappedDEK != nil {
				wdek = v.WrappedDEK
			}
			if v.Ciphertext != nil {
				ct = v.Ciphertext
			}
			if _, err := c.ExecContext(ctx, `INSERT INTO vault_secrets(name, scope, version, kek_id, wrapped_dek, ciphertext, created_at, created_by, destroyed_at)
				VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?) ON CONFLICT(name, scope, version) DO UPDATE SET kek_id = excluded.kek_id,
				wrapped_dek = excluded.wrapped_dek, ciphertext = excluded.ciphertext, destroyed_at = excluded.destroyed_at`,
				name, v.Scope, v.Version, kek, wdek, ct, v.CreatedAt, v.CreatedBy, destroyed); err != nil {
				return fmt.Errorf("vault: store %s: %w", name, err)
			}
		}
		return nil
	})
}

func sameVersion(a, b SealedVersion) bool {
	return a.KEKID == b.KEKID && bytes.Equal(a.WrappedDEK, b.WrappedDEK) && bytes.Equal(a.Ciphertext, b.Ciphertext) && a.DestroyedAt == b.DestroyedAt
}

// Names implements Store.
func (s *SQLiteStore) Names(ctx context.Context) ([]string, error) {
	if err := checkMoved(ctx, s.db); err != nil {
		return nil, err
	}
	rows, err := s.db.QueryContext(ctx, `SELECT DISTINCT name FROM vault_secrets ORDER BY name`)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	var out []string
	for rows.Next() {
		var n string
		if err := rows.Scan(&n); err != nil {
			return nil, err
		}
		out = append(out, n)
	}
	return out, rows.Err()
}

// readHead reads the chain head in vault_meta: "seq:hexhash".
func readHead(ctx context.Context, q querier) (AuditHead, error) {
	b, ok, err := metaValue(ctx, q, "audit_head")
	if err != nil {
		return AuditHead{}, err
	}
	if !ok {
		return AuditHead{Hash: make([]byte, 32)}, nil
	}
	h, err := parseHead(string(b))
	if err != nil {
		return AuditHead{}, err
	}
	return h, nil
}

// AppendAudit implements Store.
func (s *SQLiteStore) AppendAudit(ctx context.Context, fn func(head AuditHead) (AuditRow, error)) error {
	return s.writeTx(ctx, func(c *sql.Conn) error {
		head, err := readHead(ctx, c)
		if err != nil {
			return err
		}
		r, err := fn(head)
		if err != nil {
			return err
		}
		if _, err := c.ExecContext(ctx, `INSERT INTO vault_audit(seq, at, actor_kind, actor_id, action, name, scope, version, outcome, detail, prev_hash, hash) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)`,
			r.Seq, r.At, r.ActorKind, r.ActorID, r.Action, r.Name, r.Scope, r.Version, r.Outcome, r.Detail, r.PrevHash, r.Hash); err != nil {
			return fmt.Errorf("vault: append audit: %w", err)
		}
		if _, err := c.ExecContext(ctx, `INSERT INTO vault_meta(key, value) VALUES ('audit_head', ?) ON CONFLICT(key) DO UPDATE SET value = excluded.value`,
			[]byte(formatHead(AuditHead{Seq: r.Seq, Hash: r.Hash}))); err != nil {
			return fmt.Errorf("vault: append audit: %w", err)
		}
		return nil
	})
}

// AuditLog implements Store: the head and the rows are read in one snapshot.
func (s *SQLiteStore) AuditLog(ctx context.Context, fn func(AuditRow) error) (AuditHead, error) {
	var head AuditHead
	err := s.readTx(ctx, func(c *sql.Conn) error {
		var herr error
		head, herr = readHead(ctx, c)
		if herr != nil && !errors.Is(herr, ErrIntegrity) {
			return herr
		}
		rows, err := c.QueryContext(ctx, `SELECT seq, at, actor_kind, actor_id, action, name, scope, version, outcome, detail, prev_hash, hash FROM vault_audit ORDER BY seq`)
		if err != nil {
			return err
		}
		defer rows.Close()
		for rows.Next() {
			var r AuditRow
			if err := rows.Scan(&r.Seq, &r.At, &r.ActorKind, &r.ActorID, &r.Action, &r.Name, &r.Scope, &r.Version, &r.Outcome, &r.Detail, &r.PrevHash, &r.Hash); err != nil {
				return err
			}
			if err := fn(r); err != nil {
				return err
			}
		}
		if err := rows.Err(); err != nil {
			return err
		}
		return herr
	})
	return head, err
}

// MarkMoved records that this vault's records now live in another store
// (described by to, e.g. "nats://host:4222 at <time>") and erases them
// here, zeroing their bytes: a secret destroyed later in the other store
// must not live on in this file. With keepAudit the audit rows stay (their
// copy was skipped; they hold no secret material). Opening the vault here
// then fails with ErrMoved.
func (s *SQLiteStore) MarkMoved(ctx context.Context, to string, keepAudit bool) error {
	return s.writeTx(ctx, func(c *sql.Conn) error {
		qs := []string{`DELETE FROM vault_secrets`, `DELETE FROM vault_keks`, `DELETE FROM vault_meta`}
		if !keepAudit {
			qs = append(qs, `DELETE FROM vault_audit`)
		}
		for _, q := range qs {
			if _, err := c.ExecContext(ctx, q); err != nil {
				return fmt.Errorf("vault: erase moved vault: %w", err)
			}
		}
		_, err := c.ExecContext(ctx, `INSERT INTO vault_meta(key, value) VALUES ('moved_to', ?)`, []byte(to))
		return err
	})
}

// sortVersions orders a record's versions by scope, then version.
func sortVersions(vs []SealedVersion) {
	sort.Slice(vs, func(i, j int) bool {
		if vs[i].Scope != vs[j].Scope {
			return vs[i].Scope < vs[j].Scope
		}
		return vs[i].Version < vs[j].Version
	})
}
