package automation

import (
	"context"
	"encoding/json"
	"math"
	"sort"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/nightshift/nightshift/config"
	"github.com/nightshift/nightshift/orchestrator"
)

// runner is one scheduler process: its own NATS connection and engine.
type runner struct {
	e    *Engine
	stop func()
}

func startRunner(t *testing.T, ns *server.Server, name string, seed []config.Automation) *runner {
	t.Helper()
	return startRunnerWith(t, ns, name, seed, nil)
}

// startRunnerWith is startRunner with a hook that sees the engine before
// it runs.
func startRunnerWith(t *testing.T, ns *server.Server, name string, seed []config.Automation, setup func(*Engine)) *runner {
	t.Helper()
	nc := connect(t, ns, name)
	e, err := New(context.Background(), jsOf(t, nc), Config{Poll: 200 * time.Millisecond,
		CanWrite: func(_ context.Context, ev orchestrator.Event) (bool, error) { return ev.Actor.Login != "mallory", nil }})
	if err != nil {
		t.Fatal(err)
	}
	if setup != nil {
		setup(e)
	}
	if err := e.Seed(context.Background(), seed); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- e.Run(ctx) }()
	r := &runner{e: e}
	r.stop = func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("%s: %v", name, err)
		}
		nc.Close()
	}
	return r
}

// ticksFired reads the run events on the stream: automation -> tick (unix
// seconds) -> how many events.
func ticksFired(t *testing.T, ns *server.Server) map[string]map[int64]int {
	t.Helper()
	js := jsOf(t, connect(t, ns, "reader"))
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	c, err := js.OrderedConsumer(ctx, orchestrator.EventsStream, jetstream.OrderedConsumerConfig{
		FilterSubjects: []string{orchestrator.EventSubject(orchestrator.SourceAutomation, "automation.run")}})
	if err != nil {
		t.Fatal(err)
	}
	info, err := c.Info(ctx)
	if err != nil {
		t.Fatal(err)
	}
	out := map[string]map[int64]int{}
	for n := info.NumPending; n > 0; n-- {
		m, err := c.Next(jetstream.FetchMaxWait(5 * time.Second))
		if err != nil {
			t.Fatal(err)
		}
		var ev orchestrator.Event
		if err := json.Unmarshal(m.Data(), &ev); err != nil {
			t.Fatal(err)
		}
		// delivery id automation:<name>:<tick ms>-<digest>
		parts := strings.Split(ev.DeliveryID, ":")
		ms, _ := strconv.ParseInt(strings.SplitN(parts[2], "-", 2)[0], 10, 64)
		if out[parts[1]] == nil {
			out[parts[1]] = map[int64]int{}
		}
		out[parts[1]][ms/1000]++
	}
	return out
}

// TestScheduleOncePerTickAcrossSchedulers runs @every 2s automations on
// two scheduler processes (own connections, one server), restarts one,
// then stops both across two ticks and starts them again: every tick
// fires exactly once while any scheduler runs, no engine publishes a tick
// another already did, and the missed ticks follow catch_up (skip: none;
// once: exactly one).
func TestScheduleOncePerTickAcrossSchedulers(t *testing.T) {
	t.Parallel()
	ns := startNATS(t)
	seed := []config.Automation{
		{Name: "skip", Schedule: "@every 2s", Repo: "github.com/acme/api", Prompt: "tick {{.Automation.RunID}}"},
		{Name: "once", Schedule: "@every 2s", Repo: "github.com/acme/api", Prompt: "tick", CatchUp: "once", Concurrency: -0},
	}
	// A run never ends here (no scheduler makes tasks): let slots not
	// limit the count.
	for i := range seed {
		seed[i].Concurrency = 1000
	}
	var fired int64
	a := startRunner(t, ns, "scheduler-a", seed)
	b := startRunner(t, ns, "scheduler-b", seed)
	time.Sleep(5 * time.Second)
	b.stop()
	fired += b.e.Fired()
	b = startRunner(t, ns, "scheduler-b2", seed) // a restart of one
	time.Sleep(4 * time.Second)
	a.stop()
	b.stop()
	fired += a.e.Fired() + b.e.Fired()
	down := time.Now()
	time.Sleep(5 * time.Second) // two or three ticks with no scheduler
	a = startRunner(t, ns, "scheduler-a2", seed)
	b = startRunner(t, ns, "scheduler-b3", seed)
	// The outage lasts until the first restarted engine's schedule loop
	// looks at the clock (a loaded machine takes a moment to get there).
	for a.e.loopStart.Load() == 0 && b.e.loopStart.Load() == 0 {
		time.Sleep(10 * time.Millisecond)
	}
	up := time.Unix(0, min(nonZero(a.e.loopStart.Load()), nonZero(b.e.loopStart.Load())))
	time.Sleep(3 * time.Second)
	a.stop()
	b.stop()
	fired += a.e.Fired() + b.e.Fired()

	got := ticksFired(t, ns)
	total := 0
	for name, ticks := range got {
		var list []int64
		for tick, n := range ticks {
			if n != 1 {
				t.Errorf("%s: tick %d fired %d times", name, tick, n)
			}
			list = append(list, tick)
			total += n
		}
		sort.Slice(list, func(i, j int) bool { return list[i] < list[j] })
		var inOutage int
		for i, tick := range list {
			if tick%2 != 0 {
				t.Errorf("%s: tick %d is not on the 2s grid", name, tick)
			}
			if tick > down.Unix() && tick <= up.Unix() {
				inOutage++
			}
			// While a scheduler ran, no tick is lost.
			if i > 0 && tick-list[i-1] != 2 && !(list[i-1] <= down.Unix() && tick > down.Unix()) {
				t.Errorf("%s: ticks %d then %d: a tick was lost while a scheduler ran", name, list[i-1], tick)
			}
		}
		want := map[string]int{"skip": 0, "once": 1}[name]
		if inOutage != want {
			t.Errorf("%s: %d ticks fired for the outage %d..%d, want %d (ticks %v)", name, inOutage, down.Unix(), up.Unix(), want, list)
		}
		if len(list) < 5 {
			t.Errorf("%s: only %d ticks in about 17s", name, len(list))
		}
	}
	if len(got) != 2 {
		t.Fatalf("automations fired: %v", got)
	}
	if int64(total) != fired {
		t.Errorf("engines published %d run events, the stream holds %d: a tick was published twice", fired, total)
	}
}

// TestPendingTickClaimIsFiredByAnotherEngine: an engine claims ticks and
// stops before it publishes their events (a test hook abandons each tick
// right after the claim); two other engines started afterwards fire each
// abandoned tick exactly once between them, although neither was running
// when it fell due, and fire their own ticks once each.
func TestPendingTickClaimIsFiredByAnotherEngine(t *testing.T) {
	t.Parallel()
	ns := startNATS(t)
	seed := []config.Automation{{Name: "lost", Schedule: "@every 2s", Repo: "github.com/acme/api", Prompt: "tick", Concurrency: 100}}
	var mu sync.Mutex
	var abandoned []int64
	a := startRunnerWith(t, ns, "dies", seed, func(e *Engine) {
		e.afterClaim = func(_ string, tick time.Time) bool {
			mu.Lock()
			defer mu.Unlock()
			abandoned = append(abandoned, tick.Unix())
			return true
		}
	})
	for {
		time.Sleep(100 * time.Millisecond)
		mu.Lock()
		n := len(abandoned)
		mu.Unlock()
		if n > 0 {
			break
		}
	}
	a.stop()
	if got := ticksFired(t, ns)["lost"]; len(got) != 0 {
		t.Fatalf("abandoned ticks were published before any other engine ran: %v", got)
	}
	b := startRunner(t, ns, "b", seed)
	c := startRunner(t, ns, "c", seed)
	deadline := time.Now().Add(20 * time.Second)
	for {
		got := ticksFired(t, ns)["lost"]
		if got[abandoned[len(abandoned)-1]] > 0 || time.Now().After(deadline) {
			break
		}
		time.Sleep(200 * time.Millisecond)
	}
	time.Sleep(2 * claimSweepEvery) // further sweeps of both find nothing more
	b.stop()
	c.stop()
	got := ticksFired(t, ns)["lost"]
	total := 0
	for tick, n := range got {
		if n != 1 {
			t.Errorf("tick %d fired %d times", tick, n)
		}
		total += n
	}
	for _, tick := range abandoned {
		if got[tick] != 1 {
			t.Errorf("abandoned tick %d fired %d times, want 1 (events per tick %v)", tick, got[tick], got)
		}
	}
	if n := b.e.Fired() + c.e.Fired(); n != int64(total) {
		t.Errorf("the engines published %d events, the stream holds %d", n, total)
	}
}

func nonZero(n int64) int64 {
	if n == 0 {
		return math.MaxInt64
	}
	return n
}
