package main

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"net/http"
	"os"
	"strconv"
	"strings"
	"time"

	"github.com/nightshift/nightshift/ingress/webhook"
)

const hooksUsage = `usage: nightshift hooks replay FILE --source github|linear|slack --event NAME [flags]

Signs a stored webhook payload (FILE, or - for stdin) the way the provider
would and posts it to a running server.

  --source github   --event is the X-GitHub-Event (issue_comment, check_run, ...)
  --source linear   --event is ignored; webhookTimestamp is set to now unless --keep-timestamp
  --source slack    --event is commands or interactions (the route)

flags:
  --server URL      server (env NIGHTSHIFT_SERVER, default http://127.0.0.1:8080)
  --secret S        signing secret (env NIGHTSHIFT_GITHUB_WEBHOOK_SECRET,
                    NIGHTSHIFT_LINEAR_WEBHOOK_SECRET or NIGHTSHIFT_SLACK_SIGNING_SECRET)
  --delivery ID     delivery id (default: a fresh random id, so the server does not
                    answer "duplicate"; reuse one to test deduplication)
  --keep-timestamp  linear: keep the stored webhookTimestamp

examples:
  nightshift hooks replay testdata/issue_comment.json --source github --event issue_comment
  nightshift --server http://127.0.0.1:8080 hooks replay - --source slack --event commands < cmd.txt`

// runHooks is "nightshift hooks": operator tools for webhooks.
func runHooks(ctx context.Context, a *app, args []string) error {
	// run has checked the sub-command: replay is the only one.
	return runHooksReplay(ctx, a, args[1:])
}

type replayOptions struct {
	file, source, event, server, secret, delivery string
	keepTimestamp                                 bool
}

func runHooksReplay(ctx context.Context, a *app, args []string) error {
	var o replayOptions
	fs := flag.NewFlagSet("hooks replay", flag.ContinueOnError)
	fs.StringVar(&o.source, "source", "", "github, linear or slack")
	fs.StringVar(&o.event, "event", "", "event name (github) or route (slack: commands|interactions)")
	fs.StringVar(&o.server, "server", a.getenv("NIGHTSHIFT_SERVER"), "server URL")
	fs.StringVar(&o.secret, "secret", "", "signing secret")
	fs.StringVar(&o.delivery, "delivery", "", "delivery id")
	fs.BoolVar(&o.keepTimestamp, "keep-timestamp", false, "linear: keep the stored webhookTimestamp")
	// Flags may come before or after FILE.
	pos, err := parseFlags(a, fs, "hooks replay", args, nil)
	if err != nil {
		return err
	}
	if len(pos) != 1 {
		return usageErrorf("hooks replay: want exactly one FILE, got %d arguments (see nightshift hooks --help)", len(pos))
	}
	o.file = pos[0]
	if o.server == "" {
		o.server = "http://127.0.0.1:8080"
	}
	secretEnv := map[string]string{
		"github": "NIGHTSHIFT_GITHUB_WEBHOOK_SECRET",
		"linear": "NIGHTSHIFT_LINEAR_WEBHOOK_SECRET",
		"slack":  "NIGHTSHIFT_SLACK_SIGNING_SECRET",
	}[o.source]
	if o.secret == "" && secretEnv != "" {
		o.secret = a.getenv(secretEnv)
	}
	switch {
	case o.source != "github" && o.source != "linear" && o.source != "slack":
		return usageErrorf("hooks replay: --source must be github, linear or slack, not %q", o.source)
	case o.source == "github" && o.event == "":
		return usageErrorf("hooks replay: --event is required for github (the X-GitHub-Event, e.g. issue_comment)")
	case o.source == "slack" && o.event != "commands" && o.event != "interactions":
		return usageErrorf("hooks replay: --event must be commands or interactions for slack, not %q", o.event)
	case o.secret == "":
		return usageErrorf("hooks replay: no signing secret (use --secret or %s)", secretEnv)
	}
	var body []byte
	if o.file == "-" {
		body, err = io.ReadAll(a.stdin)
	} else {
		body, err = os.ReadFile(o.file)
	}
	if err != nil {
		return fmt.Errorf("read payload: %w", err)
	}
	req, err := replayRequest(ctx, o, body, time.Now())
	if err != nil {
		return err
	}
	resp, err := (&http.Client{Timeout: 30 * time.Second}).Do(req)
	if err != nil {
		return fmt.Errorf("post %s: %w", req.URL, err)
	}
	defer resp.Body.Close()
	answer, _ := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
	fmt.Fprintf(a.stdout, "%d %s\n", resp.StatusCode, strings.TrimSpace(string(answer)))
	if resp.StatusCode >= 300 {
		return fmt.Errorf("server answered %s", resp.Status)
	}
	return nil
}

// replayRequest builds the signed request a provider would send.
func replayRequest(ctx context.Context, o replayOptions, body []byte, now time.Time) (*http.Request, error) {
	delivery := o.delivery
	if delivery == "" {
		b := make([]byte, 16)
		_, _ = rand.Read(b)
		delivery = hex.EncodeToString(b)
	}
	base := strings.TrimSuffix(o.server, "/")
	h := http.Header{}
	var path string
	switch o.source {
	case "github":
		path = "/hooks/github"
		h.Set("Content-Type", "application/json")
		h.Set("X-GitHub-Event", o.event)
		h.Set("X-GitHub-Delivery", delivery)
		h.Set("X-Hub-Signature-256", webhook.SignGitHub(o.secret, body))
	case "linear":
		path = "/hooks/linear"
		if !o.keepTimestamp {
			var m map[string]json.RawMessage
			if err := json.Unmarshal(body, &m); err != nil {
				return nil, fmt.Errorf("linear payload is not a JSON object: %w", err)
			}
			m["webhookTimestamp"] = json.RawMessage(strconv.FormatInt(now.UnixMilli(), 10))
			body, _ = json.Marshal(m)
		}
		h.Set("Content-Type", "application/json")
		h.Set("Linear-Delivery", delivery)
		h.Set("Linear-Signature", webhook.SignLinear(o.secret, body))
	case "slack":
		path = "/hooks/slack/" + o.event
		ts := strconv.FormatInt(now.Unix(), 10)
		body = bytes.TrimRight(body, "\r\n")
		h.Set("Content-Type", "application/x-www-form-urlencoded")
		h.Set("X-Slack-Request-Timestamp", ts)
		h.Set("X-Slack-Signature", webhook.SignSlack(o.secret, ts, body))
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, base+path, bytes.NewReader(body))
	if err != nil {
		return nil, usageErrorf("hooks replay: bad --server %q: %v", o.server, err)
	}
	req.Header = h
	return req, nil
}
