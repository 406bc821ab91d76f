package vault

import (
	"bytes"
	"context"
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

// parseHead parses a chain head written by formatHead: "seq:hexhash".
func parseHead(b string) (AuditHead, error) {
	s, h, ok := strings.Cut(b, ":")
	seq, err1 := strconv.ParseInt(s, 10, 64)
	hash, err2 := hex.DecodeString(h)
	if !ok || err1 != nil || err2 != nil || len(hash) != 32 {
		return AuditHead{}, fmt.Errorf("%w: audit chain head is malformed", ErrIntegrity)
	}
	return AuditHead{Seq: seq, Hash: hash}, nil
}

func formatHead(h AuditHead) string {
	return strconv.FormatInt(h.Seq, 10) + ":" + hex.EncodeToString(h.Hash)
}

func chainHash(key, prev []byte, seq int64, at, actorKind, actorID, action, name, scope string, version int, outcome, detail string) []byte {
	return macChain(key, prev, strconv.FormatInt(seq, 10), at, actorKind, actorID, action, name, scope, strconv.Itoa(version), outcome, detail)
}

// appendAudit adds rec at the head of the chain (atomically: a writer on
// another host that appended first makes the store call the builder again
// on the new head).
func (v *Vault) appendAudit(ctx context.Context, rec auditRecord) error {
	return v.store.AppendAudit(ctx, func(head AuditHead) (AuditRow, error) {
		prev := head.Hash
		if len(prev) == 0 {
			prev = make([]byte, 32)
		}
		r := AuditRow{Seq: head.Seq + 1, At: v.now(), ActorKind: rec.actor.Kind, ActorID: rec.actor.ID, Action: rec.action,
			Name: rec.name, Scope: rec.scope, Version: rec.version, Outcome: rec.outcome, Detail: rec.detail, PrevHash: prev}
		r.Hash = chainHash(v.auditKey, prev, r.Seq, r.At, r.ActorKind, r.ActorID, r.Action, r.Name, r.Scope, r.Version, r.Outcome, r.Detail)
		return r, nil
	})
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
	var expectSeq int64 = 1
	prev := make([]byte, 32)
	headHash := []byte(nil)
	head, err := v.store.AuditLog(ctx, func(r AuditRow) error {
		rep.Rows++
		if r.Seq != expectSeq {
			rep.Problems = append(rep.Problems, AuditProblem{Seq: r.Seq, Kind: AuditMissing,
				Detail: fmt.Sprintf("rows %d to %d are missing", expectSeq, r.Seq-1)})
		} else if !bytes.Equal(r.PrevHash, prev) {
			rep.Problems = append(rep.Problems, AuditProblem{Seq: r.Seq, Kind: AuditRelinked, Detail: "link to the previous row was changed"})
		}
		want := chainHash(v.auditKey, r.PrevHash, r.Seq, r.At, r.ActorKind, r.ActorID, r.Action, r.Name, r.Scope, r.Version, r.Outcome, r.Detail)
		if !bytes.Equal(want, r.Hash) {
			rep.Problems = append(rep.Problems, AuditProblem{Seq: r.Seq, Kind: AuditEdited, Detail: "contents do not match the row's hash"})
		}
		prev = r.Hash
		expectSeq = r.Seq + 1
		return nil
	})
	if errors.Is(err, ErrIntegrity) {
		rep.Problems = append(rep.Problems, AuditProblem{Kind: AuditEdited, Detail: err.Error()})
	} else if err != nil {
		return AuditReport{}, err
	} else {
		headHash = head.Hash
	}
	rep.HeadSeq = head.Seq
	last := expectSeq - 1
	switch {
	case last < head.Seq:
		rep.Problems = append(rep.Problems, AuditProblem{Seq: last + 1, Kind: AuditTailDeleted,
			Detail: fmt.Sprintf("rows %d to %d after the last row are missing", last+1, head.Seq)})
	case last > head.Seq:
		rep.Problems = append(rep.Problems, AuditProblem{Seq: head.Seq + 1, Kind: AuditEdited,
			Detail: fmt.Sprintf("rows %d to %d are not part of the chain", head.Seq+1, last)})
	case headHash != nil && last > 0 && !bytes.Equal(prev, headHash):
		rep.Problems = append(rep.Problems, AuditProblem{Seq: last, Kind: AuditEdited, Detail: "last row does not match the chain head"})
	}
	outcome := "ok"
	if !rep.OK() {
		outcome = "tampered"
	}
	err = v.appendAudit(ctx, auditRecord{actor: actor, action: "audit_verify", outcome: outcome,
		detail: fmt.Sprintf("%d rows, %d problems", rep.Rows, len(rep.Problems))})
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
	_, err := v.store.AuditLog(ctx, func(r AuditRow) error {
		if r.Seq <= f.Since || (f.Name != "" && r.Name != f.Name) {
			return nil
		}
		e := AuditEntry{Seq: r.Seq, ActorKind: r.ActorKind, ActorID: r.ActorID, Action: r.Action, Name: r.Name, Scope: r.Scope,
			Version: r.Version, Outcome: r.Outcome, Detail: r.Detail, Hash: hex.EncodeToString(r.Hash)}
		e.At, _ = time.Parse(time.RFC3339Nano, r.At)
		out = append(out, e)
		if len(out) > f.Limit {
			out = out[1:]
		}
		return nil
	})
	if err != nil && !errors.Is(err, ErrIntegrity) {
		return nil, err
	}
	err = v.appendAudit(ctx, auditRecord{actor: actor, action: "audit_read", name: f.Name, outcome: "ok", detail: fmt.Sprintf("%d entries", len(out))})
	return out, err
}
