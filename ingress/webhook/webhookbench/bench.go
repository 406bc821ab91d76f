// Package webhookbench measures the webhook ingress against a bare
// baseline in the same run: the real Handler (verify, normalize, transport
// dedupe in JetStream KV, durable JetStream publish with PubAck) and a
// minimal handler that only verifies the delivery and publishes with
// PubAck, both on one embedded nats-server with the same sync settings,
// driven by concurrent keep-alive HTTP clients over loopback. Each forge
// route is measured on its own: GitLab note deliveries (token check), Gitea
// issue_comment deliveries (HMAC), then GitHub issue_comment deliveries
// (HMAC), whose ratio is the last line.
package webhookbench

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/nightshift/nightshift/ingress/webhook"
	"github.com/nightshift/nightshift/orchestrator"
	"github.com/nightshift/nightshift/orchestrator/forge"
)

// Options bound a run. Zero values mean the defaults noted.
type Options struct {
	Clients  int           // concurrent keep-alive clients (default 32)
	Requests int           // requests per side per round (default 4000)
	Duration time.Duration // time cap per side per round (default 5s)
	Warmup   int           // unmeasured requests per side first (default 1000)
	Rounds   int           // alternating baseline/ingress rounds, summed (default 5)
}

func (o Options) withDefaults() Options {
	if o.Clients == 0 {
		o.Clients = 32
	}
	if o.Requests == 0 {
		o.Requests = 4000
	}
	if o.Duration == 0 {
		o.Duration = 5 * time.Second
	}
	if o.Warmup == 0 {
		o.Warmup = 1000
	}
	if o.Rounds == 0 {
		o.Rounds = 5
	}
	return o
}

const secret = "bench-secret"

// Run runs the benchmark with default options and prints the results to w,
// the last line being ratio=<ours/baseline throughput>.
func Run(ctx context.Context, w io.Writer) error { return RunWith(ctx, w, Options{}) }

// Stats is one measured side.
type Stats struct {
	Requests int
	Errors   int
	Elapsed  time.Duration
	CPU      time.Duration // process CPU time (user+sys) spent meanwhile
	P50, P99 time.Duration
	lat      []time.Duration
}

func (s *Stats) add(o Stats) {
	s.Requests += o.Requests
	s.Errors += o.Errors
	s.Elapsed += o.Elapsed
	s.CPU += o.CPU
	s.lat = append(s.lat, o.lat...)
	slices.Sort(s.lat)
	s.P50 = s.lat[len(s.lat)/2]
	s.P99 = s.lat[len(s.lat)*99/100]
}

// Throughput is requests per second.
func (s Stats) Throughput() float64 { return float64(s.Requests) / s.Elapsed.Seconds() }

func (s Stats) String() string {
	return fmt.Sprintf("%6d req in %6.2fs  %7.0f req/s  p50=%-8s p99=%-8s cpu/req=%-7s errors=%d",
		s.Requests, s.Elapsed.Seconds(), s.Throughput(), s.P50.Round(time.Microsecond), s.P99.Round(time.Microsecond),
		(s.CPU / time.Duration(max(s.Requests, 1))).Round(time.Microsecond), s.Errors)
}

// RunWith is Run with explicit options.
func RunWith(ctx context.Context, w io.Writer, o Options) error {
	o = o.withDefaults()
	dir, err := os.MkdirTemp("", "webhookbench-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(dir)
	ns, err := server.NewServer(&server.Options{Port: -1, JetStream: true, StoreDir: dir, NoLog: true, NoSigs: true})
	if err != nil {
		return fmt.Errorf("start nats-server: %w", err)
	}
	go ns.Start()
	defer ns.Shutdown()
	if !ns.ReadyForConnections(10 * time.Second) {
		return errors.New("nats-server not ready")
	}
	nc, err := nats.Connect("", nats.InProcessServer(ns))
	if err != nil {
		return err
	}
	defer nc.Close()
	js, err := jetstream.New(nc)
	if err != nil {
		return err
	}
	// Both sides publish to a stream configured as the real events stream
	// (file storage, 72-hour delivery-id memory), with Nats-Msg-Id set.
	for name, subj := range map[string]string{orchestrator.EventsStream: "nightshift.events.>", "BENCH_BASELINE": "bench.baseline.>"} {
		sc := orchestrator.EventsStreamConfig(orchestrator.BusConfig{})
		sc.Name, sc.Subjects = name, []string{subj}
		if _, err := js.CreateStream(ctx, sc); err != nil {
			return fmt.Errorf("create stream %s: %w", name, err)
		}
	}
	h, err := webhook.New(js, webhook.NewJetStreamPublisher(js), webhook.Config{
		GitHub: webhook.GitHubConfig{Secrets: []string{secret}, BotLogin: "nightshift-bot",
			// The GitLab note's author is allowed by name: no permission
			// lookup (a forge API call) is measured.
			Allow: map[string][]string{gitlabHost + "/acme/app": {"ann"}, giteaHost + "/acme/app": {"alice"}}},
		Forges: []webhook.ForgeConfig{{Kind: forge.KindGitLab, Secrets: []string{secret}, GitURL: "https://" + gitlabHost + "/", BotLogin: "nightshift-bot"},
			{Kind: forge.KindGitea, Secrets: []string{secret}, GitURL: "https://" + giteaHost + "/", BotLogin: "nightshift-bot"}},
		Sources: []webhook.Source{webhook.GitLabSource(), webhook.GiteaSource{}},
	})
	if err != nil {
		return err
	}
	ours := httptest.NewServer(h)
	defer ours.Close()
	base := httptest.NewServer(baseline(js))
	defer base.Close()

	fmt.Fprintf(w, "webhook ingress benchmark: %d keep-alive clients, up to %d requests or %s per side, %d rounds, payloads %d (github), %d (gitlab) and %d (gitea) bytes\n",
		o.Clients, o.Requests, o.Duration, o.Rounds, len(payload(0)), len(gitlabPayload(0)), len(giteaPayload(0)))
	var seq atomic.Int64
	// GitLab and Gitea first; GitHub's figures end the output (the last
	// line is GitHub's ratio, as before).
	for _, dl := range []dialect{gitlabDialect, giteaDialect, githubDialect} {
		for _, srv := range []*httptest.Server{base, ours} {
			if _, err := drive(ctx, srv.URL+dl.route, dl, o.Clients, o.Warmup, o.Duration, &seq); err != nil {
				return fmt.Errorf("%s warm-up: %w", dl.name, err)
			}
		}
		// Alternate short rounds so load from elsewhere on the machine
		// falls on both sides alike; totals are summed over the rounds.
		var sum [2]Stats
		for round := range o.Rounds {
			for i, srv := range []*httptest.Server{base, ours} {
				cpu0 := processCPU()
				s, err := drive(ctx, srv.URL+dl.route, dl, o.Clients, o.Requests, o.Duration, &seq)
				if err != nil {
					return fmt.Errorf("%s: %w", dl.name, err)
				}
				s.CPU = processCPU() - cpu0
				if s.Errors > 0 {
					return fmt.Errorf("%s round %d: %d requests failed", dl.name, round, s.Errors)
				}
				sum[i].add(s)
			}
		}
		prefix := ""
		if dl.name != "github" {
			prefix = dl.name + "_"
			fmt.Fprintf(w, "%s:\n", dl.name)
		}
		fmt.Fprintf(w, "baseline (%-6s + publish/puback):             %s\n", dl.check, sum[0])
		fmt.Fprintf(w, "ingress  (%-6s + normalize + dedupe + puback): %s\n", dl.check, sum[1])
		fmt.Fprintf(w, "%scpu_ratio=%.2f (baseline/ingress CPU per request)\n", prefix,
			float64(sum[0].CPU)/float64(sum[0].Requests)/(float64(sum[1].CPU)/float64(sum[1].Requests)))
		fmt.Fprintf(w, "%sratio=%.2f\n", prefix, sum[1].Throughput()/sum[0].Throughput())
	}
	return nil
}

// baseline is the minimal handler of each route: read the body, verify it
// (GitHub's and Gitea's HMAC, GitLab's token), publish with PubAck, answer
// 202.
func baseline(js jetstream.JetStream) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, err := io.ReadAll(http.MaxBytesReader(w, r.Body, 1<<20))
		if err != nil {
			http.Error(w, "too large", http.StatusRequestEntityTooLarge)
			return
		}
		subject, id := "bench.baseline.github", r.Header.Get("X-GitHub-Delivery")
		switch r.URL.Path {
		case gitlabDialect.route:
			subject, id = "bench.baseline.gitlab", r.Header.Get("Idempotency-Key")
			err = webhook.VerifyGitLab([]string{secret}, r.Header.Get("X-Gitlab-Token"))
		case giteaDialect.route:
			subject, id = "bench.baseline.gitea", r.Header.Get("X-Gitea-Delivery")
			err = webhook.VerifyGitea([]string{secret}, r.Header.Get("X-Gitea-Signature"), body)
		default:
			err = webhook.VerifyGitHub([]string{secret}, r.Header.Get("X-Hub-Signature-256"), body)
		}
		if err != nil {
			http.Error(w, "bad signature", http.StatusUnauthorized)
			return
		}
		if _, err := js.Publish(r.Context(), subject, body, jetstream.WithMsgID(id)); err != nil {
			http.Error(w, "not stored", http.StatusServiceUnavailable)
			return
		}
		w.WriteHeader(http.StatusAccepted)
	})
}

// dialect is one forge's webhook requests.
type dialect struct {
	name, route string
	check       string // what the baseline verifies
	request     func(ctx context.Context, url string, id int64) *http.Request
}

var githubDialect = dialect{name: "github", route: "/hooks/github", check: "hmac", request: func(ctx context.Context, url string, id int64) *http.Request {
	body := payload(id)
	req, _ := http.NewRequestWithContext(ctx, http.MethodPost, url, bytes.NewReader(body))
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("X-GitHub-Event", "issue_comment")
	req.Header.Set("X-GitHub-Delivery", "bench-"+strconv.FormatInt(id, 10))
	req.Header.Set("X-Hub-Signature-256", webhook.SignGitHub(secret, body))
	return req
}}

// gitlabHost is the GitLab host of the GitLab deliveries.
const gitlabHost = "gitlab.example.com"

var gitlabDialect = dialect{name: "gitlab", route: "/hooks/gitlab", check: "token", request: func(ctx context.Context, url string, id int64) *http.Request {
	req, _ := http.NewRequestWithContext(ctx, http.MethodPost, url, bytes.NewReader(gitlabPayload(id)))
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("X-Gitlab-Event", "Note Hook")
	req.Header.Set("X-Gitlab-Token", secret)
	req.Header.Set("Idempotency-Key", "bench-"+strconv.FormatInt(id, 10))
	return req
}}

// drive sends up to n requests (or for at most d) from clients concurrent
// keep-alive clients and measures them.
func drive(ctx context.Context, url string, dl dialect, clients, n int, d time.Duration, seq *atomic.Int64) (Stats, error) {
	tr := &http.Transport{MaxIdleConnsPerHost: clients, MaxConnsPerHost: clients, DisableCompression: true}
	defer tr.CloseIdleConnections()
	client := &http.Client{Transport: tr, Timeout: 30 * time.Second}
	ctx, cancel := context.WithTimeout(ctx, d)
	defer cancel()
	var (
		left   atomic.Int64
		errs   atomic.Int64
		mu     sync.Mutex
		lat    = make([]time.Duration, 0, n)
		wg     sync.WaitGroup
		failed atomic.Value
	)
	left.Store(int64(n))
	start := time.Now()
	for range clients {
		wg.Add(1)
		go func() {
			defer wg.Done()
			local := make([]time.Duration, 0, n/clients+1)
			defer func() { mu.Lock(); lat = append(lat, local...); mu.Unlock() }()
			for ctx.Err() == nil && left.Add(-1) >= 0 {
				req := dl.request(ctx, url, seq.Add(1))
				t0 := time.Now()
				resp, err := client.Do(req)
				if err != nil {
					if ctx.Err() == nil {
						errs.Add(1)
						failed.Store(err.Error())
					}
					return
				}
				_, _ = io.Copy(io.Discard, resp.Body)
				resp.Body.Close()
				if resp.StatusCode != http.StatusAccepted {
					errs.Add(1)
					failed.Store(resp.Status)
					continue
				}
				local = append(local, time.Since(t0))
			}
		}()
	}
	wg.Wait()
	elapsed := time.Since(start)
	if len(lat) == 0 {
		return Stats{}, fmt.Errorf("no request succeeded (%v)", failed.Load())
	}
	slices.Sort(lat)
	return Stats{
		Requests: len(lat),
		Errors:   int(errs.Load()),
		Elapsed:  elapsed,
		P50:      lat[len(lat)/2],
		P99:      lat[len(lat)*99/100],
		lat:      lat,
	}, nil
}

// processCPU is the user+system CPU time this process used so far.
func processCPU() time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return 0
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// gitlabPayload is a Note Hook delivery shaped like GitLab's (the fields
// of client-go's note_issue.json test payload), with a unique note id.
func gitlabPayload(id int64) []byte {
	return []byte(strings.ReplaceAll(gitlabTemplate, "NOTE_ID", strconv.FormatInt(1_000_000+id, 10)))
}

const gitlabTemplate = `{"object_kind":"note","event_type":"note","user":{"id":42,"name":"Ann","username":"ann","avatar_url":"https://secure.gravatar.com/avatar/e64c7d89f26bd1972efa854d13d7dd61?s=80&d=identicon","email":"[REDACTED]"},"project_id":5,"project":{"id":5,"name":"app","description":"The app","web_url":"https://gitlab.example.com/acme/app","avatar_url":null,"git_ssh_url":"git@gitlab.example.com:acme/app.git","git_http_url":"https://gitlab.example.com/acme/app.git","namespace":"acme","visibility_level":0,"path_with_namespace":"acme/app","default_branch":"main","ci_config_path":null,"homepage":"https://gitlab.example.com/acme/app","url":"git@gitlab.example.com:acme/app.git","ssh_url":"git@gitlab.example.com:acme/app.git","http_url":"https://gitlab.example.com/acme/app.git"},"object_attributes":{"attachment":null,"author_id":42,"change_position":null,"commit_id":null,"created_at":"2026-01-02 15:20:21 UTC","discussion_id":"e1c5835f5f99414806f6fe45b28s48cfebb89ee1","id":NOTE_ID,"line_code":null,"note":"Thanks for the report.\n\n@nightshift make the login test deterministic; ` + "`" + `go test ./auth -run TestLogin -count=50` + "`" + ` must pass","noteable_id":92,"noteable_type":"Issue","original_position":null,"position":null,"project_id":5,"resolved_at":null,"resolved_by_id":null,"resolved_by_push":null,"st_diff":null,"system":false,"type":null,"updated_at":"2026-01-02 15:20:21 UTC","updated_by_id":null,"description":"@nightshift make the login test deterministic","url":"https://gitlab.example.com/acme/app/-/issues/7#note_NOTE_ID","action":"create","internal":false},"repository":{"name":"app","url":"git@gitlab.example.com:acme/app.git","description":"The app","homepage":"https://gitlab.example.com/acme/app"},"issue":{"author_id":42,"closed_at":null,"confidential":false,"created_at":"2026-01-02 15:18:00 UTC","description":"The login test fails about one run in ten on CI.","discussion_locked":null,"due_date":null,"id":92,"iid":7,"last_edited_at":null,"last_edited_by_id":null,"milestone_id":null,"moved_to_id":null,"duplicated_to_id":null,"project_id":5,"relative_position":0,"state_id":1,"time_estimate":0,"title":"Login test is flaky","updated_at":"2026-01-02 15:20:21 UTC","updated_by_id":null,"weight":null,"health_status":null,"url":"https://gitlab.example.com/acme/app/-/issues/7","total_time_spent":0,"time_change":0,"human_total_time_spent":null,"human_time_change":null,"human_time_estimate":null,"assignee_ids":[],"assignee_id":null,"labels":[{"id":206,"title":"bug","color":"#d73a4a","project_id":5,"created_at":"2026-01-02 15:18:00 UTC","updated_at":"2026-01-02 15:18:00 UTC","template":false,"description":null,"type":"ProjectLabel","group_id":null}],"state":"opened","severity":"unknown"}}`

// payload is an issue_comment delivery shaped like GitHub's (trimmed to the
// fields people's payloads always carry), with a unique comment id.
func payload(id int64) []byte {
	return []byte(strings.ReplaceAll(payloadTemplate, "COMMENT_ID", strconv.FormatInt(1_000_000+id, 10)))
}

const payloadTemplate = `{"action":"created","issue":{"url":"https://api.github.com/repos/acme/app/issues/7","repository_url":"https://api.github.com/repos/acme/app","html_url":"https://github.com/acme/app/issues/7","id":444500041,"node_id":"MDU6SXNzdWU0NDQ1MDAwNDE=","number":7,"title":"Login test is flaky","user":{"login":"ann","id":21031067,"node_id":"MDQ6VXNlcjIxMDMxMDY3","avatar_url":"https://avatars1.githubusercontent.com/u/21031067?v=4","html_url":"https://github.com/ann","type":"User","site_admin":false},"labels":[{"id":1362934389,"name":"bug","color":"d73a4a","default":true}],"state":"open","locked":false,"assignees":[],"comments":3,"created_at":"2026-01-02T15:20:18Z","updated_at":"2026-01-02T15:20:21Z","author_association":"MEMBER","body":"The login test fails about one run in ten on CI."},"comment":{"url":"https://api.github.com/repos/acme/app/issues/comments/COMMENT_ID","html_url":"https://github.com/acme/app/issues/7#issuecomment-COMMENT_ID","issue_url":"https://api.github.com/repos/acme/app/issues/7","id":COMMENT_ID,"node_id":"MDEyOklzc3VlQ29tbWVudDQ5MjcwMDQwMA==","user":{"login":"ann","id":21031067,"node_id":"MDQ6VXNlcjIxMDMxMDY3","avatar_url":"https://avatars1.githubusercontent.com/u/21031067?v=4","html_url":"https://github.com/ann","type":"User","site_admin":false},"created_at":"2026-01-02T15:20:21Z","updated_at":"2026-01-02T15:20:21Z","author_association":"MEMBER","body":"Thanks for the report.\n\n@nightshift make the login test deterministic; ` + "`" + `go test ./auth -run TestLogin -count=50` + "`" + ` must pass"},"repository":{"id":186853002,"node_id":"MDEwOlJlcG9zaXRvcnkxODY4NTMwMDI=","name":"app","full_name":"acme/app","private":true,"owner":{"login":"acme","id":1,"type":"Organization","site_admin":false},"html_url":"https://github.com/acme/app","description":"The app","fork":false,"url":"https://api.github.com/repos/acme/app","created_at":"2019-05-15T15:19:25Z","updated_at":"2026-01-02T15:19:27Z","pushed_at":"2026-01-02T15:20:13Z","git_url":"git://github.com/acme/app.git","ssh_url":"git@github.com:acme/app.git","clone_url":"https://github.com/acme/app.git","default_branch":"main","visibility":"private"},"organization":{"login":"acme","id":1},"sender":{"login":"ann","id":21031067,"type":"User","site_admin":false}}`
