package main

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"syscall"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/nightshift/nightshift/bench/cluster"
	"github.com/nightshift/nightshift/orchestrator"
)

// TestWorkerConcurrencyIsNotCapped starts a worker with worker.concurrency
// 100 against a work consumer an older version left with MaxAckPending 64:
// the shared consumer no longer caps runs in flight, so 100 runs can be
// out with workers at once (before, the 65th waited for a whole run).
func TestWorkerConcurrencyIsNotCapped(t *testing.T) {
	t.Parallel()
	bin := nightshiftBinary(t)
	natsURL := cluster.StartNATS(t, t.TempDir(), 1).URL
	nc, err := nats.Connect(natsURL, nats.RetryOnFailedConnect(true), nats.MaxReconnects(-1))
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	bus, err := orchestrator.NewBus(ctx, nc, orchestrator.BusConfig{})
	if err != nil {
		t.Fatal(err)
	}
	js := bus.JetStream()
	old := jetstream.ConsumerConfig{Durable: "workers", AckPolicy: jetstream.AckExplicitPolicy, AckWait: time.Minute,
		MaxAckPending: 64, MaxDeliver: 5, FilterSubject: orchestrator.WorkSubject("*")}
	if _, err := js.CreateOrUpdateConsumer(ctx, orchestrator.WorkStream, old); err != nil {
		t.Fatal(err)
	}

	dir := t.TempDir()
	if err := os.WriteFile(filepath.Join(dir, "nightshift.yaml"), []byte(processConfig+"worker: {concurrency: 100}\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	w := haSpawn(t, bin, dir, "--role", "worker", "--nats", natsURL)
	haWaitReady(t, w.url(t, 60*time.Second), 200, 10*time.Second, "worker")
	cons, err := js.Consumer(ctx, orchestrator.WorkStream, "workers")
	if err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(10 * time.Second)
	for cons.CachedInfo().Config.MaxAckPending != -1 && time.Now().Before(deadline) {
		time.Sleep(100 * time.Millisecond)
		if _, err := cons.Info(ctx); err != nil {
			t.Fatal(err)
		}
	}
	if got := cons.CachedInfo().Config.MaxAckPending; got != -1 {
		t.Fatalf("work consumer MaxAckPending = %d with a worker of concurrency 100, want no cap (-1)", got)
	}
	// The worker leaves; 100 runs then go out to a client of the same
	// consumer, as they would to 100 slots across the cluster.
	w.cmd.Process.Signal(syscall.SIGTERM)
	if done, err := w.exited(30 * time.Second); !done || err != nil {
		t.Fatalf("worker after SIGTERM: exited %v, %v", done, err)
	}
	for i := range 100 {
		if _, err := js.Publish(ctx, orchestrator.WorkSubject(fmt.Sprintf("t%03d", i)), []byte(`{}`)); err != nil {
			t.Fatal(err)
		}
	}
	got := 0
	for got < 100 && time.Now().Before(deadline.Add(10*time.Second)) {
		batch, err := cons.Fetch(100-got, jetstream.FetchMaxWait(time.Second))
		if err != nil {
			t.Fatal(err)
		}
		for range batch.Messages() {
			got++ // held, never acknowledged
		}
	}
	if got != 100 {
		t.Fatalf("%d runs out at once, want 100", got)
	}
}
