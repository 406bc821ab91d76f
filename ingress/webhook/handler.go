package webhook

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"os"
	"strconv"
	"strings"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"github.com/oklog/ulid/v2"

	"github.com/nightshift/nightshift/orchestrator"
	"github.com/nightshift/nightshift/orchestrator/automation"
	"github.com/nightshift/nightshift/orchestrator/forge"
)

// storeTimeout bounds the KV and publish calls of one delivery.
const storeTimeout = 10 * time.Second

// busyRetryAfter is the Retry-After (seconds) of a 503 answered because
// Config.MaxReading bodies are already being read.
const busyRetryAfter = "2"

// initialBodyBuffer is the most a body buffer starts with before any byte
// arrived, whatever Content-Length claims; it grows as bytes arrive.
const initialBodyBuffer = 16 << 10

// Handler serves the webhook routes:
//
//	POST /hooks/github
//	POST /hooks/gitlab           (every configured GitLab host)
//	POST /hooks/gitea            (every configured Gitea/Forgejo host)
//	POST /hooks/linear
//	POST /hooks/slack/commands
//	POST /hooks/slack/interactions
//	POST /hooks/slack/events     (url_verification only; events start no work)
//
// It accepts the paths with or without the /hooks prefix, so it may be
// mounted with or without http.StripPrefix.
type Handler struct {
	cfg        Config
	pub        Publisher
	deliveries *deliveries
	attempts   *attempts
	authz      *authorizer
	log        *slog.Logger
	metrics    *metrics
	forge      forgeOptions
	forges     *forgeRoutes
	// reading holds one token per body being read (not yet verified);
	// its capacity is Config.MaxReading.
	reading chan struct{}
}

// New returns a Handler publishing through pub. It creates (or opens) its
// JetStream KV buckets on js: delivery ids and CI attempt counters.
// MinDeliveryWindow is the shortest delivery-id memory of the events stream
// New accepts: three days, longer than GitHub's redelivery horizon.
const MinDeliveryWindow = 72 * time.Hour

func New(js jetstream.JetStream, pub Publisher, cfg Config) (*Handler, error) {
	cfg = cfg.withDefaults()
	if err := cfg.validate(); err != nil {
		return nil, err
	}
	cfg, err := cfg.withRepos()
	if err != nil {
		return nil, err
	}
	if js == nil || pub == nil {
		return nil, errors.New("webhook: New needs a JetStream context and a Publisher")
	}
	ctx, cancel := context.WithTimeout(context.Background(), storeTimeout)
	defer cancel()
	// Transport dedupe of published deliveries is the events stream's
	// memory of delivery ids: refuse to run on a stream that forgets them
	// within JetStream's default two minutes.
	st, err := js.Stream(ctx, orchestrator.EventsStream)
	if err != nil {
		return nil, fmt.Errorf("webhook: events stream %s: %w", orchestrator.EventsStream, err)
	}
	if w := st.CachedInfo().Config.Duplicates; w < MinDeliveryWindow {
		return nil, fmt.Errorf("webhook: events stream %s remembers delivery ids for %s; transport dedupe needs at least %s (create it with orchestrator.EventsStreamConfig)",
			orchestrator.EventsStream, w, MinDeliveryWindow)
	}
	dkv, err := openBucket(ctx, js, jetstream.KeyValueConfig{
		Bucket:      cfg.DeliveryBucket,
		Description: "webhook delivery ids already stored (transport dedupe)",
		TTL:         cfg.DedupeTTL,
		Storage:     jetstream.FileStorage,
	})
	if err != nil {
		return nil, fmt.Errorf("webhook: %w", err)
	}
	akv, err := openBucket(ctx, js, jetstream.KeyValueConfig{
		Bucket:      cfg.AttemptBucket,
		Description: "CI-failure attempts per pull request or branch",
		TTL:         attemptsTTL,
		Storage:     jetstream.FileStorage,
	})
	if err != nil {
		return nil, fmt.Errorf("webhook: %w", err)
	}
	authz, err := newAuthorizer(cfg.GitHub, cfg.HTTPClient, cfg.Clock)
	if err != nil {
		return nil, err
	}
	fr, err := newForgeRoutes(cfg)
	if err != nil {
		return nil, err
	}
	m, err := newMetrics(cfg.Metrics)
	if err != nil {
		return nil, fmt.Errorf("webhook: register metrics: %w", err)
	}
	if cfg.Observer == nil {
		// Follows the automations for the life of the connection.
		obs, err := automation.NewObserver(context.WithoutCancel(ctx), js, st.CachedInfo().Config.Replicas, cfg.Logger)
		if err != nil {
			return nil, fmt.Errorf("webhook: %w", err)
		}
		cfg.Observer = obs
	}
	return &Handler{
		cfg:        cfg,
		pub:        pub,
		deliveries: &deliveries{kv: dkv},
		attempts:   &attempts{kv: akv},
		authz:      authz,
		log:        cfg.Logger,
		metrics:    m,
		forge:      cfg.forge(),
		forges:     fr,
		reading:    make(chan struct{}, cfg.MaxReading),
	}, nil
}

// route is one webhook endpoint.
type route struct {
	source orchestrator.Source
	name   string
	serve  func(h *Handler, ctx context.Context, r *http.Request, body []byte) (result, error)
	write  func(w http.ResponseWriter, res result)
}

var routes = map[string]route{
	"/github":             {orchestrator.SourceGitHub, "github", (*Handler).serveGitHub, writeJSONResult},
	"/gitlab":             {orchestrator.Source(forge.KindGitLab), "gitlab", (*Handler).serveGitLab, writeJSONResult},
	"/gitea":              {orchestrator.Source(forge.KindGitea), "gitea", (*Handler).serveGitea, writeJSONResult},
	"/linear":             {orchestrator.SourceLinear, "linear", (*Handler).serveLinear, writeJSONResult},
	"/slack/commands":     {orchestrator.SourceSlack, "slack_commands", (*Handler).serveSlackCommand, writeSlackCommandResult},
	"/slack/interactions": {orchestrator.SourceSlack, "slack_interactions", (*Handler).serveSlackInteraction, writeSlackResult},
	"/slack/events":       {orchestrator.SourceSlack, "slack_events", (*Handler).serveSlackEvent, writeSlackResult},
}

// result is what became of one verified delivery.
type result struct {
	outcome string
	reason  string
	ev      *orchestrator.Event
	// body, when set, is written as is (Slack url_verification).
	body any
}

// ServeHTTP implements http.Handler.
func (h *Handler) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	rt, ok := routes[strings.TrimPrefix(r.URL.Path, "/hooks")]
	if !ok {
		writeJSON(w, http.StatusNotFound, map[string]string{"error": "no such webhook route"})
		return
	}
	if r.Method != http.MethodPost {
		w.Header().Set("Allow", http.MethodPost)
		writeJSON(w, http.StatusMethodNotAllowed, map[string]string{"error": "use POST"})
		return
	}
	start := h.cfg.Clock()
	body, err := h.readBody(w, r)
	if errors.Is(err, ErrBusy) {
		w.Header().Set("Retry-After", busyRetryAfter)
	}
	var res result
	if err == nil {
		res, err = rt.serve(h, r.Context(), r, body)
	}
	if err != nil {
		status, msg := statusOf(err)
		outcome := outcomeRejected
		if status >= 500 {
			outcome = outcomeFailed
		}
		h.metrics.deliveries.WithLabelValues(string(rt.source), outcome).Inc()
		h.log.LogAttrs(r.Context(), levelOf(status), "webhook delivery not accepted",
			slog.String("route", rt.name), slog.Int("status", status), slog.String("error", err.Error()))
		writeJSON(w, status, map[string]string{"error": msg})
		return
	}
	h.metrics.deliveries.WithLabelValues(string(rt.source), res.outcome).Inc()
	rt.write(w, res)
	h.metrics.duration.WithLabelValues(string(rt.source)).Observe(h.cfg.Clock().Sub(start).Seconds())
}

// levelOf keeps the internet's noise (bad signatures, scanners) at Info.
func levelOf(status int) slog.Level {
	if status >= 500 {
		return slog.LevelError
	}
	return slog.LevelInfo
}

// readBody reads the body of an unverified delivery: at most MaxBody bytes
// (ErrTooLarge), within BodyTimeout (ErrBodyTimeout), while fewer than
// MaxReading other bodies are being read (ErrBusy otherwise, at once). The
// buffer grows as bytes arrive: a Content-Length that the sender does not
// follow with bytes costs nothing.
func (h *Handler) readBody(w http.ResponseWriter, r *http.Request) (body []byte, err error) {
	// The deadline is on the socket, so it is wall-clock time. Recorders
	// do not support it; then the server's own timeouts apply.
	rc := http.NewResponseController(w)
	defer func() {
		if err == nil {
			rc.SetReadDeadline(time.Time{}) // the body is in: no more deadline
			return
		}
		// Whatever is left of the body is not read: close the connection
		// after the answer instead of draining a slow sender's bytes.
		w.Header().Set("Connection", "close")
		rc.SetReadDeadline(time.Now())
	}()
	if r.ContentLength > h.cfg.MaxBody {
		return nil, ErrTooLarge
	}
	select {
	case h.reading <- struct{}{}:
	default:
		return nil, ErrBusy
	}
	defer func() { <-h.reading }()
	rc.SetReadDeadline(time.Now().Add(h.cfg.BodyTimeout))
	body, err = readUpTo(http.MaxBytesReader(w, r.Body, h.cfg.MaxBody), r.ContentLength)
	var tooLarge *http.MaxBytesError
	switch {
	case err == nil:
		return body, nil
	case errors.As(err, &tooLarge):
		return nil, ErrTooLarge
	case errors.Is(err, os.ErrDeadlineExceeded):
		return nil, ErrBodyTimeout
	default:
		return nil, malformedf("read body: %v", err)
	}
}

// readUpTo reads r to EOF into a buffer that starts at most
// initialBodyBuffer bytes large (less when the sender announced less) and
// grows with what actually arrives.
func readUpTo(r io.Reader, announced int64) ([]byte, error) {
	size := int64(initialBodyBuffer)
	if announced >= 0 && announced < size {
		size = announced + 1 // room to see EOF without growing
	}
	buf := make([]byte, 0, max(size, 512))
	for {
		if len(buf) == cap(buf) {
			buf = append(buf, 0)[:len(buf)]
		}
		n, err := r.Read(buf[len(buf):cap(buf)])
		buf = buf[:len(buf)+n]
		if err == io.EOF {
			return buf, nil
		}
		if err != nil {
			return nil, err
		}
	}
}

// serveGitHub handles POST /hooks/github.
// A delivery signed with a secret of Config.GitHub is GitHub's (the
// github: block); one signed with the secret of a GitHub host in
// Config.Forges belongs to that host (GitHub Enterprise): its git URL names
// the repository, its trigger and label apply, and its driver checks
// permissions.
func (h *Handler) serveGitHub(ctx context.Context, r *http.Request, body []byte) (result, error) {
	sig := r.Header.Get("X-Hub-Signature-256")
	var fh *forgeHost
	if err := VerifyGitHub(h.cfg.GitHub.Secrets, sig, body); err != nil {
		for _, c := range h.forges.hosts[forge.KindGitHub] {
			if VerifyGitHub(c.Secrets, sig, body) == nil {
				fh = c
				break
			}
		}
		if fh == nil {
			return result{}, err
		}
	}
	event := r.Header.Get("X-GitHub-Event")
	if event == "" {
		return result{}, malformedf("missing X-GitHub-Event header")
	}
	opt := githubOptions{Trigger: h.cfg.GitHub.Trigger, Label: h.cfg.GitHub.Label, Forge: h.forge}
	if fh != nil {
		opt = githubOptions{Trigger: fh.Trigger, Label: fh.Label, Forge: fh.opt}
	}
	n, p, err := decodeGitHub(event, body, opt)
	if err != nil {
		return result{}, err
	}
	if fh != nil && n.ev != nil {
		n.via = fh
	}
	if n.ev == nil || n.ev.Kind == orchestrator.KindPRFeedback {
		// Not a trigger: perhaps the answer to a waiting agent's question
		// (before feedback for the task owning a pull request).
		var a normalized
		var ok bool
		if fh != nil {
			a, ok, err = h.gitHubHostAnswer(ctx, fh, event, p)
		} else {
			a, ok, err = h.githubAnswer(ctx, event, p)
		}
		if err != nil {
			return result{}, err
		}
		if ok {
			n = a
		}
	}
	delivery := r.Header.Get("X-GitHub-Delivery")
	if delivery == "" {
		delivery = bodyHashID(body)
	}
	res, err := h.accept(ctx, orchestrator.SourceGitHub, delivery, body, n)
	if err == nil && res.outcome == outcomeIgnored && h.watches(orchestrator.SourceGitHub) {
		o := observeGitHub(event, p, body, opt.Forge)
		if o != nil {
			o.via = fh
		}
		return h.observe(ctx, delivery, body, o, res)
	}
	return res, err
}

// serveGitLab handles POST /hooks/gitlab.
func (h *Handler) serveGitLab(ctx context.Context, r *http.Request, body []byte) (result, error) {
	return h.serveForge(ctx, r, body, forge.KindGitLab)
}

// serveGitea handles POST /hooks/gitea (Gitea and Forgejo).
func (h *Handler) serveGitea(ctx context.Context, r *http.Request, body []byte) (result, error) {
	return h.serveForge(ctx, r, body, forge.KindGitea)
}

// bodyHashID names a delivery by its body when the sender gave no id.
func bodyHashID(body []byte) string {
	sum := sha256.Sum256(body)
	return "sha256:" + hex.EncodeToString(sum[:])
}

// accept runs the steps every verified, normalized delivery goes through:
// ignore, transport dedupe, authorization, CI attempt cap, publish (wait for
// the PubAck), remember the delivery.
func (h *Handler) accept(reqCtx context.Context, src orchestrator.Source, delivery string, raw []byte, n normalized) (result, error) {
	if n.ev == nil {
		return result{outcome: outcomeIgnored, reason: n.ignore}, nil
	}
	if why := remoteOnly(n.ev.Repo, n.ev.Target.HeadRepo); why != "" {
		return result{outcome: outcomeIgnored, reason: why}, nil
	}
	log := h.log.With(slog.String("source", string(src)), slog.String("delivery_id", delivery))
	// Once verified, finish the work even if the sender hangs up: a publish
	// whose answer nobody reads must still be remembered.
	ctx, cancel := context.WithTimeout(context.WithoutCancel(reqCtx), storeTimeout)
	defer cancel()

	ev := n.ev
	now := h.cfg.Clock().UTC()
	ev.Source = src
	ev.DeliveryID = delivery
	ev.ID = eventID(now, src, delivery)
	ev.ReceivedAt = now
	switch {
	case len(raw) > h.cfg.MaxRaw:
		log.Warn("payload too large to keep in the event", slog.Int("bytes", len(raw)))
	case n.rawIsJSON:
		ev.Raw = json.RawMessage(raw)
	default:
		ev.Raw, _ = json.Marshal(string(raw))
	}

	key := kvKey(string(src), delivery)
	if ref, err := h.authorize(ctx, n); err != nil {
		return result{}, errors.Join(ErrPermissionCheck, err)
	} else if ref != nil {
		return h.refuse(ctx, log, key, ev, ref, h.replies(n)), nil
	}

	if n.attemptKey != "" {
		identity := firstNonEmpty(ev.Target.HeadSHA, ev.IdempotencyKey)
		attempt, over, err := h.attempts.next(ctx, n.attemptKey, identity, h.cfg.AttemptCap)
		if err != nil {
			return result{}, errors.Join(ErrUnavailable, err)
		}
		if over {
			what, key := "CI fix attempt", n.attemptKey
			if k, ok := strings.CutPrefix(key, "review:"); ok {
				what, key = "review follow-up", k
			}
			ref := &refusal{refuseAttemptCap, fmt.Sprintf("%s %d on %s exceeds the cap of %d", what, attempt, key, h.cfg.AttemptCap)}
			return h.refuse(ctx, log, key, ev, ref, h.replies(n)), nil
		}
		ev.Attempt = attempt
	}

	// The publish is the transport dedupe: the events stream keeps every
	// delivery id (Nats-Msg-Id) for 72 hours and stores a delivery once.
	switch err := h.pub.Publish(ctx, ev); {
	case errors.Is(err, orchestrator.ErrDuplicate):
		return result{outcome: outcomeDuplicate, ev: ev}, nil
	case err != nil:
		return result{}, errors.Join(ErrUnavailable, err)
	}
	return result{outcome: outcomeAccepted, ev: ev}, nil
}

// authorize applies the trigger's authorization mode.
func (h *Handler) authorize(ctx context.Context, n normalized) (*refusal, error) {
	if n.via != nil {
		switch n.auth {
		case authComment:
			return h.forgeComment(ctx, n.via, n.ev.Repo, n.ev.Actor)
		case authLabel:
			return h.forgeBasic(n.via, n.ev.Repo, n.ev.Actor), nil
		}
		return nil, nil
	}
	switch n.auth {
	case authComment:
		return h.authz.comment(ctx, n.owner, n.name, n.ev.Actor)
	case authLabel:
		return h.authz.basic("github.com/"+n.owner+"/"+n.name, n.ev.Actor), nil
	}
	return nil, nil
}

// replies reports whether refused comment triggers of n's forge are
// answered (GitHub.ReplyRefused, ForgeConfig.ReplyRefused).
func (h *Handler) replies(n normalized) bool {
	if n.via != nil {
		return n.via.ReplyRefused
	}
	return h.cfg.GitHub.ReplyRefused && n.ev.Source == orchestrator.SourceGitHub
}

// refuse records a refused trigger: counted, logged, remembered (so a
// redelivery is not answered twice) and, where configured (reply), replied
// to. Only authors lacking permission get a reply: bots, Nightshift itself
// and denied logins are refused silently.
func (h *Handler) refuse(ctx context.Context, log *slog.Logger, key string, ev *orchestrator.Event, ref *refusal, reply bool) result {
	dup, err := h.deliveries.remember(ctx, key, "refused")
	if err != nil {
		log.Warn("refused delivery not remembered", slog.String("error", err.Error()))
	}
	if dup {
		return result{outcome: outcomeDuplicate, ev: ev}
	}
	out := result{outcome: outcomeRefused, reason: ref.reason, ev: ev}
	h.metrics.refused.WithLabelValues(string(ev.Source), ref.code).Inc()
	log.Info("trigger refused", slog.String("reason", ref.reason), slog.String("repo", ev.Repo),
		slog.String("login", ev.Actor.Login), slog.String("kind", ev.Kind))
	if h.cfg.Replier == nil || !reply || ev.Kind != orchestrator.KindComment || ref.code != refusePermission {
		return out
	}
	rctx, cancel := context.WithTimeout(ctx, h.cfg.ReplyTimeout)
	defer cancel()
	msg := fmt.Sprintf("Nightshift did not start: %s.", ref.reason)
	if err := h.cfg.Replier.Reply(rctx, ev, msg); err != nil {
		log.Warn("reply to refused trigger failed", slog.String("error", err.Error()))
	}
	return out
}

// eventID is a ULID whose time is the receive time and whose entropy is
// derived from the delivery, so one delivery always gets the same id.
func eventID(now time.Time, src orchestrator.Source, delivery string) string {
	sum := sha256.Sum256([]byte(string(src) + "\x00" + delivery))
	id, err := ulid.New(ulid.Timestamp(now), bytes.NewReader(sum[:]))
	if err != nil {
		return hex.EncodeToString(sum[:13])
	}
	return id.String()
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(v)
}

// writeFields writes a flat JSON object of string fields (in order); it is
// the hot-path answer, cheaper than encoding a map.
func writeFields(w http.ResponseWriter, status int, kv ...string) {
	b := make([]byte, 0, 128)
	b = append(b, '{')
	for i := 0; i+1 < len(kv); i += 2 {
		if i > 0 {
			b = append(b, ',')
		}
		b = strconv.AppendQuote(b, kv[i])
		b = append(b, ':')
		b = appendJSONString(b, kv[i+1])
	}
	b = append(b, '}', '\n')
	h := w.Header()
	h["Content-Type"] = []string{"application/json"}
	w.WriteHeader(status)
	_, _ = w.Write(b)
}

// appendJSONString appends s as a JSON string.
func appendJSONString(b []byte, s string) []byte {
	for i := 0; i < len(s); i++ {
		if c := s[i]; c < 0x20 || c == '"' || c == '\\' || c >= 0x7f {
			enc, _ := json.Marshal(s)
			return append(b, enc...)
		}
	}
	b = append(b, '"')
	b = append(b, s...)
	return append(b, '"')
}

// writeJSONResult answers GitHub and Linear.
func writeJSONResult(w http.ResponseWriter, res result) {
	switch res.outcome {
	case outcomeAccepted:
		writeFields(w, http.StatusAccepted, "status", "accepted", "event_id", res.ev.ID, "delivery_id", res.ev.DeliveryID)
	case outcomeDuplicate:
		writeFields(w, http.StatusOK, "status", "duplicate")
	default:
		writeFields(w, http.StatusOK, "status", "ignored", "reason", res.reason)
	}
}
