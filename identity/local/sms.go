package local

import (
	"crypto/hmac"
	"crypto/sha1"
	"encoding/base64"
	"errors"
	"net/http"
	"net/url"
	"sort"
	"strings"

	"github.com/nightshift/nightshift/identity"
)

// SMSHandler returns the handler for POST /hooks/sms: Twilio's inbound
// message webhook (application/x-www-form-urlencoded with From, To, Body,
// MessageSid). It answers 401 without a valid X-Twilio-Signature, 404 for a
// number not leased to a live identity, 413 over MaxSMSBytes, and 200 with
// an empty TwiML response once the message is stored.
func (p *Provider) SMSHandler() http.Handler {
	return http.HandlerFunc(p.serveSMS)
}

func (p *Provider) serveSMS(w http.ResponseWriter, r *http.Request) {
	if r.Method != http.MethodPost {
		w.Header().Set("Allow", http.MethodPost)
		http.Error(w, "method not allowed", http.StatusMethodNotAllowed)
		return
	}
	r.Body = http.MaxBytesReader(w, r.Body, p.cfg.MaxSMSBytes)
	if err := r.ParseForm(); err != nil {
		var mbe *http.MaxBytesError
		if errors.As(err, &mbe) {
			http.Error(w, "body too large", http.StatusRequestEntityTooLarge)
			return
		}
		http.Error(w, "malformed form body", http.StatusBadRequest)
		return
	}
	if !p.cfg.AllowUnsignedSMS {
		if p.cfg.TwilioAuthToken == "" || !p.validSignature(r) {
			http.Error(w, "missing or bad X-Twilio-Signature", http.StatusUnauthorized)
			return
		}
	}
	to, from, body := r.PostForm.Get("To"), r.PostForm.Get("From"), r.PostForm.Get("Body")
	if to == "" {
		http.Error(w, "missing To", http.StatusBadRequest)
		return
	}
	id, err := p.leasedNumber(r.Context(), to)
	if err != nil {
		p.log.ErrorContext(r.Context(), "sms lookup", "err", err)
		http.Error(w, "could not store message", http.StatusServiceUnavailable)
		return
	}
	if id == "" {
		http.Error(w, "number not leased to a live identity", http.StatusNotFound)
		return
	}
	m := identity.Message{Kind: identity.KindSMS, From: from, To: to, Body: body, ReceivedAt: p.cfg.Clock().UTC()}
	if err := p.store(r.Context(), id, m); err != nil {
		p.log.ErrorContext(r.Context(), "sms store", "identity_id", id, "err", err)
		http.Error(w, "could not store message", http.StatusServiceUnavailable)
		return
	}
	w.Header().Set("Content-Type", "text/xml")
	_, _ = w.Write([]byte(`<?xml version="1.0" encoding="UTF-8"?><Response></Response>`))
}

// validSignature checks the request's signature against the webhook URL,
// also with the default port added or removed, as Twilio's own libraries
// do (the port Twilio signs depends on how the URL was configured).
func (p *Provider) validSignature(r *http.Request) bool {
	sig := r.Header.Get("X-Twilio-Signature")
	u := p.webhookURL(r)
	if ValidTwilioSignature(p.cfg.TwilioAuthToken, sig, u, r.PostForm) {
		return true
	}
	pu, err := url.Parse(u)
	if err != nil {
		return false
	}
	def := map[string]string{"http": "80", "https": "443"}[pu.Scheme]
	switch {
	case pu.Port() == "" && def != "":
		pu.Host += ":" + def
	case pu.Port() == def:
		pu.Host = pu.Hostname()
	default:
		return false
	}
	return ValidTwilioSignature(p.cfg.TwilioAuthToken, sig, pu.String(), r.PostForm)
}

// webhookURL is the URL Twilio signed: the configured one, or the request's
// own URL as seen from outside.
func (p *Provider) webhookURL(r *http.Request) string {
	if p.cfg.SMSWebhookURL != "" {
		return p.cfg.SMSWebhookURL
	}
	scheme := "http"
	if r.TLS != nil {
		scheme = "https"
	}
	if fp := r.Header.Get("X-Forwarded-Proto"); fp != "" {
		scheme = strings.ToLower(strings.TrimSpace(strings.Split(fp, ",")[0]))
	}
	return scheme + "://" + r.Host + r.URL.RequestURI()
}

// TwilioSignature computes Twilio's request signature: base64 of the
// HMAC-SHA1, keyed with the auth token, of the full URL followed by every
// POST parameter name and value, sorted by name.
func TwilioSignature(authToken, fullURL string, params url.Values) string {
	keys := make([]string, 0, len(params))
	for k := range params {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	var b strings.Builder
	b.WriteString(fullURL)
	for _, k := range keys {
		vs := append([]string(nil), params[k]...)
		sort.Strings(vs)
		for _, v := range vs {
			b.WriteString(k)
			b.WriteString(v)
		}
	}
	mac := hmac.New(sha1.New, []byte(authToken))
	mac.Write([]byte(b.String()))
	return base64.StdEncoding.EncodeToString(mac.Sum(nil))
}

// ValidTwilioSignature reports whether sig is Twilio's signature of the
// request, compared in constant time.
func ValidTwilioSignature(authToken, sig, fullURL string, params url.Values) bool {
	if sig == "" {
		return false
	}
	want := TwilioSignature(authToken, fullURL, params)
	return hmac.Equal([]byte(sig), []byte(want))
}
