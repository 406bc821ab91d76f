package identity

import (
	"context"
	"crypto/rand"
	"crypto/sha256"
	"database/sql"
	"embed"
	"encoding/base64"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"log/slog"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"github.com/oklog/ulid/v2"

	"github.com/nightshift/nightshift/identity/internal/sqlmigrate"
)

// Errors returned by the Service.
var (
	ErrNotFound     = errors.New("identity: not found")
	ErrReleased     = errors.New("identity: released")
	ErrUnauthorized = errors.New("identity: invalid or revoked token")
	ErrNoTaskID     = errors.New("identity: empty task id")
)

// Identity is one agent identity. Name is also the git author and
// committer name; Email is the git author and committer email.
type Identity struct {
	ID         string     `json:"id"`
	Name       string     `json:"name"`
	Email      string     `json:"email"`
	Phone      string     `json:"phone"`
	Provider   string     `json:"provider"`
	TaskID     string     `json:"task_id,omitempty"`
	CreatedAt  time.Time  `json:"created_at"`
	ReleasedAt *time.Time `json:"released_at,omitempty"`

	ref string // provider handle
}

// GitEnv returns the environment that makes git author and commit as
// this identity.
func (id Identity) GitEnv() []string {
	return []string{
		"GIT_AUTHOR_NAME=" + id.Name, "GIT_AUTHOR_EMAIL=" + id.Email,
		"GIT_COMMITTER_NAME=" + id.Name, "GIT_COMMITTER_EMAIL=" + id.Email,
	}
}

// Live reports whether the identity has not been released.
func (id Identity) Live() bool { return id.ReleasedAt == nil }

func (id Identity) account() Account {
	return Account{IdentityID: id.ID, Name: id.Name, Email: id.Email, Phone: id.Phone, Ref: id.ref}
}

// Scope is what a token is allowed to act for: the task it was issued to,
// the task's repository and the agent running it.
type Scope struct {
	TaskID string `json:"task_id,omitempty"`
	Repo   string `json:"repo,omitempty"`
	Agent  string `json:"agent,omitempty"`
}

// Config configures a Service.
type Config struct {
	// Domain is the mail domain used in logs and defaults; the provider
	// decides the actual address. Default "agents.localhost".
	Domain string
	// Clock returns the current time. Default time.Now.
	Clock func() time.Time
	// Logger receives operational logs. Nil discards.
	Logger *slog.Logger
	// Rand is the source of token and id randomness. Default crypto/rand.
	Rand io.Reader
	// TokenTTL is how long a token from IssueToken stays valid. Default 24h.
	TokenTTL time.Duration
}

func (c Config) withDefaults() Config {
	if c.Domain == "" {
		c.Domain = "agents.localhost"
	}
	if c.Clock == nil {
		c.Clock = time.Now
	}
	if c.Logger == nil {
		c.Logger = slog.New(slog.DiscardHandler)
	}
	if c.Rand == nil {
		c.Rand = rand.Reader
	}
	if c.TokenTTL <= 0 {
		c.TokenTTL = 24 * time.Hour
	}
	return c
}

func (c Config) validate() error {
	if strings.ContainsAny(c.Domain, "@ \t\r\n") {
		return fmt.Errorf("identity: config Domain %q is not a domain", c.Domain)
	}
	return nil
}

//go:embed migrations/*.sql
var migrations embed.FS

// Service creates, looks up and releases identities and their tokens.
// It is safe for concurrent use.
type Service struct {
	db  *sql.DB
	kv  jetstream.KeyValue // set by NewKVService: records shared by every host
	p   Provider
	cfg Config
	log *slog.Logger

	createMu  sync.Mutex
	claimWait time.Duration // see judgeOwner
}

// NewService applies the identity migrations to db and returns a Service
// provisioning identities from p.
func NewService(ctx context.Context, db *sql.DB, p Provider, cfg Config) (*Service, error) {
	cfg = cfg.withDefaults()
	if err := cfg.validate(); err != nil {
		return nil, err
	}
	if db == nil || p == nil {
		return nil, errors.New("identity: NewService needs a database and a provider")
	}
	sub, err := fs.Sub(migrations, "migrations")
	if err != nil {
		return nil, err
	}
	if err := sqlmigrate.Apply(ctx, db, "identity", sub); err != nil {
		return nil, err
	}
	return &Service{db: db, p: p, cfg: cfg, log: cfg.Logger.With("component", "identity", "provider", p.Name()), claimWait: defaultClaimWait}, nil
}

// Provider returns the provider identities come from.
func (s *Service) Provider() Provider { return s.p }

// NameForTask returns the deterministic identity name for a task:
// "agent-" and the first 8 characters of the task id, lowercased and
// reduced to letters, digits and dashes.
func NameForTask(taskID string) string {
	var b strings.Builder
	for _, r := range strings.ToLower(taskID) {
		if b.Len() == 8 {
			break
		}
		switch {
		case r >= 'a' && r <= 'z', r >= '0' && r <= '9', r == '-':
			b.WriteRune(r)
		}
	}
	return "agent-" + strings.Trim(b.String(), "-")
}

// ForTask returns the live identity of taskID, creating it when the task
// has none. Calling it again returns the same identity.
func (s *Service) ForTask(ctx context.Context, taskID string) (Identity, error) {
	if taskID == "" {
		return Identity{}, ErrNoTaskID
	}
	if id, err := s.liveForTask(ctx, taskID); err == nil || !errors.Is(err, ErrNotFound) {
		return id, err
	}
	// Serialize creation in this process so concurrent callers do not
	// provision twice; across processes the unique index decides.
	s.createMu.Lock()
	defer s.createMu.Unlock()
	if id, err := s.liveForTask(ctx, taskID); err == nil || !errors.Is(err, ErrNotFound) {
		return id, err
	}
	return s.create(ctx, taskID, NameForTask(taskID))
}

// Create makes an identity that belongs to no task (an operator's
// "identity new"). Its name is derived from its random id.
func (s *Service) Create(ctx context.Context) (Identity, error) {
	id, err := s.newID()
	if err != nil {
		return Identity{}, err
	}
	s.createMu.Lock()
	defer s.createMu.Unlock()
	return s.create(ctx, "", "agent-"+strings.ToLower(id[len(id)-8:]))
}

func (s *Service) newID() (string, error) {
	u, err := ulid.New(ulid.Timestamp(s.cfg.Clock()), s.cfg.Rand)
	if err != nil {
		return "", fmt.Errorf("identity: new id: %w", err)
	}
	return u.String(), nil
}

// maxCreateAttempts bounds create's retries after a lost race for an
// address (taken meanwhile, or our own half-made identity displaced).
const maxCreateAttempts = 5

// defaultClaimWait is how long create waits for the unknown owner of a
// taken address to store its identity before it judges the owner dead.
const defaultClaimWait = 5 * time.Second

// create provisions and stores a new identity named base (or base with a
// suffix when a live identity holds that name's address).
//
// A creator killed between Provision and storing the identity leaves an
// address held by an identity id that has no record. create waits
// claimWait for that record; when none appears it tombstones the id in
// the identity store (afterwards no record with that id can be stored, so
// the owner can never come alive) and provisions with Displace naming it.
// A creator that was only stalled finds its id tombstoned when it resumes,
// gives back what it provisioned (the provider frees only what that id
// still holds) and starts over. An owner with a live record is never
// displaced.
func (s *Service) create(ctx context.Context, taskID, base string) (Identity, error) {
	var skip []string // names whose address a live identity holds
	for attempt := 1; ; attempt++ {
		if taskID != "" && attempt > 1 {
			if id, err := s.liveForTask(ctx, taskID); err == nil || !errors.Is(err, ErrNotFound) {
				return id, err
			}
		}
		id, err := s.newID()
		if err != nil {
			return Identity{}, err
		}
		name, half, err := s.freeName(ctx, base, taskID, skip)
		if err != nil {
			return Identity{}, err
		}
		if half != nil {
			// The task's identity is stored but its task claim is not:
			// its creator stopped in between (or is about to claim it).
			// Claim the task for it.
			other, _, err := s.kvClaimTask(ctx, *half)
			return other, err
		}
		acct, err := s.p.Provision(ctx, ProvisionRequest{IdentityID: id, Name: name})
		var taken *AddressTakenError
		if errors.As(err, &taken) && taken.Owner != "" && taken.Owner != id && attempt < maxCreateAttempts {
			other, verdict, jerr := s.judgeOwner(ctx, taskID, taken.Owner)
			switch {
			case jerr != nil:
				return Identity{}, fmt.Errorf("identity: provision %s: %w", name, errors.Join(err, jerr))
			case verdict == ownerMadeTask:
				return other, nil
			case verdict == ownerLive:
				skip = append(skip, name)
				continue
			}
			s.log.WarnContext(ctx, "taking over an address whose identity was never stored", "name", name,
				"identity_id", id, "displaced_identity_id", taken.Owner, "task_id", taskID)
			acct, err = s.p.Provision(ctx, ProvisionRequest{IdentityID: id, Name: name, Displace: taken.Owner})
			if errors.As(err, &taken) {
				continue // someone else holds it now: judge again
			}
		}
		if err != nil {
			if taskID != "" {
				if other, lerr := s.awaitTask(ctx, taskID); lerr == nil {
					return other, nil
				}
			}
			return Identity{}, fmt.Errorf("identity: provision %s: %w", name, err)
		}
		ident, err := s.store(ctx, taskID, id, name, acct)
		if errors.Is(err, errDisplaced) && attempt < maxCreateAttempts {
			s.log.WarnContext(ctx, "identity was displaced before it was stored; creating another", "identity_id", id, "task_id", taskID)
			continue
		}
		return ident, err
	}
}

// errDisplaced: the identity id was tombstoned (judged dead) before its
// record was stored; store gave back what was provisioned for it.
var errDisplaced = errors.New("identity: displaced before it was stored")

// store records a provisioned identity. When another caller made the
// task's identity first it gives back acct and returns theirs.
func (s *Service) store(ctx context.Context, taskID, id, name string, acct Account) (Identity, error) {
	ident := s.newIdentity(taskID, id, name, acct)
	if s.kv != nil {
		stored, ours, err := s.kvStore(ctx, ident)
		if err == nil && !ours {
			// Another host created the task's identity first: give back
			// what we provisioned and return theirs.
			err = s.release(context.WithoutCancel(ctx), ident)
			return stored, err
		}
		if err != nil {
			return Identity{}, errors.Join(err, s.p.Release(context.WithoutCancel(ctx), acct))
		}
		s.log.InfoContext(ctx, "identity created", "identity_id", ident.ID, "task_id", taskID, "name", name)
		return ident, nil
	}
	// Stored only if the id was not judged dead meanwhile (atomic in
	// SQLite: one statement).
	res, err := s.db.ExecContext(ctx, `INSERT INTO identity_identities
		(id, name, email, phone, provider, provider_ref, task_id, created_at)
		SELECT ?, ?, ?, ?, ?, ?, ?, ? WHERE NOT EXISTS (SELECT 1 FROM identity_displaced WHERE id = ?)`,
		ident.ID, ident.Name, ident.Email, ident.Phone, ident.Provider, ident.ref, taskID, ident.CreatedAt.UnixMilli(), ident.ID)
	if err == nil {
		if n, _ := res.RowsAffected(); n == 0 {
			err = errDisplaced
		}
	}
	if err != nil {
		// Another caller may have created the task's identity concurrently:
		// give back what we provisioned and return theirs.
		rerr := s.p.Release(context.WithoutCancel(ctx), acct)
		if errors.Is(err, errDisplaced) {
			return Identity{}, errors.Join(err, rerr)
		}
		if taskID != "" {
			if other, lerr := s.liveForTask(ctx, taskID); lerr == nil {
				return other, nil
			}
		}
		return Identity{}, errors.Join(fmt.Errorf("identity: store %s: %w", name, err), rerr)
	}
	s.log.InfoContext(ctx, "identity created", "identity_id", ident.ID, "task_id", taskID, "name", name)
	return ident, nil
}

// newIdentity is the record, created now, of acct provisioned as identity
// id named name for taskID.
func (s *Service) newIdentity(taskID, id, name string, acct Account) Identity {
	return Identity{ID: id, Name: name, Email: acct.Email, Phone: acct.Phone, Provider: s.p.Name(),
		TaskID: taskID, CreatedAt: s.cfg.Clock().UTC().Truncate(time.Millisecond), ref: acct.Ref}
}

// ownerVerdict is judgeOwner's answer about the holder of a taken address.
type ownerVerdict int

const (
	ownerMadeTask ownerVerdict = iota // the task's identity exists now: use it
	ownerLive                         // a live identity holds the address: pick another name
	ownerDead                         // no record can ever exist for the holder: displace it
)

// judgeOwner decides about owner, the identity holding the address create
// wanted for taskID. An owner without a record may be mid-creation on
// another host (possibly creating this very task's identity), so this
// waits claimWait for its record or the task's identity before it
// tombstones the owner.
func (s *Service) judgeOwner(ctx context.Context, taskID, owner string) (Identity, ownerVerdict, error) {
	deadline := time.Now().Add(s.claimWait)
	tombstoned := false
	for {
		if taskID != "" {
			id, err := s.liveForTask(ctx, taskID)
			if err == nil {
				return id, ownerMadeTask, nil
			}
			if !errors.Is(err, ErrNotFound) {
				return Identity{}, 0, err
			}
		}
		st, rec, err := s.ownerState(ctx, owner)
		if err != nil {
			return Identity{}, 0, err
		}
		switch {
		case st == stateDead:
			return Identity{}, ownerDead, nil
		case st == stateLive && (taskID == "" || rec.TaskID != taskID):
			return Identity{}, ownerLive, nil
		}
		if time.Now().After(deadline) {
			if st == stateLive {
				// The task's identity is stored but its claim on the task
				// is not (its creator stopped in between): claim the task
				// for it.
				if s.kv == nil {
					return Identity{}, ownerLive, nil
				}
				id, _, err := s.kvClaimTask(ctx, rec)
				return id, ownerMadeTask, err
			}
			if tombstoned {
				return Identity{}, 0, fmt.Errorf("identity: owner %s of the address neither stored nor tombstoned", owner)
			}
			if err := s.tombstone(ctx, owner); err != nil {
				return Identity{}, 0, err
			}
			tombstoned = true
			continue
		}
		if err := pollPause(ctx); err != nil {
			return Identity{}, 0, err
		}
	}
}

type idState int

const (
	stateAbsent idState = iota // no record (yet)
	stateLive
	stateDead // released, or tombstoned: never live again
)

// ownerState reads what the identity store holds for identity id.
func (s *Service) ownerState(ctx context.Context, id string) (idState, Identity, error) {
	if s.kv != nil {
		return s.kvOwnerState(ctx, id)
	}
	ident, err := s.Get(ctx, id)
	if err == nil {
		if ident.Live() {
			return stateLive, ident, nil
		}
		return stateDead, ident, nil
	}
	if !errors.Is(err, ErrNotFound) {
		return 0, Identity{}, err
	}
	var n int
	if err := s.db.QueryRowContext(ctx, `SELECT COUNT(*) FROM identity_displaced WHERE id = ?`, id).Scan(&n); err != nil {
		return 0, Identity{}, fmt.Errorf("identity: look up %s: %w", id, err)
	}
	if n > 0 {
		return stateDead, Identity{}, nil
	}
	return stateAbsent, Identity{}, nil
}

// tombstone makes sure no record of identity id can be stored from now
// on, unless one already is.
func (s *Service) tombstone(ctx context.Context, id string) error {
	now := s.cfg.Clock().UTC()
	if s.kv != nil {
		return s.kvTombstone(ctx, id, now)
	}
	_, err := s.db.ExecContext(ctx, `INSERT OR IGNORE INTO identity_displaced (id, displaced_at)
		SELECT ?, ? WHERE NOT EXISTS (SELECT 1 FROM identity_identities WHERE id = ?)`, id, now.UnixMilli(), id)
	if err != nil {
		return fmt.Errorf("identity: tombstone %s: %w", id, err)
	}
	return nil
}

// awaitTask returns the task's live identity after our provisioning
// failed: another process may be creating it (its account is provisioned
// and its record not stored yet). On a cluster that process may be on
// another host, so this waits a little for its record.
func (s *Service) awaitTask(ctx context.Context, taskID string) (Identity, error) {
	deadline := time.Now().Add(s.claimWait)
	for {
		id, err := s.liveForTask(ctx, taskID)
		if s.kv == nil || !errors.Is(err, ErrNotFound) || time.Now().After(deadline) {
			return id, err
		}
		if err := pollPause(ctx); err != nil {
			return Identity{}, err
		}
	}
}

// pollPause waits between two reads of the identity store for another
// creator's record.
func pollPause(ctx context.Context) error {
	select {
	case <-ctx.Done():
		return ctx.Err()
	case <-time.After(20 * time.Millisecond):
		return nil
	}
}

// freeName returns name, or name with a numeric suffix when a live
// identity already uses it (two task ids sharing their first 8 characters)
// or its address is held (skip). On the shared records, a live identity of
// taskID already using the name is returned as half instead.
func (s *Service) freeName(ctx context.Context, name, taskID string, skip []string) (string, *Identity, error) {
	for i := 1; ; i++ {
		cand := name
		if i > 1 {
			cand = fmt.Sprintf("%s-%d", name, i)
		}
		if slices.Contains(skip, cand) {
			continue
		}
		holder, taken, err := s.nameHolder(ctx, cand)
		if err != nil {
			return "", nil, fmt.Errorf("identity: check name: %w", err)
		}
		if !taken {
			return cand, nil, nil
		}
		if s.kv != nil && taskID != "" && holder.TaskID == taskID {
			return cand, &holder, nil
		}
	}
}

// nameHolder returns the live identity named name, if any.
func (s *Service) nameHolder(ctx context.Context, name string) (Identity, bool, error) {
	if s.kv != nil {
		return s.kvNameHolder(ctx, name)
	}
	row := s.db.QueryRowContext(ctx, `SELECT `+identityCols+` FROM identity_identities WHERE name = ? AND released_at IS NULL LIMIT 1`, name)
	id, err := scanIdentity(row)
	if errors.Is(err, sql.ErrNoRows) {
		return Identity{}, false, nil
	}
	return id, err == nil, err
}

// Release ends taskID's identity: its tokens are revoked and the provider
// returns its resources. Releasing a task without a live identity is a no-op.
func (s *Service) Release(ctx context.Context, taskID string) error {
	if taskID == "" {
		return ErrNoTaskID
	}
	id, err := s.liveForTask(ctx, taskID)
	if errors.Is(err, ErrNotFound) {
		return nil
	}
	if err != nil {
		return err
	}
	return s.release(ctx, id)
}

// ReleaseIdentity ends the identity with the given id (see Release).
func (s *Service) ReleaseIdentity(ctx context.Context, identityID string) error {
	id, err := s.Get(ctx, identityID)
	if err != nil {
		return err
	}
	if !id.Live() {
		return nil
	}
	return s.release(ctx, id)
}

func (s *Service) release(ctx context.Context, id Identity) error {
	now := s.cfg.Clock().UTC().Truncate(time.Millisecond)
	var err error
	if s.kv != nil {
		err = s.kvRevokeIdentity(ctx, id.ID)
	} else {
		_, err = s.db.ExecContext(ctx, `UPDATE identity_tokens SET revoked_at = ? WHERE identity_id = ? AND revoked_at IS NULL`, now.UnixMilli(), id.ID)
	}
	if err != nil {
		return fmt.Errorf("identity: revoke tokens of %s: %w", id.ID, err)
	}
	if err := s.p.Release(ctx, id.account()); err != nil {
		return fmt.Errorf("identity: release %s: %w", id.Name, err)
	}
	if s.kv != nil {
		err = s.kvMarkReleased(ctx, id, now)
	} else {
		_, err = s.db.ExecContext(ctx, `UPDATE identity_identities SET released_at = ? WHERE id = ? AND released_at IS NULL`, now.UnixMilli(), id.ID)
	}
	if err != nil {
		return fmt.Errorf("identity: mark %s released: %w", id.ID, err)
	}
	s.log.InfoContext(ctx, "identity released", "identity_id", id.ID, "task_id", id.TaskID)
	return nil
}

const identityCols = `id, name, email, phone, provider, provider_ref, task_id, created_at, released_at`

type scanner interface{ Scan(...any) error }

func scanIdentity(r scanner) (Identity, error) {
	var id Identity
	var created int64
	var released sql.NullInt64
	if err := r.Scan(&id.ID, &id.Name, &id.Email, &id.Phone, &id.Provider, &id.ref, &id.TaskID, &created, &released); err != nil {
		return Identity{}, err
	}
	id.CreatedAt = time.UnixMilli(created).UTC()
	if released.Valid {
		t := time.UnixMilli(released.Int64).UTC()
		id.ReleasedAt = &t
	}
	return id, nil
}

func (s *Service) liveForTask(ctx context.Context, taskID string) (Identity, error) {
	if s.kv != nil {
		return s.kvLiveForTask(ctx, taskID)
	}
	row := s.db.QueryRowContext(ctx, `SELECT `+identityCols+` FROM identity_identities WHERE task_id = ? AND released_at IS NULL`, taskID)
	id, err := scanIdentity(row)
	if errors.Is(err, sql.ErrNoRows) {
		return Identity{}, ErrNotFound
	}
	if err != nil {
		return Identity{}, fmt.Errorf("identity: look up task %s: %w", taskID, err)
	}
	return id, nil
}

// Get returns the identity with the given id, live or released.
func (s *Service) Get(ctx context.Context, identityID string) (Identity, error) {
	if s.kv != nil {
		rec, ok, err := s.kvIdentity(ctx, identityID)
		if err != nil {
			return Identity{}, err
		}
		if !ok {
			return Identity{}, fmt.Errorf("%w: %s", ErrNotFound, identityID)
		}
		return rec.Identity, nil
	}
	row := s.db.QueryRowContext(ctx, `SELECT `+identityCols+` FROM identity_identities WHERE id = ?`, identityID)
	id, err := scanIdentity(row)
	if errors.Is(err, sql.ErrNoRows) {
		return Identity{}, fmt.Errorf("%w: %s", ErrNotFound, identityID)
	}
	if err != nil {
		return Identity{}, fmt.Errorf("identity: get %s: %w", identityID, err)
	}
	return id, nil
}

// ListOptions filters List.
type ListOptions struct {
	IncludeReleased bool
	Limit           int // 0: 100
}

// List returns identities, newest first.
func (s *Service) List(ctx context.Context, opt ListOptions) ([]Identity, error) {
	if opt.Limit <= 0 {
		opt.Limit = 100
	}
	if s.kv != nil {
		return s.kvList(ctx, opt)
	}
	q := `SELECT ` + identityCols + ` FROM identity_identities`
	if !opt.IncludeReleased {
		q += ` WHERE released_at IS NULL`
	}
	q += ` ORDER BY created_at DESC, id DESC LIMIT ?`
	rows, err := s.db.QueryContext(ctx, q, opt.Limit)
	if err != nil {
		return nil, fmt.Errorf("identity: list: %w", err)
	}
	defer rows.Close()
	var out []Identity
	for rows.Next() {
		id, err := scanIdentity(rows)
		if err != nil {
			return nil, fmt.Errorf("identity: list: %w", err)
		}
		out = append(out, id)
	}
	return out, rows.Err()
}

// tokenPrefix marks Nightshift agent tokens so they are recognizable in
// secret scanners.
const tokenPrefix = "nsa_"

func hashToken(tok string) string {
	sum := sha256.Sum256([]byte(tok))
	return hex.EncodeToString(sum[:])
}

// IssueToken returns a new bearer token for the live identity identityID,
// limited to scope and valid for Config.TokenTTL (see IssueTokenTTL).
func (s *Service) IssueToken(ctx context.Context, identityID string, scope Scope) (string, error) {
	return s.IssueTokenTTL(ctx, identityID, scope, s.cfg.TokenTTL)
}

// IssueTokenTTL returns a new bearer token for the live identity
// identityID, limited to scope and valid for ttl from now (by the
// Service's clock). Only the token's SHA-256 hash is stored.
func (s *Service) IssueTokenTTL(ctx context.Context, identityID string, scope Scope, ttl time.Duration) (string, error) {
	if ttl <= 0 {
		return "", fmt.Errorf("identity: token ttl %s is not positive", ttl)
	}
	id, err := s.Get(ctx, identityID)
	if err != nil {
		return "", err
	}
	if !id.Live() {
		return "", fmt.Errorf("%w: %s", ErrReleased, identityID)
	}
	if scope.TaskID == "" {
		scope.TaskID = id.TaskID
	}
	var raw [32]byte
	if _, err := io.ReadFull(s.cfg.Rand, raw[:]); err != nil {
		return "", fmt.Errorf("identity: token randomness: %w", err)
	}
	tok := tokenPrefix + base64.RawURLEncoding.EncodeToString(raw[:])
	now := s.cfg.Clock().UTC()
	if s.kv != nil {
		if err := s.kvIssue(ctx, hashToken(tok), id, scope, now, ttl); err != nil {
			return "", fmt.Errorf("identity: store token: %w", err)
		}
		return tok, nil
	}
	_, err = s.db.ExecContext(ctx, `INSERT INTO identity_tokens (hash, identity_id, task_id, repo, agent, created_at, expires_at) VALUES (?, ?, ?, ?, ?, ?, ?)`,
		hashToken(tok), id.ID, scope.TaskID, scope.Repo, scope.Agent, now.UnixMilli(), now.Add(ttl).UnixMilli())
	if err != nil {
		return "", fmt.Errorf("identity: store token: %w", err)
	}
	return tok, nil
}

// RevokeToken revokes token; revoking an unknown or revoked token is a no-op.
func (s *Service) RevokeToken(ctx context.Context, token string) error {
	if s.kv != nil {
		if err := s.kvRevokeToken(ctx, hashToken(token)); err != nil {
			return fmt.Errorf("identity: revoke token: %w", err)
		}
		return nil
	}
	_, err := s.db.ExecContext(ctx, `UPDATE identity_tokens SET revoked_at = ? WHERE hash = ? AND revoked_at IS NULL`,
		s.cfg.Clock().UTC().UnixMilli(), hashToken(token))
	if err != nil {
		return fmt.Errorf("identity: revoke token: %w", err)
	}
	return nil
}

// RevokeTaskTokens revokes every token issued for taskID, whether scoped
// to it or issued to its identity. A run calls it before issuing its own
// token, so a token an earlier (crashed or redelivered) run of the task
// leaked stops working when the next run starts.
func (s *Service) RevokeTaskTokens(ctx context.Context, taskID string) error {
	if taskID == "" {
		return ErrNoTaskID
	}
	if s.kv != nil {
		if err := s.kvRevokeTask(ctx, taskID); err != nil {
			return fmt.Errorf("identity: revoke tokens of task %s: %w", taskID, err)
		}
		return nil
	}
	_, err := s.db.ExecContext(ctx, `UPDATE identity_tokens SET revoked_at = ?
		WHERE revoked_at IS NULL AND (task_id = ? OR identity_id IN (SELECT id FROM identity_identities WHERE task_id = ?))`,
		s.cfg.Clock().UTC().UnixMilli(), taskID, taskID)
	if err != nil {
		return fmt.Errorf("identity: revoke tokens of task %s: %w", taskID, err)
	}
	return nil
}

// Authenticate returns the identity and scope a token was issued for.
// Unknown, expired, revoked and released-identity tokens give
// ErrUnauthorized.
func (s *Service) Authenticate(ctx context.Context, token string) (Identity, Scope, error) {
	if !strings.HasPrefix(token, tokenPrefix) {
		return Identity{}, Scope{}, ErrUnauthorized
	}
	if s.kv != nil {
		return s.kvAuthenticate(ctx, hashToken(token), s.cfg.Clock().UTC())
	}
	var sc Scope
	var identityID string
	err := s.db.QueryRowContext(ctx, `SELECT identity_id, task_id, repo, agent FROM identity_tokens
		WHERE hash = ? AND revoked_at IS NULL AND expires_at > ?`,
		hashToken(token), s.cfg.Clock().UTC().UnixMilli()).Scan(&identityID, &sc.TaskID, &sc.Repo, &sc.Agent)
	if errors.Is(err, sql.ErrNoRows) {
		return Identity{}, Scope{}, ErrUnauthorized
	}
	if err != nil {
		return Identity{}, Scope{}, fmt.Errorf("identity: authenticate: %w", err)
	}
	id, err := s.Get(ctx, identityID)
	if err != nil {
		return Identity{}, Scope{}, err
	}
	if !id.Live() {
		return Identity{}, Scope{}, ErrUnauthorized
	}
	return id, sc, nil
}
