package notify_test

import (
	"context"
	"fmt"
	"os"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/nightshift/nightshift/orchestrator/natsserver"
	"github.com/nightshift/nightshift/orchestrator/notify"
)

// kvBackend is set for the second run of the suite: every reporter test
// then runs over the shared bucket (NewKVStore) instead of SQLite.
var kvBackend bool

func TestMain(m *testing.M) {
	if code := m.Run(); code != 0 {
		os.Exit(code)
	}
	kvBackend = true
	os.Exit(m.Run())
}

func startNATS(t *testing.T) *server.Server {
	t.Helper()
	ns, err := natsserver.Start(natsserver.Config{StoreDir: t.TempDir(), NoSync: true})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ns.Shutdown(); ns.WaitForShutdown() })
	return ns
}

// kvStore is one scheduler's store: its own connection to the shared bucket.
func kvStore(t *testing.T, ns *server.Server, cfg notify.KVConfig) *notify.Store {
	t.Helper()
	nc, err := natsserver.Connect(ns, "scheduler")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(nc.Close)
	js, _ := jetstream.New(nc)
	s, err := notify.NewKVStore(context.Background(), js, cfg)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

// remoteCounter is a remote service that counts posts and edits, slow
// enough for two schedulers to overlap.
type remoteCounter struct {
	creates, updates atomic.Int32
	mu               sync.Mutex
	last             string
}

func (r *remoteCounter) remote(text string) notify.Remote {
	return notify.Remote{
		Create: func(ctx context.Context) (string, error) {
			time.Sleep(20 * time.Millisecond)
			n := r.creates.Add(1)
			r.mu.Lock()
			r.last = text
			r.mu.Unlock()
			return fmt.Sprintf("comment-%d", n), nil
		},
		Update: func(ctx context.Context, id string) error {
			time.Sleep(5 * time.Millisecond)
			r.updates.Add(1)
			r.mu.Lock()
			r.last = text
			r.mu.Unlock()
			return nil
		},
	}
}

// Two schedulers reporting changes of one task at once post one comment
// and edit it; the record ends with the newest change.
func TestTwoSchedulersPostOneComment(t *testing.T) {
	t.Parallel()
	ns := startNATS(t)
	a, b := kvStore(t, ns, notify.KVConfig{}), kvStore(t, ns, notify.KVConfig{})
	var rc remoteCounter
	ctx := context.Background()
	t0 := time.Now()
	var wg sync.WaitGroup
	for i := 0; i < 10; i++ {
		s := a
		if i%2 == 1 {
			s = b
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			text := fmt.Sprintf("state %d", i)
			if _, err := s.Sync(ctx, notify.Message{TaskID: "t1", Channel: "github.comment", State: "running", Text: text, At: t0.Add(time.Duration(i) * time.Second)}, rc.remote(text)); err != nil {
				t.Error(err)
			}
		}()
	}
	wg.Wait()
	if n := rc.creates.Load(); n != 1 {
		t.Fatalf("%d comments posted for one task, want 1", n)
	}
	rec, ok, err := b.Get(ctx, "t1", "github.comment")
	if err != nil || !ok || rec.RemoteID != "comment-1" {
		t.Fatalf("record = %+v %v %v", rec, ok, err)
	}
	// The newest change (At + 9s) is the last one a reporter stores; an
	// older change that came after it was dropped, not sent.
	if !rec.ReportedAt.Equal(t0.Add(9 * time.Second)) {
		t.Fatalf("record reports %v, want the newest change", rec.ReportedAt)
	}
}

// A scheduler that died while posting leaves a claim; the one taking over
// waits it out, then finds the posted comment instead of posting another.
func TestFailoverFindsThePostInsteadOfPostingAgain(t *testing.T) {
	t.Parallel()
	ns := startNATS(t)
	ctx := context.Background()
	dead := kvStore(t, ns, notify.KVConfig{ClaimTTL: 300 * time.Millisecond})
	posted := make(chan struct{})
	// The first scheduler posts, then "dies" before storing the id: its
	// Create never returns.
	go dead.Sync(ctx, notify.Message{TaskID: "t2", Channel: "slack", State: "running", Text: "one", At: time.Now()}, notify.Remote{
		Create: func(ctx context.Context) (string, error) { close(posted); select {} },
	})
	<-posted
	next := kvStore(t, ns, notify.KVConfig{})
	var rc remoteCounter
	found := false
	r := rc.remote("two")
	r.Find = func(ctx context.Context) (string, error) { found = true; return "ts-1", nil }
	sent, err := next.Sync(ctx, notify.Message{TaskID: "t2", Channel: "slack", State: "running", Text: "two", At: time.Now()}, r)
	if err != nil || !sent {
		t.Fatalf("sync after failover = %v %v", sent, err)
	}
	if !found || rc.creates.Load() != 0 || rc.updates.Load() != 1 {
		t.Fatalf("found=%v creates=%d updates=%d: want the lost post found and edited", found, rc.creates.Load(), rc.updates.Load())
	}
	rec, _, _ := next.Get(ctx, "t2", "slack")
	if rec.RemoteID != "ts-1" {
		t.Fatalf("record = %+v", rec)
	}
}

// The report state a single-process server kept in SQLite is carried over,
// so an upgrade edits the comments it posted before.
func TestImportSQLReportState(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	db := openDB(t)
	old, err := notify.NewStore(ctx, db, nil)
	if err != nil {
		t.Fatal(err)
	}
	if err := old.Put(ctx, notify.Record{TaskID: "t3", Channel: "linear", RemoteID: "c-9", State: "running", Digest: "d", ReportedAt: time.Now()}); err != nil {
		t.Fatal(err)
	}
	s := kvStore(t, startNATS(t), notify.KVConfig{})
	for i, want := range []int{1, 0} {
		n, err := s.ImportSQL(ctx, db)
		if err != nil || n != want {
			t.Fatalf("import %d = %d %v, want %d", i, n, err, want)
		}
	}
	var rc remoteCounter
	if _, err := s.Sync(ctx, notify.Message{TaskID: "t3", Channel: "linear", State: "done", Text: "new", At: time.Now()}, rc.remote("new")); err != nil {
		t.Fatal(err)
	}
	if rc.creates.Load() != 0 || rc.updates.Load() != 1 {
		t.Fatalf("creates=%d updates=%d after import: want the old comment edited", rc.creates.Load(), rc.updates.Load())
	}
}
