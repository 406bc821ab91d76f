package main

import (
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"syscall"
	"testing"
	"time"

	"github.com/nightshift/nightshift/bench/cluster"
	"github.com/nightshift/nightshift/orchestrator/automation"
)

// TestScheduleFiresOncePerTickAcrossSchedulerProcesses: an automation at
// @every 2s, two scheduler processes against one NATS (each with its own
// data dir), one of them killed -9 and restarted meanwhile: every tick on
// the 2 s grid fires exactly once, with no tick lost while a scheduler runs.
func TestScheduleFiresOncePerTickAcrossSchedulerProcesses(t *testing.T) {
	t.Parallel()
	if testing.Short() {
		t.Skip("runs real processes for ~25 s")
	}
	bin := nightshiftBinary(t)
	natsAddr := fmt.Sprintf("127.0.0.1:%d", cluster.FreePort(t))
	origin := newOrigin(t)
	yaml := fmt.Sprintf(`
sandbox: {driver: process}
identity: {smtp_listen: "127.0.0.1:0"}
agents:
  script:
    command: ["true"]
repos:
  - match: %q
automations:
  - name: tick
    schedule: "@every 2s"
    repo: %q
    agent: script
    prompt: "tick"
    concurrency: 100
`, origin, origin)
	dirs := map[string]string{}
	for _, n := range []string{"front", "s1", "s2"} {
		d := t.TempDir()
		y := yaml
		if n == "front" {
			y += fmt.Sprintf("nats: {listen: %q}\n", natsAddr)
		}
		if err := os.WriteFile(filepath.Join(d, "nightshift.yaml"), []byte(y), 0o600); err != nil {
			t.Fatal(err)
		}
		dirs[n] = d
	}
	_, front := startProcess(t, bin, dirs["front"], "--role", "ingress")
	url := "nats://" + natsAddr
	s1, _ := startProcess(t, bin, dirs["s1"], "--role", "scheduler", "--nats", url)
	startProcess(t, bin, dirs["s2"], "--role", "scheduler", "--nats", url)
	start := time.Now()
	time.Sleep(8 * time.Second)
	s1.Process.Signal(syscall.SIGKILL)
	s1.Wait()
	time.Sleep(4 * time.Second)
	startProcess(t, bin, dirs["s1"], "--role", "scheduler", "--nats", url)
	time.Sleep(8 * time.Second)
	end := time.Now()

	var resp struct{ Runs []automation.Run }
	getJSONTo(t, front.URL+"/api/v1/automations/tick/runs?limit=500", &resp)
	var ticks []time.Time
	seen := map[int64]int{}
	for _, r := range resp.Runs {
		if r.Trigger != "schedule" || r.Tick.Before(start) || r.Tick.After(end) {
			continue
		}
		seen[r.Tick.Unix()]++
		ticks = append(ticks, r.Tick)
	}
	for tick, n := range seen {
		if n != 1 {
			t.Errorf("tick %s fired %d times", time.Unix(tick, 0).UTC().Format(time.TimeOnly), n)
		}
	}
	sort.Slice(ticks, func(i, j int) bool { return ticks[i].Before(ticks[j]) })
	// One scheduler ran the whole time: no tick of the grid is missing
	// between the first and the last.
	for i := 1; i < len(ticks); i++ {
		if gap := ticks[i].Sub(ticks[i-1]); gap != 2*time.Second {
			t.Errorf("ticks %s and %s are %s apart, want 2s", ticks[i-1].Format(time.TimeOnly), ticks[i].Format(time.TimeOnly), gap)
		}
	}
	if want := int(end.Sub(start)/(2*time.Second)) - 2; len(ticks) < want {
		t.Errorf("%d ticks in %s, want at least %d", len(ticks), end.Sub(start).Round(time.Second), want)
	}
	t.Logf("%d ticks in %s across two scheduler processes and a kill -9", len(ticks), end.Sub(start).Round(time.Second))
}
