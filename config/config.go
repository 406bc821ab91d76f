// Package config loads nightshift.yaml: YAML where every key is optional,
// overridden by NIGHTSHIFT_<SECTION>_<KEY> environment variables, with unknown
// keys and bad values rejected by name. Secret-bearing values may reference
// ${vault:NAME}, ${ravi:NAME}, ${env:NAME} or ${file:PATH}; references stay
// unresolved in the Config and are resolved at use through a Resolver, so a
// resolved secret is never written back to disk.
package config

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"os"
	"path"
	"strings"
	"time"

	"gopkg.in/yaml.v3"
)

// Config is the whole of nightshift.yaml. The zero value of every field means
// its documented default; Load applies the defaults.
type Config struct {
	// Listen is the HTTP listen address. Default 127.0.0.1:8080.
	Listen string `yaml:"listen"`
	// DataDir holds SQLite, the JetStream store, worktrees and the vault key. Default ./.nightshift.
	DataDir string `yaml:"data_dir"`
	// PublicURL is how people reach the board; used for links in PRs and chat. Default http://<listen>.
	PublicURL string `yaml:"public_url"`
	NATS      NATS   `yaml:"nats"`
	API       API    `yaml:"api"`
	GitHub    GitHub `yaml:"github"`
	// Forges lists forge hosts (GitHub, GitLab, Gitea/Forgejo), one entry
	// per host. Load puts the github: block first, as shorthand for one
	// GitHub entry (see Forge).
	Forges   []Forge  `yaml:"forges"`
	Linear   Linear   `yaml:"linear"`
	Slack    Slack    `yaml:"slack"`
	Models   Models   `yaml:"models"`
	Identity Identity `yaml:"identity"`
	Sandbox  Sandbox  `yaml:"sandbox"`
	Worker   Worker   `yaml:"worker"`
	Vault    Vault    `yaml:"vault"`
	// Agents maps an agent name to how it runs. The names claude and codex
	// are built in; any other name is a plain command.
	Agents map[string]Agent `yaml:"agents"`
	// DefaultAgent is used when a task names none. Default claude.
	DefaultAgent string `yaml:"default_agent"`
	// Repos configures repositories; the first entry whose match fits wins.
	Repos []Repo `yaml:"repos"`
	// Automations are user-defined triggers: schedules and event filters
	// that start agent runs (see Automation).
	Automations []Automation `yaml:"automations"`
}

// NATS configures the message bus.
type NATS struct {
	// URL of an external NATS server; empty runs an embedded server in-process.
	URL string `yaml:"url"`
	// Listen exposes the embedded server on a TCP address (so other processes
	// can join); empty means in-process only, no TCP port.
	Listen string `yaml:"listen"`
	// Replicas of every stream and bucket: 1 on a single server, 3 (or 5)
	// on a cluster so the loss of a server loses nothing. Default 1.
	Replicas int `yaml:"replicas"`
}

// API configures access to the REST API and the board.
type API struct {
	// Tokens are admin bearer tokens. Empty: the API is open on loopback
	// listeners only and refused on any other address.
	Tokens []Secret `yaml:"tokens"`
	// ReadOnlyTokens may read but not act.
	ReadOnlyTokens []Secret `yaml:"read_only_tokens"`
	// MaxQueued is the backlog past which new tasks get 429. Default 1000.
	MaxQueued int `yaml:"max_queued"`
	// MaxPromptBytes is the largest prompt or follow-up message the API
	// accepts (413 past it). Zero: 1 MiB.
	MaxPromptBytes int `yaml:"max_prompt_bytes"`
}

// GitHub configures the GitHub integration.
type GitHub struct {
	WebhookSecrets []Secret `yaml:"webhook_secrets"`
	AppID          int64    `yaml:"app_id"`
	PrivateKey     Secret   `yaml:"private_key"`
	Token          Secret   `yaml:"token"`
	// APIURL is the REST API base. Default https://api.github.com/.
	APIURL string `yaml:"api_url"`
	// GitURL is the base URL repositories are cloned from and pushed to.
	// Default: derived from api_url (https://github.com/ for api.github.com,
	// https://HOST/ for GitHub Enterprise's https://HOST/api/v3/).
	GitURL string `yaml:"git_url"`
	// Trigger is the mention that starts work. Default @nightshift.
	Trigger string `yaml:"trigger"`
	// Label starts work when put on an issue. Default nightshift.
	Label string `yaml:"label"`
	// BotLogin is Nightshift's own account; its comments never trigger work.
	BotLogin string `yaml:"bot_login"`
	// AttemptCap caps CI-fix attempts per pull request. Default 3.
	AttemptCap int `yaml:"attempt_cap"`
	// ReplyOnRefusal answers refused triggers with a short comment.
	ReplyOnRefusal bool `yaml:"reply_on_refusal"`
}

// Linear configures the Linear integration.
type Linear struct {
	WebhookSecrets []Secret `yaml:"webhook_secrets"`
	APIKey         Secret   `yaml:"api_key"`
	APIURL         string   `yaml:"api_url"`
	AgentUser      string   `yaml:"agent_user"`
	Label          string   `yaml:"label"`
	// Repo is the repository Linear tickets are worked on.
	Repo string `yaml:"repo"`
}

// Slack configures the Slack integration.
type Slack struct {
	SigningSecrets []Secret `yaml:"signing_secrets"`
	BotToken       Secret   `yaml:"bot_token"`
	Channel        string   `yaml:"channel"`
	APIURL         string   `yaml:"api_url"`
}

// Models lists the upstreams behind the model gateway.
type Models struct {
	Anthropic Model `yaml:"anthropic"`
	OpenAI    Model `yaml:"openai"`
}

// Model is one model upstream.
type Model struct {
	BaseURL string `yaml:"base_url"`
	APIKey  Secret `yaml:"api_key"`
	// AllowServerTools lets agents use the provider's server-side tools
	// (web search and fetch, code execution, MCP connector, files) and any
	// anthropic-beta flag, which make the provider reach the network for
	// them. Default false: the gateway refuses such requests.
	AllowServerTools bool `yaml:"allow_server_tools"`
}

// Identity configures per-agent identities.
type Identity struct {
	// Provider is local (default) or ravi.
	Provider string `yaml:"provider"`
	// Domain for local addresses. Default agents.localhost.
	Domain string `yaml:"domain"`
	// SMTPListen is where the local provider receives mail. Default 127.0.0.1:2525.
	SMTPListen string   `yaml:"smtp_listen"`
	PhonePool  []string `yaml:"phone_pool"`
	// TwilioAuthToken verifies inbound SMS webhooks.
	TwilioAuthToken Secret `yaml:"twilio_auth_token"`
	Ravi            Ravi   `yaml:"ravi"`
}

// Ravi configures the Ravi identity provider.
type Ravi struct {
	APIURL string `yaml:"api_url"`
	Key    Secret `yaml:"key"`
}

// Sandbox configures where agents run.
type Sandbox struct {
	// Driver is bwrap (default) or process (no isolation, explicit opt-in).
	Driver string `yaml:"driver"`
	// Bwrap is the bubblewrap executable. Default: bwrap on PATH.
	Bwrap string `yaml:"bwrap"`
	// Timeout is the default wall-clock limit of one agent run. Default 30m.
	Timeout Duration `yaml:"timeout"`
	// MemoryBytes limits the sandbox's memory; 0 means the driver default.
	MemoryBytes int64 `yaml:"memory_bytes"`
	// Processes limits the number of processes; 0 means the driver default.
	Processes int `yaml:"processes"`
	// UID and GID are the first host uid and gid bwrap sandboxes run as
	// when nightshift runs as root (never 0); UIDs is how many consecutive
	// ids it hands out, one per concurrently running sandbox. 0 means the
	// driver default: 1900000000, 1900000000 and 64. Not root, sandboxes
	// run as nightshift's own uid.
	UID  int `yaml:"uid"`
	GID  int `yaml:"gid"`
	UIDs int `yaml:"uids"`
}

// Worker configures task execution.
type Worker struct {
	// Concurrency is how many tasks this process runs at once. Default 2.
	Concurrency int `yaml:"concurrency"`
	// Retention keeps finished task worktrees this long. Default 24h.
	Retention Duration `yaml:"retention"`
	// AnswerTimeout is how long a task whose agent asked a question
	// (needs_input) waits for an answer before it is cancelled with reason
	// no_answer. Default 72h.
	AnswerTimeout Duration `yaml:"answer_timeout"`
	// DrainTimeout is how long a stopping worker lets its running tasks
	// finish before handing them back for redelivery. Default 30s.
	DrainTimeout Duration `yaml:"drain_timeout"`
}

// Vault configures the secret store.
type Vault struct {
	// KeyFile holds the root key. Default <data_dir>/vault.key (empty here).
	KeyFile string `yaml:"key_file"`
}

// Agent describes how to run one agent.
type Agent struct {
	// Kind is claude, codex or command. Default: the agent's name when it is
	// claude or codex, else command.
	Kind string `yaml:"kind"`
	// Command is the argv (for command agents) or the binary to run.
	Command []string `yaml:"command"`
	Model   string   `yaml:"model"`
	// Env is extra environment for the agent. ${vault:NAME} and
	// ${ravi:NAME} in a value resolve for each task from the secrets
	// granted to it, never from the server scope (see AgentEnv).
	Env map[string]string `yaml:"env"`
}

// Repo configures the repositories a glob matches.
type Repo struct {
	// Match is a glob over host/owner/name, or an absolute local path or
	// path glob ("/srv/repos/*", "/srv/repos/**" for everything beneath).
	// "*" applies the entry's settings to every repository, but only an
	// absolute path or path glob lets the API dispatch a local repository
	// (see NamesLocalRepo).
	Match string `yaml:"match"`
	// Setup runs before the agent.
	Setup string `yaml:"setup"`
	// Test runs after the agent; a non-zero exit fails the task.
	Test  string `yaml:"test"`
	Agent string `yaml:"agent"`
	// AllowHosts is the egress allowlist for the sandbox.
	AllowHosts []string `yaml:"allow_hosts"`
	// Timeout of one agent run. Default: sandbox.timeout.
	Timeout Duration `yaml:"timeout"`
	Budget  Budget   `yaml:"budget"`
	// Protected are path globs the agent may not change. Default .github/workflows/**.
	Protected []string `yaml:"protected"`
	// AllowProtected lets the agent change protected paths.
	AllowProtected bool `yaml:"allow_protected"`
	// Allow and Deny list GitHub logins allowed or refused as triggers.
	Allow []string `yaml:"allow"`
	Deny  []string `yaml:"deny"`
	// Draft opens pull requests as drafts. Default true.
	Draft *bool `yaml:"draft"`
}

// Budget limits what one task may spend on the model.
type Budget struct {
	Tokens  int64   `yaml:"tokens"`
	CostUSD float64 `yaml:"cost_usd"`
}

// Duration is a time.Duration written as "30m" in YAML.
type Duration time.Duration

// UnmarshalYAML parses a Go duration string.
func (d *Duration) UnmarshalYAML(n *yaml.Node) error {
	v, err := time.ParseDuration(n.Value)
	if err != nil {
		return fmt.Errorf("line %d: bad duration %q", n.Line, n.Value)
	}
	if v < 0 {
		return fmt.Errorf("line %d: negative duration %q", n.Line, n.Value)
	}
	*d = Duration(v)
	return nil
}

// MarshalYAML writes the duration as a string.
func (d Duration) MarshalYAML() (any, error) { return time.Duration(d).String(), nil }

// Std returns the duration as a time.Duration.
func (d Duration) Std() time.Duration { return time.Duration(d) }

// Error names the key that is wrong.
type Error struct {
	Key string
	Msg string
}

func (e *Error) Error() string { return "config: " + e.Key + ": " + e.Msg }

// ErrNotFound is returned by Load when an explicitly named file is missing.
var ErrNotFound = errors.New("config: file not found")

// Load reads the YAML file at path (may be empty: no file), applies the
// environment overrides in env (NIGHTSHIFT_<SECTION>_<KEY>), applies defaults
// and validates. It never resolves secret references.
func Load(path string, env map[string]string) (*Config, error) {
	var c Config
	if path != "" {
		b, err := os.ReadFile(path)
		if err != nil {
			if errors.Is(err, os.ErrNotExist) {
				return nil, fmt.Errorf("%w: %s", ErrNotFound, path)
			}
			return nil, fmt.Errorf("config: read %s: %w", path, err)
		}
		if err := Parse(b, &c); err != nil {
			return nil, err
		}
	}
	if err := applyEnv(&c, env); err != nil {
		return nil, err
	}
	c.withDefaults()
	if err := c.validate(); err != nil {
		return nil, err
	}
	return &c, nil
}

// Parse decodes YAML into c, rejecting unknown keys by their dotted name.
func Parse(b []byte, c *Config) error {
	var root yaml.Node
	if err := yaml.Unmarshal(b, &root); err != nil {
		return &Error{Key: "(file)", Msg: cleanYAMLErr(err)}
	}
	if len(root.Content) == 0 {
		return nil
	}
	if err := checkKeys(root.Content[0], typeOfConfig, ""); err != nil {
		return err
	}
	dec := yaml.NewDecoder(bytes.NewReader(b))
	dec.KnownFields(true)
	if err := dec.Decode(c); err != nil && !errors.Is(err, io.EOF) {
		return &Error{Key: keyFromYAMLErr(&root, err), Msg: cleanYAMLErr(err)}
	}
	return nil
}

func (c *Config) withDefaults() {
	def := func(s *string, v string) {
		if *s == "" {
			*s = v
		}
	}
	c.mergeForges()
	def(&c.Listen, "127.0.0.1:8080")
	def(&c.DataDir, "./.nightshift")
	def(&c.PublicURL, "http://"+c.Listen)
	def(&c.GitHub.APIURL, "https://api.github.com/")
	def(&c.GitHub.Trigger, "@nightshift")
	def(&c.GitHub.Label, "nightshift")
	def(&c.Linear.Label, "nightshift")
	def(&c.Models.Anthropic.BaseURL, "https://api.anthropic.com")
	def(&c.Models.OpenAI.BaseURL, "https://api.openai.com/v1")
	def(&c.Identity.Provider, "local")
	def(&c.Identity.Domain, "agents.localhost")
	def(&c.Identity.SMTPListen, "127.0.0.1:2525")
	def(&c.Sandbox.Driver, "bwrap")
	def(&c.DefaultAgent, "claude")
	if c.GitHub.AttemptCap == 0 {
		c.GitHub.AttemptCap = 3
	}
	if c.Sandbox.Timeout == 0 {
		c.Sandbox.Timeout = Duration(30 * time.Minute)
	}
	if c.Worker.Concurrency == 0 {
		c.Worker.Concurrency = 2
	}
	if c.Worker.Retention == 0 {
		c.Worker.Retention = Duration(24 * time.Hour)
	}
	if c.API.MaxQueued == 0 {
		c.API.MaxQueued = 1000
	}
	if c.NATS.Replicas == 0 {
		c.NATS.Replicas = 1
	}
	for i := range c.Repos {
		if len(c.Repos[i].Protected) == 0 {
			c.Repos[i].Protected = []string{".github/workflows/**"}
		}
	}
}

func (c *Config) validate() error {
	switch c.Sandbox.Driver {
	case "bwrap", "process":
	default:
		return &Error{Key: "sandbox.driver", Msg: fmt.Sprintf("unknown driver %q (want bwrap or process)", c.Sandbox.Driver)}
	}
	for key, v := range map[string]int{"sandbox.uid": c.Sandbox.UID, "sandbox.gid": c.Sandbox.GID, "sandbox.uids": c.Sandbox.UIDs} {
		if v < 0 || v > 0x7FFFFFFE {
			return &Error{Key: key, Msg: fmt.Sprintf("%d out of range (0 means the default; root is never used)", v)}
		}
	}
	switch c.Identity.Provider {
	case "local", "ravi":
	default:
		return &Error{Key: "identity.provider", Msg: fmt.Sprintf("unknown provider %q (want local or ravi)", c.Identity.Provider)}
	}
	if c.Worker.Concurrency < 0 {
		return &Error{Key: "worker.concurrency", Msg: "must not be negative"}
	}
	if c.Worker.DrainTimeout < 0 {
		return &Error{Key: "worker.drain_timeout", Msg: "must not be negative"}
	}
	if c.NATS.Replicas < 1 || c.NATS.Replicas > 5 {
		return &Error{Key: "nats.replicas", Msg: fmt.Sprintf("%d out of range (1 to 5; JetStream replicates a stream on at most 5 servers)", c.NATS.Replicas)}
	}
	if c.GitHub.AttemptCap < 0 {
		return &Error{Key: "github.attempt_cap", Msg: "must not be negative"}
	}
	for name, a := range c.Agents {
		key := "agents." + name
		switch a.Kind {
		case "", "claude", "codex", "command":
		default:
			return &Error{Key: key + ".kind", Msg: fmt.Sprintf("unknown kind %q (want claude, codex or command)", a.Kind)}
		}
		if a.kind(name) == "command" && len(a.Command) == 0 {
			return &Error{Key: key + ".command", Msg: "a command agent needs a command"}
		}
		for k, v := range a.Env {
			if err := checkEnvRefs(v); err != nil {
				return &Error{Key: key + ".env." + k, Msg: err.Error()}
			}
		}
	}
	for i, r := range c.Repos {
		key := fmt.Sprintf("repos[%d]", i)
		if r.Match == "" {
			return &Error{Key: key + ".match", Msg: "required"}
		}
		if _, err := path.Match(r.Match, "x"); err != nil {
			return &Error{Key: key + ".match", Msg: fmt.Sprintf("bad glob %q", r.Match)}
		}
		if r.Agent != "" && !c.knownAgent(r.Agent) {
			return &Error{Key: key + ".agent", Msg: fmt.Sprintf("unknown agent %q", r.Agent)}
		}
		if r.Budget.Tokens < 0 || r.Budget.CostUSD < 0 {
			return &Error{Key: key + ".budget", Msg: "must not be negative"}
		}
	}
	if err := c.validateForges(); err != nil {
		return err
	}
	if err := c.validateAutomations(); err != nil {
		return err
	}
	if !c.knownAgent(c.DefaultAgent) {
		return &Error{Key: "default_agent", Msg: fmt.Sprintf("unknown agent %q", c.DefaultAgent)}
	}
	for _, s := range c.allSecrets() {
		if err := s.v.check(); err != nil {
			return &Error{Key: s.key, Msg: err.Error()}
		}
	}
	return nil
}

// knownAgent reports whether name is configured or built in.
func (c *Config) knownAgent(name string) bool {
	if _, ok := c.Agents[name]; ok {
		return true
	}
	return name == "claude" || name == "codex"
}

// AgentFor returns the agent configuration for name; built-in kinds need no entry.
func (c *Config) AgentFor(name string) (Agent, bool) {
	a, ok := c.Agents[name]
	if !ok && name != "claude" && name != "codex" {
		return Agent{}, false
	}
	a.Kind = a.kind(name)
	if len(a.Command) == 0 {
		a.Command = []string{a.Kind}
	}
	return a, true
}

func (a Agent) kind(name string) string {
	if a.Kind != "" {
		return a.Kind
	}
	if name == "claude" || name == "codex" {
		return name
	}
	return "command"
}

// RepoFor returns the first repo entry whose match fits repo (a URL or path),
// or a zero Repo with defaults when none does.
func (c *Config) RepoFor(repo string) Repo {
	for _, r := range c.Repos {
		if MatchRepo(r.Match, repo) {
			return r
		}
	}
	return Repo{Protected: []string{".github/workflows/**"}}
}

// MatchRepo reports whether the repos[].match pattern match fits repo (a
// URL or path): "*", the repository as given or as host/owner/name, a
// glob over either, or a local path glob. The vault grants repo:<match>
// secrets by the same rule.
func MatchRepo(match, repo string) bool {
	key := RepoKey(repo)
	if match == "*" || match == repo || match == key {
		return true
	}
	if ok, _ := path.Match(match, key); ok {
		return true
	}
	if ok, _ := path.Match(match, repo); ok {
		return true
	}
	if p, ok := LocalRepoPath(repo); ok && matchesLocalPath(match, p) {
		return true
	}
	return false
}

// RepoKey turns a repository URL (https, ssh, scp-like git@host:owner/name)
// into host/owner/name without credentials or .git; local paths and file://
// URLs are returned as cleaned absolute paths without .git.
func RepoKey(repo string) string {
	s := strings.TrimSpace(repo)
	if strings.HasPrefix(s, "/") || strings.HasPrefix(s, "file://") {
		s = strings.TrimSuffix(strings.TrimSuffix(strings.TrimPrefix(s, "file://"), "/"), ".git")
		return path.Clean("/" + s)
	}
	if i := strings.Index(s, "://"); i >= 0 {
		s = s[i+3:]
		if at := strings.IndexByte(s, '@'); at >= 0 && at < strings.IndexByte(s+"/", '/') {
			s = s[at+1:] // user or token in the authority
		}
	} else if at := strings.IndexByte(s, '@'); at >= 0 && strings.Contains(s, ":") {
		s = strings.Replace(s[at+1:], ":", "/", 1) // git@host:owner/name
	}
	return strings.TrimSuffix(strings.TrimSuffix(s, "/"), ".git")
}
