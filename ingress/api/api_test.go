package api

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/nightshift/nightshift/orchestrator"
)

// identityRoutes are served by identity/identityapi, which ingress mounts
// next to the API; the document covers them too (the e2e test in
// cmd/nightshift probes them on the real server).
var identityRoutes = []string{
	"POST /api/v1/identities", "GET /api/v1/identities", "GET /api/v1/identities/{id}",
	"DELETE /api/v1/identities/{id}", "GET /api/v1/identities/{id}/messages", "GET /api/v1/identities/{id}/otp",
}

// DocRoutes lists "METHOD /path" for every operation in the OpenAPI document.
func docRoutes(t *testing.T) []string {
	t.Helper()
	var doc struct {
		OpenAPI string                                `json:"openapi"`
		Paths   map[string]map[string]json.RawMessage `json:"paths"`
	}
	if err := json.Unmarshal(OpenAPI(), &doc); err != nil {
		t.Fatalf("openapi.json: %v", err)
	}
	if !strings.HasPrefix(doc.OpenAPI, "3.") {
		t.Fatalf("openapi version %q", doc.OpenAPI)
	}
	var out []string
	for path, ops := range doc.Paths {
		for m := range ops {
			switch m {
			case "get", "post", "put", "patch", "delete":
				out = append(out, strings.ToUpper(m)+" "+path)
			case "parameters", "summary", "description":
			default:
				t.Errorf("unknown key %q under %s", m, path)
			}
		}
	}
	sort.Strings(out)
	return out
}

func TestOpenAPIMatchesRoutes(t *testing.T) {
	t.Parallel()
	s := New(nil, nil, Config{})
	s.MountAutomations(nil)
	served := append(s.Routes(), identityRoutes...)
	sort.Strings(served)
	doc := docRoutes(t)
	if strings.Join(doc, "\n") != strings.Join(served, "\n") {
		inDoc, inMux := map[string]bool{}, map[string]bool{}
		for _, r := range doc {
			inDoc[r] = true
		}
		for _, r := range served {
			inMux[r] = true
			if !inDoc[r] {
				t.Errorf("route %s is served but not documented", r)
			}
		}
		for _, r := range doc {
			if !inMux[r] {
				t.Errorf("route %s is documented but not served", r)
			}
		}
	}
	// Every $ref points at something that exists.
	var all map[string]any
	json.Unmarshal(OpenAPI(), &all)
	var walk func(v any)
	walk = func(v any) {
		switch v := v.(type) {
		case map[string]any:
			for k, x := range v {
				if k == "$ref" {
					ref := x.(string)
					node := any(all)
					for _, part := range strings.Split(strings.TrimPrefix(ref, "#/"), "/") {
						m, _ := node.(map[string]any)
						node = m[part]
					}
					if node == nil {
						t.Errorf("dangling $ref %s", ref)
					}
				}
				walk(x)
			}
		case []any:
			for _, x := range v {
				walk(x)
			}
		}
	}
	walk(all)
	ts := serve(t, s)
	r := call(t, "GET", ts.URL+"/api/v1/openapi.json", "")
	if r.code != 200 || r.hdr.Get("Content-Type") != "application/json" || !strings.Contains(r.body, `"openapi"`) {
		t.Fatalf("GET openapi.json: %d %s", r.code, r.hdr)
	}
}

func TestBearerRoles(t *testing.T) {
	t.Parallel()
	w := newWorld(t)
	s := New(w.bus, w.store, Config{AdminTokens: []string{"adm1n"}, ReadOnlyTokens: []string{"r3ad"}})
	ts := serve(t, s)
	task := w.addTask(t, orchestrator.SourceAPI, "/r", "p")
	for _, c := range []struct {
		method, path, token string
		want                int
	}{
		{"GET", "/api/v1/tasks", "", 401},
		{"GET", "/api/v1/tasks", "wrong", 401},
		{"GET", "/api/v1/tasks", "r3ad", 200},
		{"GET", "/api/v1/tasks", "adm1n", 200},
		{"POST", "/api/v1/tasks/" + task.ID + "/cancel", "r3ad", 403},
		{"POST", "/api/v1/tasks/" + task.ID + "/cancel", "adm1n", 202},
		{"GET", "/api/v1/tasks/nope", "r3ad", 404},
		{"GET", "/api/v1/nothing", "r3ad", 404},
		{"PUT", "/api/v1/tasks", "adm1n", 405},
		{"DELETE", "/api/v1/tasks/" + task.ID, "adm1n", 405},
		{"GET", "/api/v1/openapi.json", "", 200},
	} {
		hdr := []string{"Origin: https://evil.example"} // bearer requests need no CSRF proof
		if c.token != "" {
			hdr = append(hdr, "Authorization: Bearer "+c.token)
		}
		r := call(t, c.method, ts.URL+c.path, "", hdr...)
		if r.code != c.want {
			t.Errorf("%s %s with %q: %d, want %d: %s", c.method, c.path, c.token, r.code, c.want, r.body)
			continue
		}
		if r.code >= 400 {
			r.errorMsg(t)
			if r.hdr.Get("Content-Type") != "application/json" {
				t.Errorf("%s %s: error content type %q", c.method, c.path, r.hdr.Get("Content-Type"))
			}
		}
		if r.code == 405 && r.hdr.Get("Allow") == "" {
			t.Errorf("405 without Allow")
		}
		if r.code == 401 && r.hdr.Get("WWW-Authenticate") == "" {
			t.Errorf("401 without WWW-Authenticate")
		}
	}
}

func TestSessionLoginCSRFLogout(t *testing.T) {
	t.Parallel()
	w := newWorld(t)
	now := time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)
	clock := func() time.Time { return now }
	s := New(w.bus, w.store, Config{AdminTokens: []string{"adm1n"}, ReadOnlyTokens: []string{"r3ad"}, Clock: clock, SessionTTL: time.Hour})
	ts := serve(t, s)
	task := w.addTask(t, orchestrator.SourceAPI, "/r", "p")
	origin := "Origin: " + ts.URL

	if r := call(t, "POST", ts.URL+"/api/v1/session", `{"token":"nope"}`, origin); r.code != 401 || len(r.ck) != 0 {
		t.Fatalf("bad token: %d %v", r.code, r.ck)
	}
	if r := call(t, "POST", ts.URL+"/api/v1/session", `{"token":"adm1n"}`, "Origin: https://evil.example"); r.code != 403 {
		t.Fatalf("cross-origin login: %d", r.code)
	}
	r := call(t, "POST", ts.URL+"/api/v1/session", `{"token":"adm1n"}`, origin)
	if r.code != 200 || len(r.ck) != 1 {
		t.Fatalf("login: %d %s %v", r.code, r.body, r.ck)
	}
	ck := r.ck[0]
	if ck.Name != SessionCookie || !ck.HttpOnly || ck.SameSite != http.SameSiteStrictMode || ck.Secure || ck.Path != "/" {
		t.Fatalf("cookie attributes: %+v", ck)
	}
	if strings.Contains(r.body, "adm1n") || strings.Contains(ck.Value, "adm1n") {
		t.Fatal("the token leaked into the session")
	}
	var info SessionInfo
	r.json(t, &info)
	if info.CSRFToken == "" || info.Principal.Role != RoleAdmin || info.Principal.Method != "session" {
		t.Fatalf("login answer: %+v", info)
	}
	cookie := "Cookie: " + SessionCookie + "=" + ck.Value

	// Reading needs only the cookie; GET /session hands out the CSRF token.
	if r := call(t, "GET", ts.URL+"/api/v1/tasks", "", cookie); r.code != 200 {
		t.Fatalf("list with cookie: %d", r.code)
	}
	var again SessionInfo
	call(t, "GET", ts.URL+"/api/v1/session", "", cookie).json(t, &again)
	if again.CSRFToken != info.CSRFToken {
		t.Fatalf("session CSRF %q != %q", again.CSRFToken, info.CSRFToken)
	}
	// Acting needs the CSRF token too, and a same-site Origin.
	cancel := ts.URL + "/api/v1/tasks/" + task.ID + "/cancel"
	if r := call(t, "POST", cancel, "", cookie, origin); r.code != 403 || !strings.Contains(r.errorMsg(t), "CSRF") {
		t.Fatalf("cookie POST without CSRF: %d %s", r.code, r.body)
	}
	if r := call(t, "POST", cancel, "", cookie, origin, CSRFHeader+": wrong"); r.code != 403 {
		t.Fatalf("cookie POST with a wrong CSRF token: %d", r.code)
	}
	if r := call(t, "POST", cancel, "", cookie, "Origin: https://evil.example", CSRFHeader+": "+info.CSRFToken); r.code != 403 {
		t.Fatalf("cross-origin cookie POST: %d", r.code)
	}
	if r := call(t, "POST", cancel, "", cookie, origin, CSRFHeader+": "+info.CSRFToken); r.code != 202 {
		t.Fatalf("cookie POST with CSRF: %d %s", r.code, r.body)
	}
	// A forged or tampered cookie is nobody; a bad bearer token is not
	// rescued by a good cookie.
	for _, bad := range []string{ck.Value + "x", "abc.def", "x" + ck.Value[1:]} {
		if r := call(t, "GET", ts.URL+"/api/v1/tasks", "", "Cookie: "+SessionCookie+"="+bad); r.code != 401 {
			t.Errorf("tampered cookie %q: %d", bad, r.code)
		}
	}
	if r := call(t, "GET", ts.URL+"/api/v1/tasks", "", cookie, "Authorization: Bearer wrong"); r.code != 401 {
		t.Errorf("bad bearer with good cookie: %d", r.code)
	}
	// Read-only people can log in but not act.
	r = call(t, "POST", ts.URL+"/api/v1/session", `{"token":"r3ad"}`, origin)
	var ro SessionInfo
	r.json(t, &ro)
	roCookie := "Cookie: " + SessionCookie + "=" + r.ck[0].Value
	if r := call(t, "POST", cancel, "", roCookie, origin, CSRFHeader+": "+ro.CSRFToken); r.code != 403 || !strings.Contains(r.body, "read-only") {
		t.Fatalf("read-only session acting: %d %s", r.code, r.body)
	}
	// Logout ends the session on the server, not just in the browser.
	r = call(t, "DELETE", ts.URL+"/api/v1/session", "", cookie, origin, CSRFHeader+": "+info.CSRFToken)
	if r.code != 204 || len(r.ck) != 1 || r.ck[0].MaxAge >= 0 {
		t.Fatalf("logout: %d %v", r.code, r.ck)
	}
	if r := call(t, "GET", ts.URL+"/api/v1/tasks", "", cookie); r.code != 401 {
		t.Fatalf("cookie after logout: %d", r.code)
	}
	// Sessions expire.
	now = now.Add(2 * time.Hour)
	if r := call(t, "GET", ts.URL+"/api/v1/tasks", "", roCookie); r.code != 401 {
		t.Fatalf("expired session: %d", r.code)
	}
	// Behind a TLS-terminating proxy the cookie is Secure.
	r = call(t, "POST", ts.URL+"/api/v1/session", `{"token":"adm1n"}`, origin, "X-Forwarded-Proto: https")
	if len(r.ck) != 1 || !r.ck[0].Secure {
		t.Fatalf("cookie over https: %+v", r.ck)
	}
}

func TestOpenModeRefusesCrossOrigin(t *testing.T) {
	t.Parallel()
	w := newWorld(t)
	ts := serve(t, New(w.bus, w.store, Config{}))
	task := w.addTask(t, orchestrator.SourceAPI, "/r", "p")
	cancel := ts.URL + "/api/v1/tasks/" + task.ID + "/cancel"
	// A web page elsewhere cannot drive a loopback server through the browser.
	if r := call(t, "POST", cancel, "", "Origin: https://evil.example"); r.code != 403 {
		t.Fatalf("cross-origin POST in open mode: %d", r.code)
	}
	if r := call(t, "POST", ts.URL+"/api/v1/tasks", `{"repo":"/r","prompt":"x"}`, "Origin: null", "Content-Type: text/plain"); r.code != 403 {
		t.Fatalf("opaque-origin POST in open mode: %d", r.code)
	}
	if r := call(t, "POST", cancel, "", "Origin: "+ts.URL); r.code != 202 {
		t.Fatalf("same-origin POST in open mode: %d %s", r.code, r.body)
	}
	var info SessionInfo
	call(t, "GET", ts.URL+"/api/v1/session", "").json(t, &info)
	if !info.Open || info.Principal.Role != RoleAdmin {
		t.Fatalf("open session: %+v", info)
	}
}

func TestListFiltersAndPages(t *testing.T) {
	t.Parallel()
	w := newWorld(t)
	ts := serve(t, New(w.bus, w.store, Config{}))
	var ids []string
	for i := range 5 {
		src := orchestrator.SourceAPI
		if i%2 == 1 {
			src = orchestrator.SourceGitHub
		}
		ids = append(ids, w.addTask(t, src, fmt.Sprintf("/repo%d", i%2), fmt.Sprint("task ", i)).ID)
	}
	// Pages of two, newest first, following next until it is absent.
	var seen []string
	cursor := ""
	for page := 0; ; page++ {
		var lr ListResponse
		r := call(t, "GET", ts.URL+"/api/v1/tasks?limit=2&before="+cursor, "")
		if r.code != 200 {
			t.Fatalf("page %d: %d %s", page, r.code, r.body)
		}
		r.json(t, &lr)
		for _, tk := range lr.Tasks {
			seen = append(seen, tk.ID)
		}
		if lr.Next == "" {
			break
		}
		cursor = lr.Next
		if page > 5 {
			t.Fatal("pagination does not end")
		}
	}
	if len(seen) != 5 {
		t.Fatalf("paged through %d tasks, want 5: %v", len(seen), seen)
	}
	for i := range seen {
		if seen[i] != ids[len(ids)-1-i] {
			t.Fatalf("order %v, want newest first of %v", seen, ids)
		}
	}
	count := func(q string) int {
		var lr ListResponse
		r := call(t, "GET", ts.URL+"/api/v1/tasks?"+q, "")
		if r.code != 200 {
			t.Fatalf("%s: %d %s", q, r.code, r.body)
		}
		r.json(t, &lr)
		return len(lr.Tasks)
	}
	for q, want := range map[string]int{"source=github": 2, "source=api": 3, "repo=/repo1": 2, "state=queued": 5,
		"state=running,review": 0, "state=queued&source=api&repo=/repo0": 3} {
		if got := count(q); got != want {
			t.Errorf("?%s: %d tasks, want %d", q, got, want)
		}
	}
	for _, q := range []string{"state=bogus", "source=email", "limit=0", "limit=501", "limit=x"} {
		r := call(t, "GET", ts.URL+"/api/v1/tasks?"+q, "")
		if r.code != 400 {
			t.Errorf("?%s: %d, want 400", q, r.code)
		} else {
			r.errorMsg(t)
		}
	}
}

func TestQueueFullAnswers429(t *testing.T) {
	t.Parallel()
	w := newWorld(t)
	ts := serve(t, New(w.bus, w.store, Config{MaxQueued: 2, RetryAfter: 45 * time.Second}))
	w.addTask(t, orchestrator.SourceAPI, "/r", "one")
	if r := call(t, "POST", ts.URL+"/api/v1/tasks", `{"repo":"https://git.example/acme/r.git","prompt":"two"}`); r.code != 202 {
		t.Fatalf("under the limit: %d %s", r.code, r.body)
	}
	w.addTask(t, orchestrator.SourceAPI, "/r", "two") // the scheduler is not running: store it ourselves
	r := call(t, "POST", ts.URL+"/api/v1/tasks", `{"repo":"https://git.example/acme/r.git","prompt":"three"}`)
	if r.code != 429 || r.hdr.Get("Retry-After") != "45" {
		t.Fatalf("over the limit: %d Retry-After %q %s", r.code, r.hdr.Get("Retry-After"), r.body)
	}
	var qf QueueFull
	r.json(t, &qf)
	if qf.Position != 3 || qf.Queued != 2 || qf.RetryAfter != 45 || !strings.Contains(qf.Error, "queue is full") {
		t.Fatalf("429 body: %+v", qf)
	}
}

func TestAllTasksEventStream(t *testing.T) {
	t.Parallel()
	w := newWorld(t)
	w.runScheduler(t)
	old := w.addTask(t, orchestrator.SourceGitHub, "/other", "from before")
	ts := serve(t, New(w.bus, w.store, Config{}))

	all := openSSE(t, ts.URL+"/api/v1/events")
	onlyAPI := openSSE(t, ts.URL+"/api/v1/events?source=api")
	ev := all.next(t)
	var snap Snapshot
	json.Unmarshal([]byte(ev.data), &snap)
	if ev.event != "snapshot" || len(snap.Tasks) != 1 || snap.Tasks[0].ID != old.ID {
		t.Fatalf("snapshot: %+v", ev)
	}
	if ev := onlyAPI.next(t); ev.event != "snapshot" || strings.Contains(ev.data, old.ID) {
		t.Fatalf("filtered snapshot: %+v", ev)
	}

	// A task created through the API arrives live, as the scheduler stored it.
	var created CreateResponse
	call(t, "POST", ts.URL+"/api/v1/tasks", `{"repo":"https://git.example/acme/r.git","prompt":"do it"}`).json(t, &created)
	taskEv := func(r *sseReader) TaskEvent {
		ev := r.next(t)
		if ev.event != "task" || ev.id == "" {
			t.Fatalf("want a task event with an id, got %+v", ev)
		}
		var te TaskEvent
		json.Unmarshal([]byte(ev.data), &te)
		return te
	}
	te := taskEv(all)
	if te.TaskID != created.ID || te.State != orchestrator.StateQueued || te.Task.Prompt != "do it" || te.Task.Source != orchestrator.SourceAPI {
		t.Fatalf("created event: %+v", te)
	}
	if te := taskEv(onlyAPI); te.TaskID != created.ID {
		t.Fatalf("filtered stream: %+v", te)
	}

	// A worker's report: the event shows the new state and what it changed.
	ident := orchestrator.TaskIdentity{ID: "idn", Name: "agent-x", Email: "x@agents.localhost"}
	w.move(t, created.ID, orchestrator.StateProvisioning, orchestrator.Patch{})
	if te := taskEv(all); te.State != orchestrator.StateProvisioning {
		t.Fatalf("claim event: %+v", te)
	}
	w.move(t, created.ID, orchestrator.StateRunning, orchestrator.Patch{Identity: &ident})
	te = taskEv(all)
	if te.State != orchestrator.StateRunning || te.Task.State != orchestrator.StateRunning || te.Task.Identity.Name != "agent-x" {
		t.Fatalf("worker report event: %+v", te)
	}
	// The other repo's task changes too, but the api-only stream skips it.
	call(t, "POST", ts.URL+"/api/v1/tasks/"+old.ID+"/cancel", "")
	if te := taskEv(all); te.TaskID != old.ID || te.State != orchestrator.StateCancelled {
		t.Fatalf("cancel event: %+v", te)
	}
	if te := taskEv(onlyAPI); te.TaskID != created.ID || te.State != orchestrator.StateProvisioning {
		t.Fatalf("filtered stream, the claim: %+v", te)
	}
	if te := taskEv(onlyAPI); te.TaskID != created.ID || te.State != orchestrator.StateRunning {
		t.Fatalf("filtered stream after the github task changed: %+v", te)
	}
	if r := call(t, "GET", ts.URL+"/api/v1/events?state=nope", ""); r.code != 400 {
		t.Fatalf("bad filter: %d", r.code)
	}
}

// TestEventStreamShowsRecordedTasks: every event carries the task as the
// authority recorded it, with everything its run reported so far.
func TestEventStreamShowsRecordedTasks(t *testing.T) {
	t.Parallel()
	w := newWorld(t)
	task := w.addTask(t, orchestrator.SourceAPI, "/r", "p")
	ts := serve(t, New(w.bus, w.store, Config{}))
	es := openSSE(t, ts.URL+"/api/v1/events")
	if ev := es.next(t); ev.event != "snapshot" {
		t.Fatalf("first event %+v", ev)
	}
	ident := orchestrator.TaskIdentity{ID: "idn", Name: "agent-x", Email: "x@agents.localhost"}
	review, commit := "/r#nightshift/x", "abc123"
	w.move(t, task.ID, orchestrator.StateProvisioning, orchestrator.Patch{})
	w.move(t, task.ID, orchestrator.StateRunning, orchestrator.Patch{Identity: &ident})
	w.move(t, task.ID, orchestrator.StateTesting, orchestrator.Patch{})
	w.move(t, task.ID, orchestrator.StatePushing, orchestrator.Patch{})
	w.move(t, task.ID, orchestrator.StateReview, orchestrator.Patch{Review: &review, Commit: &commit})
	var te TaskEvent
	for te.Task.State != orchestrator.StateReview {
		ev := es.next(t)
		json.Unmarshal([]byte(ev.data), &te)
	}
	if te.Task.Identity.Name != "agent-x" || te.Task.Commit != commit || te.Task.Review != review {
		t.Fatalf("last event lost recorded fields: %+v", te.Task)
	}
}

func TestCollectorReportsTheStore(t *testing.T) {
	t.Parallel()
	w := newWorld(t)
	c := NewCollector(w.store)
	c.now = func() time.Time { return time.Now().Add(time.Hour) }
	w.addTask(t, orchestrator.SourceAPI, "/r", "a")
	w.addTask(t, orchestrator.SourceAPI, "/r", "b")
	if err := w.store.CatchUp(context.Background(), w.bus.Records(), 5*time.Second); err != nil {
		t.Fatal(err)
	}
	reg := prometheus.NewRegistry()
	reg.MustRegister(c)
	if n := testutil.ToFloat64(prometheusGauge(t, reg, "nightshift_queue_depth", "")); n != 2 {
		t.Fatalf("queue depth %v", n)
	}
	if n := testutil.ToFloat64(prometheusGauge(t, reg, "nightshift_tasks", "queued")); n != 2 {
		t.Fatalf("queued tasks %v", n)
	}
	if age := testutil.ToFloat64(prometheusGauge(t, reg, "nightshift_queue_oldest_age_seconds", "")); age < 3500 || age > 3700 {
		t.Fatalf("oldest age %v", age)
	}
	if n, err := testutil.GatherAndCount(reg, "nightshift_tasks"); err != nil || n != len(orchestrator.States) {
		t.Fatalf("nightshift_tasks series: %d %v", n, err)
	}
	if err := testutil.CollectAndCompare(c, strings.NewReader(`
# HELP nightshift_store_up 1 when the task store answered the scrape.
# TYPE nightshift_store_up gauge
nightshift_store_up 1
`), "nightshift_store_up"); err != nil {
		t.Fatal(err)
	}
}

// prometheusGauge returns a collector holding the one gathered value of
// name (with state label value when given), for testutil.ToFloat64.
func prometheusGauge(t *testing.T, reg *prometheus.Registry, name, state string) prometheus.Collector {
	t.Helper()
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() != name {
			continue
		}
		for _, m := range mf.GetMetric() {
			if state != "" && (len(m.GetLabel()) == 0 || m.GetLabel()[0].GetValue() != state) {
				continue
			}
			g := prometheus.NewGauge(prometheus.GaugeOpts{Name: "x"})
			g.Set(m.GetGauge().GetValue())
			return g
		}
	}
	t.Fatalf("no %s{%s}", name, state)
	return nil
}

func TestStepRecorder(t *testing.T) {
	t.Parallel()
	reg := prometheus.NewRegistry()
	r := NewStepRecorder(nil, reg)
	t0 := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	for _, rep := range []orchestrator.StateReport{
		{TaskID: "a", Run: 1, State: orchestrator.StateQueued, At: t0},
		{TaskID: "a", Run: 1, State: orchestrator.StateProvisioning, At: t0.Add(2 * time.Second)},
		{TaskID: "a", Run: 1, State: orchestrator.StateProvisioning, At: t0.Add(2 * time.Second)}, // redelivered
		{TaskID: "a", Run: 1, State: orchestrator.StateRunning, At: t0.Add(3 * time.Second)},
		{TaskID: "a", Run: 1, State: orchestrator.StateFailed, Reason: "tests_failed", At: t0.Add(13 * time.Second)},
	} {
		r.observe(rep)
	}
	if n := testutil.CollectAndCount(r.steps); n != 3 {
		t.Fatalf("%d step series, want queued, provisioning, running", n)
	}
	if v := testutil.ToFloat64(r.outcomes.WithLabelValues("failed", "tests_failed")); v != 1 {
		t.Fatalf("failed outcome %v", v)
	}
	mfs, _ := reg.Gather()
	for _, mf := range mfs {
		if mf.GetName() != "nightshift_task_step_duration_seconds" {
			continue
		}
		for _, m := range mf.GetMetric() {
			step := m.GetLabel()[0].GetValue()
			want := map[string]float64{"queued": 2, "provisioning": 1, "running": 10}[step]
			if m.GetHistogram().GetSampleSum() != want || m.GetHistogram().GetSampleCount() != 1 {
				t.Errorf("step %s: sum %v count %d, want %v once", step, m.GetHistogram().GetSampleSum(), m.GetHistogram().GetSampleCount(), want)
			}
		}
	}
}

// TestStepRecorderRun records from the real task stream.
func TestStepRecorderRun(t *testing.T) {
	t.Parallel()
	w := newWorld(t)
	reg := prometheus.NewRegistry()
	r := NewStepRecorder(w.bus, reg)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- r.Run(ctx) }()
	t0 := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	deadline := time.Now().Add(20 * time.Second)
	// The recorder reads from "now": publish runs until it has seen one.
	for i := 0; testutil.CollectAndCount(r.steps) == 0; i++ {
		if time.Now().After(deadline) {
			t.Fatal("the recorder saw no step")
		}
		id := fmt.Sprint("task", i)
		for j, st := range []orchestrator.State{orchestrator.StateQueued, orchestrator.StateProvisioning} {
			data, _ := json.Marshal(orchestrator.StateReport{TaskID: id, Run: 1, State: st, At: t0.Add(time.Duration(j) * 3 * time.Second)})
			if _, err := w.bus.JetStream().Publish(ctx, orchestrator.StateSubject(id), data); err != nil {
				t.Fatal(err)
			}
		}
		time.Sleep(20 * time.Millisecond)
	}
	cancel()
	if err := <-done; err != nil && err != context.Canceled {
		t.Fatalf("Run: %v", err)
	}
	mfs, _ := reg.Gather()
	for _, mf := range mfs {
		if mf.GetName() == "nightshift_task_step_duration_seconds" {
			h := mf.GetMetric()[0].GetHistogram()
			if mf.GetMetric()[0].GetLabel()[0].GetValue() != "queued" || h.GetSampleSum()/float64(h.GetSampleCount()) != 3 {
				t.Fatalf("queued step: %v", mf)
			}
			return
		}
	}
	t.Fatal("no step histogram")
}

// TestCreateThenGetReadsItsWrite: a GET right after POST /api/v1/tasks
// finds the task, even with no scheduler running to create it from the
// event; the scheduler, when it comes, creates nothing more and dispatches
// the run once.
func TestCreateThenGetReadsItsWrite(t *testing.T) {
	t.Parallel()
	w := newWorld(t)
	ts := serve(t, New(w.bus, w.store, Config{AgentFor: func(string) string { return "script" }}))
	r := call(t, "POST", ts.URL+"/api/v1/tasks", `{"repo":"https://git.example/acme/r.git","prompt":"do it"}`)
	if r.code != 202 {
		t.Fatalf("create: %d %s", r.code, r.body)
	}
	var created CreateResponse
	json.Unmarshal([]byte(r.body), &created)
	g := call(t, "GET", ts.URL+"/api/v1/tasks/"+created.ID, "")
	var got orchestrator.Task
	json.Unmarshal([]byte(g.body), &got)
	if g.code != 200 || got.ID != created.ID || got.State != orchestrator.StateQueued || got.Agent != "script" {
		t.Fatalf("GET right after POST: %d %s", g.code, g.body)
	}
	if l := call(t, "GET", ts.URL+"/api/v1/tasks", ""); !strings.Contains(l.body, created.ID) {
		t.Fatalf("list right after POST: %s", l.body)
	}
	w.runScheduler(t)
	cons, err := w.bus.JetStream().CreateOrUpdateConsumer(context.Background(), orchestrator.WorkStream,
		jetstream.ConsumerConfig{Durable: "workers", AckPolicy: jetstream.AckExplicitPolicy})
	if err != nil {
		t.Fatal(err)
	}
	n := 0
	for _, wait := range []time.Duration{5 * time.Second, 500 * time.Millisecond} {
		b, err := cons.Fetch(1, jetstream.FetchMaxWait(wait))
		if err != nil {
			t.Fatal(err)
		}
		for m := range b.Messages() {
			m.Ack()
			n++
		}
	}
	if n != 1 {
		t.Fatalf("%d work items for the new task, want 1", n)
	}
}
