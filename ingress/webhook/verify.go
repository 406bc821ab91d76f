package webhook

import (
	"crypto/hmac"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"time"
)

// Verification errors. All of them are answered 401.
var (
	ErrNoSecret         = errors.New("webhook: no secret configured")
	ErrMissingSignature = errors.New("webhook: missing signature")
	ErrBadSignature     = errors.New("webhook: signature mismatch")
	ErrStaleTimestamp   = errors.New("webhook: timestamp outside the allowed window")
)

// SignGitHub returns the X-Hub-Signature-256 header value for body.
func SignGitHub(secret string, body []byte) string {
	return "sha256=" + hexHMAC(secret, body)
}

// SignLinear returns the Linear-Signature header value for body.
func SignLinear(secret string, body []byte) string { return hexHMAC(secret, body) }

// SignSlack returns the X-Slack-Signature header value for a request sent
// at timestamp ts (unix seconds, as in X-Slack-Request-Timestamp).
func SignSlack(secret, ts string, body []byte) string {
	return "v0=" + hex.EncodeToString(slackMAC(secret, ts, body))
}

// slackMAC is Slack's v0 signature: the HMAC-SHA256 of "v0:<ts>:<body>".
func slackMAC(secret, ts string, body []byte) []byte {
	m := hmac.New(sha256.New, []byte(secret))
	m.Write([]byte("v0:" + ts + ":"))
	m.Write(body)
	return m.Sum(nil)
}

func hexHMAC(secret string, body []byte) string { return hex.EncodeToString(hmacSHA256(secret, body)) }

// hmacSHA256 is the HMAC-SHA256 of body under secret.
func hmacSHA256(secret string, body []byte) []byte {
	m := hmac.New(sha256.New, []byte(secret))
	m.Write(body)
	return m.Sum(nil)
}

// VerifyGitHub checks header (the X-Hub-Signature-256 value) against body
// with each secret. The SHA-1 header is never consulted.
func VerifyGitHub(secrets []string, header string, body []byte) error {
	if len(secrets) == 0 {
		return ErrNoSecret
	}
	if header == "" {
		return ErrMissingSignature
	}
	hexSig, ok := strings.CutPrefix(header, "sha256=")
	if !ok {
		return ErrBadSignature
	}
	return matchAny(secrets, hexSig, func(secret string) []byte { return hmacSHA256(secret, body) })
}

// VerifyLinear checks header (the Linear-Signature value, hex HMAC-SHA256 of
// the body) with each secret. The timestamp is checked after parsing by
// CheckLinearTimestamp.
func VerifyLinear(secrets []string, header string, body []byte) error {
	if len(secrets) == 0 {
		return ErrNoSecret
	}
	if header == "" {
		return ErrMissingSignature
	}
	return matchAny(secrets, header, func(secret string) []byte { return hmacSHA256(secret, body) })
}

// CheckLinearTimestamp reports whether webhookTimestamp (unix milliseconds)
// is within skew of now.
func CheckLinearTimestamp(ms int64, now time.Time, skew time.Duration) error {
	if ms <= 0 {
		return fmt.Errorf("%w: webhookTimestamp missing", ErrStaleTimestamp)
	}
	d := now.Sub(time.UnixMilli(ms))
	if d > skew || d < -skew {
		return ErrStaleTimestamp
	}
	return nil
}

// VerifySlack checks a Slack v0 signature over "v0:ts:body" and that ts
// (unix seconds) is within skew of now. The timestamp is checked first, as
// it is part of the signed string.
func VerifySlack(secrets []string, ts, header string, body []byte, now time.Time, skew time.Duration) error {
	if len(secrets) == 0 {
		return ErrNoSecret
	}
	if header == "" || ts == "" {
		return ErrMissingSignature
	}
	sec, err := strconv.ParseInt(ts, 10, 64)
	if err != nil || sec <= 0 || sec > 1<<40 {
		return ErrStaleTimestamp
	}
	d := now.Sub(time.Unix(sec, 0))
	if d > skew || d < -skew {
		return ErrStaleTimestamp
	}
	hexSig, ok := strings.CutPrefix(header, "v0=")
	if !ok {
		return ErrBadSignature
	}
	return matchAny(secrets, hexSig, func(secret string) []byte { return slackMAC(secret, ts, body) })
}

// matchAny decodes hexSig and compares it in constant time with the MAC of
// every secret. It checks all secrets so the time taken does not reveal
// which one matched.
func matchAny(secrets []string, hexSig string, mac func(secret string) []byte) error {
	got, err := hex.DecodeString(hexSig)
	if err != nil || len(got) != sha256.Size {
		return ErrBadSignature
	}
	ok := 0
	for _, s := range secrets {
		if s == "" {
			continue
		}
		ok |= boolInt(hmac.Equal(got, mac(s)))
	}
	if ok == 0 {
		return ErrBadSignature
	}
	return nil
}

func boolInt(b bool) int {
	if b {
		return 1
	}
	return 0
}
