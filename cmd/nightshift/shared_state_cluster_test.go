package main

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/nightshift/nightshift/bench/cluster"
	"github.com/nightshift/nightshift/identity"
	"github.com/nightshift/nightshift/identity/local"
	"github.com/nightshift/nightshift/orchestrator"
	"github.com/nightshift/nightshift/vault"
	"github.com/nightshift/nightshift/vault/natsstore"
)

// TestSharedStateSurvivesTheLossOfANATSNode: on a 3-node JetStream
// cluster (replicas 3), host A stores a secret, creates a task's identity
// and issues its token; the node leading the vault bucket is killed; host
// B, connected to the two nodes left, reads the secret, lists the identity,
// revokes the token, and host A (reconnected) is refused it. The vault's
// audit chain, appended by both, verifies.
func TestSharedStateSurvivesTheLossOfANATSNode(t *testing.T) {
	if testing.Short() {
		t.Skip("3 nats-server processes and a leader election")
	}
	ctx := context.Background()
	c := cluster.StartNATS(t, filepath.Join(t.TempDir(), "nats"), 3)
	key := vault.EnvKey(strings.Repeat("6c", 32))
	type host struct {
		v   *vault.Vault
		ids *identity.Service
	}
	open := func(url string) host {
		t.Helper()
		nc, err := nats.Connect(url, nats.MaxReconnects(-1), nats.ReconnectWait(100*time.Millisecond))
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(nc.Close)
		js, _ := jetstream.New(nc)
		var h host
		untilOK(t, 60*time.Second, func() error {
			st, err := natsstore.New(ctx, js, natsstore.Config{Replicas: 3})
			if err != nil {
				return err
			}
			if h.v, err = vault.OpenStore(ctx, st, key, vault.Config{Timeout: 5 * time.Second}); err != nil {
				return err
			}
			p, err := local.NewKV(ctx, js, local.KVConfig{Replicas: 3}, local.Config{Domain: "agents.test", SMTPListen: "127.0.0.1:0"})
			if err != nil {
				return err
			}
			h.ids, err = identity.NewKVService(ctx, js, p, identity.KVConfig{Replicas: 3}, identity.Config{})
			return err
		})
		return h
	}
	a := open(c.URL)
	op := vault.Actor{Kind: vault.ActorOperator, ID: "alice"}
	if _, err := a.v.Set(ctx, op, "MODEL_KEY", "agents", []byte("sk-cluster")); err != nil {
		t.Fatal(err)
	}
	id, err := a.ids.ForTask(ctx, "TASKHA001")
	if err != nil {
		t.Fatal(err)
	}
	tok, err := a.ids.IssueToken(ctx, id.ID, identity.Scope{})
	if err != nil {
		t.Fatal(err)
	}

	// Kill the node leading the vault bucket.
	nc, _ := nats.Connect(c.URL)
	js, _ := jetstream.New(nc)
	st, err := js.Stream(ctx, "KV_"+natsstore.Bucket)
	if err != nil {
		t.Fatal(err)
	}
	info, err := st.Info(ctx)
	nc.Close()
	if err != nil || info.Cluster == nil || info.Config.Replicas != 3 {
		t.Fatalf("vault bucket: %+v %v", info, err)
	}
	var rest []string
	killed := ""
	for i, n := range c.Nodes {
		if fmt.Sprintf("n%d", i+1) == info.Cluster.Leader {
			n.Kill()
			killed = n.Name
			continue
		}
		rest = append(rest, n.URL)
	}
	if killed == "" {
		t.Fatalf("no node leads the vault bucket: %+v", info.Cluster)
	}
	b := open(strings.Join(rest, ","))
	untilOK(t, 60*time.Second, func() error {
		got, _, err := b.v.Lookup(ctx, vault.Actor{Kind: vault.ActorTask, ID: "TASKHA001"}, "MODEL_KEY", vault.ScopesFor("TASKHA001", "", ""))
		if err == nil && string(got) != "sk-cluster" {
			return fmt.Errorf("got %q", got)
		}
		return err
	})
	untilOK(t, 60*time.Second, func() error {
		list, err := b.ids.List(ctx, identity.ListOptions{})
		if err == nil && (len(list) != 1 || list[0].ID != id.ID) {
			return fmt.Errorf("list = %+v", list)
		}
		return err
	})
	untilOK(t, 60*time.Second, func() error { return b.ids.RevokeToken(ctx, tok) })
	untilOK(t, 60*time.Second, func() error {
		_, _, err := a.ids.Authenticate(ctx, tok)
		if errors.Is(err, identity.ErrUnauthorized) {
			return nil
		}
		return fmt.Errorf("token revoked on B, A says %v", err)
	})
	untilOK(t, 60*time.Second, func() error {
		rep, err := a.v.VerifyAudit(ctx, op)
		if err == nil && !rep.OK() {
			t.Fatalf("audit after losing %s: %+v", killed, rep)
		}
		return err
	})
}

// untilOK calls fn until it succeeds or timeout passes (a leader election
// after a node is lost takes a few seconds).
func untilOK(t testing.TB, timeout time.Duration, fn func() error) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for {
		err := fn()
		if err == nil {
			return
		}
		if time.Now().After(deadline) {
			t.Fatal(err)
		}
		time.Sleep(200 * time.Millisecond)
	}
}

// BenchmarkVaultGetOnACluster measures one audited vault read (a leader
// read of the record, an audit append with expected-last-sequence) on a
// 3-node cluster with replicas 3, against the same read on the data dir's
// SQLite in the same run: ratio=<cluster / sqlite>.
func BenchmarkVaultGetOnACluster(b *testing.B) {
	ctx := context.Background()
	key := vault.EnvKey(strings.Repeat("6d", 32))
	op := vault.Actor{Kind: vault.ActorOperator, ID: "bench"}
	measure := func(v *vault.Vault, n int) time.Duration {
		if _, err := v.Set(ctx, op, "BENCH", "agents", []byte("benchmark-value-0123456789")); err != nil {
			b.Fatal(err)
		}
		start := time.Now()
		for i := 0; i < n; i++ {
			if _, err := v.Get(ctx, op, "BENCH", "agents"); err != nil {
				b.Fatal(err)
			}
		}
		return time.Since(start) / time.Duration(n)
	}
	db := openTestDB(b)
	single, err := vault.Open(ctx, db, key, vault.Config{})
	if err != nil {
		b.Fatal(err)
	}
	c := cluster.StartNATS(b, filepath.Join(b.TempDir(), "nats"), 3)
	nc, err := nats.Connect(c.URL)
	if err != nil {
		b.Fatal(err)
	}
	defer nc.Close()
	js, _ := jetstream.New(nc)
	var shared *vault.Vault
	untilOK(b, 60*time.Second, func() error {
		st, err := natsstore.New(ctx, js, natsstore.Config{Replicas: 3})
		if err == nil {
			shared, err = vault.OpenStore(ctx, st, key, vault.Config{})
		}
		return err
	})
	b.ResetTimer()
	sq := measure(single, b.N)
	cl := measure(shared, b.N)
	b.ReportMetric(float64(sq.Microseconds()), "µs/get-sqlite")
	b.ReportMetric(float64(cl.Microseconds()), "µs/get-cluster")
	b.ReportMetric(float64(cl)/float64(sq), "ratio")
}

func openTestDB(b *testing.B) *sql.DB {
	db, err := orchestrator.OpenDB(filepath.Join(b.TempDir(), "nightshift.db"))
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { db.Close() })
	return db
}
