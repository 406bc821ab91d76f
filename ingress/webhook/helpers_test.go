package webhook

import (
	"context"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/nightshift/nightshift/orchestrator"
)

// startJetStream boots an embedded nats-server with JetStream in a temp
// dir and creates the events stream the Publisher writes to.
func startJetStream(t testing.TB) (*server.Server, jetstream.JetStream) {
	t.Helper()
	s, err := server.NewServer(&server.Options{
		Port: -1, JetStream: true, StoreDir: t.TempDir(), NoLog: true, NoSigs: true,
	})
	if err != nil {
		t.Fatal(err)
	}
	go s.Start()
	if !s.ReadyForConnections(10 * time.Second) {
		t.Fatal("nats-server not ready")
	}
	t.Cleanup(s.Shutdown)
	nc, err := nats.Connect(s.ClientURL())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(nc.Close)
	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if _, err := js.CreateStream(ctx, orchestrator.EventsStreamConfig(orchestrator.BusConfig{})); err != nil {
		t.Fatal(err)
	}
	return s, js
}

// fixedClock is an injected clock tests can move.
type fixedClock struct{ now time.Time }

func (c *fixedClock) Now() time.Time { return c.now }

type harness struct {
	t     testing.TB
	js    jetstream.JetStream
	h     *Handler
	clock *fixedClock
}

const testGitHubSecret = "It's a Secret to Everybody"

func newHarness(t testing.TB, mutate func(*Config)) *harness {
	t.Helper()
	_, js := startJetStream(t)
	clock := &fixedClock{now: time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)}
	cfg := Config{
		GitHub: GitHubConfig{Secrets: []string{"old-rotated-secret", testGitHubSecret}, BotLogin: "nightshift-bot"},
		Linear: LinearConfig{Secrets: []string{"linear-secret"}, AgentUser: "9b2c7a1e-0000-4000-8000-00000000a9e7"},
		Slack:  SlackConfig{Secrets: []string{"8f742231b10e8888abcd99yyyzzz85a5", "e6b19c573432dcc6b075501d51b51bb8"}},
		Clock:  clock.Now,
	}
	if mutate != nil {
		mutate(&cfg)
	}
	h, err := New(js, NewJetStreamPublisher(js), cfg)
	if err != nil {
		t.Fatal(err)
	}
	return &harness{t: t, js: js, h: h, clock: clock}
}

type response struct {
	Status int
	Body   map[string]string
}

func (hs *harness) do(req *http.Request) response {
	hs.t.Helper()
	rec := httptest.NewRecorder()
	hs.h.ServeHTTP(rec, req)
	var body map[string]string
	if err := json.Unmarshal(rec.Body.Bytes(), &body); err != nil {
		hs.t.Fatalf("response %d is not a JSON object: %q", rec.Code, rec.Body.String())
	}
	return response{Status: rec.Code, Body: body}
}

func githubRequest(event, delivery string, body []byte, secret string) *http.Request {
	req := httptest.NewRequest(http.MethodPost, "/hooks/github", strings.NewReader(string(body)))
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("X-GitHub-Event", event)
	if delivery != "" {
		req.Header.Set("X-GitHub-Delivery", delivery)
	}
	if secret != "" {
		req.Header.Set("X-Hub-Signature-256", SignGitHub(secret, body))
	}
	return req
}

func linearRequest(body []byte, secret, delivery string) *http.Request {
	req := httptest.NewRequest(http.MethodPost, "/hooks/linear", strings.NewReader(string(body)))
	req.Header.Set("Content-Type", "application/json")
	if delivery != "" {
		req.Header.Set("Linear-Delivery", delivery)
	}
	if secret != "" {
		req.Header.Set("Linear-Signature", SignLinear(secret, body))
	}
	return req
}

func slackRequest(path string, body []byte, secret string, ts time.Time) *http.Request {
	req := httptest.NewRequest(http.MethodPost, path, strings.NewReader(string(body)))
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	stamp := strconv.FormatInt(ts.Unix(), 10)
	req.Header.Set("X-Slack-Request-Timestamp", stamp)
	if secret != "" {
		req.Header.Set("X-Slack-Signature", SignSlack(secret, stamp, body))
	}
	return req
}

// lastEvent returns the newest event in the events stream and how many
// the stream holds.
func (hs *harness) lastEvent() (*orchestrator.Event, uint64) {
	hs.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	st, err := hs.js.Stream(ctx, orchestrator.EventsStream)
	if err != nil {
		hs.t.Fatal(err)
	}
	info, err := st.Info(ctx)
	if err != nil {
		hs.t.Fatal(err)
	}
	if info.State.Msgs == 0 {
		return nil, 0
	}
	msg, err := st.GetMsg(ctx, info.State.LastSeq)
	if err != nil {
		hs.t.Fatal(err)
	}
	var ev orchestrator.Event
	if err := json.Unmarshal(msg.Data, &ev); err != nil {
		hs.t.Fatal(err)
	}
	if got := msg.Header.Get(jetstream.MsgIDHeader); got != ev.DeliveryID {
		hs.t.Fatalf("Nats-Msg-Id = %q, want delivery id %q", got, ev.DeliveryID)
	}
	if want := orchestrator.EventSubject(ev.Source, ev.Kind); msg.Subject != want {
		hs.t.Fatalf("subject = %q, want %q", msg.Subject, want)
	}
	return &ev, info.State.Msgs
}

func jsonMarshal(v any) ([]byte, error) { return json.Marshal(v) }
