package main

import (
	"bytes"
	"context"
	"errors"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	natsserver "github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/nightshift/nightshift/ingress/webhook"
	"github.com/nightshift/nightshift/orchestrator"
)

// hooksServer serves the real webhook handler on an embedded JetStream.
func hooksServer(t *testing.T) (string, jetstream.Stream) {
	t.Helper()
	s, err := natsserver.NewServer(&natsserver.Options{Port: -1, JetStream: true, StoreDir: t.TempDir(), NoLog: true, NoSigs: true})
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
	js, _ := jetstream.New(nc)
	st, err := js.CreateStream(context.Background(), orchestrator.EventsStreamConfig(orchestrator.BusConfig{}))
	if err != nil {
		t.Fatal(err)
	}
	h, err := webhook.New(js, webhook.NewJetStreamPublisher(js), webhook.Config{
		GitHub: webhook.GitHubConfig{Secrets: []string{"gh-secret"}},
		Linear: webhook.LinearConfig{Secrets: []string{"lin-secret"}},
		Slack:  webhook.SlackConfig{Secrets: []string{"slack-secret"}},
	})
	if err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewServer(h)
	t.Cleanup(srv.Close)
	return srv.URL, st
}

func TestHooksReplay(t *testing.T) {
	url, st := hooksServer(t)
	dir := t.TempDir()
	comment := filepath.Join(dir, "comment.json")
	os.WriteFile(comment, []byte(`{"action":"created","issue":{"number":7,"html_url":"https://github.com/acme/app/issues/7"},
		"comment":{"id":99,"body":"@nightshift fix it","user":{"login":"ann"},"author_association":"MEMBER"},
		"repository":{"full_name":"acme/app","clone_url":"https://github.com/acme/app.git"},"sender":{"login":"ann"}}`), 0o644)
	linear := filepath.Join(dir, "linear.json")
	os.WriteFile(linear, []byte(`{"action":"create","type":"Comment","data":{"id":"c1","body":"@nightshift go"},"url":"https://linear.app/a/issue/ENG-1#c","webhookTimestamp":1}`), 0o644)
	slack := filepath.Join(dir, "slack.txt")
	os.WriteFile(slack, []byte("command=%2Fnightshift&text=acme%2Fapp+fix+it&trigger_id=tr1\n"), 0o644)

	tests := []struct {
		name    string
		args    []string
		env     []string
		want    string
		wantErr bool
		usage   bool
	}{
		{"github", []string{comment, "--source", "github", "--event", "issue_comment", "--secret", "gh-secret", "--delivery", "d1"}, nil, "202 ", false, false},
		{"github duplicate", []string{"--source", "github", comment, "--event", "issue_comment", "--delivery", "d1"}, []string{"NIGHTSHIFT_GITHUB_WEBHOOK_SECRET=gh-secret"}, `"duplicate"`, false, false},
		{"github wrong secret", []string{comment, "--source", "github", "--event", "issue_comment", "--secret", "nope"}, nil, "401 ", true, false},
		{"linear", []string{linear, "--source", "linear", "--secret", "lin-secret"}, nil, "202 ", false, false},
		{"linear stale kept", []string{linear, "--source", "linear", "--secret", "lin-secret", "--keep-timestamp"}, nil, "401 ", true, false},
		{"slack", []string{slack, "--source", "slack", "--event", "commands", "--secret", "slack-secret"}, nil, `"ephemeral"`, false, false},
		{"no source", []string{comment}, nil, "", true, true},
		{"no event", []string{comment, "--source", "github", "--secret", "x"}, nil, "", true, true},
		{"no secret", []string{comment, "--source", "github", "--event", "ping"}, nil, "", true, true},
		{"two files", []string{comment, comment, "--source", "github", "--event", "ping", "--secret", "x"}, nil, "", true, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var out, errb bytes.Buffer
			args := append([]string{"nightshift", "hooks", "replay"}, tt.args...)
			args = append(args, "--server", url)
			err := run(context.Background(), args, tt.env, strings.NewReader(""), &out, &errb)
			if (err != nil) != tt.wantErr {
				t.Fatalf("err = %v, stdout %q", err, out.String())
			}
			var u *usageError
			if errors.As(err, &u) != tt.usage {
				t.Fatalf("usage error = %v, want %v (%v)", !tt.usage, tt.usage, err)
			}
			if !strings.Contains(out.String(), tt.want) {
				t.Fatalf("stdout %q, want %q", out.String(), tt.want)
			}
		})
	}
	info, err := st.Info(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	if info.State.Msgs != 3 {
		t.Fatalf("stream holds %d events, want 3", info.State.Msgs)
	}
}
