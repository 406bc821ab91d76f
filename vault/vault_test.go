package vault_test

import (
	"bytes"
	"context"
	"database/sql"
	"errors"
	"path/filepath"
	"strings"
	"testing"
	"time"

	_ "modernc.org/sqlite"

	"github.com/nightshift/nightshift/vault"
)

func openDB(t testing.TB, path string) *sql.DB {
	t.Helper()
	db, err := sql.Open("sqlite", "file:"+path+"?_pragma=journal_mode(WAL)&_pragma=busy_timeout(5000)&_pragma=foreign_keys(1)")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { db.Close() })
	return db
}

type fixture struct {
	dir    string
	dbPath string
	db     *sql.DB
	keys   vault.KeySource
	v      *vault.Vault
}

func newFixture(t *testing.T) *fixture {
	t.Helper()
	f := &fixture{dir: t.TempDir()}
	f.dbPath = filepath.Join(f.dir, "nightshift.db")
	f.db = openDB(t, f.dbPath)
	f.keys = vault.FileKey(filepath.Join(f.dir, "vault.key"), nil)
	f.v = f.open(t)
	return f
}

func (f *fixture) open(t *testing.T) *vault.Vault {
	t.Helper()
	v, err := vault.Open(context.Background(), f.db, f.keys, vault.Config{})
	if err != nil {
		t.Fatalf("open: %v", err)
	}
	return v
}

func mustOpen(tb testing.TB, f *fixture) *vault.Vault {
	tb.Helper()
	f.keys = vault.EnvKey(strings.Repeat("42", 32))
	v, err := vault.Open(context.Background(), f.db, f.keys, vault.Config{})
	if err != nil {
		tb.Fatal(err)
	}
	return v
}

var op = vault.Actor{Kind: vault.ActorOperator, ID: "alice"}

func TestSetGetVersions(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	f := newFixture(t)
	v := f.v
	for i, val := range []string{"first-value-1", "second-value-2"} {
		n, err := v.Set(ctx, op, "API_KEY", "global", []byte(val))
		if err != nil || n != i+1 {
			t.Fatalf("set %d: version %d err %v", i, n, err)
		}
	}
	got, err := v.Get(ctx, op, "API_KEY", "global")
	if err != nil || string(got) != "second-value-2" {
		t.Fatalf("get: %q %v", got, err)
	}
	got, err = v.GetVersion(ctx, op, "API_KEY", "global", 1)
	if err != nil || string(got) != "first-value-1" {
		t.Fatalf("get v1: %q %v", got, err)
	}
	if _, err := v.Get(ctx, op, "API_KEY", "task:1"); !errors.Is(err, vault.ErrNotFound) {
		t.Fatalf("other scope: %v", err)
	}
	if _, err := v.Destroy(ctx, op, "API_KEY", "global", 2); err != nil {
		t.Fatal(err)
	}
	got, err = v.Get(ctx, op, "API_KEY", "global")
	if err != nil || string(got) != "first-value-1" {
		t.Fatalf("after destroying v2: %q %v", got, err)
	}
	if _, err := v.GetVersion(ctx, op, "API_KEY", "global", 2); !errors.Is(err, vault.ErrNotFound) {
		t.Fatalf("destroyed version: %v", err)
	}
	n, err := v.Set(ctx, op, "API_KEY", "global", []byte("third-value-3"))
	if err != nil || n != 3 {
		t.Fatalf("version after destroy: %d %v", n, err)
	}
	s, err := v.Resolve(ctx, "ravi", "API_KEY")
	if err != nil || s != "third-value-3" {
		t.Fatalf("resolve: %q %v", s, err)
	}
	if _, err := v.Resolve(ctx, "env", "API_KEY"); !errors.Is(err, vault.ErrUnknownKind) {
		t.Fatalf("resolve env: %v", err)
	}
	list, err := v.List(ctx, op)
	if err != nil || len(list) != 1 || list[0].Latest != 3 || len(list[0].Versions) != 3 || list[0].Versions[1].DestroyedAt == nil {
		t.Fatalf("list: %+v %v", list, err)
	}
	_ = bytes.Equal
	_ = time.Now
}
