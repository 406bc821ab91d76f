package main

import (
	"context"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/nightshift/nightshift/bench/cluster"
	"github.com/nightshift/nightshift/orchestrator"
)

// haRoleYAML is the config of every role process in these tests.
const haRoleYAML = processConfig + `agents:
  script:
    command: ["sh", "-c", "echo \"worked by $NIGHTSHIFT_TASK_ID\" >> NOTES.md"]
`

// haRoles starts ingress, scheduler and worker processes against natsURL,
// each on a data dir of its own, without waiting for them.
func haRoles(t *testing.T, bin, natsURL, extraYAML string) (ingress, scheduler, worker *haServe) {
	t.Helper()
	spawn := func(role string) *haServe {
		dir := t.TempDir()
		if err := os.WriteFile(filepath.Join(dir, "nightshift.yaml"), []byte(withTempRepos(t, haRoleYAML+extraYAML)), 0o600); err != nil {
			t.Fatal(err)
		}
		listen := fmt.Sprintf("127.0.0.1:%d", cluster.FreePort(t))
		s := haSpawn(t, bin, dir, "--role", role, "--nats", natsURL, "--listen", listen)
		s.listen = "http://" + listen
		return s
	}
	return spawn("ingress"), spawn("scheduler"), spawn("worker")
}

// haDispatchPushed dispatches a task through the ingress at url and waits
// until the worker has pushed its branch to origin.
func haDispatchPushed(t *testing.T, url string, timeout time.Duration, roles ...*haServe) {
	t.Helper()
	origin := newOrigin(t)
	front := &testServer{URL: url, stderr: &syncBuffer{}}
	id := front.dispatch(t, origin, "script", "add a note")
	deadline := time.Now().Add(timeout)
	for {
		if got, err := gitTry(origin, "show", "nightshift/"+id+":NOTES.md"); err == nil {
			if strings.TrimSpace(got) != "worked by "+id {
				t.Fatalf("NOTES.md = %q", got)
			}
			return
		}
		if time.Now().After(deadline) {
			var logs strings.Builder
			for _, r := range roles {
				fmt.Fprintf(&logs, "--- %s\n%s\n", r.dir, r.logText())
			}
			t.Fatalf("task %s: no branch pushed after %s\n%s", id, timeout, logs.String())
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// TestRolesWaitForNATS starts ingress, scheduler and worker before their
// NATS server exists: they wait, saying what for, instead of exiting; once
// the server is up they get ready and a dispatched task is pushed. Then the
// server goes away: the worker's /readyz says NATS is the problem, until the
// server is back.
func TestRolesWaitForNATS(t *testing.T) {
	t.Parallel()
	bin := nightshiftBinary(t)
	cluster.NATSServer(t) // built before the clock starts
	port := cluster.FreePort(t)
	natsURL := fmt.Sprintf("nats://127.0.0.1:%d", port)
	ingress, scheduler, worker := haRoles(t, bin, natsURL, "")
	time.Sleep(3 * time.Second)
	for _, r := range []*haServe{ingress, scheduler, worker} {
		if done, err := r.exited(0); done {
			t.Fatalf("a role started before NATS exited (%v):\n%s", err, r.logText())
		}
		if log := r.logText(); !strings.Contains(log, "waiting for a NATS server at "+natsURL) {
			t.Fatalf("a role waiting for NATS does not say so:\n%s", log)
		}
		// Waiting, it answers liveness and says it is not ready.
		if resp, err := http.Get(r.listen + "/healthz"); err != nil || resp.StatusCode != 200 {
			t.Fatalf("/healthz of a role waiting for NATS: %v %v", resp, err)
		}
		if code, checks := haReadyz(t, r.listen); code != 503 || !strings.Contains(checks["startup"], "starting") {
			t.Fatalf("/readyz of a role waiting for NATS: %d %v", code, checks)
		}
	}

	natsd := haStartNATSD(t, haNATSConf(t, t.TempDir(), "n1", port, 0, nil))
	urls := map[*haServe]string{}
	for _, r := range []*haServe{ingress, scheduler, worker} {
		urls[r] = r.url(t, 30*time.Second)
		haWaitReady(t, urls[r], 200, 10*time.Second, r.dir)
	}
	haDispatchPushed(t, urls[ingress], 60*time.Second, ingress, scheduler, worker)

	natsd.stop()
	checks := haWaitReady(t, urls[worker], 503, 15*time.Second, "worker without NATS")
	if checks["nats"] == "ok" || checks["disk"] != "ok" {
		t.Fatalf("worker without NATS: checks %v, want nats failing and disk ok", checks)
	}
	natsd.start(t)
	haWaitReady(t, urls[worker], 200, 30*time.Second, "worker with NATS back")
}

// TestRolesStartWithFreshCluster starts a 3-node JetStream cluster and the
// three roles at the same moment, the roles given all three servers
// (nats.url list) and nats.replicas 3. The roles wait out the election,
// get ready, and a dispatched task is pushed; the streams have 3 replicas.
func TestRolesStartWithFreshCluster(t *testing.T) {
	if testing.Short() {
		t.Skip("starts a 3-node NATS cluster (about 10 s)")
	}
	t.Parallel()
	bin := nightshiftBinary(t)
	cluster.NATSServer(t) // built before the clock starts
	dir := t.TempDir()
	if d := os.Getenv("HA_KEEP"); d != "" {
		dir = d
	}
	ports := []int{cluster.FreePort(t), cluster.FreePort(t), cluster.FreePort(t)}
	cports := []int{cluster.FreePort(t), cluster.FreePort(t), cluster.FreePort(t)}
	var confs, urls []string
	for i := range 3 {
		var routes []int
		for j := range 3 {
			if j != i {
				routes = append(routes, cports[j])
			}
		}
		confs = append(confs, haNATSConf(t, dir, fmt.Sprintf("n%d", i+1), ports[i], cports[i], routes))
		urls = append(urls, fmt.Sprintf("nats://127.0.0.1:%d", ports[i]))
	}
	start := time.Now()
	ingress, scheduler, worker := haRoles(t, bin, strings.Join(urls, ","), "nats: {replicas: 3}\n")
	for _, c := range confs {
		haStartNATSD(t, c)
	}
	addrs := map[*haServe]string{}
	for _, r := range []*haServe{ingress, scheduler, worker} {
		addrs[r] = r.url(t, 90*time.Second)
		haWaitReady(t, addrs[r], 200, 10*time.Second, r.dir)
	}
	t.Logf("roles ready %s after the cluster and roles started", time.Since(start).Round(time.Millisecond))
	haDispatchPushed(t, addrs[ingress], 60*time.Second, ingress, scheduler, worker)

	nc, err := nats.Connect(strings.Join(urls, ","))
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	js, _ := jetstream.New(nc)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	for _, name := range []string{orchestrator.EventsStream, orchestrator.WorkStream, orchestrator.TasksStream} {
		st, err := js.Stream(ctx, name)
		if err != nil {
			t.Fatal(err)
		}
		if r := st.CachedInfo().Config.Replicas; r != 3 {
			t.Fatalf("stream %s has %d replicas, want 3", name, r)
		}
	}
}
