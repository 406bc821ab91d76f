package api

import (
	"bufio"
	"context"
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/nightshift/nightshift/orchestrator"
	"github.com/nightshift/nightshift/orchestrator/natsserver"
)

// world is a real bus (embedded NATS with JetStream) and a real store
// (SQLite in a temp dir).
type world struct {
	bus   *orchestrator.Bus
	store *orchestrator.Store
}

func newWorld(t *testing.T) *world {
	t.Helper()
	ns, err := natsserver.Start(natsserver.Config{StoreDir: t.TempDir(), NoSync: true})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ns.Shutdown(); ns.WaitForShutdown() })
	nc, err := natsserver.Connect(ns, "api-test")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(nc.Close)
	ctx := context.Background()
	bus, err := orchestrator.NewBus(ctx, nc, orchestrator.BusConfig{})
	if err != nil {
		t.Fatal(err)
	}
	db, err := orchestrator.OpenDB(filepath.Join(t.TempDir(), "n.db"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { db.Close() })
	store, err := orchestrator.NewStore(ctx, db, nil)
	if err != nil {
		t.Fatal(err)
	}
	store.Follow(t.Context(), bus.Records())
	return &world{bus: bus, store: store}
}

// move changes task id's state the way its worker would: a claim of the
// current run for provisioning, a report under the run's lease otherwise.
func (w *world) move(t *testing.T, id string, to orchestrator.State, p orchestrator.Patch) orchestrator.Task {
	t.Helper()
	ctx := context.Background()
	recs := w.bus.Records()
	rec, _, err := recs.Get(ctx, id)
	if err != nil {
		t.Fatal(err)
	}
	if to == orchestrator.StateProvisioning && rec.Task.State == orchestrator.StateQueued {
		_, claimed, err := recs.Claim(ctx, id, rec.Task.Run, "test", 1, 0)
		if err != nil {
			t.Fatal(err)
		}
		return claimed.Task
	}
	tk, err := recs.Report(ctx, id, orchestrator.Fence{Run: rec.Lease.Run, Epoch: rec.Lease.Epoch}, to, "", p)
	if err != nil {
		t.Fatal(err)
	}
	return tk
}

// runScheduler runs the real scheduler until the test ends.
func (w *world) runScheduler(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() {
		done <- orchestrator.NewScheduler(w.bus, w.store, orchestrator.SchedulerConfig{DefaultAgent: "script"}).Run(ctx)
	}()
	t.Cleanup(func() { cancel(); <-done })
}

// addTask stores a queued task as the scheduler would.
func (w *world) addTask(t *testing.T, src orchestrator.Source, repo, prompt string) orchestrator.Task {
	t.Helper()
	id := orchestrator.NewID()
	res, err := w.bus.Records().CreateFromEvent(context.Background(), &orchestrator.Event{ID: id, TaskID: id, Source: src, Kind: "task.requested",
		Repo: repo, Instruction: prompt, DeliveryID: "d-" + id, IdempotencyKey: "k-" + id, ReceivedAt: time.Now()}, "script")
	if err != nil {
		t.Fatal(err)
	}
	return res.Task
}

func serve(t *testing.T, h http.Handler) *httptest.Server {
	ts := httptest.NewServer(h)
	t.Cleanup(ts.Close)
	return ts
}

type reply struct {
	code int
	hdr  http.Header
	body string
	ck   []*http.Cookie
}

func (r reply) json(t *testing.T, v any) {
	t.Helper()
	if err := json.Unmarshal([]byte(r.body), v); err != nil {
		t.Fatalf("decode %q: %v", r.body, err)
	}
}

func (r reply) errorMsg(t *testing.T) string {
	t.Helper()
	var e ErrorBody
	r.json(t, &e)
	if e.Error == "" {
		t.Fatalf("error body without error: %s", r.body)
	}
	return e.Error
}

// call sends one request; hdr holds headers as "Name: value" pairs.
func call(t *testing.T, method, url, body string, hdr ...string) reply {
	t.Helper()
	var rd io.Reader
	if body != "" {
		rd = strings.NewReader(body)
	}
	req, err := http.NewRequest(method, url, rd)
	if err != nil {
		t.Fatal(err)
	}
	for _, h := range hdr {
		k, v, _ := strings.Cut(h, ": ")
		req.Header.Add(k, v)
	}
	resp, err := http.DefaultTransport.RoundTrip(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return reply{code: resp.StatusCode, hdr: resp.Header, body: string(b), ck: resp.Cookies()}
}

// sseReader reads Server-Sent Events.
type sseReader struct {
	resp *http.Response
	sc   *bufio.Scanner
}

type sseEvent struct {
	id, event, data string
}

func openSSE(t *testing.T, url string, hdr ...string) *sseReader {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	t.Cleanup(cancel)
	req, _ := http.NewRequestWithContext(ctx, "GET", url, nil)
	for _, h := range hdr {
		k, v, _ := strings.Cut(h, ": ")
		req.Header.Add(k, v)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { resp.Body.Close() })
	if resp.StatusCode != 200 || !strings.HasPrefix(resp.Header.Get("Content-Type"), "text/event-stream") {
		b, _ := io.ReadAll(resp.Body)
		t.Fatalf("GET %s: %d %s", url, resp.StatusCode, b)
	}
	sc := bufio.NewScanner(resp.Body)
	sc.Buffer(make([]byte, 1<<20), 16<<20)
	return &sseReader{resp: resp, sc: sc}
}

// next returns the next event, failing the test after 20s.
func (r *sseReader) next(t *testing.T) sseEvent {
	t.Helper()
	got := make(chan sseEvent, 1)
	go func() {
		var ev sseEvent
		for r.sc.Scan() {
			line := r.sc.Text()
			switch {
			case line == "":
				if ev.event != "" {
					got <- ev
					return
				}
			case strings.HasPrefix(line, "id: "):
				ev.id = line[4:]
			case strings.HasPrefix(line, "event: "):
				ev.event = line[7:]
			case strings.HasPrefix(line, "data: "):
				ev.data += line[6:]
			}
		}
		close(got)
	}()
	select {
	case ev, ok := <-got:
		if !ok {
			t.Fatal("event stream ended")
		}
		return ev
	case <-time.After(20 * time.Second):
		t.Fatal("no event within 20s")
	}
	return sseEvent{}
}
