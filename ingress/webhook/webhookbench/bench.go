// Package webhookbench measures the webhook ingress against a bare
// baseline in the same run: the real Handler (HMAC verify, normalize,
// transport dedupe in JetStream KV, durable JetStream publish with PubAck)
// and a minimal handler that only verifies the HMAC and publishes with
// PubAck, both on one embedded nats-server with the same sync settings,
// driven by concurrent keep-alive HTTP clients over loopback.
package webhookbench

import (
	"bytes"
	"context"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/hex"
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
		GitHub: webhook.GitHubConfig{Secrets: []string{secret}, BotLogin: "nightshift-bot"},
	})
	if err != nil {
		return err
	}
	ours := httptest.NewServer(h)
	defer ours.Close()
	base := httptest.NewServer(baseline(js))
	defer base.Close()

	fmt.Fprintf(w, "webhook ingress benchmark: %d keep-alive clients, up to %d requests or %s per side, %d rounds, payload %d bytes\n",
		o.Clients, o.Requests, o.Duration, o.Rounds, len(payload(0)))
	var seq atomic.Int64
	for _, srv := range []*httptest.Server{base, ours} {
		if _, err := drive(ctx, srv.URL+"/hooks/github", o.Clients, o.Warmup, o.Duration, &seq); err != nil {
			return err
		}
	}
	// Alternate short rounds so load from elsewhere on the machine falls
	// on both sides alike; totals are summed over the rounds.
	var sum [2]Stats
	for round := range o.Rounds {
		for i, srv := range []*httptest.Server{base, ours} {
			cpu0 := processCPU()
			s, err := drive(ctx, srv.URL+"/hooks/github", o.Clients, o.Requests, o.Duration, &seq)
			if err != nil {
				return err
			}
			s.CPU = processCPU() - cpu0
			if s.Errors > 0 {
				return fmt.Errorf("round %d: %d requests failed", round, s.Errors)
			}
			sum[i].add(s)
		}
	}
	fmt.Fprintf(w, "baseline (hmac + publish/puback):               %s\n", sum[0])
	fmt.Fprintf(w, "ingress  (hmac + normalize + dedupe + puback):  %s\n", sum[1])
	fmt.Fprintf(w, "cpu_ratio=%.2f (baseline/ingress CPU per request)\n",
		float64(sum[0].CPU)/float64(sum[0].Requests)/(float64(sum[1].CPU)/float64(sum[1].Requests)))
	fmt.Fprintf(w, "ratio=%.2f\n", sum[1].Throughput()/sum[0].Throughput())
	return nil
}

// baseline is the minimal handler: read the body, verify the HMAC, publish
// with PubAck, answer 202.
func baseline(js jetstream.JetStream) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, err := io.ReadAll(http.MaxBytesReader(w, r.Body, 1<<20))
		if err != nil {
			http.Error(w, "too large", http.StatusRequestEntityTooLarge)
			return
		}
		if webhook.VerifyGitHub([]string{secret}, r.Header.Get("X-Hub-Signature-256"), body) != nil {
			http.Error(w, "bad signature", http.StatusUnauthorized)
			return
		}
		if _, err := js.Publish(r.Context(), "bench.baseline.github", body, jetstream.WithMsgID(r.Header.Get("X-GitHub-Delivery"))); err != nil {
			http.Error(w, "not stored", http.StatusServiceUnavailable)
			return
		}
		w.WriteHeader(http.StatusAccepted)
	})
}

// drive sends up to n requests (or for at most d) from clients concurrent
// keep-alive clients and measures them.
func drive(ctx context.Context, url string, clients, n int, d time.Duration, seq *atomic.Int64) (Stats, error) {
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
				id := seq.Add(1)
				body := payload(id)
				mac := hmac.New(sha256.New, []byte(secret))
				mac.Write(body)
				req, _ := http.NewRequestWithContext(ctx, http.MethodPost, url, bytes.NewReader(body))
				req.Header.Set("Content-Type", "application/json")
				req.Header.Set("X-GitHub-Event", "issue_comment")
				req.Header.Set("X-GitHub-Delivery", "bench-"+strconv.FormatInt(id, 10))
				req.Header.Set("X-Hub-Signature-256", "sha256="+hex.EncodeToString(mac.Sum(nil)))
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

// payload is an issue_comment delivery shaped like GitHub's (trimmed to the
// fields people's payloads always carry), with a unique comment id.
func payload(id int64) []byte {
	return []byte(strings.ReplaceAll(payloadTemplate, "COMMENT_ID", strconv.FormatInt(1_000_000+id, 10)))
}

const payloadTemplate = `{"action":"created","issue":{"url":"https://api.github.com/repos/acme/app/issues/7","repository_url":"https://api.github.com/repos/acme/app","html_url":"https://github.com/acme/app/issues/7","id":444500041,"node_id":"MDU6SXNzdWU0NDQ1MDAwNDE=","number":7,"title":"Login test is flaky","user":{"login":"ann","id":21031067,"node_id":"MDQ6VXNlcjIxMDMxMDY3","avatar_url":"https://avatars1.githubusercontent.com/u/21031067?v=4","html_url":"https://github.com/ann","type":"User","site_admin":false},"labels":[{"id":1362934389,"name":"bug","color":"d73a4a","default":true}],"state":"open","locked":false,"assignees":[],"comments":3,"created_at":"2026-01-02T15:20:18Z","updated_at":"2026-01-02T15:20:21Z","author_association":"MEMBER","body":"The login test fails about one run in ten on CI."},"comment":{"url":"https://api.github.com/repos/acme/app/issues/comments/COMMENT_ID","html_url":"https://github.com/acme/app/issues/7#issuecomment-COMMENT_ID","issue_url":"https://api.github.com/repos/acme/app/issues/7","id":COMMENT_ID,"node_id":"MDEyOklzc3VlQ29tbWVudDQ5MjcwMDQwMA==","user":{"login":"ann","id":21031067,"node_id":"MDQ6VXNlcjIxMDMxMDY3","avatar_url":"https://avatars1.githubusercontent.com/u/21031067?v=4","html_url":"https://github.com/ann","type":"User","site_admin":false},"created_at":"2026-01-02T15:20:21Z","updated_at":"2026-01-02T15:20:21Z","author_association":"MEMBER","body":"Thanks for the report.\n\n@nightshift make the login test deterministic; ` + "`" + `go test ./auth -run TestLogin -count=50` + "`" + ` must pass"},"repository":{"id":186853002,"node_id":"MDEwOlJlcG9zaXRvcnkxODY4NTMwMDI=","name":"app","full_name":"acme/app","private":true,"owner":{"login":"acme","id":1,"type":"Organization","site_admin":false},"html_url":"https://github.com/acme/app","description":"The app","fork":false,"url":"https://api.github.com/repos/acme/app","created_at":"2019-05-15T15:19:25Z","updated_at":"2026-01-02T15:19:27Z","pushed_at":"2026-01-02T15:20:13Z","git_url":"git://github.com/acme/app.git","ssh_url":"git@github.com:acme/app.git","clone_url":"https://github.com/acme/app.git","default_branch":"main","visibility":"private"},"organization":{"login":"acme","id":1},"sender":{"login":"ann","id":21031067,"type":"User","site_admin":false}}`
