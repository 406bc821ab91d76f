package webhook

import (
	"errors"
	"fmt"
	"net/http"
)

// Errors the handler maps to HTTP answers (see statusOf).
var (
	ErrTooLarge    = errors.New("webhook: body too large")
	ErrUnavailable = errors.New("webhook: event could not be stored")
	// ErrBodyTimeout is a body not received within Config.BodyTimeout (408).
	ErrBodyTimeout = errors.New("webhook: body not received in time")
	// ErrBusy is a delivery arriving while Config.MaxReading bodies are
	// being read (503 with Retry-After).
	ErrBusy = errors.New("webhook: too many deliveries being read")
	// ErrPermissionCheck is a trigger whose author's permission could not
	// be looked up (the forge API failed or timed out): 503, the event is
	// not stored and the delivery not remembered, so a redelivery decides
	// again.
	ErrPermissionCheck = errors.New("webhook: permission check failed")
)

// MalformedError is a body or header that cannot be understood (400).
type MalformedError struct{ Reason string }

func (e *MalformedError) Error() string { return "webhook: malformed delivery: " + e.Reason }

func malformedf(format string, args ...any) error {
	return &MalformedError{Reason: fmt.Sprintf(format, args...)}
}

// statusOf maps an error to the HTTP status and the short message the
// sender sees. It is the only place errors become status codes; anything
// unexpected is 503 so the sender retries and nothing is lost.
func statusOf(err error) (int, string) {
	var mal *MalformedError
	switch {
	case errors.Is(err, ErrTooLarge):
		return http.StatusRequestEntityTooLarge, "body too large"
	case errors.Is(err, ErrBodyTimeout):
		return http.StatusRequestTimeout, "body not received in time"
	case errors.Is(err, ErrBusy):
		return http.StatusServiceUnavailable, "too many deliveries in progress, retry later"
	case errors.Is(err, ErrPermissionCheck):
		return http.StatusServiceUnavailable, "could not check the author's permission with the forge's API; the event was not stored, redeliver it later"
	case errors.Is(err, ErrNoSecret), errors.Is(err, ErrMissingSignature),
		errors.Is(err, ErrBadSignature), errors.Is(err, ErrStaleTimestamp):
		return http.StatusUnauthorized, "signature verification failed"
	case errors.As(err, &mal):
		return http.StatusBadRequest, mal.Reason
	default:
		return http.StatusServiceUnavailable, "event could not be stored, retry later"
	}
}
