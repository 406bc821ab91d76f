package vault

import (
	"bytes"
	"context"
	"database/sql"
	"encoding/hex"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"time"
)

type auditRecord struct {
	actor   Actor
	action  string
	name    string
	scope   string
	version int
	outcome string
	detail  string
}

// AuditEntry is one row of the audit log.
type AuditEntry struct {
	Seq       int64     `json:"seq"`
	At        time.Time `json:"at"`
	ActorKind string    `json:"actor_kind"`
	ActorID   string    `json:"actor_id"`
	Action    string    `json:"action"`
	Name      string    `json:"name,omitempty"`
	Scope     string    `json:"scope,omitempty"`
	Version   int       `json:"version,omitempty"`
	Outcome   string    `json:"outcome"`
	Detail    string    `json:"detail,omitempty"`
	Hash      string    `json:"hash"`
}

// auditHead is the chain head in vault_meta: "seq:hexhash".
func readHead(ctx context.Context, c *sql.Conn) (int64, []byte, error) {
	var b []byte
	err := c.QueryRowContext(ctx, `SELECT value FROM vault_meta WHERE key = 'audit_head'`).Scan(&b)
	if errors.Is(err, sql.ErrNoRows) {
		return 0, make([]byte, 32), nil
	}
	if err != nil {
		return 0, nil, err
	}
	s, h, ok := strings.Cut(string(b), ":")
	seq, err1 := strconv.ParseInt(s, 10, 64)
	hash, err2 := hex.DecodeString(h)
	if !ok || err1 != nil || err2 != nil || len(hash) != 32 {
		return 0, nil, fmt.Errorf("%w: audit chain head is malformed", ErrIntegrity)
	}
	return seq, hash, nil
}

func chainHash(key, prev []byte, seq int64, at, actorKind, actorID, action, name, scope string, version int, outcome, detail string) []byte {
	return macChain(key, prev, strconv.FormatInt(seq, 10), at, actorKind, actorID, action, name, scope, strconv.Itoa(version), outcome, detail)
}

// appendAudit adds rec to the chain inside the caller's transaction.
func (v *Vault) appendAudit(ctx context.Context, c *sql.Conn, rec auditRecord) error {
	seq, prev, err := readHead(ctx, c)
	if err != nil {
		return err
	}
	seq++
	at := v.now()
	h := chainHash(v.auditKey, prev, seq, at, rec.actor.Kind, rec.actor.ID, rec.action, rec.name, rec.scope, rec.version, rec.outcome, rec.detail)
	if _, err := c.ExecContext(ctx, `INSERT INTO vault_audit(seq, at, actor_kind, actor_id, action, name, scope, version, outcome, detail, prev_hash, hash) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)`,
		seq, at, rec.actor.Kind, rec.actor.ID, rec.action, rec.name, rec.scope, rec.version, rec.outcome, rec.detail, prev, h); err != nil {
		return fmt.Errorf("vault: append audit: %w", err)
	}
	head := strconv.FormatInt(seq, 10) + ":" + hex.EncodeToString(h)
	if _, err := c.ExecContext(ctx, `INSERT INTO vault_meta(key, value) VALUES ('audit_head', ?) ON CONFLICT(key) DO UPDATE SET value = excluded.value`, []byte(head)); err != nil {
		return fmt.Errorf("vault: append audit: %w", err)
	}
	return nil
}

// Audit problem kinds reported by VerifyAudit.
const (
	AuditEdited      = "edited"       // the row's contents no longer match its hash
	AuditMissing     = "missing"      // rows were deleted before this sequence number
	AuditRelinked    = "relinked"     // the row's link to its predecessor was changed
	AuditTailDeleted = "tail_deleted" // rows after the last one were deleted
)

// AuditProblem is one break in the audit chain.
type AuditProblem struct {
	Seq    int64  `json:"seq"`
	Kind   string `json:"kind"`
	Detail string `json:"detail"`
}

// AuditReport is the result of VerifyAudit.
type AuditReport struct {
	Rows     int            `json:"rows"`
	HeadSeq  int64          `json:"head_seq"`
	Problems []AuditProblem `json:"problems"`
}

// OK reports whether the chain verified without problems.
func (r AuditReport) OK() bool { return len(r.Problems) == 0 }

// VerifyAudit walks the audit chain and reports every edited row, every gap
// left by deleted rows, and rows deleted from the tail. The verification is
// itself audited after the walk.
func (v *Vault) VerifyAudit(ctx context.Context, actor Actor) (AuditReport, error) {
	if err := actor.validate(); err != nil {
		return AuditReport{}, err
	}
	ctx, cancel := v.timeout(ctx)
	defer cancel()
	var rep AuditReport
	err := v.writeTx(ctx, func(c *sql.Conn) error {
		headSeq, headHash, err := readHead(ctx, c)
		if err != nil {
			rep.Problems = append(rep.Problems, AuditProblem{Kind: AuditEdited, Detail: err.Error()})
		}
		rep.HeadSeq = headSeq
		rows, err := c.QueryContext(ctx, `SELECT seq, at, actor_kind, actor_id, action, name, scope, version, outcome, detail, prev_hash, hash FROM vault_audit ORDER BY seq`)
		if err != nil {
			return err
		}
		defer rows.Close()
		var expectSeq int64 = 1
		prev := make([]byte, 32)
		for rows.Next() {
			var e AuditEntry
			var at string
			var prevHash, hash []byte
			if err := rows.Scan(&e.Seq, &at, &e.ActorKind, &e.ActorID, &e.Action, &e.Name, &e.Scope, &e.Version, &e.Outcome, &e.Detail, &prevHash, &hash); err != nil {
				return err
			}
			rep.Rows++
			if e.Seq != expectSeq {
				rep.Problems = append(rep.Problems, AuditProblem{Seq: e.Seq, Kind: AuditMissing,
					Detail: fmt.Sprintf("rows %d to %d are missing", expectSeq, e.Seq-1)})
			} else if !bytes.Equal(prevHash, prev) {
				rep.Problems = append(rep.Problems, AuditProblem{Seq: e.Seq, Kind: AuditRelinked, Detail: "link to the previous row was changed"})
			}
			want := chainHash(v.auditKey, prevHash, e.Seq, at, e.ActorKind, e.ActorID, e.Action, e.Name, e.Scope, e.Version, e.Outcome, e.Detail)
			if !bytes.Equal(want, hash) {
				rep.Problems = append(rep.Problems, AuditProblem{Seq: e.Seq, Kind: AuditEdited, Detail: "contents do not match the row's hash"})
			}
			prev = hash
			expectSeq = e.Seq + 1
		}
		if err := rows.Err(); err != nil {
			return err
		}
		rows.Close()
		last := expectSeq - 1
		switch {
		case last < headSeq:
			rep.Problems = append(rep.Problems, AuditProblem{Seq: last + 1, Kind: AuditTailDeleted,
				Detail: fmt.Sprintf("rows %d to %d after the last row are missing", last+1, headSeq)})
		case last > headSeq:
			rep.Problems = append(rep.Problems, AuditProblem{Seq: headSeq + 1, Kind: AuditEdited,
				Detail: fmt.Sprintf("rows %d to %d are not part of the chain", headSeq+1, last)})
		case headHash != nil && !bytes.Equal(prev, headHash):
			rep.Problems = append(rep.Problems, AuditProblem{Seq: last, Kind: AuditEdited, Detail: "last row does not match the chain head"})
		}
		outcome := "ok"
		if !rep.OK() {
			outcome = "tampered"
		}
		return v.appendAudit(ctx, c, auditRecord{actor: actor, action: "audit_verify", outcome: outcome,
			detail: fmt.Sprintf("%d rows, %d problems", rep.Rows, len(rep.Problems))})
	})
	return rep, err
}

// AuditFilter selects audit entries. The zero value selects all.
type AuditFilter struct {
	Name  string // exact secret name, "" for any
	Since int64  // only entries with Seq > Since
	Limit int    // at most this many, newest last; 0 means 1000
}

// AuditLog returns audit entries in sequence order. Reading the log is
// itself audited.
func (v *Vault) AuditLog(ctx context.Context, actor Actor, f AuditFilter) ([]AuditEntry, error) {
	if err := actor.validate(); err != nil {
		return nil, err
	}
	if f.Limit <= 0 {
		f.Limit = 1000
	}
	ctx, cancel := v.timeout(ctx)
	defer cancel()
	var out []AuditEntry
	err := v.writeTx(ctx, func(c *sql.Conn) error {
		rows, err := c.QueryContext(ctx, `SELECT seq, at, actor_kind, actor_id, action, name, scope, version, outcome, detail, hash FROM (
			SELECT * FROM vault_audit WHERE seq > ? AND (? = '' OR name = ?) ORDER BY seq DESC LIMIT ?) ORDER BY seq`,
			f.Since, f.Name, f.Name, f.Limit)
		if err != nil {
			return err
		}
		defer rows.Close()
		for rows.Next() {
			var e AuditEntry
			var at string
			var hash []byte
			if err := rows.Scan(&e.Seq, &at, &e.ActorKind, &e.ActorID, &e.Action, &e.Name, &e.Scope, &e.Version, &e.Outcome, &e.Detail, &hash); err != nil {
				return err
			}
			e.At, _ = time.Parse(time.RFC3339Nano, at)
			e.Hash = hex.EncodeToString(hash)
			out = append(out, e)
		}
		if err := rows.Err(); err != nil {
			return err
		}
		rows.Close()
		return v.appendAudit(ctx, c, auditRecord{actor: actor, action: "audit_read", name: f.Name, outcome: "ok", detail: fmt.Sprintf("%d entries", len(out))})
	})
	return out, err
}
