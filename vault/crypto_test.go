package vault_test

import (
	"bytes"
	"context"
	"encoding/base64"
	"encoding/hex"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/nightshift/nightshift/vault"
)

// secretValues are distinctive so a find in the files cannot be chance.
var secretValues = []string{
	"sk-live-PLAINTEXT-CANARY-0001-abcdefghijklmnop",
	"ghp_CANARY2zyxwvutsrqponmlkjihgfedcba987654",
	"-----BEGIN PRIVATE KEY-----\nMIIEvQIBADANBgkqhkiG9w0BAQEFAASC\n-----END PRIVATE KEY-----\n",
}

func encodings(v string) map[string]string {
	b := []byte(v)
	return map[string]string{
		"raw":       v,
		"hex":       hex.EncodeToString(b),
		"HEX":       strings.ToUpper(hex.EncodeToString(b)),
		"base64":    base64.StdEncoding.EncodeToString(b),
		"base64url": base64.RawURLEncoding.EncodeToString(b),
		// A distinctive 16-byte slice, in case a value were split by pages.
		"raw-middle": v[8:24],
	}
}

func assertNoPlaintext(t *testing.T, files []string) {
	t.Helper()
	checked := 0
	for _, f := range files {
		data, err := os.ReadFile(f)
		if errors.Is(err, os.ErrNotExist) {
			continue
		}
		if err != nil {
			t.Fatal(err)
		}
		checked++
		for _, v := range secretValues {
			for enc, s := range encodings(v) {
				if bytes.Contains(data, []byte(s)) {
					t.Errorf("%s holds %s of a secret value", filepath.Base(f), enc)
				}
			}
		}
	}
	if checked == 0 {
		t.Fatal("no database files to check")
	}
}

func TestNoPlaintextOnDisk(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	f := newFixture(t)
	for i, v := range secretValues {
		for _, scope := range []string{"global", "task:42"} {
			if _, err := f.v.Set(ctx, op, fmt.Sprintf("SECRET_%d", i), scope, []byte(v)); err != nil {
				t.Fatal(err)
			}
		}
	}
	tok := vault.Token{Provider: vault.ProviderGitHub, AccessToken: secretValues[1], RefreshToken: secretValues[0]}
	if _, err := f.v.SetToken(ctx, op, "GITHUB_OAUTH", "global", tok); err != nil {
		t.Fatal(err)
	}
	for i := range secretValues {
		if _, _, err := f.v.Lookup(ctx, op, fmt.Sprintf("SECRET_%d", i), vault.ScopesFor("42", "claude", "github.com/acme/api")); err != nil {
			t.Fatal(err)
		}
	}
	if _, _, err := f.v.RotateKEK(ctx, op); err != nil {
		t.Fatal(err)
	}
	files := []string{f.dbPath, f.dbPath + "-wal", f.dbPath + "-shm"}
	if _, err := os.Stat(f.dbPath + "-wal"); err != nil {
		t.Fatalf("expected a WAL file while open: %v", err)
	}
	assertNoPlaintext(t, files) // while open, WAL populated
	f.db.Close()
	assertNoPlaintext(t, files) // after checkpoint
}

func TestTamperingFailsClearly(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	f := newFixture(t)
	for _, name := range []string{"ALPHA", "BRAVO"} {
		for i := 1; i <= 2; i++ {
			if _, err := f.v.Set(ctx, op, name, "global", []byte(fmt.Sprintf("%s-value-%d-xxxxxxxx", name, i))); err != nil {
				t.Fatal(err)
			}
		}
	}
	exec := func(q string, args ...any) {
		t.Helper()
		if _, err := f.db.Exec(q, args...); err != nil {
			t.Fatal(err)
		}
	}
	wantIntegrity := func(name string, version int, part string) {
		t.Helper()
		_, err := f.v.GetVersion(ctx, op, name, "global", version)
		var ie *vault.IntegrityError
		if !errors.As(err, &ie) || !errors.Is(err, vault.ErrIntegrity) {
			t.Fatalf("%s v%d: want *IntegrityError, got %v", name, version, err)
		}
		if ie.Part != part || ie.Name != name || ie.Version != version {
			t.Fatalf("%s v%d: error names %+v, want part %q", name, version, ie, part)
		}
	}

	flip := func(col, name string, version, at int) {
		t.Helper()
		var b []byte
		if err := f.db.QueryRow(`SELECT `+col+` FROM vault_secrets WHERE name = ? AND version = ?`, name, version).Scan(&b); err != nil {
			t.Fatal(err)
		}
		b[at] ^= 0x01
		exec(`UPDATE vault_secrets SET `+col+` = ? WHERE name = ? AND version = ?`, b, name, version)
	}
	// A flipped bit in a ciphertext, and in a wrapped data key.
	flip("ciphertext", "ALPHA", 1, 30)
	wantIntegrity("ALPHA", 1, "value")
	flip("wrapped_dek", "ALPHA", 2, 40)
	wantIntegrity("ALPHA", 2, "data key")

	// BRAVO v2's sealed value and key copied onto BRAVO v1 (same secret,
	// other version) and onto a new row of another name.
	exec(`UPDATE vault_secrets SET (kek_id, wrapped_dek, ciphertext) = (SELECT kek_id, wrapped_dek, ciphertext FROM vault_secrets WHERE name = 'BRAVO' AND version = 2) WHERE name = 'BRAVO' AND version = 1`)
	wantIntegrity("BRAVO", 1, "data key")
	exec(`INSERT INTO vault_secrets(name, scope, version, kek_id, wrapped_dek, ciphertext, created_at, created_by) SELECT 'CHARLIE', scope, version, kek_id, wrapped_dek, ciphertext, created_at, created_by FROM vault_secrets WHERE name = 'BRAVO' AND version = 2`)
	wantIntegrity("CHARLIE", 2, "data key")
	// Same name and version in another scope.
	exec(`INSERT INTO vault_secrets(name, scope, version, kek_id, wrapped_dek, ciphertext, created_at, created_by) SELECT name, 'task:9', version, kek_id, wrapped_dek, ciphertext, created_at, created_by FROM vault_secrets WHERE name = 'BRAVO' AND version = 2`)
	if _, err := f.v.GetVersion(ctx, op, "BRAVO", "task:9", 2); !errors.Is(err, vault.ErrIntegrity) {
		t.Fatalf("moved scope: %v", err)
	}
	// The untouched version still reads.
	if got, err := f.v.GetVersion(ctx, op, "BRAVO", "global", 2); err != nil || string(got) != "BRAVO-value-2-xxxxxxxx" {
		t.Fatalf("untouched: %q %v", got, err)
	}
	// Failed reads are audited as integrity errors.
	entries, err := f.v.AuditLog(ctx, op, vault.AuditFilter{Name: "ALPHA"})
	if err != nil {
		t.Fatal(err)
	}
	if last := entries[len(entries)-1]; last.Outcome != "integrity_error" {
		t.Fatalf("audit of failed read: %+v", last)
	}
	// Rotation refuses to bless a tampered record.
	if _, _, err := f.v.RotateKEK(ctx, op); !errors.Is(err, vault.ErrIntegrity) {
		t.Fatalf("rotate over tampered record: %v", err)
	}
}

func TestWrongKey(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	f := newFixture(t)
	if _, err := f.v.Set(ctx, op, "A_SECRET", "global", []byte("value-value")); err != nil {
		t.Fatal(err)
	}
	other := vault.EnvKey(strings.Repeat("ab", 32))
	if _, err := vault.Open(ctx, f.db, other, vault.Config{}); !errors.Is(err, vault.ErrWrongKey) {
		t.Fatalf("want ErrWrongKey, got %v", err)
	}
	// A KEK sealed under another root key (swapped in by raw SQL).
	g := newFixture(t)
	var w []byte
	if err := g.db.QueryRow(`SELECT wrapped FROM vault_keks`).Scan(&w); err != nil {
		t.Fatal(err)
	}
	if _, err := f.db.Exec(`UPDATE vault_keks SET wrapped = ?`, w); err != nil {
		t.Fatal(err)
	}
	v2 := f.open(t) // fresh process: no cached KEK
	_, err := v2.Get(ctx, op, "A_SECRET", "global")
	var ie *vault.IntegrityError
	if !errors.As(err, &ie) || ie.Part != "kek" {
		t.Fatalf("foreign kek: %v", err)
	}
}

func TestRotationKeepsEveryVersion(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	f := newFixture(t)
	want := map[string][]string{}
	set := func(name, scope, val string) {
		t.Helper()
		if _, err := f.v.Set(ctx, op, name, scope, []byte(val)); err != nil {
			t.Fatal(err)
		}
		want[name+"|"+scope] = append(want[name+"|"+scope], val)
	}
	checkAll := func(v *vault.Vault) {
		t.Helper()
		for k, vals := range want {
			name, scope, _ := strings.Cut(k, "|")
			for i, val := range vals {
				got, err := v.GetVersion(ctx, op, name, scope, i+1)
				if err != nil || string(got) != val {
					t.Fatalf("%s %s v%d: %q %v", name, scope, i+1, got, err)
				}
			}
		}
	}
	set("DB_PASSWORD", "global", "password-one")
	set("DB_PASSWORD", "global", "password-two")
	set("DB_PASSWORD", "agent:claude", "password-agent")
	id, n, err := f.v.RotateKEK(ctx, op)
	if err != nil || id != 2 || n != 3 {
		t.Fatalf("rotate kek: %d %d %v", id, n, err)
	}
	set("DB_PASSWORD", "global", "password-three")
	if _, _, err := f.v.RotateKEK(ctx, op); err != nil {
		t.Fatal(err)
	}
	var keks int
	f.db.QueryRow(`SELECT count(*) FROM vault_keks`).Scan(&keks)
	if keks != 1 {
		t.Fatalf("old keks kept: %d", keks)
	}
	checkAll(f.v)
	checkAll(f.open(t)) // reopen after rotation

	// Root key rotation.
	next := vault.EnvKey(base64.StdEncoding.EncodeToString(bytes.Repeat([]byte{7}, 32)))
	if err := f.v.RotateRoot(ctx, op, next); err != nil {
		t.Fatal(err)
	}
	set("AFTER_ROOT", "global", "after-root-rotation")
	checkAll(f.v)
	if _, err := vault.Open(ctx, f.db, f.keys, vault.Config{}); !errors.Is(err, vault.ErrWrongKey) {
		t.Fatalf("old root key still opens: %v", err)
	}
	f.keys = next
	v2 := f.open(t)
	checkAll(v2)
	if rep, err := v2.VerifyAudit(ctx, op); err != nil || !rep.OK() {
		t.Fatalf("audit after root rotation: %+v %v", rep, err)
	}
}

func TestDestroyOverwritesSealedBytes(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	f := newFixture(t)
	if _, err := f.v.Set(ctx, op, "GONE", "global", bytes.Repeat([]byte("destroy-me"), 50)); err != nil {
		t.Fatal(err)
	}
	var ct []byte
	if err := f.db.QueryRow(`SELECT ciphertext FROM vault_secrets WHERE name = 'GONE'`).Scan(&ct); err != nil {
		t.Fatal(err)
	}
	if _, err := f.v.Destroy(ctx, op, "GONE", "global", 0); err != nil {
		t.Fatal(err)
	}
	if _, err := f.v.Get(ctx, op, "GONE", "global"); !errors.Is(err, vault.ErrNotFound) {
		t.Fatalf("destroyed secret: %v", err)
	}
	if _, err := f.v.Destroy(ctx, op, "GONE", "global", 0); !errors.Is(err, vault.ErrNotFound) {
		t.Fatalf("destroy twice: %v", err)
	}
	f.db.Close() // checkpoint the WAL into the main file
	data, err := os.ReadFile(f.dbPath)
	if err != nil {
		t.Fatal(err)
	}
	if bytes.Contains(data, ct[1:40]) {
		t.Fatal("destroyed ciphertext still in the database file")
	}
}
