// Package local is the built-in identity provider: addresses
// <name>@<domain> served by its own SMTP listener, and phone numbers from a
// configured pool whose inbound SMS arrive as Twilio webhooks on
// POST /hooks/sms. Each pool number is leased to at most one live identity.
// Mail and SMS are stored in SQLite (tables identity_local_*; New) or, on a
// cluster, in a replicated JetStream bucket and stream (NewKV), and every
// arrival wakes the identity's watchers at once — on any host, through the
// identity's message subject.
//
// The SMTP listener accepts mail only for live identities: RCPT for any
// other address is refused with 550, and messages over MaxMessageBytes
// with 552. SMS webhooks are accepted only with a valid X-Twilio-Signature.
package local

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
	"strings"
	"sync"
	"time"

	"github.com/emersion/go-smtp"
	"github.com/oklog/ulid/v2"

	"github.com/nightshift/nightshift/identity"
	"github.com/nightshift/nightshift/identity/internal/sqlmigrate"
)

var _ identity.Provider = (*Provider)(nil)

// ErrAddressTaken is returned when provisioning a name whose address is
// live for another identity.
var ErrAddressTaken = errors.New("local: address in use by another identity")

// Config configures the local provider.
type Config struct {
	// Domain is the mail domain of every address. Default "agents.localhost".
	Domain string
	// SMTPListen is the SMTP listen address. Default "127.0.0.1:2525";
	// use "127.0.0.1:0" for a free port (see SMTPAddr).
	SMTPListen string
	// PhonePool lists the numbers (E.164) that can be leased to identities.
	// Empty: identities have no phone.
	PhonePool []string
	// TwilioAuthToken verifies X-Twilio-Signature on inbound SMS. Required
	// for the SMS handler to accept anything unless AllowUnsignedSMS.
	TwilioAuthToken string
	// SMSWebhookURL is the full public URL Twilio posts to, used in the
	// signature. Default: rebuilt from the request (X-Forwarded-Proto and
	// Host honoured).
	SMSWebhookURL string
	// AllowUnsignedSMS accepts SMS webhooks without a signature (for local
	// development only). Default false.
	AllowUnsignedSMS bool
	// MaxMessageBytes bounds one mail message. Default 10 MiB.
	MaxMessageBytes int64
	// MaxRecipients bounds recipients per mail. Default 20.
	MaxRecipients int
	// MaxSMSBytes bounds an SMS webhook body. Default 64 KiB.
	MaxSMSBytes int64
	// Clock returns the current time. Default time.Now.
	Clock func() time.Time
	// Logger receives operational logs. Nil discards.
	Logger *slog.Logger
	// Rand is the source of message id randomness. Default crypto/rand.
	Rand io.Reader
}

func (c Config) withDefaults() Config {
	if c.Domain == "" {
		c.Domain = "agents.localhost"
	}
	c.Domain = strings.ToLower(c.Domain)
	if c.SMTPListen == "" {
		c.SMTPListen = "127.0.0.1:2525"
	}
	if c.MaxMessageBytes == 0 {
		c.MaxMessageBytes = 10 << 20
	}
	if c.MaxRecipients == 0 {
		c.MaxRecipients = 20
	}
	if c.MaxSMSBytes == 0 {
		c.MaxSMSBytes = 64 << 10
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
	return c
}

func (c Config) validate() error {
	if strings.ContainsAny(c.Domain, "@ \t\r\n") || !strings.Contains(c.Domain, ".") {
		return fmt.Errorf("local: config Domain %q is not a domain", c.Domain)
	}
	if c.MaxMessageBytes < 0 {
		return fmt.Errorf("local: config MaxMessageBytes %d is negative", c.MaxMessageBytes)
	}
	if c.MaxRecipients < 0 {
		return fmt.Errorf("local: config MaxRecipients %d is negative", c.MaxRecipients)
	}
	if c.MaxSMSBytes < 0 {
		return fmt.Errorf("local: config MaxSMSBytes %d is negative", c.MaxSMSBytes)
	}
	for i, n := range c.PhonePool {
		if !validPhone(n) {
			return fmt.Errorf("local: config PhonePool[%d] %q is not an E.164 number", i, n)
		}
	}
	return nil
}

func validPhone(n string) bool {
	if len(n) < 4 || len(n) > 16 || n[0] != '+' {
		return false
	}
	for _, r := range n[1:] {
		if r < '0' || r > '9' {
			return false
		}
	}
	return true
}

//go:embed migrations/*.sql
var migrations embed.FS

// Provider is the local identity provider.
type Provider struct {
	db   *sql.DB
	kv   *kvState // set by NewKV: state shared by every host
	cfg  Config
	log  *slog.Logger
	pool []string

	watch watchers

	mu   sync.Mutex
	smtp *smtp.Server
	addr string
	done chan error
}

// New applies the local provider's migrations to db and returns a provider.
// Call Start to listen for mail.
func New(db *sql.DB, cfg Config) (*Provider, error) {
	cfg = cfg.withDefaults()
	if err := cfg.validate(); err != nil {
		return nil, err
	}
	if db == nil {
		return nil, errors.New("local: New needs a database")
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	sub, err := fs.Sub(migrations, "migrations")
	if err != nil {
		return nil, err
	}
	if err := sqlmigrate.Apply(ctx, db, "local", sub); err != nil {
		return nil, err
	}
	for _, n := range cfg.PhonePool {
		if _, err := db.ExecContext(ctx, `INSERT OR IGNORE INTO identity_local_phones (number) VALUES (?)`, n); err != nil {
			return nil, fmt.Errorf("local: add pool number: %w", err)
		}
	}
	p := &Provider{db: db, cfg: cfg, log: cfg.Logger.With("component", "identity_local"), pool: append([]string(nil), cfg.PhonePool...)}
	p.watch.m = make(map[string]*watcher)
	return p, nil
}

// Name returns "local".
func (p *Provider) Name() string { return "local" }

// Domain returns the mail domain.
func (p *Provider) Domain() string { return p.cfg.Domain }

// Provision makes name@domain live for the identity and leases it a free
// pool number, if any (an exhausted pool gives an identity without phone).
// An address live for another identity is refused with an
// *identity.AddressTakenError naming it, unless that identity is
// req.Displace: then the address is taken over and the displaced
// identity's number returned to the pool.
func (p *Provider) Provision(ctx context.Context, req identity.ProvisionRequest) (identity.Account, error) {
	if req.IdentityID == "" || req.Name == "" || strings.ContainsAny(req.Name, "@ \t\r\n<>") {
		return identity.Account{}, fmt.Errorf("local: bad provision request %q", req.Name)
	}
	addr := strings.ToLower(req.Name) + "@" + p.cfg.Domain
	if p.kv != nil {
		return p.kvProvision(ctx, req, addr)
	}
	tx, err := p.db.BeginTx(ctx, nil)
	if err != nil {
		return identity.Account{}, err
	}
	defer tx.Rollback()
	// Take the write lock first so concurrent provisions serialize.
	// A live claim is taken over only from the identity req.Displace names.
	res, err := tx.ExecContext(ctx, `INSERT INTO identity_local_addresses (address, identity_id, live) VALUES (?, ?, 1)
		ON CONFLICT (address) DO UPDATE SET identity_id = excluded.identity_id, live = 1
		WHERE live = 0 OR identity_id = excluded.identity_id OR (? <> '' AND identity_id = ?)`,
		addr, req.IdentityID, req.Displace, req.Displace)
	if err != nil {
		return identity.Account{}, fmt.Errorf("local: claim %s: %w", addr, err)
	}
	if n, _ := res.RowsAffected(); n == 0 {
		var owner string
		if err := tx.QueryRowContext(ctx, `SELECT identity_id FROM identity_local_addresses WHERE address = ?`, addr).Scan(&owner); err != nil {
			return identity.Account{}, fmt.Errorf("local: claim %s: %w", addr, err)
		}
		return identity.Account{}, &identity.AddressTakenError{Address: addr, Owner: owner, Err: ErrAddressTaken}
	}
	displace := req.Displace != "" && req.Displace != req.IdentityID
	if displace {
		// The dead identity will never be released: give its number back.
		if _, err := tx.ExecContext(ctx, `UPDATE identity_local_phones SET identity_id = NULL, leased_at = NULL WHERE identity_id = ?`, req.Displace); err != nil {
			return identity.Account{}, fmt.Errorf("local: return phone: %w", err)
		}
	}
	phone, err := p.leasePhone(ctx, tx, req.IdentityID)
	if err != nil {
		return identity.Account{}, err
	}
	if err := tx.Commit(); err != nil {
		return identity.Account{}, fmt.Errorf("local: provision %s: %w", addr, err)
	}
	if displace {
		p.log.InfoContext(ctx, "address taken over from an identity that was never stored", "address", addr,
			"identity_id", req.IdentityID, "displaced_identity_id", req.Displace)
	}
	if phone == "" && len(p.pool) > 0 {
		p.log.WarnContext(ctx, "phone pool exhausted; identity has no phone", "identity_id", req.IdentityID)
	}
	return identity.Account{IdentityID: req.IdentityID, Name: req.Name, Email: addr, Phone: phone, Ref: req.IdentityID}, nil
}

func (p *Provider) leasePhone(ctx context.Context, tx *sql.Tx, identityID string) (string, error) {
	var phone string
	err := tx.QueryRowContext(ctx, `SELECT number FROM identity_local_phones WHERE identity_id = ?`, identityID).Scan(&phone)
	if err == nil {
		return phone, nil
	}
	if !errors.Is(err, sql.ErrNoRows) {
		return "", fmt.Errorf("local: lease phone: %w", err)
	}
	for _, n := range p.pool {
		res, err := tx.ExecContext(ctx, `UPDATE identity_local_phones SET identity_id = ?, leased_at = ? WHERE number = ? AND identity_id IS NULL`,
			identityID, p.cfg.Clock().UnixMilli(), n)
		if err != nil {
			return "", fmt.Errorf("local: lease phone: %w", err)
		}
		if k, _ := res.RowsAffected(); k == 1 {
			return n, nil
		}
	}
	return "", nil
}

// Release makes the identity's address refuse mail and returns its phone
// lease to the pool. Stored messages stay readable.
func (p *Provider) Release(ctx context.Context, acct identity.Account) error {
	if p.kv != nil {
		if err := p.kvRelease(ctx, acct); err != nil {
			return err
		}
		p.watch.notify(acct.IdentityID)
		return nil
	}
	tx, err := p.db.BeginTx(ctx, nil)
	if err != nil {
		return err
	}
	defer tx.Rollback()
	if _, err := tx.ExecContext(ctx, `UPDATE identity_local_addresses SET live = 0 WHERE identity_id = ?`, acct.IdentityID); err != nil {
		return fmt.Errorf("local: release address: %w", err)
	}
	if _, err := tx.ExecContext(ctx, `UPDATE identity_local_phones SET identity_id = NULL, leased_at = NULL WHERE identity_id = ?`, acct.IdentityID); err != nil {
		return fmt.Errorf("local: return phone: %w", err)
	}
	if err := tx.Commit(); err != nil {
		return fmt.Errorf("local: release: %w", err)
	}
	p.watch.notify(acct.IdentityID)
	return nil
}

// PhoneLeases returns the pool numbers currently leased, by number.
func (p *Provider) PhoneLeases(ctx context.Context) (map[string]string, error) {
	if p.kv != nil {
		return p.kvPhoneLeases(ctx)
	}
	rows, err := p.db.QueryContext(ctx, `SELECT number, identity_id FROM identity_local_phones WHERE identity_id IS NOT NULL`)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	out := map[string]string{}
	for rows.Next() {
		var n, id string
		if err := rows.Scan(&n, &id); err != nil {
			return nil, err
		}
		out[n] = id
	}
	return out, rows.Err()
}

// Messages returns the identity's stored messages, newest first.
func (p *Provider) Messages(ctx context.Context, acct identity.Account, q identity.MessageQuery) ([]identity.Message, error) {
	if p.kv != nil {
		return p.kvMessages(ctx, acct, q)
	}
	query := `SELECT id, kind, sender, recipient, subject, body, received_at FROM identity_local_messages WHERE identity_id = ?`
	args := []any{acct.IdentityID}
	if q.Kind != "" {
		query += ` AND kind = ?`
		args = append(args, string(q.Kind))
	}
	if !q.Since.IsZero() {
		query += ` AND received_at > ?`
		args = append(args, q.Since.UnixMicro())
	}
	query += ` ORDER BY received_at DESC, rowid DESC`
	if q.Limit > 0 {
		query += ` LIMIT ?`
		args = append(args, q.Limit)
	}
	rows, err := p.db.QueryContext(ctx, query, args...)
	if err != nil {
		return nil, fmt.Errorf("local: messages: %w", err)
	}
	defer rows.Close()
	out := []identity.Message{}
	for rows.Next() {
		var m identity.Message
		var kind string
		var at int64
		if err := rows.Scan(&m.ID, &kind, &m.From, &m.To, &m.Subject, &m.Body, &at); err != nil {
			return nil, fmt.Errorf("local: messages: %w", err)
		}
		m.Kind = identity.MessageKind(kind)
		m.ReceivedAt = time.UnixMicro(at).UTC()
		out = append(out, m)
	}
	return out, rows.Err()
}

// Watch returns a channel closed on the identity's next arrival.
func (p *Provider) Watch(acct identity.Account) (<-chan struct{}, func()) {
	if p.kv != nil {
		return p.kvWatch(acct.IdentityID)
	}
	return p.watch.add(acct.IdentityID)
}

// store saves one message and wakes the identity's watchers.
func (p *Provider) store(ctx context.Context, identityID string, m identity.Message) error {
	u, err := ulid.New(ulid.Timestamp(p.cfg.Clock()), p.cfg.Rand)
	if err != nil {
		return err
	}
	m.ID = strings.ToLower(u.String())
	if p.kv != nil {
		if err := p.kvStore(ctx, identityID, m); err != nil {
			return err
		}
		p.watch.notify(identityID)
		return nil
	}
	_, err = p.db.ExecContext(ctx, `INSERT INTO identity_local_messages (id, identity_id, kind, sender, recipient, subject, body, received_at)
		VALUES (?, ?, ?, ?, ?, ?, ?, ?)`, m.ID, identityID, string(m.Kind), m.From, m.To, m.Subject, m.Body, m.ReceivedAt.UnixMicro())
	if err != nil {
		return fmt.Errorf("local: store %s: %w", m.Kind, err)
	}
	p.watch.notify(identityID)
	return nil
}

// liveAddress returns the identity owning a live address, or "".
func (p *Provider) liveAddress(ctx context.Context, addr string) (string, error) {
	if p.kv != nil {
		return p.kvLiveAddress(ctx, addr)
	}
	var id string
	err := p.db.QueryRowContext(ctx, `SELECT identity_id FROM identity_local_addresses WHERE address = ? AND live = 1`, strings.ToLower(addr)).Scan(&id)
	if errors.Is(err, sql.ErrNoRows) {
		return "", nil
	}
	return id, err
}

// leasedNumber returns the live identity holding a pool number, or "".
func (p *Provider) leasedNumber(ctx context.Context, number string) (string, error) {
	if p.kv != nil {
		return p.kvLeasedNumber(ctx, number)
	}
	var id sql.NullString
	err := p.db.QueryRowContext(ctx, `SELECT identity_id FROM identity_local_phones WHERE number = ?`, number).Scan(&id)
	if errors.Is(err, sql.ErrNoRows) {
		return "", nil
	}
	return id.String, err
}

// watchers wakes waiters per identity: each arrival closes the current
// channel and the next Watch gets a fresh one.
type watchers struct {
	mu sync.Mutex
	m  map[string]*watcher
}

type watcher struct {
	ch   chan struct{}
	refs int
}

func (w *watchers) add(id string) (<-chan struct{}, func()) {
	w.mu.Lock()
	defer w.mu.Unlock()
	x := w.m[id]
	if x == nil {
		x = &watcher{ch: make(chan struct{})}
		w.m[id] = x
	}
	x.refs++
	var once sync.Once
	return x.ch, func() {
		once.Do(func() {
			w.mu.Lock()
			defer w.mu.Unlock()
			x.refs--
			if x.refs == 0 && w.m[id] == x {
				delete(w.m, id)
			}
		})
	}
}

func (w *watchers) notify(id string) {
	w.mu.Lock()
	defer w.mu.Unlock()
	if x := w.m[id]; x != nil {
		close(x.ch)
		delete(w.m, id)
	}
}
