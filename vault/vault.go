package vault

import (
	"context"
	"crypto/rand"
	"database/sql"
	"embed"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"log/slog"
	"path"
	"regexp"
	"sort"
	"strconv"
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

// Vault stores secrets encrypted in SQLite. It is safe for concurrent use,
// and several processes may open the same database (the CLI beside a
// running server); a root key rotation needs the others restarted.
type Vault struct {
	db     *sql.DB
	keys   KeySource
	cfg    Config
	logger *slog.Logger

	wmu sync.Mutex // serialises this process's write transactions

	mu       sync.Mutex
	root     []byte
	auditKey []byte
	keks     map[int64][]byte
}

//go:embed migrations/*.sql
var migrationFS embed.FS

// Open migrates the vault tables in db, obtains the root key from keys and
// checks it against the vault. A new vault gets its first KEK and audit key.
// A root key that does not match fails with ErrWrongKey.
func Open(ctx context.Context, db *sql.DB, keys KeySource, cfg Config) (*Vault, error) {
	if db == nil {
		return nil, errors.New("vault: nil db")
	}
	if keys == nil {
		return nil, errors.New("vault: nil key source")
	}
	if err := cfg.validate(); err != nil {
		return nil, err
	}
	cfg = cfg.withDefaults()
	v := &Vault{db: db, keys: keys, cfg: cfg, logger: cfg.Logger.With("component", "vault"), keks: map[int64][]byte{}}
	ctx, cancel := v.timeout(ctx)
	defer cancel()
	if err := v.migrate(ctx); err != nil {
		return nil, err
	}
	root, err := keys.RootKey(ctx)
	if err != nil {
		return nil, err
	}
	if len(root) != KeySize {
		return nil, fmt.Errorf("%w: root key is %d bytes, want %d", ErrKeySource, len(root), KeySize)
	}
	err = v.writeTx(ctx, func(c *sql.Conn) error {
		var check []byte
		err := c.QueryRowContext(ctx, `SELECT value FROM vault_meta WHERE key = 'root_check'`).Scan(&check)
		if errors.Is(err, sql.ErrNoRows) {
			return v.initialise(ctx, c, root)
		}
		if err != nil {
			return err
		}
		if _, err := unseal(root, check, adRootCheck()); err != nil {
			return ErrWrongKey
		}
		var wrapped []byte
		if err := c.QueryRowContext(ctx, `SELECT value FROM vault_meta WHERE key = 'audit_key'`).Scan(&wrapped); err != nil {
			return fmt.Errorf("vault: read audit key: %w", err)
		}
		ak, err := unseal(root, wrapped, adAuditKey())
		if err != nil {
			return &IntegrityError{Part: "audit key"}
		}
		v.auditKey = ak
		return nil
	})
	if err != nil {
		return nil, err
	}
	v.root = root
	return v, nil
}

// initialise creates the root check, the audit key and KEK 1 of a new vault.
func (v *Vault) initialise(ctx context.Context, c *sql.Conn, root []byte) error {
	var n int
	if err := c.QueryRowContext(ctx, `SELECT count(*) FROM vault_keks`).Scan(&n); err != nil {
		return err
	}
	if n > 0 {
		return fmt.Errorf("%w: vault_meta lost its root check while keys exist", ErrIntegrity)
	}
	check, err := seal(v.cfg.Rand, root, rootCheckPlain, adRootCheck())
	if err != nil {
		return err
	}
	ak := make([]byte, KeySize)
	if _, err := io.ReadFull(v.cfg.Rand, ak); err != nil {
		return err
	}
	wak, err := seal(v.cfg.Rand, root, ak, adAuditKey())
	if err != nil {
		return err
	}
	if _, err := c.ExecContext(ctx, `INSERT INTO vault_meta(key, value) VALUES ('root_check', ?), ('audit_key', ?)`, check, wak); err != nil {
		return err
	}
	if _, err := v.newKEK(ctx, c, root, 1); err != nil {
		return err
	}
	v.auditKey = ak
	v.logger.Info("vault initialised")
	return nil
}

func (v *Vault) newKEK(ctx context.Context, c *sql.Conn, root []byte, id int64) ([]byte, error) {
	kek := make([]byte, KeySize)
	if _, err := io.ReadFull(v.cfg.Rand, kek); err != nil {
		return nil, err
	}
	w, err := seal(v.cfg.Rand, root, kek, adKEK(id))
	if err != nil {
		return nil, err
	}
	if _, err := c.ExecContext(ctx, `INSERT INTO vault_keks(id, wrapped, created_at) VALUES (?, ?, ?)`, id, w, v.now()); err != nil {
		return nil, fmt.Errorf("vault: store kek: %w", err)
	}
	v.mu.Lock()
	v.keks[id] = kek
	v.mu.Unlock()
	return kek, nil
}

func (v *Vault) migrate(ctx context.Context) error {
	entries, err := fs.ReadDir(migrationFS, "migrations")
	if err != nil {
		return err
	}
	return v.writeTx(ctx, func(c *sql.Conn) error {
		if _, err := c.ExecContext(ctx, `CREATE TABLE IF NOT EXISTS vault_schema_migrations (version INTEGER PRIMARY KEY, applied_at TEXT NOT NULL)`); err != nil {
			return fmt.Errorf("vault: migrate: %w", err)
		}
		var have int
		if err := c.QueryRowContext(ctx, `SELECT COALESCE(MAX(version), 0) FROM vault_schema_migrations`).Scan(&have); err != nil {
			return fmt.Errorf("vault: migrate: %w", err)
		}
		for _, e := range entries {
			n, err := strconv.Atoi(strings.SplitN(e.Name(), "_", 2)[0])
			if err != nil || n <= have {
				continue
			}
			q, err := migrationFS.ReadFile("migrations/" + e.Name())
			if err != nil {
				return err
			}
			if _, err := c.ExecContext(ctx, string(q)); err != nil {
				return fmt.Errorf("vault: migrate %s: %w", e.Name(), err)
			}
			if _, err := c.ExecContext(ctx, `INSERT INTO vault_schema_migrations(version, applied_at) VALUES (?, ?)`, n, v.now()); err != nil {
				return fmt.Errorf("vault: migrate: %w", err)
			}
		}
		return nil
	})
}

func (v *Vault) timeout(ctx context.Context) (context.Context, context.CancelFunc) {
	if _, ok := ctx.Deadline(); ok {
		return ctx, func() {}
	}
	return context.WithTimeout(ctx, v.cfg.Timeout)
}

func (v *Vault) now() string { return v.cfg.Clock().UTC().Format(time.RFC3339Nano) }

// writeTx runs fn in a BEGIN IMMEDIATE transaction on one connection with
// secure_delete on, committing when fn returns nil.
func (v *Vault) writeTx(ctx context.Context, fn func(c *sql.Conn) error) (err error) {
	v.wmu.Lock()
	defer v.wmu.Unlock()
	c, err := v.db.Conn(ctx)
	if err != nil {
		return fmt.Errorf("vault: %w", err)
	}
	defer c.Close()
	if _, err := c.ExecContext(ctx, `PRAGMA secure_delete = ON`); err != nil {
		return fmt.Errorf("vault: %w", err)
	}
	if _, err := c.ExecContext(ctx, `BEGIN IMMEDIATE`); err != nil {
		return fmt.Errorf("vault: begin: %w", err)
	}
	done := false
	defer func() {
		if !done {
			rctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 5*time.Second)
			defer cancel()
			c.ExecContext(rctx, `ROLLBACK`)
		}
	}()
	if err := fn(c); err != nil {
		return err
	}
	if _, err := c.ExecContext(ctx, `COMMIT`); err != nil {
		return fmt.Errorf("vault: commit: %w", err)
	}
	done = true
	return nil
}

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

// scopeIn returns "scope IN (?, ...)" and its arguments for scope's stored forms.
func scopeIn(scope string) (string, []any) {
	st := storedScopes(scope)
	args := make([]any, len(st))
	for i, s := range st {
		args[i] = s
	}
	return "scope IN (?" + strings.Repeat(", ?", len(st)-1) + ")", args
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
	scope := stored
	ctx, cancel := v.timeout(ctx)
	defer cancel()
	err = v.writeTx(ctx, func(c *sql.Conn) error {
		in, inArgs := scopeIn(scope)
		if err := c.QueryRowContext(ctx, `SELECT COALESCE(MAX(version), 0) + 1 FROM vault_secrets WHERE name = ? AND `+in, append([]any{name}, inArgs...)...).Scan(&version); err != nil {
			return err
		}
		kekID, kek, err := v.currentKEK(ctx, c)
		if err != nil {
			return err
		}
		dek := make([]byte, KeySize)
		if _, err := io.ReadFull(v.cfg.Rand, dek); err != nil {
			return err
		}
		ct, err := seal(v.cfg.Rand, dek, value, adValue(name, scope, version))
		if err != nil {
			return err
		}
		wdek, err := seal(v.cfg.Rand, kek, dek, adDEK(name, scope, version, kekID))
		if err != nil {
			return err
		}
		clear(dek)
		if _, err := c.ExecContext(ctx, `INSERT INTO vault_secrets(name, scope, version, kek_id, wrapped_dek, ciphertext, created_at, created_by) VALUES (?, ?, ?, ?, ?, ?, ?, ?)`,
			name, scope, version, kekID, wdek, ct, v.now(), actor.String()); err != nil {
			return fmt.Errorf("vault: store %s: %w", name, err)
		}
		return v.appendAudit(ctx, c, auditRecord{actor: actor, action: "set", name: name, scope: scope, version: version, outcome: "ok"})
	})
	if err != nil {
		return 0, err
	}
	return version, nil
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
	var opErr error
	err := v.writeTx(ctx, func(c *sql.Conn) error {
		rec := auditRecord{actor: actor, action: "get", name: name, scope: scope, version: version}
		out.Value, rec.version, opErr = v.read(ctx, c, name, scope, version)
		out.Version = rec.version
		rec.outcome = outcomeOf(opErr)
		if rec.outcome == "error" {
			return opErr
		}
		return v.appendAudit(ctx, c, rec)
	})
	if err != nil {
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
	var opErr error
	err := v.writeTx(ctx, func(c *sql.Conn) error {
		rows, err := c.QueryContext(ctx, `SELECT DISTINCT name, scope FROM vault_secrets WHERE destroyed_at IS NULL`)
		if err != nil {
			return err
		}
		live := map[string]map[string]bool{}
		for rows.Next() {
			var n, s string
			if err := rows.Scan(&n, &s); err != nil {
				rows.Close()
				return err
			}
			if live[n] == nil {
				live[n] = map[string]bool{}
			}
			live[n][CanonicalScope(s)] = true
		}
		rows.Close()
		if err := rows.Err(); err != nil {
			return err
		}
		names := make([]string, 0, len(live))
		for n := range live {
			names = append(names, n)
		}
		sort.Strings(names)
		for _, n := range names {
			scope := pickScope(live[n], scopes, v.cfg.MatchRepo)
			if scope == "" {
				continue
			}
			val, ver, err := v.read(ctx, c, n, scope, 0)
			rec := auditRecord{actor: actor, action: "lookup", name: n, scope: scope, version: ver, outcome: outcomeOf(err), detail: detail}
			if rec.outcome == "error" {
				return err
			}
			if aerr := v.appendAudit(ctx, c, rec); aerr != nil {
				return aerr
			}
			if err != nil {
				// An integrity failure: audited (commit), then refused as a whole.
				opErr = err
				return nil
			}
			out[n] = Secret{Name: n, Scope: scope, Version: ver, Value: val}
		}
		return nil
	})
	if err == nil {
		err = opErr
	}
	if err != nil {
		return nil, err
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
	var value []byte
	var found string
	var opErr error
	err := v.writeTx(ctx, func(c *sql.Conn) error {
		live, err := v.liveScopes(ctx, c, name)
		if err != nil {
			return err
		}
		found = pickScope(live, scopes, v.cfg.MatchRepo)
		rec := auditRecord{actor: actor, action: "lookup", name: name, scope: found, detail: "tried " + strings.Join(scopes, ",")}
		if found == "" {
			opErr = ErrNotFound
		} else {
			value, rec.version, opErr = v.read(ctx, c, name, found, 0)
		}
		rec.outcome = outcomeOf(opErr)
		if rec.outcome == "error" {
			return opErr
		}
		return v.appendAudit(ctx, c, rec)
	})
	if err != nil {
		return nil, "", err
	}
	if opErr != nil {
		return nil, "", opErr
	}
	return value, found, nil
}

func (v *Vault) liveScopes(ctx context.Context, c *sql.Conn, name string) (map[string]bool, error) {
	rows, err := c.QueryContext(ctx, `SELECT DISTINCT scope FROM vault_secrets WHERE name = ? AND destroyed_at IS NULL`, name)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	live := map[string]bool{}
	for rows.Next() {
		var s string
		if err := rows.Scan(&s); err != nil {
			return nil, err
		}
		live[CanonicalScope(s)] = true
	}
	return live, rows.Err()
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

// read decrypts one version (0: latest live) inside a transaction.
func (v *Vault) read(ctx context.Context, c *sql.Conn, name, scope string, version int) ([]byte, int, error) {
	in, inArgs := scopeIn(scope)
	q := `SELECT scope, version, kek_id, wrapped_dek, ciphertext FROM vault_secrets WHERE name = ? AND ` + in + ` AND destroyed_at IS NULL ORDER BY version DESC LIMIT 1`
	args := append([]any{name}, inArgs...)
	if version > 0 {
		q = `SELECT scope, version, kek_id, wrapped_dek, ciphertext FROM vault_secrets WHERE name = ? AND ` + in + ` AND version = ? AND destroyed_at IS NULL`
		args = append(args, version)
	}
	var ver int
	var kekID sql.NullInt64
	var wdek, ct []byte
	var stored string // the scope the record was sealed under ("global" for old server secrets)
	err := c.QueryRowContext(ctx, q, args...).Scan(&stored, &ver, &kekID, &wdek, &ct)
	if errors.Is(err, sql.ErrNoRows) {
		return nil, version, fmt.Errorf("%w: %s in scope %s", ErrNotFound, name, scope)
	}
	if err != nil {
		return nil, version, err
	}
	ie := &IntegrityError{Name: name, Scope: scope, Version: ver, Part: "data key", KEKID: kekID.Int64}
	if !kekID.Valid {
		return nil, ver, ie
	}
	kek, err := v.kek(ctx, c, kekID.Int64)
	if err != nil {
		if errors.Is(err, ErrNotFound) {
			return nil, ver, ie
		}
		return nil, ver, err
	}
	dek, err := unseal(kek, wdek, adDEK(name, stored, ver, kekID.Int64))
	if err != nil {
		return nil, ver, ie
	}
	value, err := unseal(dek, ct, adValue(name, stored, ver))
	clear(dek)
	if err != nil {
		ie.Part = "value"
		return nil, ver, ie
	}
	return value, ver, nil
}

// kek returns the unwrapped KEK id, from cache or the database.
func (v *Vault) kek(ctx context.Context, c *sql.Conn, id int64) ([]byte, error) {
	v.mu.Lock()
	k, ok := v.keks[id]
	root := v.root
	v.mu.Unlock()
	if ok {
		return k, nil
	}
	if root == nil { // during Open
		return nil, errors.New("vault: not open")
	}
	var w []byte
	err := c.QueryRowContext(ctx, `SELECT wrapped FROM vault_keks WHERE id = ?`, id).Scan(&w)
	if errors.Is(err, sql.ErrNoRows) {
		return nil, fmt.Errorf("%w: kek %d", ErrNotFound, id)
	}
	if err != nil {
		return nil, err
	}
	k, err = unseal(root, w, adKEK(id))
	if err != nil {
		return nil, &IntegrityError{Part: "kek", KEKID: id}
	}
	v.mu.Lock()
	v.keks[id] = k
	v.mu.Unlock()
	return k, nil
}

func (v *Vault) currentKEK(ctx context.Context, c *sql.Conn) (int64, []byte, error) {
	var id int64
	if err := c.QueryRowContext(ctx, `SELECT id FROM vault_keks ORDER BY id DESC LIMIT 1`).Scan(&id); err != nil {
		return 0, nil, fmt.Errorf("vault: no key-encryption key: %w", err)
	}
	k, err := v.kek(ctx, c, id)
	return id, k, err
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
	var n int64
	err := v.writeTx(ctx, func(c *sql.Conn) error {
		in, inArgs := scopeIn(scope)
		q := `UPDATE vault_secrets SET kek_id = NULL, wrapped_dek = NULL, ciphertext = NULL, destroyed_at = ? WHERE name = ? AND ` + in + ` AND destroyed_at IS NULL`
		args := append([]any{v.now(), name}, inArgs...)
		if version > 0 {
			q += ` AND version = ?`
			args = append(args, version)
		}
		if below > 0 {
			q += ` AND version < ?`
			args = append(args, below)
		}
		res, err := c.ExecContext(ctx, q, args...)
		if err != nil {
			return err
		}
		if n, err = res.RowsAffected(); err != nil {
			return err
		}
		rec := auditRecord{actor: actor, action: "destroy", name: name, scope: scope, version: version, outcome: "ok", detail: fmt.Sprintf("%d versions", n)}
		if below > 0 {
			rec.detail += fmt.Sprintf(" below %d", below)
		}
		if n == 0 {
			rec.outcome = "not_found"
		}
		return v.appendAudit(ctx, c, rec)
	})
	if err != nil {
		return 0, err
	}
	if n == 0 {
		return 0, fmt.Errorf("%w: %s in scope %s", ErrNotFound, name, scope)
	}
	return int(n), nil
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
	err := v.writeTx(ctx, func(c *sql.Conn) error {
		// Secrets stored as "global" before scopes were split are server secrets.
		rows, err := c.QueryContext(ctx, `SELECT name, CASE scope WHEN 'global' THEN 'server' ELSE scope END AS s, version, created_at, created_by, destroyed_at FROM vault_secrets ORDER BY name, s, version`)
		if err != nil {
			return err
		}
		defer rows.Close()
		for rows.Next() {
			var name, scope, created, by string
			var ver int
			var destroyed sql.NullString
			if err := rows.Scan(&name, &scope, &ver, &created, &by, &destroyed); err != nil {
				return err
			}
			if len(out) == 0 || out[len(out)-1].Name != name || out[len(out)-1].Scope != scope {
				out = append(out, Info{Name: name, Scope: scope})
			}
			in := &out[len(out)-1]
			vi := VersionInfo{Version: ver, CreatedBy: by}
			vi.CreatedAt, _ = time.Parse(time.RFC3339Nano, created)
			if destroyed.Valid {
				t, _ := time.Parse(time.RFC3339Nano, destroyed.String)
				vi.DestroyedAt = &t
			} else {
				in.Latest = ver
			}
			in.Versions = append(in.Versions, vi)
		}
		if err := rows.Err(); err != nil {
			return err
		}
		rows.Close()
		return v.appendAudit(ctx, c, auditRecord{actor: actor, action: "list", outcome: "ok", detail: fmt.Sprintf("%d secrets", len(out))})
	})
	if err != nil {
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
	b, _, err := r.v.Lookup(ctx, r.actor, name, r.scopes)
	if errors.Is(err, ErrNotFound) {
		return "", &NotGrantedError{Name: name, Scopes: r.scopes}
	}
	if err != nil {
		return "", err
	}
	return string(b), nil
}
