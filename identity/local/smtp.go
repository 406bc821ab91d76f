package local

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"log"
	"net"
	"strings"
	"time"

	"github.com/emersion/go-smtp"

	"github.com/nightshift/nightshift/identity"
)

// Start listens for mail on Config.SMTPListen and serves it until Stop.
func (p *Provider) Start(ctx context.Context) error {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.smtp != nil {
		return errors.New("local: SMTP already started")
	}
	var lc net.ListenConfig
	ln, err := lc.Listen(ctx, "tcp", p.cfg.SMTPListen)
	if err != nil {
		return fmt.Errorf("local: listen smtp: %w", err)
	}
	s := smtp.NewServer(&backend{p: p})
	s.Domain = p.cfg.Domain
	s.MaxMessageBytes = p.cfg.MaxMessageBytes
	s.MaxRecipients = p.cfg.MaxRecipients
	s.ReadTimeout = 60 * time.Second
	s.WriteTimeout = 60 * time.Second
	s.ErrorLog = log.New(slogWriter{p}, "", 0)
	p.smtp, p.addr, p.done = s, ln.Addr().String(), make(chan error, 1)
	go func(done chan<- error) { done <- s.Serve(ln) }(p.done)
	p.log.InfoContext(ctx, "smtp listening", "addr", p.addr, "domain", p.cfg.Domain)
	return nil
}

// SMTPAddr returns the address the SMTP listener is bound to, once started.
func (p *Provider) SMTPAddr() string {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.addr
}

// Stop stops accepting connections, lets sessions in flight finish until
// ctx ends, then closes the rest.
func (p *Provider) Stop(ctx context.Context) error {
	p.mu.Lock()
	s, done := p.smtp, p.done
	p.smtp, p.addr = nil, ""
	p.mu.Unlock()
	if s == nil {
		return nil
	}
	err := s.Shutdown(ctx)
	if errors.Is(err, context.DeadlineExceeded) || errors.Is(err, context.Canceled) {
		err = s.Close()
	}
	if serr := <-done; serr != nil && !errors.Is(serr, smtp.ErrServerClosed) {
		return errors.Join(err, serr)
	}
	return err
}

type slogWriter struct{ p *Provider }

func (w slogWriter) Write(b []byte) (int, error) {
	w.p.log.Warn("smtp", "msg", strings.TrimSpace(string(b)))
	return len(b), nil
}

type backend struct{ p *Provider }

func (b *backend) NewSession(c *smtp.Conn) (smtp.Session, error) {
	return &session{p: b.p}, nil
}

type rcpt struct{ addr, identityID string }

type session struct {
	p    *Provider
	from string
	to   []rcpt
}

var errNoSuchUser = &smtp.SMTPError{Code: 550, EnhancedCode: smtp.EnhancedCode{5, 1, 1}, Message: "No such user here"}

func (s *session) Reset()        { s.from, s.to = "", nil }
func (s *session) Logout() error { return nil }

func (s *session) Mail(from string, opts *smtp.MailOptions) error {
	if opts != nil && opts.Size > 0 && opts.Size > s.p.cfg.MaxMessageBytes {
		return smtp.ErrDataTooLarge
	}
	s.from = from
	return nil
}

func (s *session) Rcpt(to string, _ *smtp.RcptOptions) error {
	local, domain, ok := strings.Cut(strings.ToLower(strings.Trim(to, "<> ")), "@")
	if !ok || domain != s.p.cfg.Domain || local == "" {
		return errNoSuchUser
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	id, err := s.p.liveAddress(ctx, local+"@"+domain)
	if err != nil {
		s.p.log.Error("smtp rcpt lookup", "err", err)
		return &smtp.SMTPError{Code: 451, EnhancedCode: smtp.EnhancedCode{4, 3, 0}, Message: "Temporary failure"}
	}
	if id == "" {
		return errNoSuchUser
	}
	s.to = append(s.to, rcpt{addr: local + "@" + domain, identityID: id})
	return nil
}

func (s *session) Data(r io.Reader) error {
	raw, err := io.ReadAll(r)
	if err != nil {
		return err // ErrDataTooLarge reaches the client as 552
	}
	if len(s.to) == 0 {
		return &smtp.SMTPError{Code: 554, EnhancedCode: smtp.EnhancedCode{5, 5, 1}, Message: "No valid recipients"}
	}
	subject, body := parseMail(bytes.NewReader(raw))
	now := s.p.cfg.Clock().UTC()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	for _, to := range s.to {
		m := identity.Message{Kind: identity.KindEmail, From: s.from, To: to.addr, Subject: subject, Body: body, ReceivedAt: now}
		if err := s.p.store(ctx, to.identityID, m); err != nil {
			s.p.log.Error("smtp store", "identity_id", to.identityID, "err", err)
			return &smtp.SMTPError{Code: 451, EnhancedCode: smtp.EnhancedCode{4, 3, 0}, Message: "Temporary failure"}
		}
	}
	s.p.log.Info("mail received", "recipients", len(s.to), "bytes", len(raw))
	return nil
}
