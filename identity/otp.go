package identity

import (
	"log/slog"
	"net/url"
	"regexp"
	"strings"
	"time"
)

// OTP is a one-time code or verification link found in a message.
type OTP struct {
	Code       string      `json:"code,omitempty"`
	Link       string      `json:"link,omitempty"`
	MessageID  string      `json:"message_id"`
	Kind       MessageKind `json:"kind"`
	From       string      `json:"from"`
	ReceivedAt time.Time   `json:"received_at"`
}

// LogValue keeps the code and link out of logs.
func (o OTP) LogValue() slog.Value {
	return slog.GroupValue(slog.String("message_id", o.MessageID), slog.String("code", "REDACTED"))
}

// FindOTP returns the code or link of the newest message (msgs are newest
// first) that contains one.
func FindOTP(msgs []Message) (OTP, bool) {
	for _, m := range msgs {
		code, link := ExtractOTP(m.Subject + "\n" + m.Body)
		if code != "" || link != "" {
			return OTP{Code: code, Link: link, MessageID: m.ID, Kind: m.Kind, From: m.From, ReceivedAt: m.ReceivedAt}, true
		}
	}
	return OTP{}, false
}

var (
	urlRe = regexp.MustCompile(`https?://[^\s<>"')\]]+`)
	// Candidate codes: 4-8 digits (optionally split 3+3 or 4+4), or
	// upper-case letter/digit groups joined by a dash (ABC-123, G-482913),
	// or a 4-8 character upper-case alphanumeric run.
	codeRe    = regexp.MustCompile(`(?:^|[^A-Za-z0-9-])((?:\d{3}[ -]\d{3})|(?:\d{4}[ -]\d{4})|(?:[A-Z0-9]{1,5}-[A-Z0-9]{2,8})|(?:\d{4,8})|(?:[A-Z0-9]{4,8}))(?:$|[^A-Za-z0-9-])`)
	keywordRe = regexp.MustCompile(`(?i)\b(code|otp|passcode|pass code|pin|one[- ]time|verification|verify|security|confirm|login|sign[- ]in|2fa|token)\b`)
	yearRe    = regexp.MustCompile(`^(19|20)\d\d$`)
	linkHints = []string{"token", "code", "otp", "verify", "verification", "confirm", "magic", "activate", "login", "signin", "sign-in", "reset", "auth"}
)

// ExtractOTP finds the most likely one-time code and verification link in
// text. Either may be empty.
func ExtractOTP(text string) (code, link string) {
	for _, u := range urlRe.FindAllString(text, -1) {
		if link == "" && isTokenLink(u) {
			link = strings.TrimRight(u, ".,;:!")
		}
	}
	plain := urlRe.ReplaceAllString(text, " ")
	kw := keywordRe.FindAllStringIndex(plain, -1)
	best, bestScore := "", 0
	for _, m := range codeRe.FindAllStringSubmatchIndex(plain, -1) {
		start, end := m[2], m[3]
		c := plain[start:end]
		score := codeScore(c)
		if score == 0 || (start > 0 && strings.ContainsRune("#$€£", rune(plain[start-1]))) {
			continue // order numbers and prices
		}
		for _, k := range kw {
			// "code: 123456" or "123456 is your code".
			if (k[1] <= start && start-k[1] <= 48) || (k[0] >= end && k[0]-end <= 32) {
				score += 3
				break
			}
		}
		if score > bestScore {
			best, bestScore = c, score
		}
	}
	if bestScore >= 2 {
		code = best
	}
	return code, link
}

// codeScore rates how much c looks like a one-time code on its own; 0
// means it is not one.
func codeScore(c string) int {
	hasDigit, hasLetter := false, false
	for _, r := range c {
		switch {
		case r >= '0' && r <= '9':
			hasDigit = true
		case r >= 'A' && r <= 'Z':
			hasLetter = true
		}
	}
	switch {
	case !hasDigit:
		return 0 // words in capitals, not codes
	case !hasLetter && yearRe.MatchString(c):
		return 1
	case !hasLetter:
		return 2
	case strings.Contains(c, "-"):
		return 2
	default:
		return 1
	}
}

func isTokenLink(raw string) bool {
	u, err := url.Parse(raw)
	if err != nil {
		return false
	}
	lower := strings.ToLower(u.Path)
	for k, vs := range u.Query() {
		k = strings.ToLower(k)
		for _, h := range linkHints {
			if strings.Contains(k, h) && len(vs) > 0 && vs[0] != "" {
				return true
			}
		}
	}
	for _, h := range linkHints {
		if strings.Contains(lower, h) {
			return true
		}
	}
	return false
}
