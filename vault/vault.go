package vault

import (
	"context"
	"crypto/rand"
	"database/sql"
	"embed"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"path"
	"regexp"
	"sort"
	"strings"
	"sync"
	"time"
)

// Errors returned by the vault. Integrity failures are *IntegrityError,
// which matches ErrIntegrity with errors.Is.
var (
	ErrNotFound     = errors.New("vault: secret not found")
	ErrWrongKey     = errors.New("vault: root key does not open this vault")
	ErrIntegrity    = errors.New("vault: integrity check failed")
	ErrInvalidName  = errors.New("vault: invalid secret name")
	ErrInvalidScope = errors.New("vault: invalid scope")
	ErrInvalidActor = errors.New("vault: invalid actor")
	ErrUnknownKind  = errors.New("vault: unknown reference kind")
)

// IntegrityError reports a sealed blob that failed authentication: changed
// bytes, a blob moved from another record, or a key that is not the one it
// was sealed with.
type IntegrityError struct {
	Name    string // secret name, "" for keys
	Scope   string
	Version int
	Part    string // "value", "data key", "kek", "audit key"
	KEKID   int64
}

func (e *IntegrityError) Error() string {
	switch e.Part {
	case "kek":
		return fmt.Sprintf("vault: integrity check failed: key-encryption key %d does not open under the root key", e.KEKID)
	case "audit key":
		return "vault: integrity check failed: audit key does not open under the root key"
	}
	return fmt.Sprintf("vault: integrity check failed: %s of %s (scope %s, version %d) was altered or moved", e.Part, e.Name, e.Scope, e.Version)
}

// Unwrap makes errors.Is(err, ErrIntegrity) true.
func (e *IntegrityError) Unwrap() error { return ErrIntegrity }

// Actor kinds.
const (
	ActorOperator = "operator"
	ActorTask     = "task"
	ActorIdentity = "identity"
	ActorSystem   = "system"
)

// Actor is who reads or writes, as recorded in the audit log.
type Actor struct {
	Kind string // operator, task, identity or system
	ID   string // e.g. the task ID, the operator's user name, "config"
}

// String returns "kind:id".
func (a Actor) String() string { return a.Kind + ":" + a.ID }

func (a Actor) validate() error {
	switch a.Kind {
	case ActorOperator, ActorTask, ActorIdentity, ActorSystem:
	default:
		return fmt.Errorf("%w: kind %q (want operator, task, identity or system)", ErrInvalidActor, a.Kind)
	}
	if a.ID == "" || len(a.ID) > 256 || hasControl(a.ID) {
		return fmt.Errorf("%w: id %q", ErrInvalidActor, a.ID)
	}
	return nil
}

// Config tunes a Vault. The zero value is usable.
type Config struct {
	// Clock returns the current time. Nil means time.Now.
	Clock func() time.Time
	// Logger receives operational messages, never values. Nil discards.
	Logger *slog.Logger
	// Rand is the source of keys and nonces. Nil means crypto/rand.
	Rand io.Reader
	// Timeout bounds each call whose ctx has no deadline. Zero means 30s.
	Timeout time.Duration
	// MatchRepo reports whether a repo:<pattern> scope grants a task on
	// repo; the server passes the rule repos[].match follows, so the two
	// agree. Nil means MatchRepo.
	MatchRepo func(pattern, repo string) bool
}

func (c Config) withDefaults() Config {
	if c.Clock == nil {
		c.Clock = time.Now
	}
	if c.Logger == nil {
		c.Logger = slog.New(slog.DiscardHandler)
	}
	if c.Rand == nil {
		c.Rand = rand.Reader
	}
	if c.Timeout == 0 {
		c.Timeout = 30 * time.Second
	}
	if c.MatchRepo == nil {
		c.MatchRepo = MatchRepo
	}
	return c
}

func (c Config) validate() error {
	if c.Timeout < 0 {
		return fmt.Errorf("vault: config: Timeout must not be negative")
	}
	return nil
}

// Vault stores secrets encrypted in a Store: SQLite for one process, a
// replicated JetStream bucket on a cluster. It is safe for concurrent use,
// and several processes (the CLI beside a running server, every role on
// every host) may open the same store: every change is a revision-checked
// update of one record. A root key rotation needs the others restarted.
type Vault struct {
	store  Store
	keys   KeySource
	cfg    Config
	logger *slog.Logger

	mu       sync.Mutex
	root     []byte
	auditKey []byte
	keks     map[int64][]byte
}

//go:embed migrations/*.sql
var migrationFS embed.FS

// Open migrates the vault tables in db and opens the vault they hold (see
// OpenStore): the vault of one process.
func Open(ctx context.Context, db *sql.DB, keys KeySource, cfg Config) (*Vault, error) {
	if db == nil {
		return nil, errors.New("vault: nil db")
	}
	ctx, cancel := withTimeout(ctx, cfg)
	defer cancel()
	st, err := NewSQLiteStore(ctx, db)
	if err != nil {
		return nil, err
	}
	return OpenStore(ctx, st, keys, cfg)
}

// OpenStore obtains the root key from keys and checks it against the vault
// in st. A new vault gets its first KEK and audit key (of two processes
// creating it at once, one wins and the other opens what it created). A
// root key that does not match fails with ErrWrongKey.
func OpenStore(ctx context.Context, st Store, keys KeySource, cfg Config) (*Vault, error) {
	if st == nil {
		return nil, errors.New("vault: nil store")
	}
	if keys == nil {
		return nil, errors.New("vault: nil key source")
	}
	if err := cfg.validate(); err != nil {
		return nil, err
	}
	cfg = cfg.withDefaults()
	v := &Vault{store: st, keys: keys, cfg: cfg, logger: cfg.Logger.With("component", "vault"), keks: map[int64][]byte{}}
	ctx, cancel := v.timeout(ctx)
	defer cancel()
	root, err := keys.RootKey(ctx)
	if err != nil {
		return nil, err
	}
	if len(root) != KeySize {
		return nil, fmt.Errorf("%w: root key is %d bytes, want %d", ErrKeySource, len(root), KeySize)
	}
	created := false
	err = st.UpdateKeyring(ctx, func(kr *Keyring, ok bool) error {
		if ok {
			return ErrUnchanged
		}
		fresh, err := v.initialise(root)
		if err != nil {
			return err
		}
		*kr = fresh
		created = true
		return nil
	})
	if err != nil {
		return nil, err
	}
	kr, ok, err := st.Keyring(ctx)
	if err != nil {
		return nil, err
	}
	if !ok {
		return nil, fmt.Errorf("%w: the vault has no keyring", ErrIntegrity)
	}
	if _, err := unseal(root, kr.RootCheck, adRootCheck()); err != nil {
		return nil, ErrWrongKey
	}
	ak, err := unseal(root, kr.AuditKey, adAuditKey())
	if err != nil {
		return nil, &IntegrityError{Part: "audit key"}
	}
	v.auditKey = ak
	v.root = root
	if created {
		v.logger.Info("vault initialised")
	}
	return v, nil
}

// initialise returns the keyring of a new vault: the root check, the audit
// key and KEK 1.
func (v *Vault) initialise(root []byte) (Keyring, error) {
	check, err := seal(v.cfg.Rand, root, rootCheckPlain, adRootCheck())
	if err != nil {
		return Keyring{}, err
	}
	ak := make([]byte, KeySize)
	if _, err := io.ReadFull(v.cfg.Rand, ak); err != nil {
		return Keyring{}, err
	}
	wak, err := seal(v.cfg.Rand, root, ak, adAuditKey())
	if err != nil {
		return Keyring{}, err
	}
	w, _, err := v.newKEK(root, 1)
	if err != nil {
		return Keyring{}, err
	}
	return Keyring{RootCheck: check, AuditKey: wak, KEKs: []WrappedKEK{w}}, nil
}

// newKEK makes KEK id, sealed under root.
func (v *Vault) newKEK(root []byte, id int64) (WrappedKEK, []byte, error) {
	kek := make([]byte, KeySize)
	if _, err := io.ReadFull(v.cfg.Rand, kek); err != nil {
		return WrappedKEK{}, nil, err
	}
	w, err := seal(v.cfg.Rand, root, kek, adKEK(id))
	if err != nil {
		return WrappedKEK{}, nil, err
	}
	return WrappedKEK{ID: id, Wrapped: w, CreatedAt: v.now()}, kek, nil
}

func withTimeout(ctx context.Context, cfg Config) (context.Context, context.CancelFunc) {
	if _, ok := ctx.Deadline(); ok {
		return ctx, func() {}
	}
	if cfg.Timeout <= 0 {
		cfg.Timeout = 30 * time.Second
	}
	return context.WithTimeout(ctx, cfg.Timeout)
}

func (v *Vault) timeout(ctx context.Context) (context.Context, context.CancelFunc) {
	return withTimeout(ctx, v.cfg)
}

func (v *Vault) now() string { return v.cfg.Clock().UTC().Format(time.RFC3339Nano) }

var nameRE = regexp.MustCompile(`^[A-Z][A-Z0-9_]*$`)

// ValidateName reports whether name is a valid secret name (Ravi's rule,
// ^[A-Z][A-Z0-9_]*$, at most 128 characters).
func ValidateName(name string) error {
	if len(name) > 128 || !nameRE.MatchString(name) {
		return fmt.Errorf("%w: %q (want upper case letters, digits and _, starting with a letter)", ErrInvalidName, name)
	}
	return nil
}

// Scope kinds. ScopeServer holds what only the server reads (the values
// behind ${vault:NAME} in its configuration: model API keys, forge tokens,
// webhook secrets); it is never served to an agent. The others are grants
// to agents: ScopeAgents to every agent, ScopeRepo to tasks on matching
// repositories, ScopeAgent to one configured agent, ScopeTask to one task.
const (
	ScopeServer = "server"
	ScopeAgents = "agents"
	ScopeRepo   = "repo:"
	ScopeAgent  = "agent:"
	ScopeTask   = "task:"
	// ScopeGlobal is what ScopeServer was called before agents had scopes
	// of their own. It is accepted as an alias of ScopeServer, and secrets
	// stored under it are server secrets.
	ScopeGlobal = "global"
)

// ValidateScope reports whether scope is "server" (or its old name
// "global"), "agents", "repo:<name-or-glob>" (path.Match syntax, the globs
// of repos[].match), "agent:<name>" or "task:<id>".
func ValidateScope(scope string) error {
	bad := func(why string) error { return fmt.Errorf("%w: %q: %s", ErrInvalidScope, scope, why) }
	switch scope {
	case ScopeServer, ScopeGlobal, ScopeAgents:
		return nil
	}
	kind, rest, ok := strings.Cut(scope, ":")
	if !ok {
		return bad("want server, agents, repo:<glob>, agent:<name> or task:<id>")
	}
	if rest == "" || len(rest) > 256 || hasControl(rest) || strings.ContainsAny(rest, " \t") {
		return bad("empty, too long or containing spaces")
	}
	switch kind + ":" {
	case ScopeRepo:
		if _, err := path.Match(rest, ""); err != nil {
			return bad("malformed glob")
		}
	case ScopeAgent, ScopeTask:
	default:
		return bad("unknown kind " + kind)
	}
	return nil
}

// CanonicalScope returns scope with the alias "global" replaced by
// "server"; other scopes are returned unchanged.
func CanonicalScope(scope string) string {
	if scope == ScopeGlobal {
		return ScopeServer
	}
	return scope
}

// storedScopes returns the scope column values a canonical scope is stored
// under: secrets set before "server" existed are stored as "global", and
// their seals name "global", so the rows keep that value and are read as
// server secrets.
func storedScopes(scope string) []string {
	if isServerScope(scope) {
		return []string{ScopeServer, ScopeGlobal}
	}
	return []string{scope}
}

// inScope reports whether a version stored under stored belongs to the
// canonical scope.
func inScope(stored, scope string) bool {
	for _, s := range storedScopes(scope) {
		if s == stored {
			return true
		}
	}
	return false
}

// isServerScope reports whether scope names the server's own secrets.
func isServerScope(scope string) bool { return scope == ScopeServer || scope == ScopeGlobal }

func hasControl(s string) bool {
	for _, r := range s {
		if r < 0x20 || r == 0x7f {
			return true
		}
	}
	return false
}

// ScopesFor returns the scopes a task may read, most specific first:
// task:<id>, agent:<name>, repo:<repo> for each form of the task's
// repository given (e.g. its URL and its host/owner/name), then agents.
// Empty parts are skipped. It never includes the server scope. Lookup also
// matches stored repo globs against every repo:<repo> entry.
func ScopesFor(taskID, agent string, repos ...string) []string {
	var s []string
	if taskID != "" {
		s = append(s, ScopeTask+taskID)
	}
	if agent != "" {
		s = append(s, ScopeAgent+agent)
	}
	seen := map[string]bool{}
	for _, r := range repos {
		if r != "" && !seen[r] {
			seen[r] = true
			s = append(s, ScopeRepo+r)
		}
	}
	return append(s, ScopeAgents)
}

// checkGrants validates scopes for an agent-facing read: the server scope
// is refused, so no caller can hand a server secret to a task by mistake.
func checkGrants(scopes []string) error {
	for _, s := range scopes {
		if err := ValidateScope(s); err != nil {
			return err
		}
		if isServerScope(s) {
			return fmt.Errorf("%w: %q: server secrets are read only by the server, never on behalf of a task", ErrInvalidScope, s)
		}
	}
	return nil
}

// MaxValueSize is the largest value Set accepts.
const MaxValueSize = 1 << 20

// Set stores value as a new version of name in scope and returns the
// version number (1 for a new secret). Version numbers are never reused.
// The scope "global" is stored as "server".
func (v *Vault) Set(ctx context.Context, actor Actor, name, scope string, value []byte) (version int, err error) {
	if err := actor.validate(); err != nil {
		return 0, err
	}
	if err := ValidateName(name); err != nil {
		return 0, err
	}
	if err := ValidateScope(scope); err != nil {
		return 0, err
	}
	if len(value) > MaxValueSize {
		return 0, fmt.Errorf("vault: value of %s is %d bytes, more than %d", name, len(value), MaxValueSize)
	}
	return v.set(ctx, actor, name, CanonicalScope(scope), value)
}

// set stores a version under the scope column value stored, which is also
// the scope its seals name.
func (v *Vault) set(ctx context.Context, actor Actor, name, stored string, value []byte) (version int, err error) {
	ctx, cancel := v.timeout(ctx)
	defer cancel()
	kr, ok, err := v.store.Keyring(ctx)
	if err != nil {
		return 0, err
	}
	cur, has := kr.Current()
	if !ok || !has {
		return 0, fmt.Errorf("vault: no key-encryption key")
	}
	kek, err := v.unwrapKEK(kr, cur.ID)
	if err != nil {
		return 0, err
	}
	dek := make([]byte, KeySize)
	if _, err := io.ReadFull(v.cfg.Rand, dek); err != nil {
		return 0, err
	}
	defer clear(dek)
	err = v.store.UpdateSecret(ctx, name, func(rec *SecretRecord) error {
		version = 1
		for _, sv := range rec.Versions {
			if inScope(sv.Scope, stored) && sv.Version >= version {
				version = sv.Version + 1
			}
		}
		ct, err := seal(v.cfg.Rand, dek, value, adValue(name, stored, version))
		if err != nil {
			return err
		}
		wdek, err := seal(v.cfg.Rand, kek, dek, adDEK(name, stored, version, cur.ID))
		if err != nil {
			return err
		}
		rec.Versions = append(rec.Versions, SealedVersion{Scope: stored, Version: version, KEKID: cur.ID, WrappedDEK: wdek, Ciphertext: ct,
			CreatedAt: v.now(), CreatedBy: actor.String()})
		return nil
	})
	if err != nil {
		return 0, fmt.Errorf("vault: store %s: %w", name, err)
	}
	if err := v.appendAudit(ctx, auditRecord{actor: actor, action: "set", name: name, scope: stored, version: version, outcome: "ok"}); err != nil {
		return 0, err
	}
	// A key rotation on another host may have re-wrapped every data key
	// between our keyring read and our write, missing ours: wrap it under
	// the current KEK ourselves (we still hold the data key).
	if kr2, _, err := v.store.Keyring(ctx); err == nil {
		if cur2, ok := kr2.Current(); ok && cur2.ID != cur.ID {
			if err := v.rewrapOwn(ctx, kr2, name, stored, version, dek); err != nil {
				return 0, err
			}
		}
	}
	return version, nil
}

// rewrapOwn wraps the data key of one version just written under kr's
// current KEK, unless a rotation already did.
func (v *Vault) rewrapOwn(ctx context.Context, kr Keyring, name, stored string, version int, dek []byte) error {
	cur, _ := kr.Current()
	kek, err := v.unwrapKEK(kr, cur.ID)
	if err != nil {
		return err
	}
	return v.store.UpdateSecret(ctx, name, func(rec *SecretRecord) error {
		for i, sv := range rec.Versions {
			if sv.Scope == stored && sv.Version == version && sv.Live() && sv.KEKID != cur.ID {
				w, err := seal(v.cfg.Rand, kek, dek, adDEK(name, stored, version, cur.ID))
				if err != nil {
					return err
				}
				rec.Versions[i].KEKID, rec.Versions[i].WrappedDEK = cur.ID, w
				return nil
			}
		}
		return ErrUnchanged
	})
}

// Get returns the latest live version of name in exactly scope (no
// fallback to other scopes; "global" means "server"). It is the read for
// the server's own secrets and for operators; tasks read through Lookup.
func (v *Vault) Get(ctx context.Context, actor Actor, name, scope string) ([]byte, error) {
	return v.GetVersion(ctx, actor, name, scope, 0)
}

// GetVersion returns version of name in scope; version 0 means the latest
// live one. A destroyed or missing version is ErrNotFound.
func (v *Vault) GetVersion(ctx context.Context, actor Actor, name, scope string, version int) ([]byte, error) {
	s, err := v.Read(ctx, actor, name, scope, version)
	return s.Value, err
}

// Secret is one decrypted version. It logs as REDACTED.
type Secret struct {
	Name    string
	Scope   string
	Version int
	Value   []byte
}

// LogValue keeps the value out of logs.
func (s Secret) LogValue() slog.Value {
	return slog.GroupValue(slog.String("name", s.Name), slog.String("scope", s.Scope), slog.Int("version", s.Version), slog.String("value", "REDACTED"))
}

// Read is GetVersion that also reports which version it returned.
func (v *Vault) Read(ctx context.Context, actor Actor, name, scope string, version int) (Secret, error) {
	if err := actor.validate(); err != nil {
		return Secret{}, err
	}
	if err := ValidateName(name); err != nil {
		return Secret{}, err
	}
	if err := ValidateScope(scope); err != nil {
		return Secret{}, err
	}
	if version < 0 {
		return Secret{}, fmt.Errorf("vault: negative version %d", version)
	}
	scope = CanonicalScope(scope)
	ctx, cancel := v.timeout(ctx)
	defer cancel()
	out := Secret{Name: name, Scope: scope}
	rec := auditRecord{actor: actor, action: "get", name: name, scope: scope, version: version}
	var opErr error
	out.Value, rec.version, opErr = v.read(ctx, name, scope, version)
	out.Version = rec.version
	rec.outcome = outcomeOf(opErr)
	if rec.outcome == "error" {
		return Secret{}, opErr
	}
	// The read is recorded before the value is handed out.
	if err := v.appendAudit(ctx, rec); err != nil {
		return Secret{}, err
	}
	if opErr != nil {
		return Secret{}, opErr
	}
	return out, nil
}

// LookupAll returns every secret visible through scopes (see Lookup), each
// from its most specific scope, keyed by name: what a task with those
// scopes may read, e.g. to inject it or to build its Redactor. Each value
// read is audited. Like Lookup it refuses the server scope.
func (v *Vault) LookupAll(ctx context.Context, actor Actor, scopes []string) (map[string]Secret, error) {
	if err := checkGrants(scopes); err != nil {
		return nil, err
	}
	return v.lookupAll(ctx, actor, scopes, "lookup all")
}

// ServerSecrets returns every live server secret, keyed by name. It exists
// so that a task's Redactor can cover the server's values too (a token
// that surfaces in a git error, say); never hand its result to a task.
// Each value read is audited.
func (v *Vault) ServerSecrets(ctx context.Context, actor Actor) (map[string]Secret, error) {
	return v.lookupAll(ctx, actor, []string{ScopeServer}, "server secrets")
}

func (v *Vault) lookupAll(ctx context.Context, actor Actor, scopes []string, detail string) (map[string]Secret, error) {
	if err := actor.validate(); err != nil {
		return nil, err
	}
	ctx, cancel := v.timeout(ctx)
	defer cancel()
	out := map[string]Secret{}
	names, err := v.store.Names(ctx)
	if err != nil {
		return nil, err
	}
	for _, n := range names {
		sr, err := v.store.Secret(ctx, n)
		if err != nil {
			return nil, err
		}
		scope := pickScope(liveScopes(sr), scopes, v.cfg.MatchRepo)
		if scope == "" {
			continue
		}
		val, ver, err := v.readRecord(ctx, sr, n, scope, 0)
		rec := auditRecord{actor: actor, action: "lookup", name: n, scope: scope, version: ver, outcome: outcomeOf(err), detail: detail}
		if rec.outcome == "error" {
			return nil, err
		}
		if aerr := v.appendAudit(ctx, rec); aerr != nil {
			return nil, aerr
		}
		if err != nil {
			// An integrity failure: audited, then refused as a whole.
			return nil, err
		}
		out[n] = Secret{Name: n, Scope: scope, Version: ver, Value: val}
	}
	return out, nil
}

// Lookup returns the value of name from the first scope in scopes that has
// a live version, and that scope. The repo:<repo> entries are tried
// together: an exact repo:<repo> first, then stored repo globs matching any
// of them, the most specific (fewest wildcards, then longest; "*" last)
// first. Use ScopesFor to build the list for a task.
//
// Lookup is the read made on behalf of a task, so scopes must not include
// the server scope (ErrInvalidScope); a secret stored only there is
// ErrNotFound, exactly like a missing one.
func (v *Vault) Lookup(ctx context.Context, actor Actor, name string, scopes []string) ([]byte, string, error) {
	if err := actor.validate(); err != nil {
		return nil, "", err
	}
	if err := ValidateName(name); err != nil {
		return nil, "", err
	}
	if err := checkGrants(scopes); err != nil {
		return nil, "", err
	}
	ctx, cancel := v.timeout(ctx)
	defer cancel()
	sr, err := v.store.Secret(ctx, name)
	if err != nil {
		return nil, "", err
	}
	var value []byte
	var opErr error
	found := pickScope(liveScopes(sr), scopes, v.cfg.MatchRepo)
	rec := auditRecord{actor: actor, action: "lookup", name: name, scope: found, detail: "tried " + strings.Join(scopes, ",")}
	if found == "" {
		opErr = ErrNotFound
	} else {
		value, rec.version, opErr = v.readRecord(ctx, sr, name, found, 0)
	}
	rec.outcome = outcomeOf(opErr)
	if rec.outcome == "error" {
		return nil, "", opErr
	}
	if err := v.appendAudit(ctx, rec); err != nil {
		return nil, "", err
	}
	if opErr != nil {
		return nil, "", opErr
	}
	return value, found, nil
}

// liveScopes returns the canonical scopes in which rec has a live version.
func liveScopes(rec SecretRecord) map[string]bool {
	live := map[string]bool{}
	for _, sv := range rec.Versions {
		if sv.Live() {
			live[CanonicalScope(sv.Scope)] = true
		}
	}
	return live
}

// pickScope returns the first of wanted present in live. The repo:
// entries of wanted are tried together where the first one stands: exact
// names first, then live repo scopes that match reports matching any of
// them, most specific (fewest wildcards, then longest, "*" last) first.
func pickScope(live map[string]bool, wanted []string, match func(pattern, repo string) bool) string {
	var globs []string
	for s := range live {
		if strings.HasPrefix(s, ScopeRepo) {
			globs = append(globs, s)
		}
	}
	sort.Slice(globs, func(i, j int) bool {
		ai, aj := globs[i] == ScopeRepo+"*", globs[j] == ScopeRepo+"*"
		if ai != aj {
			return aj
		}
		wi, wj := wildcards(globs[i]), wildcards(globs[j])
		if wi != wj {
			return wi < wj
		}
		if len(globs[i]) != len(globs[j]) {
			return len(globs[i]) > len(globs[j])
		}
		return globs[i] < globs[j]
	})
	var repos []string
	for _, w := range wanted {
		if r, ok := strings.CutPrefix(w, ScopeRepo); ok {
			repos = append(repos, r)
		}
	}
	reposTried := false
	for _, w := range wanted {
		if !strings.HasPrefix(w, ScopeRepo) {
			if live[w] {
				return w
			}
			continue
		}
		if reposTried {
			continue
		}
		reposTried = true
		for _, r := range repos {
			if live[ScopeRepo+r] {
				return ScopeRepo + r
			}
		}
		for _, g := range globs {
			for _, r := range repos {
				if match(g[len(ScopeRepo):], r) {
					return g
				}
			}
		}
	}
	return ""
}

// MatchRepo reports whether the repo glob pattern (path.Match syntax;
// "*" alone matches every repository) matches repo as given. The server
// configures the vault with the fuller rule of repos[].match instead
// (Config.MatchRepo).
func MatchRepo(pattern, repo string) bool {
	if pattern == "*" || pattern == repo {
		return true
	}
	ok, _ := path.Match(pattern, repo)
	return ok
}

func wildcards(s string) int {
	return strings.Count(s, "*") + strings.Count(s, "?") + strings.Count(s, "[")
}

// read decrypts one version (0: latest live) of name in scope.
func (v *Vault) read(ctx context.Context, name, scope string, version int) ([]byte, int, error) {
	rec, err := v.store.Secret(ctx, name)
	if err != nil {
		return nil, version, err
	}
	return v.readRecord(ctx, rec, name, scope, version)
}

// readRecord decrypts one version of rec. When its KEK is gone (a
// rotation on another host re-wrapped it meanwhile) it reads the record
// again, once.
func (v *Vault) readRecord(ctx context.Context, rec SecretRecord, name, scope string, version int) ([]byte, int, error) {
	val, ver, err := v.openVersion(ctx, rec, name, scope, version)
	if errors.Is(err, errKEKGone) {
		if rec, err = v.store.Secret(ctx, name); err != nil {
			return nil, version, err
		}
		val, ver, err = v.openVersion(ctx, rec, name, scope, version)
	}
	var gone *kekGoneError
	if errors.As(err, &gone) {
		return nil, ver, gone.ie
	}
	return val, ver, err
}

var errKEKGone = errors.New("vault: key-encryption key gone")

type kekGoneError struct{ ie *IntegrityError }

func (e *kekGoneError) Error() string { return e.ie.Error() }
func (e *kekGoneError) Unwrap() error { return errKEKGone }

func (v *Vault) openVersion(ctx context.Context, rec SecretRecord, name, scope string, version int) ([]byte, int, error) {
	var sv SealedVersion
	found := false
	for _, x := range rec.Versions {
		if !x.Live() || !inScope(x.Scope, scope) {
			continue
		}
		if version > 0 && x.Version == version || version == 0 && (!found || x.Version > sv.Version) {
			sv, found = x, true
		}
	}
	if !found {
		return nil, version, fmt.Errorf("%w: %s in scope %s", ErrNotFound, name, scope)
	}
	ver := sv.Version
	ie := &IntegrityError{Name: name, Scope: scope, Version: ver, Part: "data key", KEKID: sv.KEKID}
	if sv.KEKID == 0 {
		return nil, ver, ie
	}
	kek, err := v.kek(ctx, sv.KEKID)
	if err != nil {
		if errors.Is(err, ErrNotFound) {
			return nil, ver, &kekGoneError{ie: ie}
		}
		return nil, ver, err
	}
	dek, err := unseal(kek, sv.WrappedDEK, adDEK(name, sv.Scope, ver, sv.KEKID))
	if err != nil {
		return nil, ver, ie
	}
	value, err := unseal(dek, sv.Ciphertext, adValue(name, sv.Scope, ver))
	clear(dek)
	if err != nil {
		ie.Part = "value"
		return nil, ver, ie
	}
	return value, ver, nil
}

// kek returns the unwrapped KEK id, from cache or the store.
func (v *Vault) kek(ctx context.Context, id int64) ([]byte, error) {
	v.mu.Lock()
	k, ok := v.keks[id]
	v.mu.Unlock()
	if ok {
		return k, nil
	}
	kr, _, err := v.store.Keyring(ctx)
	if err != nil {
		return nil, err
	}
	return v.unwrapKEK(kr, id)
}

// unwrapKEK returns KEK id of kr, unsealed (and cached).
func (v *Vault) unwrapKEK(kr Keyring, id int64) ([]byte, error) {
	v.mu.Lock()
	k, ok := v.keks[id]
	root := v.root
	v.mu.Unlock()
	if ok {
		return k, nil
	}
	if root == nil {
		return nil, errors.New("vault: not open")
	}
	w, ok := kr.find(id)
	if !ok {
		return nil, fmt.Errorf("%w: kek %d", ErrNotFound, id)
	}
	k, err := unseal(root, w, adKEK(id))
	if err != nil {
		return nil, &IntegrityError{Part: "kek", KEKID: id}
	}
	v.mu.Lock()
	v.keks[id] = k
	v.mu.Unlock()
	return k, nil
}

func outcomeOf(err error) string {
	var ie *IntegrityError
	switch {
	case err == nil:
		return "ok"
	case errors.Is(err, ErrNotFound):
		return "not_found"
	case errors.As(err, &ie):
		return "integrity_error"
	default:
		return "error"
	}
}

// Destroy erases version of name in scope (0: every version). The record
// stays, marked destroyed, so its number is never reused; the sealed bytes
// are overwritten. It returns how many versions it destroyed, and
// ErrNotFound when there was none.
func (v *Vault) Destroy(ctx context.Context, actor Actor, name, scope string, version int) (int, error) {
	return v.destroy(ctx, actor, name, scope, version, 0)
}

// destroy erases version (0: any) of name in scope, or with below > 0 every
// live version under below.
func (v *Vault) destroy(ctx context.Context, actor Actor, name, scope string, version, below int) (int, error) {
	if err := actor.validate(); err != nil {
		return 0, err
	}
	if err := ValidateName(name); err != nil {
		return 0, err
	}
	if err := ValidateScope(scope); err != nil {
		return 0, err
	}
	scope = CanonicalScope(scope)
	ctx, cancel := v.timeout(ctx)
	defer cancel()
	var n int
	at := v.now()
	err := v.store.UpdateSecret(ctx, name, func(rec *SecretRecord) error {
		n = 0
		for i, sv := range rec.Versions {
			if !sv.Live() || !inScope(sv.Scope, scope) || version > 0 && sv.Version != version || below > 0 && sv.Version >= below {
				continue
			}
			clear(rec.Versions[i].WrappedDEK)
			clear(rec.Versions[i].Ciphertext)
			rec.Versions[i].KEKID, rec.Versions[i].WrappedDEK, rec.Versions[i].Ciphertext, rec.Versions[i].DestroyedAt = 0, nil, nil, at
			n++
		}
		if n == 0 {
			return ErrUnchanged
		}
		return nil
	})
	if err != nil {
		return 0, err
	}
	rec := auditRecord{actor: actor, action: "destroy", name: name, scope: scope, version: version, outcome: "ok", detail: fmt.Sprintf("%d versions", n)}
	if below > 0 {
		rec.detail += fmt.Sprintf(" below %d", below)
	}
	if n == 0 {
		rec.outcome = "not_found"
	}
	if err := v.appendAudit(ctx, rec); err != nil {
		return 0, err
	}
	if n == 0 {
		return 0, fmt.Errorf("%w: %s in scope %s", ErrNotFound, name, scope)
	}
	return n, nil
}

// VersionInfo describes one stored version, without its value.
type VersionInfo struct {
	Version     int        `json:"version"`
	CreatedAt   time.Time  `json:"created_at"`
	CreatedBy   string     `json:"created_by"`
	DestroyedAt *time.Time `json:"destroyed_at,omitempty"`
}

// Info describes a secret in one scope, without its values.
type Info struct {
	Name     string        `json:"name"`
	Scope    string        `json:"scope"`
	Latest   int           `json:"latest"` // newest live version, 0 if all destroyed
	Versions []VersionInfo `json:"versions"`
}

// List returns every secret and its versions, sorted by name then scope
// (old "global" secrets are listed as "server").
// It is audited as a read of metadata.
func (v *Vault) List(ctx context.Context, actor Actor) ([]Info, error) {
	if err := actor.validate(); err != nil {
		return nil, err
	}
	ctx, cancel := v.timeout(ctx)
	defer cancel()
	var out []Info
	names, err := v.store.Names(ctx)
	if err != nil {
		return nil, err
	}
	for _, name := range names {
		rec, err := v.store.Secret(ctx, name)
		if err != nil {
			return nil, err
		}
		// Secrets stored as "global" before scopes were split are server secrets.
		byScope := map[string][]SealedVersion{}
		for _, sv := range rec.Versions {
			byScope[CanonicalScope(sv.Scope)] = append(byScope[CanonicalScope(sv.Scope)], sv)
		}
		scopes := make([]string, 0, len(byScope))
		for s := range byScope {
			scopes = append(scopes, s)
		}
		sort.Strings(scopes)
		for _, scope := range scopes {
			vs := byScope[scope]
			sort.Slice(vs, func(i, j int) bool { return vs[i].Version < vs[j].Version })
			in := Info{Name: name, Scope: scope}
			for _, sv := range vs {
				vi := VersionInfo{Version: sv.Version, CreatedBy: sv.CreatedBy}
				vi.CreatedAt, _ = time.Parse(time.RFC3339Nano, sv.CreatedAt)
				if sv.DestroyedAt != "" {
					t, _ := time.Parse(time.RFC3339Nano, sv.DestroyedAt)
					vi.DestroyedAt = &t
				} else {
					in.Latest = sv.Version
				}
				in.Versions = append(in.Versions, vi)
			}
			out = append(out, in)
		}
	}
	if err := v.appendAudit(ctx, auditRecord{actor: actor, action: "list", outcome: "ok", detail: fmt.Sprintf("%d secrets", len(out))}); err != nil {
		return nil, err
	}
	return out, nil
}

// LogValue keeps key material out of logs.
func (v *Vault) LogValue() slog.Value { return slog.StringValue("vault(REDACTED)") }

// ConfigActor is the actor recorded for configuration references.
var ConfigActor = Actor{Kind: ActorSystem, ID: "config"}

// Resolve returns the server value of name for a reference ${vault:NAME}
// or ${ravi:NAME} (kind "vault" or "ravi", the same vault) in the server's
// own configuration. It reads only the server scope, and satisfies the
// config package's resolver interface. References made for a task (an
// agent's env) go through TaskResolver instead.
func (v *Vault) Resolve(ctx context.Context, kind, name string) (string, error) {
	switch kind {
	case "vault", "ravi":
	default:
		return "", fmt.Errorf("%w: %q", ErrUnknownKind, kind)
	}
	b, err := v.Get(ctx, ConfigActor, name, ScopeServer)
	if err != nil {
		return "", err
	}
	return string(b), nil
}

// TaskResolver resolves ${vault:NAME} and ${ravi:NAME} references made on
// behalf of one task (an agent's env) from the scopes granted to it, never
// the server scope. It satisfies the config package's resolver interface.
type TaskResolver struct {
	v      *Vault
	actor  Actor
	scopes []string
	allow  func(scope string) bool
}

// OnlyScopes makes r refuse, as not granted, a secret found in a stored
// scope allow rejects (an automation's secret_scopes).
func (r *TaskResolver) OnlyScopes(allow func(scope string) bool) *TaskResolver {
	r.allow = allow
	return r
}

// TaskResolver returns a resolver reading through scopes (see Lookup and
// ScopesFor) as actor.
func (v *Vault) TaskResolver(actor Actor, scopes []string) *TaskResolver {
	return &TaskResolver{v: v, actor: actor, scopes: scopes}
}

// NotGrantedError reports a reference to a secret that no scope granted to
// the task holds. It matches ErrNotFound.
type NotGrantedError struct {
	Name   string
	Scopes []string
}

func (e *NotGrantedError) Error() string {
	return fmt.Sprintf("vault: secret %s is not granted to this task (it may read %s; server secrets are never given to agents: grant it with nightshift vault set %s --scope agents, repo:<glob>, agent:<name> or task:<id>)",
		e.Name, strings.Join(e.Scopes, ", "), e.Name)
}

// Unwrap makes errors.Is(err, ErrNotFound) true.
func (e *NotGrantedError) Unwrap() error { return ErrNotFound }

// Resolve returns the value of name from the task's most specific granted
// scope; a secret the task is not granted is a *NotGrantedError.
func (r *TaskResolver) Resolve(ctx context.Context, kind, name string) (string, error) {
	switch kind {
	case "vault", "ravi":
	default:
		return "", fmt.Errorf("%w: %q", ErrUnknownKind, kind)
	}
	b, scope, err := r.v.Lookup(ctx, r.actor, name, r.scopes)
	if errors.Is(err, ErrNotFound) || err == nil && r.allow != nil && !r.allow(scope) {
		return "", &NotGrantedError{Name: name, Scopes: r.scopes}
	}
	if err != nil {
		return "", err
	}
	return string(b), nil
}
