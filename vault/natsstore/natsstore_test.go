package natsstore_test

import (
	"bytes"
	"context"
	"database/sql"
	"errors"
	"fmt"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	_ "modernc.org/sqlite"

	"github.com/nightshift/nightshift/orchestrator/natsserver"
	"github.com/nightshift/nightshift/vault"
	"github.com/nightshift/nightshift/vault/natsstore"
)

var op = vault.Actor{Kind: vault.ActorOperator, ID: "alice"}

func startNATS(t testing.TB) *server.Server {
	t.Helper()
	ns, err := natsserver.Start(natsserver.Config{StoreDir: t.TempDir(), NoSync: true})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ns.Shutdown(); ns.WaitForShutdown() })
	return ns
}

// host is one process's view of the cluster: its own connection, its own
// driver, its own Vault (and its own data dir for anything local).
type host struct {
	nc    *nats.Conn
	store *natsstore.Store
	v     *vault.Vault
	dir   string
}

func newHost(t testing.TB, ns *server.Server, key vault.KeySource) *host {
	t.Helper()
	ctx := context.Background()
	nc, err := natsserver.Connect(ns, "host")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(nc.Close)
	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatal(err)
	}
	st, err := natsstore.New(ctx, js, natsstore.Config{Replicas: 1})
	if err != nil {
		t.Fatal(err)
	}
	v, err := vault.OpenStore(ctx, st, key, vault.Config{})
	if err != nil {
		t.Fatal(err)
	}
	return &host{nc: nc, store: st, v: v, dir: t.TempDir()}
}

func key() vault.KeySource { return vault.EnvKey(strings.Repeat("42", 32)) }

// A secret set through one host is read by a worker on another; a version
// destroyed on the second is gone on the first; both see one audit chain.
func TestSecretSetOnOneHostIsReadOnAnother(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	ns := startNATS(t)
	a := newHost(t, ns, key())
	b := newHost(t, ns, key())
	if _, err := a.v.Set(ctx, op, "API_KEY", "agents", []byte("sk-one")); err != nil {
		t.Fatal(err)
	}
	got, scope, err := b.v.Lookup(ctx, vault.Actor{Kind: vault.ActorTask, ID: "t1"}, "API_KEY", vault.ScopesFor("t1", "claude", "repo"))
	if err != nil || string(got) != "sk-one" || scope != "agents" {
		t.Fatalf("host B lookup = %q %q %v", got, scope, err)
	}
	if ver, err := b.v.Set(ctx, op, "API_KEY", "agents", []byte("sk-two")); err != nil || ver != 2 {
		t.Fatalf("host B set = %d %v", ver, err)
	}
	if _, err := b.v.Destroy(ctx, op, "API_KEY", "agents", 1); err != nil {
		t.Fatal(err)
	}
	if _, err := a.v.GetVersion(ctx, op, "API_KEY", "agents", 1); !errors.Is(err, vault.ErrNotFound) {
		t.Fatalf("host A read of a version destroyed on B: %v", err)
	}
	if got, err := a.v.Get(ctx, op, "API_KEY", "agents"); err != nil || string(got) != "sk-two" {
		t.Fatalf("host A get = %q %v", got, err)
	}
	rep, err := a.v.VerifyAudit(ctx, op)
	if err != nil || !rep.OK() || rep.Rows != 6 {
		t.Fatalf("audit from A: %+v %v", rep, err)
	}
	// A host with another root key cannot open the cluster's vault.
	nc, _ := natsserver.Connect(ns, "intruder")
	defer nc.Close()
	js, _ := jetstream.New(nc)
	st, err := natsstore.New(ctx, js, natsstore.Config{})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := vault.OpenStore(ctx, st, vault.EnvKey(strings.Repeat("43", 32)), vault.Config{}); !errors.Is(err, vault.ErrWrongKey) {
		t.Fatalf("open with another key: %v", err)
	}
}

// Two hosts setting the same secret at once get distinct versions and lose
// no write; the audit chain they append to together has no fork.
func TestTwoHostsSetTheSameSecret(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	ns := startNATS(t)
	hosts := []*host{newHost(t, ns, key()), newHost(t, ns, key())}
	const rounds = 15
	var wg sync.WaitGroup
	errc := make(chan error, 2*rounds)
	for i, h := range hosts {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for r := 0; r < rounds; r++ {
				if _, err := h.v.Set(ctx, op, "SHARED", "server", []byte(fmt.Sprintf("h%d-%d", i, r))); err != nil {
					errc <- err
					return
				}
			}
		}()
	}
	wg.Wait()
	close(errc)
	for err := range errc {
		t.Fatal(err)
	}
	infos, err := hosts[1].v.List(ctx, op)
	if err != nil {
		t.Fatal(err)
	}
	if len(infos) != 1 || len(infos[0].Versions) != 2*rounds || infos[0].Latest != 2*rounds {
		t.Fatalf("versions after concurrent sets: %+v", infos)
	}
	seen := map[string]bool{}
	for ver := 1; ver <= 2*rounds; ver++ {
		b, err := hosts[0].v.GetVersion(ctx, op, "SHARED", "server", ver)
		if err != nil {
			t.Fatal(err)
		}
		seen[string(b)] = true
	}
	if len(seen) != 2*rounds {
		t.Fatalf("a write was lost: %d distinct values", len(seen))
	}
	rep, err := hosts[0].v.VerifyAudit(ctx, op)
	if err != nil || !rep.OK() {
		t.Fatalf("audit: %+v %v", rep, err)
	}
	// 30 sets, 1 list, 30 gets, then the verification itself is appended.
	if rep.Rows != 2*rounds+1+2*rounds {
		t.Fatalf("audit rows = %d", rep.Rows)
	}
}

// A key rotation on one host while another host reads and writes: every
// read succeeds and every value stays readable after the old KEK is gone.
func TestRotateWhileAnotherHostReads(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	ns := startNATS(t)
	a := newHost(t, ns, key())
	b := newHost(t, ns, key())
	for i := 0; i < 10; i++ {
		if _, err := a.v.Set(ctx, op, fmt.Sprintf("S_%d", i), "agents", []byte(fmt.Sprintf("v%d", i))); err != nil {
			t.Fatal(err)
		}
	}
	stop := make(chan struct{})
	var wg sync.WaitGroup
	var readErr, writeErr error
	wg.Add(2)
	go func() {
		defer wg.Done()
		for i := 0; ; i++ {
			select {
			case <-stop:
				return
			default:
			}
			n := i % 10
			got, err := b.v.Get(ctx, op, fmt.Sprintf("S_%d", n), "agents")
			if err != nil || string(got) != fmt.Sprintf("v%d", n) {
				readErr = fmt.Errorf("read S_%d during rotation: %q %v", n, got, err)
				return
			}
		}
	}()
	go func() {
		defer wg.Done()
		for i := 0; ; i++ {
			select {
			case <-stop:
				return
			default:
			}
			if _, err := b.v.Set(ctx, op, "WRITTEN", "agents", []byte(fmt.Sprint(i))); err != nil {
				writeErr = err
				return
			}
		}
	}()
	for r := 0; r < 3; r++ {
		if _, _, err := a.v.RotateKEK(ctx, op); err != nil {
			t.Fatal(err)
		}
	}
	close(stop)
	wg.Wait()
	if readErr != nil || writeErr != nil {
		t.Fatal(readErr, writeErr)
	}
	kr, _, err := a.store.Keyring(ctx)
	if err != nil || len(kr.KEKs) != 1 || kr.KEKs[0].ID != 4 {
		t.Fatalf("keyring after 3 rotations: %+v %v", kr.KEKs, err)
	}
	// Every live version, old and new, opens under the one KEK left.
	infos, err := a.v.List(ctx, op)
	if err != nil {
		t.Fatal(err)
	}
	for _, in := range infos {
		for _, ver := range in.Versions {
			if _, err := a.v.GetVersion(ctx, op, in.Name, in.Scope, ver.Version); err != nil {
				t.Fatalf("%s v%d after rotation: %v", in.Name, ver.Version, err)
			}
		}
	}
	if rep, err := b.v.VerifyAudit(ctx, op); err != nil || !rep.OK() {
		t.Fatalf("audit: %+v %v", rep, err)
	}
}

// The audit stream refuses deletes and purges: a NATS client cannot
// shorten the chain.
func TestAuditStreamRefusesDeletes(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	ns := startNATS(t)
	a := newHost(t, ns, key())
	if _, err := a.v.Set(ctx, op, "X", "server", []byte("x")); err != nil {
		t.Fatal(err)
	}
	js, _ := jetstream.New(a.nc)
	st, err := js.Stream(ctx, natsstore.AuditStream)
	if err != nil {
		t.Fatal(err)
	}
	if err := st.DeleteMsg(ctx, 1); err == nil {
		t.Fatal("deleting an audit row succeeded")
	}
	if err := st.Purge(ctx); err == nil {
		t.Fatal("purging the audit stream succeeded")
	}
}

func openSQLite(t testing.TB, path string) *sql.DB {
	t.Helper()
	db, err := sql.Open("sqlite", "file:"+path+"?_pragma=journal_mode(WAL)&_pragma=busy_timeout(5000)&_pragma=foreign_keys(1)")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { db.Close() })
	return db
}

// An existing SQLite vault moves to the cluster on first start: every
// version (destroyed ones stay destroyed), the same root key, the audit
// chain continued and verifiable; a second run copies nothing; the SQLite
// file then refuses to open and holds no sealed bytes.
func TestMigrateSQLiteVault(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	dir := t.TempDir()
	db := openSQLite(t, filepath.Join(dir, "nightshift.db"))
	old, err := vault.Open(ctx, db, key(), vault.Config{})
	if err != nil {
		t.Fatal(err)
	}
	for _, s := range []struct{ name, scope, val string }{{"GH_TOKEN", "server", "ghp-1"}, {"GH_TOKEN", "server", "ghp-2"}, {"MODEL", "agents", "sk-m"}, {"ONE", "task:abc", "t"}} {
		if _, err := old.Set(ctx, op, s.name, s.scope, []byte(s.val)); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := old.Destroy(ctx, op, "GH_TOKEN", "server", 1); err != nil {
		t.Fatal(err)
	}
	if _, _, err := old.RotateKEK(ctx, op); err != nil {
		t.Fatal(err)
	}
	before, err := old.AuditLog(ctx, op, vault.AuditFilter{})
	if err != nil {
		t.Fatal(err)
	}

	ns := startNATS(t)
	nc, _ := natsserver.Connect(ns, "a")
	defer nc.Close()
	js, _ := jetstream.New(nc)
	st, err := natsstore.New(ctx, js, natsstore.Config{})
	if err != nil {
		t.Fatal(err)
	}
	src, err := vault.NewSQLiteStore(ctx, db)
	if err != nil {
		t.Fatal(err)
	}
	res, err := vault.Migrate(ctx, src, st)
	if err != nil || res.Secrets != 3 || res.AuditRows != len(before)+1 || res.AuditSkipped != "" {
		t.Fatalf("migrate = %+v %v (audit rows before: %d)", res, err, len(before))
	}
	again, err := vault.Migrate(ctx, src, st)
	if err != nil || again.AuditRows != 0 {
		t.Fatalf("second migrate = %+v %v", again, err)
	}
	if err := src.MarkMoved(ctx, "nats at test", false); err != nil {
		t.Fatal(err)
	}

	b := newHost(t, ns, key())
	for _, c := range []struct{ name, scope, want string }{{"GH_TOKEN", "server", "ghp-2"}, {"MODEL", "agents", "sk-m"}, {"ONE", "task:abc", "t"}} {
		got, err := b.v.Get(ctx, op, c.name, c.scope)
		if err != nil || string(got) != c.want {
			t.Fatalf("%s after migration = %q %v", c.name, got, err)
		}
	}
	if _, err := b.v.GetVersion(ctx, op, "GH_TOKEN", "server", 1); !errors.Is(err, vault.ErrNotFound) {
		t.Fatalf("destroyed version came back: %v", err)
	}
	rep, err := b.v.VerifyAudit(ctx, op)
	if err != nil || !rep.OK() || rep.Rows != len(before)+1+4 {
		t.Fatalf("audit after migration: %+v %v", rep, err)
	}
	if _, err := vault.Open(ctx, db, key(), vault.Config{}); !errors.Is(err, vault.ErrMoved) {
		t.Fatalf("open moved SQLite vault: %v", err)
	}
	var n int
	db.QueryRow(`SELECT (SELECT count(*) FROM vault_secrets) + (SELECT count(*) FROM vault_keks) + (SELECT count(*) FROM vault_audit)`).Scan(&n)
	if n != 0 {
		t.Fatalf("%d sealed rows left in the moved SQLite vault", n)
	}
	// A migration from an empty data dir into a populated cluster copies
	// nothing; one with secrets of another vault is refused.
	other := openSQLite(t, filepath.Join(dir, "other.db"))
	ov, err := vault.Open(ctx, other, vault.EnvKey(strings.Repeat("43", 32)), vault.Config{})
	if err != nil {
		t.Fatal(err)
	}
	ost, _ := vault.NewSQLiteStore(ctx, other)
	if res, err := vault.Migrate(ctx, ost, st); err != nil || res.Skipped == "" {
		t.Fatalf("migrate an empty other vault = %+v %v", res, err)
	}
	if _, err := ov.Set(ctx, op, "MINE", "server", []byte("m")); err != nil {
		t.Fatal(err)
	}
	if _, err := vault.Migrate(ctx, ost, st); !errors.Is(err, vault.ErrMigrateConflict) {
		t.Fatalf("migrate another vault with secrets: %v", err)
	}
}

// BenchmarkGet compares one audited read through SQLite and through
// JetStream (one embedded server, in-process connection).
func BenchmarkGet(b *testing.B) {
	ctx := context.Background()
	val := bytes.Repeat([]byte("x"), 64)
	b.Run("sqlite", func(b *testing.B) {
		db := openSQLite(b, filepath.Join(b.TempDir(), "v.db"))
		v, err := vault.Open(ctx, db, key(), vault.Config{})
		if err != nil {
			b.Fatal(err)
		}
		benchGet(b, v, val)
	})
	b.Run("jetstream", func(b *testing.B) {
		ns, err := natsserver.Start(natsserver.Config{StoreDir: b.TempDir()})
		if err != nil {
			b.Fatal(err)
		}
		defer ns.Shutdown()
		h := newHost(b, ns, key())
		benchGet(b, h.v, val)
	})
}

func benchGet(b *testing.B, v *vault.Vault, val []byte) {
	ctx := context.Background()
	if _, err := v.Set(ctx, op, "BENCH", "agents", val); err != nil {
		b.Fatal(err)
	}
	start := time.Now()
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		if _, err := v.Get(ctx, op, "BENCH", "agents"); err != nil {
			b.Fatal(err)
		}
	}
	b.ReportMetric(float64(time.Since(start).Microseconds())/float64(b.N), "µs/get")
}
