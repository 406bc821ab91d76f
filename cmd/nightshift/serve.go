package main

import (
	"cmp"
	"context"
	"database/sql"
	"errors"
	"flag"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"time"

	natsd "github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"

	"github.com/nightshift/nightshift/config"
	"github.com/nightshift/nightshift/identity"
	"github.com/nightshift/nightshift/identity/identityapi"
	"github.com/nightshift/nightshift/identity/local"
	"github.com/nightshift/nightshift/identity/mcpserver"
	"github.com/nightshift/nightshift/identity/ravi"
	"github.com/nightshift/nightshift/ingress"
	"github.com/nightshift/nightshift/ingress/api"
	"github.com/nightshift/nightshift/ingress/webhook"
	"github.com/nightshift/nightshift/orchestrator"
	"github.com/nightshift/nightshift/orchestrator/agent"
	"github.com/nightshift/nightshift/orchestrator/forge"
	"github.com/nightshift/nightshift/orchestrator/gateway"
	"github.com/nightshift/nightshift/orchestrator/natsserver"
	"github.com/nightshift/nightshift/sandbox"
	"github.com/nightshift/nightshift/sandbox/bwrap"
	"github.com/nightshift/nightshift/sandbox/process"
	"github.com/nightshift/nightshift/vault"
	"github.com/nightshift/nightshift/worktree"
)

// serveOptions are the serve flags; they override the config file.
type serveOptions struct {
	configPath string
	dataDir    string
	listen     string
	role       string
	natsURL    string
	// ackWait shortens redelivery after a crash (tests); 0 = default.
	ackWait time.Duration
}

func runServe(ctx context.Context, a *app, args []string) error {
	fs := flag.NewFlagSet("serve", flag.ContinueOnError)
	fs.SetOutput(a.stderr)
	var o serveOptions
	fs.StringVar(&o.configPath, "config", "", "config file (default ./nightshift.yaml when present)")
	fs.StringVar(&o.dataDir, "data-dir", "", "data directory (default ./.nightshift)")
	fs.StringVar(&o.listen, "listen", "", "HTTP listen address (default 127.0.0.1:8080)")
	fs.StringVar(&o.role, "role", "all", "what this process runs: all, ingress, scheduler or worker")
	fs.StringVar(&o.natsURL, "nats", "", "external NATS server URL, or several comma-separated (default: embedded)")
	fs.DurationVar(&o.ackWait, "ack-wait", 0, "how long a crashed worker's task waits before redelivery (default 60s)")
	if err := fs.Parse(args); err != nil {
		return usageErrorf("%v", err)
	}
	if fs.NArg() > 0 {
		return usageErrorf("serve takes no arguments, got %q", fs.Args())
	}
	switch o.role {
	case "all", "ingress", "scheduler", "worker":
	default:
		return usageErrorf("--role must be all, ingress, scheduler or worker, not %q", o.role)
	}
	cfg, err := loadConfig(a, o.configPath)
	if err != nil {
		return err
	}
	if o.dataDir != "" {
		cfg.DataDir = o.dataDir
	}
	if o.listen != "" {
		cfg.Listen = o.listen
	}
	if o.natsURL != "" {
		cfg.NATS.URL = o.natsURL
	}
	logger := slog.New(slog.NewTextHandler(a.stderr, &slog.HandlerOptions{Level: logLevel(a.getenv("NIGHTSHIFT_LOG_LEVEL"))}))
	s, err := startServerWaiting(ctx, a, cfg, o, logger)
	if err != nil {
		return err
	}
	return s.wait(ctx)
}

// loadConfig loads the config file named by path, or ./nightshift.yaml when
// path is empty and the file exists.
func loadConfig(a *app, path string) (*config.Config, error) {
	if path == "" {
		path = a.getenv("NIGHTSHIFT_CONFIG")
	}
	if path == "" {
		if _, err := os.Stat("nightshift.yaml"); err == nil {
			path = "nightshift.yaml"
		}
	}
	return config.Load(path, a.env)
}

func logLevel(s string) slog.Level {
	var l slog.Level
	if err := l.UnmarshalText([]byte(s)); err != nil {
		return slog.LevelInfo
	}
	return l
}

// server is a running nightshift serve.
type server struct {
	log      *slog.Logger
	http     *http.Server
	ln       net.Listener
	ns       *natsd.Server
	nc       *nats.Conn
	db       *sql.DB
	provider *local.Provider
	// shared holds what every host reads and writes (the vault,
	// identities) when nats.url is set; nil on embedded NATS.
	shared   jetstream.JetStream
	replicas int
	wt       *worktree.Manager
	runners  []func(context.Context) error
	// workers run on a context of their own: on shutdown they stop taking
	// work and drain first, while everything they use stays up.
	workers []func(context.Context) error
	gate    drainGate
	front   frontHandler
	errc    chan error
	wg      sync.WaitGroup
	closers []func()
}

func startServer(ctx context.Context, a *app, cfg *config.Config, o serveOptions, logger *slog.Logger) (_ *server, err error) {
	s := &server{log: logger, errc: make(chan error, 8)}
	defer func() {
		if err != nil {
			s.close()
		}
	}()
	if abs, err := filepath.Abs(cfg.DataDir); err == nil {
		cfg.DataDir = abs
	}
	// Refuse an open API on the network before creating anything (data
	// dir, vault key); tokens given as references are checked again once
	// they resolve.
	if (o.role == "all" || o.role == "ingress") && len(cfg.API.Tokens)+len(cfg.API.ReadOnlyTokens) == 0 && !ingress.IsLoopback(cfg.Listen) {
		return nil, fmt.Errorf("listen %s is not a loopback address: set api.tokens so the API is not open to the network", cfg.Listen)
	}
	if err := os.MkdirAll(cfg.DataDir, 0o700); err != nil {
		return nil, fmt.Errorf("create data dir: %w", err)
	}
	if err := s.lockDataDir(cfg.DataDir); err != nil {
		return nil, err
	}
	// The main listener serves /mcp to the host (operators' tools); agents
	// reach MCP and the gateway only through their run's own listeners. It
	// is opened first, so a port in use fails the start before anything
	// (the vault key, the database) is created.
	s.ln, err = net.Listen("tcp", cfg.Listen)
	if err != nil {
		return nil, fmt.Errorf("listen %s: %w", cfg.Listen, err)
	}
	s.closers = append(s.closers, func() { s.ln.Close() })
	s.serveEarly(logger)
	all := o.role == "all"

	// NATS: embedded in-process unless a URL is given.
	if cfg.NATS.URL == "" {
		s.ns, err = natsserver.Start(natsserver.Config{StoreDir: filepath.Join(cfg.DataDir, "jetstream"), Listen: cfg.NATS.Listen})
		if err != nil {
			return nil, err
		}
		s.closers = append(s.closers, func() { s.ns.Shutdown(); s.ns.WaitForShutdown() })
		s.nc, err = natsserver.Connect(s.ns, "nightshift-"+o.role)
	} else {
		s.nc, err = connectNATS(cfg.NATS.URL, "nightshift-"+o.role, logger)
	}
	if err != nil {
		return nil, fmt.Errorf("connect to nats: %w", err)
	}
	s.closers = append(s.closers, func() { s.nc.Close() })
	// Waits, retrying, until the streams exist (a cluster still electing
	// its leader, a server not up yet) or ctx ends.
	bus, err := orchestrator.NewBus(ctx, s.nc, orchestrator.BusConfig{Replicas: cfg.NATS.Replicas, Logger: logger})
	if err != nil {
		return nil, err
	}

	// SQLite: tasks, vault, identities.
	s.db, err = orchestrator.OpenDB(filepath.Join(cfg.DataDir, "nightshift.db"))
	if err != nil {
		return nil, err
	}
	s.closers = append(s.closers, func() { s.db.Close() })
	store, err := orchestrator.NewStore(ctx, s.db, nil)
	if err != nil {
		return nil, err
	}
	// This node's index of the task records, kept up to date for as long
	// as the process serves (and rebuilt from the records when missing).
	// It outlives the signal (lists stay fresh through the drain) and
	// stops with the rest at the end.
	if n, err := store.MigrateToRecords(ctx, bus.Records()); err != nil {
		return nil, fmt.Errorf("carry tasks into the records bucket: %w", err)
	} else if n > 0 {
		logger.Info("tasks carried from SQLite into the records bucket", "tasks", n)
	}
	followCtx, stopFollow := context.WithCancel(context.WithoutCancel(ctx))
	s.closers = append(s.closers, stopFollow)
	store.Follow(followCtx, bus.Records())
	keys, choice := vault.SelectKeySource(cfg.DataDir, cfg.Vault.KeyFile, a.getenv("NIGHTSHIFT_VAULT_KEY"), a.getenv("NIGHTSHIFT_VAULT_PASSPHRASE"), logger)
	s.shared, s.replicas = s.clusterJS(bus, cfg.NATS.Listen), cfg.NATS.Replicas
	vlt, err := openVault(ctx, s.db, s.shared, s.replicas, keys, vault.Config{Logger: logger, MatchRepo: config.MatchRepo}, logger)
	if err != nil {
		return nil, fmt.Errorf("open vault (%s): %w", choice, err)
	}
	// Secret lookups outlive the signal: while workers drain after SIGTERM,
	// the gateway and preflight still resolve their keys.
	life := context.WithoutCancel(ctx)
	resolve := func(sec config.Secret) (string, error) { return sec.Resolve(life, a.env, vlt) }
	resolveAll := func(list []config.Secret) ([]string, error) { return config.ResolveAll(life, list, a.env, vlt) }

	reg := prometheus.NewRegistry()
	reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	registerBusMetrics(reg, bus)
	metrics := orchestrator.NewMetrics(reg)

	// Identities: the built-in local provider (mail over SMTP, SMS from a
	// number pool) or Ravi's API.
	provider, err := s.newIdentityProvider(cfg, resolve, logger)
	if err != nil {
		return nil, err
	}
	ids, err := s.openIdentities(ctx, provider, identity.Config{Domain: cfg.Identity.Domain, Logger: logger})
	if err != nil {
		return nil, fmt.Errorf("identity service: %w", err)
	}

	reports, err := s.openReports(ctx, bus.JetStream(), logger)
	if err != nil {
		return nil, err
	}
	prs, notifiers, replier, drivers, err := newRoundTrip(life, cfg, reports, resolve, logger)
	if err != nil {
		return nil, err
	}

	routes := ingress.Routes{Registry: reg, Logger: logger}
	routes.MCP = mcpserver.NewServer(ids, vlt, mcpserver.Config{Logger: logger.With("component", "mcp"), Version: version, RepoKey: config.RepoKey,
		Ask: bus.Ask, Grants: func(ctx context.Context, taskID string, scopes []string) ([]string, func(string) bool) {
			return taskGrants(ctx, bus.Records(), logger, taskID, scopes)
		}}).Handler()
	adminTokens, aerr := resolveAll(cfg.API.Tokens)
	roTokens, rerr := resolveAll(cfg.API.ReadOnlyTokens)
	tokenErr := errors.Join(aerr, rerr)
	// /metrics takes an API token (admin or read-only) when tokens are
	// configured, in every role; a process that cannot resolve them (the
	// ingress role fails below) refuses every scrape.
	if tokenErr != nil {
		routes.MetricsAuthFunc = func(*http.Request) bool { return false }
	} else if metricsAuth := api.NewTokenAuthenticator(adminTokens, roTokens); !metricsAuth.Empty() {
		routes.MetricsAuthFunc = func(r *http.Request) bool { _, err := metricsAuth.Authenticate(r); return err == nil }
	}
	if all || o.role == "ingress" {
		if tokenErr != nil {
			return nil, tokenErr
		}
		if len(adminTokens)+len(roTokens) == 0 && !ingress.IsLoopback(cfg.Listen) {
			return nil, fmt.Errorf("listen %s is not a loopback address: set api.tokens so the API is not open to the network", cfg.Listen)
		}
		// Logins are kept in JetStream: they survive restarts and are shared
		// by every ingress process.
		sessions, sessionKey, err := api.NewKVSessionStore(ctx, bus.JetStream(), 0, nil)
		if err != nil {
			return nil, err
		}
		apiSrv := api.New(bus, store, api.Config{AdminTokens: adminTokens, ReadOnlyTokens: roTokens, MaxQueued: cfg.API.MaxQueued, MaxPromptBytes: cfg.API.MaxPromptBytes,
			Sessions: sessions, SessionKey: sessionKey,
			KnownAgent: func(n string) bool { _, ok := cfg.AgentFor(n); return ok }, Logger: logger,
			AgentFor:         func(repo string) string { return cmp.Or(cfg.RepoFor(repo).Agent, cfg.DefaultAgent, "claude") },
			LocalRepoAllowed: cfg.NamesLocalRepo, DataDir: cfg.DataDir,
			Metrics: api.NewMetrics(reg)})
		reg.MustRegister(api.NewCollector(store))
		s.runners = append(s.runners, api.NewStepRecorder(bus, reg).Run)
		routes.API = apiSrv
		if err := mountAutomations(ctx, apiSrv, bus, cfg, logger); err != nil {
			return nil, err
		}
		routes.LoopbackHostOnly = len(adminTokens)+len(roTokens) == 0
		routes.Board = boardHandler(apiSrv, bus, store, logger)
		routes.Identities = apiSrv.RequireRole(api.RoleAdmin, identityapi.New(ids, identityapi.Config{Logger: logger}))
		if s.provider != nil {
			routes.SMS = s.provider.SMSHandler()
		}
		hooks, err := newWebhooks(bus, store, cfg, resolve, resolveAll, replier, drivers, reg, logger)
		if err != nil {
			return nil, err
		}
		routes.Hooks = hooks
	}

	if all || o.role == "scheduler" {
		sched := orchestrator.NewScheduler(bus, store, orchestrator.SchedulerConfig{
			DefaultAgent: cfg.DefaultAgent,
			AgentFor:     func(repo string) string { return cfg.RepoFor(repo).Agent },
			Logger:       logger, Metrics: metrics, Notifiers: notifiers,
			AnswerTimeout: cfg.Worker.AnswerTimeout.Std(),
		})
		s.runners = append(s.runners, sched.Run)
		autoRun, err := automationRunner(ctx, bus, cfg, resolve, reg, drivers, logger)
		if err != nil {
			return nil, err
		}
		s.runners = append(s.runners, autoRun)
	}

	// One probe of the data dir's disk, for /readyz and for the worker,
	// which takes no run while the disk takes no writes.
	disk := newDiskProbe(cfg.DataDir)
	if all || o.role == "worker" {
		sb, err := s.newSandboxes(ctx, cfg, logger)
		if err != nil {
			return nil, err
		}
		s.wt, err = worktree.New(worktree.Config{MirrorDir: filepath.Join(cfg.DataDir, "mirrors"),
			TaskDir: filepath.Join(cfg.DataDir, "tasks"), Logger: logger,
			// No task may name a repository under the data dir (worktrees,
			// agent homes, mirrors): an agent could have planted it.
			ForbiddenDirs: []string{cfg.DataDir},
			Retention:     cfg.Worker.Retention.Std()})
		if err != nil {
			return nil, err
		}
		s.closers = append(s.closers, func() { s.wt.Close() })
		gw, err := newGateway(cfg, resolve, reg, logger)
		if err != nil {
			return nil, err
		}
		tools := map[string]string{}
		if bin, err := os.Executable(); err == nil {
			tools["nightshift"], tools["ravi"] = bin, bin
		}
		worker, err := orchestrator.NewWorker(bus, sb, s.wt, ids, agentRegistry{cfg}, orchestrator.WorkerConfig{
			Concurrency: cfg.Worker.Concurrency, AckWait: o.ackWait, DrainTimeout: cfg.Worker.DrainTimeout.Std(), Logger: logger, Metrics: metrics,
			MCP: routes.MCP, Gateway: gw, ServiceDir: filepath.Join(cfg.DataDir, "sandbox", "run"), Tools: tools, PullRequests: prs,
			DirectNetwork: cfg.Sandbox.Driver == "process",
			SandboxHome:   sandboxHome(cfg.Sandbox.Driver),
			// The redactor covers what the task is granted and the server's
			// own secrets, which a task never reads but may still print (a
			// token in a git error).
			Secrets: func(ctx context.Context, taskID, agentName, repo string) (map[string]string, error) {
				actor := vault.Actor{Kind: vault.ActorSystem, ID: "redactor:" + taskID}
				granted, err := vlt.LookupAll(ctx, actor, vault.ScopesFor(taskID, agentName, repo, config.RepoKey(repo)))
				if err != nil {
					return nil, err
				}
				server, err := vlt.ServerSecrets(ctx, actor)
				if err != nil {
					// Still redact what the task is granted.
					logger.Error("server secrets left out of a task's redactor", "task_id", taskID, "err", err)
				}
				return vault.RedactionValues(granted, server), nil
			},
			NewRedactor: func(m map[string]string) orchestrator.Redactor { return vault.NewRedactor(m) },
			Repo: func(repo string) orchestrator.RepoSettings {
				r := cfg.RepoFor(repo)
				timeout := r.Timeout.Std()
				if timeout == 0 {
					timeout = cfg.Sandbox.Timeout.Std()
				}
				return orchestrator.RepoSettings{Setup: r.Setup, Test: r.Test, Timeout: timeout, AllowHosts: r.AllowHosts,
					Protected: r.Protected, AllowProtected: r.AllowProtected,
					Budget: gateway.Budget{Tokens: r.Budget.Tokens, CostUSD: r.Budget.CostUSD}}
			},
			// ${vault:NAME} in agents.<name>.env resolves from the scopes
			// granted to the task, never the server's.
			Env: func(ctx context.Context, taskID, agentName, repo string) (map[string]string, error) {
				// The task is read once: its automation's secret_scopes
				// narrow the scopes and limit the stored scopes read.
				scopes, allowed := taskGrants(ctx, bus.Records(), logger, taskID, vault.ScopesFor(taskID, agentName, repo, config.RepoKey(repo)))
				grants := vlt.TaskResolver(vault.Actor{Kind: vault.ActorTask, ID: taskID}, scopes).OnlyScopes(allowed)
				return cfg.AgentEnv(ctx, agentName, a.env, grants)
			},
			Model: func(name string) string { ag, _ := cfg.AgentFor(name); return ag.Model },
			// What a run needs is checked before it is provisioned: a task
			// that cannot run fails at once and says why.
			Preflight: preflight(cfg, a.env, resolve, tools),
			Ready:     disk.Check,
		})
		if err != nil {
			return nil, err
		}
		s.workers = append(s.workers, worker.Run)
		s.runners = append(s.runners, func(ctx context.Context) error {
			return s.collectGarbage(ctx, worker, bus.Records())
		})
	}

	if s.provider != nil { // with Ravi, Ravi receives mail and SMS itself
		if err := s.provider.Start(ctx); err != nil {
			logger.Warn("identity mail intake not started", "err", err)
		} else {
			s.closers = append(s.closers, func() { s.provider.Stop(context.Background()) })
		}
	}

	routes.Ready = s.readyChecks(o.role, disk, bus, store).run
	s.front.set(s.gate.wrap(ingress.NewHandler(routes)))
	addr := "http://" + s.ln.Addr().String()
	if err := os.WriteFile(filepath.Join(cfg.DataDir, "serve.addr"), []byte(addr+"\n"), 0o600); err != nil {
		return nil, err
	}
	fmt.Fprintf(a.stdout, "nightshift: listening on %s (role %s, data %s)\n", addr, o.role, cfg.DataDir)
	logger.Info("serving", "addr", addr, "role", o.role, "data_dir", cfg.DataDir, "sandbox", cfg.Sandbox.Driver, "vault_key", string(choice))
	return s, nil
}

// wait runs the components until ctx is done, then shuts down in order:
// stop taking work (webhooks and API writes answer 503, /readyz says
// shutting down), let the workers drain (their runs finish, or are handed
// back after worker.drain_timeout) while /mcp, the gateway, secret lookups
// and NATS stay up, then stop the other components and close.
func (s *server) wait(ctx context.Context) error {
	runCtx, cancel := context.WithCancel(context.WithoutCancel(ctx))
	defer cancel()
	workCtx, stopWork := context.WithCancel(context.WithoutCancel(ctx))
	defer stopWork()
	start := func(wg *sync.WaitGroup, ctx context.Context, r func(context.Context) error) {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if err := r(ctx); err != nil && ctx.Err() == nil {
				s.errc <- err
			}
		}()
	}
	var workers sync.WaitGroup
	for _, r := range s.workers {
		start(&workers, workCtx, r)
	}
	for _, r := range s.runners {
		start(&s.wg, runCtx, r)
	}
	var err error
	select {
	case <-ctx.Done():
		s.log.Info("shutting down: no new work; draining running tasks")
	case err = <-s.errc:
		s.log.Error("component failed; shutting down", "err", err)
	}
	s.gate.draining.Store(true)
	stopWork()
	workers.Wait()
	cancel()
	shutCtx, done := context.WithTimeout(context.WithoutCancel(ctx), 10*time.Second)
	s.http.Shutdown(shutCtx)
	done()
	s.wg.Wait()
	s.close()
	return err
}

func (s *server) close() {
	for i := len(s.closers) - 1; i >= 0; i-- {
		s.closers[i]()
	}
	s.closers = nil
}

func (s *server) newSandboxes(ctx context.Context, cfg *config.Config, logger *slog.Logger) (*sandbox.Manager, error) {
	var d sandbox.Driver
	switch cfg.Sandbox.Driver {
	case "process":
		logger.Warn("sandbox driver is process: agents run WITHOUT isolation (explicitly configured)")
		d = process.New(process.Config{Path: processPath})
	default:
		bw, err := newBwrapDriver(ctx, cfg.Sandbox)
		if err != nil {
			return nil, fmt.Errorf("sandbox: bubblewrap is not usable here (%v); install bubblewrap, or set sandbox.driver: process in nightshift.yaml to run agents WITHOUT isolation", err)
		}
		s.closers = append(s.closers, func() { bw.Close() })
		logger.Info("sandbox: bubblewrap", "limits", bw.Mode())
		d = bw
	}
	return sandbox.NewManager(d, sandbox.Config{DefaultTimeout: cfg.Sandbox.Timeout.Std(),
		StateDir:      filepath.Join(cfg.DataDir, "sandbox"),
		DefaultLimits: sandbox.Limits{MemoryBytes: cfg.Sandbox.MemoryBytes, Processes: cfg.Sandbox.Processes}},
		logger.With("component", "sandbox"))
}

// newGateway returns the model gateway; the worker serves it to each run on
// a listener of the run's own.
func newGateway(cfg *config.Config, resolve func(config.Secret) (string, error),
	reg prometheus.Registerer, logger *slog.Logger) (*gateway.Gateway, error) {
	upstream := func(m config.Model) gateway.Upstream {
		return gateway.Upstream{BaseURL: m.BaseURL, AllowServerTools: m.AllowServerTools, Key: func(context.Context) (string, error) {
			if !m.APIKey.IsSet() {
				return "", errors.New("no API key configured for this model provider")
			}
			return resolve(m.APIKey)
		}}
	}
	gw, err := gateway.New(gateway.Config{
		Upstreams:     map[string]gateway.Upstream{"anthropic": upstream(cfg.Models.Anthropic), "openai": upstream(cfg.Models.OpenAI)},
		TranscriptDir: filepath.Join(cfg.DataDir, "transcripts"),
		Logger:        logger.With("component", "gateway"),
		Metrics:       reg,
	})
	if err != nil {
		return nil, fmt.Errorf("model gateway: %w", err)
	}
	return gw, nil
}

// collectGarbage removes finished task worktrees after their retention and
// unused mirrors: once at start (orphans a crash left behind), then every
// ten minutes. A worktree is live while this worker runs its task or the
// store says the task may still run.
func (s *server) collectGarbage(ctx context.Context, worker *orchestrator.Worker, recs *orchestrator.Records) error {
	live := func(id string) bool {
		if worker.Running(id) {
			return true
		}
		t, err := recs.Task(ctx, id)
		if err != nil {
			return !errors.Is(err, orchestrator.ErrNotFound) // unsure: keep it
		}
		return t.State == orchestrator.StateQueued || t.State == orchestrator.StateNeedsInput || t.State.Active()
	}
	tick := time.NewTicker(10 * time.Minute)
	defer tick.Stop()
	for {
		if err := s.wt.GC(ctx, live); err != nil && ctx.Err() == nil {
			s.log.Warn("worktree garbage collection", "err", err)
		}
		select {
		case <-ctx.Done():
			return nil
		case <-tick.C:
		}
	}
}

// newIdentityProvider returns the configured identity provider; the local
// one is kept on s for its SMTP intake and SMS webhook.
func (s *server) newIdentityProvider(cfg *config.Config, resolve func(config.Secret) (string, error), logger *slog.Logger) (identity.Provider, error) {
	if cfg.Identity.Provider == "ravi" {
		key, err := resolve(cfg.Identity.Ravi.Key)
		if err != nil {
			return nil, fmt.Errorf("identity.ravi.key: %w", err)
		}
		p, err := ravi.New(ravi.Config{APIURL: cfg.Identity.Ravi.APIURL, Key: ravi.Key(key), Logger: logger})
		if err != nil {
			return nil, fmt.Errorf("identity provider ravi: %w", err)
		}
		return p, nil
	}
	twilio, err := resolve(cfg.Identity.TwilioAuthToken)
	if err != nil {
		return nil, fmt.Errorf("identity.twilio_auth_token: %w", err)
	}
	s.provider, err = s.openLocalProvider(local.Config{Domain: cfg.Identity.Domain, SMTPListen: cfg.Identity.SMTPListen,
		PhonePool: cfg.Identity.PhonePool, TwilioAuthToken: twilio, SMSWebhookURL: strings.TrimRight(cfg.PublicURL, "/") + "/hooks/sms",
		Logger: logger})
	if err != nil {
		return nil, fmt.Errorf("identity provider: %w", err)
	}
	return s.provider, nil
}

// sandboxHome is where a task's HOME appears inside the sandbox.
func sandboxHome(driver string) string {
	if driver == "process" {
		return "" // the host path itself
	}
	return bwrap.Home
}

// agentRegistry builds agent adapters from the config.
type agentRegistry struct{ cfg *config.Config }

func (r agentRegistry) Adapter(name string) (agent.Adapter, error) {
	a, ok := r.cfg.AgentFor(name)
	if !ok {
		return nil, fmt.Errorf("agent %q is not configured", name)
	}
	return agent.New(a.Kind, a.Command)
}

func newWebhooks(bus *orchestrator.Bus, store *orchestrator.Store, cfg *config.Config, resolve func(config.Secret) (string, error),
	resolveAll func([]config.Secret) ([]string, error), replier webhook.Replier, drivers *forge.Registry, reg prometheus.Registerer, logger *slog.Logger) (http.Handler, error) {
	gh, err := resolveAll(cfg.GitHub.WebhookSecrets)
	if err != nil {
		return nil, err
	}
	lin, err := resolveAll(cfg.Linear.WebhookSecrets)
	if err != nil {
		return nil, err
	}
	sl, err := resolveAll(cfg.Slack.SigningSecrets)
	if err != nil {
		return nil, err
	}
	token, err := resolve(cfg.GitHub.Token)
	if err != nil && !errors.Is(err, vault.ErrNotFound) {
		return nil, err
	}
	// With a GitHub App, permission checks authenticate as the App.
	var hc *http.Client
	if tr, err := githubAppTransport(cfg, resolve); err != nil {
		return nil, err
	} else if tr != nil {
		hc = &http.Client{Transport: tr, Timeout: 10 * time.Second}
	} else if tr, err := githubTokenTransport(cfg, resolve); err != nil {
		return nil, err
	} else if tr != nil {
		// Otherwise with github.token, resolved at each check.
		hc, token = &http.Client{Transport: tr, Timeout: 10 * time.Second}, ""
	}
	allow, deny := map[string][]string{}, map[string][]string{}
	for _, r := range cfg.Repos {
		if len(r.Allow) > 0 {
			allow[r.Match] = r.Allow
		}
		if len(r.Deny) > 0 {
			deny[r.Match] = r.Deny
		}
	}
	forges, sources, err := forgeWebhooks(cfg, resolveAll, logger)
	if err != nil {
		return nil, err
	}
	return webhook.New(bus.JetStream(), bus, webhook.Config{
		Forges: forges, Sources: sources, Drivers: drivers,
		GitHub: webhook.GitHubConfig{Secrets: gh, Trigger: cfg.GitHub.Trigger, Label: cfg.GitHub.Label, BotLogin: cfg.GitHub.BotLogin,
			APIURL: cfg.GitHub.APIURL, GitURL: cfg.GitHub.GitURL, Token: token, Allow: allow, Deny: deny, ReplyRefused: cfg.GitHub.ReplyOnRefusal},
		Linear:     webhook.LinearConfig{Secrets: lin, AgentUser: cfg.Linear.AgentUser, Label: cfg.Linear.Label, Repo: cfg.Linear.Repo},
		Slack:      webhook.SlackConfig{Secrets: sl},
		AttemptCap: cfg.GitHub.AttemptCap,
		Replier:    replier,
		Waiting: func(ctx context.Context, repo string, target orchestrator.Target) (string, error) {
			t, err := bus.Records().WaitingTask(ctx, repo, target)
			return t.ID, err
		},
		HTTPClient: hc,
		Logger:     logger.With("component", "webhook"),
		Metrics:    reg,
	})
}

// taskGrants reads the task once for both limits of its automation's
// secret_scopes: the scopes it may be granted, and which stored scope it
// may take a secret from. When the task cannot be read, none of either: a
// limit that cannot be checked is not lifted.
func taskGrants(ctx context.Context, recs *orchestrator.Records, logger *slog.Logger, taskID string, scopes []string) ([]string, func(scope string) bool) {
	t, err := recs.Task(ctx, taskID)
	if err != nil {
		logger.Warn("read the task's secret scopes; granting none", "task_id", taskID, "err", err)
		return nil, func(string) bool { return false }
	}
	return t.NarrowScopes(scopes), t.ScopeAllowed
}
