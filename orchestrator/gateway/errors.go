package gateway

import (
	"encoding/json"
	"net/http"
)

// error classes, mapped to each provider's error type in writeError.
const (
	errNotFound = iota
	errAuth
	errBudget
	errInvalid
	errUpstream
)

// budgetStatus is the status of a budget refusal: 400 invalid_request_error
// (what Anthropic answers for an exhausted credit balance). Neither Claude
// Code nor Codex retries a 400, and both show the message; Codex replaces
// the message of a 429 insufficient_quota with its own, so that is not used.
func budgetStatus(provider string) int {
	return http.StatusBadRequest
}

// writeError answers in the provider's error format. It is the one place
// that maps gateway failures to HTTP.
func writeError(w http.ResponseWriter, provider string, status, class int, msg string) {
	var body any
	if provider == "anthropic" {
		typ := map[int]string{errNotFound: "not_found_error", errAuth: "authentication_error",
			errBudget: "invalid_request_error", errInvalid: "invalid_request_error", errUpstream: "api_error"}[class]
		body = map[string]any{"type": "error", "error": map[string]any{"type": typ, "message": msg}}
	} else {
		typ := map[int]string{errNotFound: "invalid_request_error", errAuth: "invalid_request_error",
			errBudget: "invalid_request_error", errInvalid: "invalid_request_error", errUpstream: "server_error"}[class]
		code := map[int]any{errAuth: "invalid_api_key", errBudget: "budget_exceeded"}[class]
		body = map[string]any{"error": map[string]any{"message": msg, "type": typ, "param": nil, "code": code}}
	}
	b, _ := json.Marshal(body)
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("X-Nightshift-Gateway", "1")
	w.WriteHeader(status)
	_, _ = w.Write(b)
}
