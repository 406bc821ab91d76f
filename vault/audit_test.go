package vault_test

import (
	"context"
	"crypto/sha256"
	"testing"

	"github.com/nightshift/nightshift/vault"
)

func auditFixture(t *testing.T) *fixture {
	t.Helper()
	ctx := context.Background()
	f := newFixture(t)
	task := vault.Actor{Kind: vault.ActorTask, ID: "01TASK"}
	if _, err := f.v.Set(ctx, op, "TOKEN", "agents", []byte("token-value-1")); err != nil {
		t.Fatal(err)
	}
	for i := 0; i < 4; i++ {
		if _, _, err := f.v.Lookup(ctx, task, "TOKEN", vault.ScopesFor("01TASK", "", "")); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := f.v.Get(ctx, task, "MISSING", "global"); err == nil {
		t.Fatal("missing secret read")
	}
	return f // rows 1..6
}

func TestAuditRecordsWhoWhatWhen(t *testing.T) {
	t.Parallel()
	f := auditFixture(t)
	entries, err := f.v.AuditLog(context.Background(), op, vault.AuditFilter{})
	if err != nil {
		t.Fatal(err)
	}
	if len(entries) != 6 {
		t.Fatalf("want 6 entries, got %d", len(entries))
	}
	e := entries[1]
	if e.Seq != 2 || e.ActorKind != "task" || e.ActorID != "01TASK" || e.Action != "lookup" || e.Name != "TOKEN" || e.Scope != "agents" || e.Version != 1 || e.Outcome != "ok" || e.At.IsZero() {
		t.Fatalf("lookup entry: %+v", e)
	}
	if last := entries[5]; last.Outcome != "not_found" || last.Name != "MISSING" {
		t.Fatalf("failed read entry: %+v", last)
	}
	rep, err := f.v.VerifyAudit(context.Background(), op)
	if err != nil || !rep.OK() || rep.Rows != 7 { // 6 + the audit_read above
		t.Fatalf("clean chain: %+v %v", rep, err)
	}
}

func TestAuditTamperingDetected(t *testing.T) {
	t.Parallel()
	cases := []struct {
		name    string
		tamper  string
		args    []any
		seq     int64
		kind    string
		rehash  bool // also recompute a plain SHA-256 over the edited row
		partial bool // a problem at seq must be among others
	}{
		{name: "edit actor", tamper: `UPDATE vault_audit SET actor_id = 'someone-else' WHERE seq = 3`, seq: 3, kind: vault.AuditEdited},
		{name: "edit time", tamper: `UPDATE vault_audit SET at = '2020-01-01T00:00:00Z' WHERE seq = 2`, seq: 2, kind: vault.AuditEdited},
		{name: "edit and rehash", tamper: `UPDATE vault_audit SET action = 'set', hash = ? WHERE seq = 4`, seq: 4, kind: vault.AuditEdited, rehash: true, partial: true},
		{name: "delete middle", tamper: `DELETE FROM vault_audit WHERE seq = 3`, seq: 4, kind: vault.AuditMissing},
		{name: "delete first", tamper: `DELETE FROM vault_audit WHERE seq = 1`, seq: 2, kind: vault.AuditMissing},
		{name: "delete tail", tamper: `DELETE FROM vault_audit WHERE seq >= 5`, seq: 5, kind: vault.AuditTailDeleted},
		{name: "relink", tamper: `UPDATE vault_audit SET prev_hash = (SELECT hash FROM vault_audit WHERE seq = 1) WHERE seq = 3`, seq: 3, kind: vault.AuditRelinked, partial: true},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			f := auditFixture(t)
			args := tc.args
			if tc.rehash {
				h := sha256.Sum256([]byte("forged"))
				args = []any{h[:]}
			}
			if _, err := f.db.Exec(tc.tamper, args...); err != nil {
				t.Fatal(err)
			}
			rep, err := f.v.VerifyAudit(context.Background(), op)
			if err != nil {
				t.Fatal(err)
			}
			if rep.OK() {
				t.Fatal("tampering not detected")
			}
			found := false
			for _, p := range rep.Problems {
				if p.Seq == tc.seq && p.Kind == tc.kind {
					found = true
				}
			}
			if !found || (!tc.partial && len(rep.Problems) != 1) {
				t.Fatalf("want %s at row %d, got %+v", tc.kind, tc.seq, rep.Problems)
			}
		})
	}
}
