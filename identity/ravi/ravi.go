// Package ravi is the identity provider backed by the Ravi REST API
// (identities with an email inbox and a phone number). It creates one Ravi
// identity per Nightshift identity and deletes it on release. Calls carry
// the API key as a bearer token and scope per-identity reads with
// ?identity=<uuid>.
//
// Ravi offers no push channel to us, so Watch wakes waiters every
// PollInterval to re-read the inbox; that is the only polling in the
// identity packages.
package ravi

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/url"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/nightshift/nightshift/identity"
)

var _ identity.Provider = (*Provider)(nil)

// Errors returned by the provider.
var (
	ErrAPI       = errors.New("ravi: api error")
	ErrNotFound  = errors.New("ravi: not found")
	ErrRateLimit = errors.New("ravi: rate limited")
)

// APIError is a non-2xx answer from Ravi.
type APIError struct {
	Status int
	Detail string
}

func (e *APIError) Error() string {
	return fmt.Sprintf("ravi: api error %d: %s", e.Status, e.Detail)
}

// Unwrap maps statuses to the package sentinels.
func (e *APIError) Unwrap() error {
	switch e.Status {
	case http.StatusNotFound:
		return ErrNotFound
	case http.StatusTooManyRequests:
		return ErrRateLimit
	}
	return ErrAPI
}

// Key is a Ravi API key; it never prints.
type Key string

// LogValue hides the key.
func (Key) LogValue() slog.Value { return slog.StringValue("REDACTED") }

// String hides the key.
func (Key) String() string { return "REDACTED" }

// Config configures the Ravi provider.
type Config struct {
	// APIURL is the Ravi API base URL. Default "https://ravi.app".
	APIURL string
	// Key is a management key able to create and delete identities. Required.
	Key Key
	// HTTPClient makes the calls. Default: a client with a 30s timeout.
	HTTPClient *http.Client
	// PollInterval is how often Watch wakes waiters. Default 3s.
	PollInterval time.Duration
	// Logger receives operational logs. Nil discards.
	Logger *slog.Logger
}

func (c Config) withDefaults() Config {
	if c.APIURL == "" {
		c.APIURL = "https://ravi.app"
	}
	c.APIURL = strings.TrimSuffix(c.APIURL, "/")
	if c.HTTPClient == nil {
		c.HTTPClient = &http.Client{Timeout: 30 * time.Second}
	}
	if c.PollInterval == 0 {
		c.PollInterval = 3 * time.Second
	}
	if c.Logger == nil {
		c.Logger = slog.New(slog.DiscardHandler)
	}
	return c
}

func (c Config) validate() error {
	if c.Key == "" {
		return errors.New("ravi: config Key is required")
	}
	u, err := url.Parse(c.APIURL)
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		return fmt.Errorf("ravi: config APIURL %q is not an http(s) URL", c.APIURL)
	}
	if c.PollInterval < 0 {
		return fmt.Errorf("ravi: config PollInterval %v is negative", c.PollInterval)
	}
	return nil
}

// Provider talks to Ravi.
type Provider struct {
	cfg Config
	log *slog.Logger
}

// New returns a Ravi provider.
func New(cfg Config) (*Provider, error) {
	cfg = cfg.withDefaults()
	if err := cfg.validate(); err != nil {
		return nil, err
	}
	return &Provider{cfg: cfg, log: cfg.Logger.With("component", "identity_ravi")}, nil
}

// Name returns "ravi".
func (p *Provider) Name() string { return "ravi" }

// Identity is a Ravi identity as the API returns it.
type Identity struct {
	UUID      string `json:"uuid"`
	Name      string `json:"name"`
	Email     string `json:"inbox"`
	Phone     string `json:"phone"`
	CreatedDt string `json:"created_dt,omitempty"`
	UpdatedDt string `json:"updated_dt,omitempty"`
}

// EmailThread is one row of GET /api/email-inbox/.
type EmailThread struct {
	ThreadID        string    `json:"thread_id"`
	Subject         string    `json:"subject"`
	Preview         string    `json:"preview"`
	FromEmail       string    `json:"from_email"`
	Inbox           string    `json:"inbox"`
	MessageCount    int       `json:"message_count"`
	UnreadCount     int       `json:"unread_count"`
	LatestMessageDt time.Time `json:"latest_message_dt"`
}

// EmailThreadDetail is GET /api/email-inbox/<thread_id>/.
type EmailThreadDetail struct {
	ThreadID     string         `json:"thread_id"`
	Subject      string         `json:"subject"`
	MessageCount int            `json:"message_count"`
	Messages     []EmailMessage `json:"messages"`
}

// EmailMessage is one mail in a thread.
type EmailMessage struct {
	ID          int       `json:"id"`
	FromEmail   string    `json:"from_email"`
	ToEmail     string    `json:"to_email"`
	CC          string    `json:"cc"`
	Subject     string    `json:"subject"`
	TextContent string    `json:"text_content"`
	HTMLContent string    `json:"html_content"`
	Direction   string    `json:"direction"`
	IsRead      bool      `json:"is_read"`
	CreatedDt   time.Time `json:"created_dt"`
}

// SMSConversation is one row of GET /api/sms-inbox/.
type SMSConversation struct {
	ConversationID  string    `json:"conversation_id"`
	FromNumber      string    `json:"from_number"`
	PhoneNumber     string    `json:"phone_number"`
	Preview         string    `json:"preview"`
	MessageCount    int       `json:"message_count"`
	UnreadCount     int       `json:"unread_count"`
	LatestMessageDt time.Time `json:"latest_message_dt"`
}

// SMSConversationDetail is GET /api/sms-inbox/<conversation_id>/.
type SMSConversationDetail struct {
	ConversationID string       `json:"conversation_id"`
	FromNumber     string       `json:"from_number"`
	MessageCount   int          `json:"message_count"`
	Messages       []SMSMessage `json:"messages"`
}

// SMSMessage is one SMS in a conversation.
type SMSMessage struct {
	ID        int       `json:"id"`
	Body      string    `json:"body"`
	Direction string    `json:"direction"`
	IsRead    bool      `json:"is_read"`
	CreatedDt time.Time `json:"created_dt"`
}

// Provision creates a Ravi identity named req.Name whose email local part
// is the name, or an address Ravi generates when that local part is taken.
func (p *Provider) Provision(ctx context.Context, req identity.ProvisionRequest) (identity.Account, error) {
	var out Identity
	err := p.do(ctx, http.MethodPost, "/api/identities/", nil, map[string]string{"name": req.Name, "email": req.Name}, &out)
	var apiErr *APIError
	if errors.As(err, &apiErr) && (apiErr.Status == http.StatusBadRequest || apiErr.Status == http.StatusConflict) {
		// The local part is taken on Ravi's shared domain: let Ravi pick one.
		p.log.InfoContext(ctx, "ravi email local part taken; using a generated address", "name", req.Name)
		out = Identity{}
		err = p.do(ctx, http.MethodPost, "/api/identities/", nil, map[string]string{"name": req.Name}, &out)
	}
	if err != nil {
		return identity.Account{}, fmt.Errorf("ravi: create identity %s: %w", req.Name, err)
	}
	if out.UUID == "" {
		return identity.Account{}, fmt.Errorf("ravi: create identity %s: %w: no uuid in answer", req.Name, ErrAPI)
	}
	p.log.InfoContext(ctx, "ravi identity created", "identity_id", req.IdentityID, "ravi_uuid", out.UUID)
	return identity.Account{IdentityID: req.IdentityID, Name: req.Name, Email: out.Email, Phone: out.Phone, Ref: out.UUID}, nil
}

// Release deletes the Ravi identity; one already gone is not an error.
func (p *Provider) Release(ctx context.Context, acct identity.Account) error {
	if acct.Ref == "" {
		return nil
	}
	err := p.do(ctx, http.MethodDelete, "/api/identities/"+url.PathEscape(acct.Ref)+"/", nil, nil, nil)
	if err != nil && !errors.Is(err, ErrNotFound) {
		return fmt.Errorf("ravi: delete identity %s: %w", acct.Ref, err)
	}
	return nil
}

// Messages reads the identity's inboxes: threads and conversations whose
// latest message is after q.Since, then their incoming messages.
func (p *Provider) Messages(ctx context.Context, acct identity.Account, q identity.MessageQuery) ([]identity.Message, error) {
	scope := url.Values{"identity": {acct.Ref}}
	var out []identity.Message
	if q.Kind == "" || q.Kind == identity.KindEmail {
		var threads []EmailThread
		if err := p.do(ctx, http.MethodGet, "/api/email-inbox/", scope, nil, &threads); err != nil {
			return nil, fmt.Errorf("ravi: email inbox: %w", err)
		}
		for _, t := range threads {
			if !q.Since.IsZero() && !t.LatestMessageDt.IsZero() && !t.LatestMessageDt.After(q.Since) {
				continue
			}
			var d EmailThreadDetail
			if err := p.do(ctx, http.MethodGet, "/api/email-inbox/"+url.PathEscape(t.ThreadID)+"/", scope, nil, &d); err != nil {
				return nil, fmt.Errorf("ravi: email thread: %w", err)
			}
			for _, m := range d.Messages {
				if m.Direction != "" && m.Direction != "incoming" {
					continue
				}
				body := m.TextContent
				if body == "" {
					body = m.HTMLContent
				}
				out = append(out, identity.Message{ID: "email-" + strconv.Itoa(m.ID), Kind: identity.KindEmail, From: m.FromEmail,
					To: m.ToEmail, Subject: m.Subject, Body: body, ReceivedAt: m.CreatedDt.UTC()})
			}
		}
	}
	if q.Kind == "" || q.Kind == identity.KindSMS {
		var convs []SMSConversation
		if err := p.do(ctx, http.MethodGet, "/api/sms-inbox/", scope, nil, &convs); err != nil {
			return nil, fmt.Errorf("ravi: sms inbox: %w", err)
		}
		for _, c := range convs {
			if !q.Since.IsZero() && !c.LatestMessageDt.IsZero() && !c.LatestMessageDt.After(q.Since) {
				continue
			}
			var d SMSConversationDetail
			if err := p.do(ctx, http.MethodGet, "/api/sms-inbox/"+url.PathEscape(c.ConversationID)+"/", scope, nil, &d); err != nil {
				return nil, fmt.Errorf("ravi: sms conversation: %w", err)
			}
			for _, m := range d.Messages {
				if m.Direction != "" && m.Direction != "incoming" {
					continue
				}
				out = append(out, identity.Message{ID: "sms-" + strconv.Itoa(m.ID), Kind: identity.KindSMS, From: c.FromNumber,
					To: c.PhoneNumber, Body: m.Body, ReceivedAt: m.CreatedDt.UTC()})
			}
		}
	}
	sort.SliceStable(out, func(i, j int) bool { return out[i].ReceivedAt.After(out[j].ReceivedAt) })
	return q.Filter(out), nil
}

// Watch wakes the caller after PollInterval so it reads the inbox again.
func (p *Provider) Watch(identity.Account) (<-chan struct{}, func()) {
	ch := make(chan struct{})
	t := time.AfterFunc(p.cfg.PollInterval, func() { close(ch) })
	return ch, func() { t.Stop() }
}

// Secret returns the value of a Ravi secret of the identity (GET
// /api/secrets/?key=KEY&identity=UUID), or ErrNotFound.
func (p *Provider) Secret(ctx context.Context, acct identity.Account, key string) (string, error) {
	var out []struct {
		Key   string `json:"key"`
		Value string `json:"value"`
	}
	if err := p.do(ctx, http.MethodGet, "/api/secrets/", url.Values{"identity": {acct.Ref}, "key": {key}}, nil, &out); err != nil {
		return "", fmt.Errorf("ravi: secret %s: %w", key, err)
	}
	for _, s := range out {
		if s.Key == key {
			return s.Value, nil
		}
	}
	return "", fmt.Errorf("%w: secret %s", ErrNotFound, key)
}

const maxAnswer = 16 << 20

func (p *Provider) do(ctx context.Context, method, path string, query url.Values, in, out any) error {
	u := p.cfg.APIURL + path
	if len(query) > 0 {
		u += "?" + query.Encode()
	}
	var body io.Reader
	if in != nil {
		b, err := json.Marshal(in)
		if err != nil {
			return err
		}
		body = bytes.NewReader(b)
	}
	req, err := http.NewRequestWithContext(ctx, method, u, body)
	if err != nil {
		return err
	}
	req.Header.Set("Authorization", "Bearer "+string(p.cfg.Key))
	req.Header.Set("Accept", "application/json")
	if in != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	resp, err := p.cfg.HTTPClient.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(io.LimitReader(resp.Body, maxAnswer))
	if err != nil {
		return err
	}
	if resp.StatusCode >= 300 {
		var e struct {
			Detail string `json:"detail"`
		}
		if json.Unmarshal(b, &e) != nil || e.Detail == "" {
			e.Detail = http.StatusText(resp.StatusCode)
		}
		return &APIError{Status: resp.StatusCode, Detail: e.Detail}
	}
	if out != nil && len(b) > 0 {
		if err := json.Unmarshal(b, out); err != nil {
			return fmt.Errorf("%w: decode %s %s: %v", ErrAPI, method, path, err)
		}
	}
	return nil
}
