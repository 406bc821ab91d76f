package orchestrator

import (
	"context"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"net/http"
	"reflect"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/nightshift/nightshift/worktree"
)

// StepClass says what a failed step means for its run.
type StepClass uint8

const (
	// StepPermanent fails the task: trying again cannot help (the agent
	// failed, tests failed, a protected path, a secret in the diff, no
	// changes, bad configuration, a 4xx from a remote). The zero value.
	StepPermanent StepClass = iota
	// StepRetryable hands the run back to be delivered again after a
	// backoff: the step failed on something that may pass by itself (a
	// network error, a remote call's timeout, a 5xx or 429 from a forge or
	// Ravi, a busy database, a git transport error, a JetStream timeout).
	StepRetryable
)

// StepError is a failed step with a machine-readable reason.
type StepError struct {
	Reason string // e.g. agent_failed, tests_failed, push_rejected, timed_out
	Err    error
	// Class is whether the run may be tried again (StepPermanent unless
	// the failure is known to be transient).
	Class StepClass
	// RetryAfter is how long the remote asked to wait before trying again
	// (Retry-After, a rate limit's reset); zero leaves it to the backoff.
	RetryAfter time.Duration
	// Attempts is set on a retryable step's final failure: how many
	// deliveries of the run tried it.
	Attempts int
}

func (e *StepError) Error() string { return e.Err.Error() }
func (e *StepError) Unwrap() error { return e.Err }

// stepErr is a permanent step failure.
func stepErr(reason string, format string, args ...any) error {
	return &StepError{Reason: reason, Err: fmt.Errorf(format, args...)}
}

// remoteErr is a step that failed calling something remote (a forge, Ravi,
// a git remote, the vault, NATS): retryable when the error it wraps is
// transient, else permanent.
func remoteErr(reason string, format string, args ...any) error {
	err := fmt.Errorf(format, args...)
	se := &StepError{Reason: reason, Err: err}
	if ok, after := transient(err); ok {
		se.Class, se.RetryAfter = StepRetryable, after
	}
	return se
}

// retryErr is a step failure that is retryable whatever its cause.
func retryErr(reason string, format string, args ...any) error {
	return &StepError{Reason: reason, Err: fmt.Errorf(format, args...), Class: StepRetryable}
}

// failure is the reason and text a failed run is recorded with.
func failure(err error) (reason, text string) {
	var se *StepError
	if errors.As(err, &se) {
		text = se.Error()
		if se.Attempts > 1 {
			text += fmt.Sprintf(" (after %d attempts)", se.Attempts)
		}
		return se.Reason, text
	}
	return "error", err.Error()
}

// Backoff between deliveries of a run whose step failed retryably: the
// n-th retry waits retryBase·4^(n-1), at most retryMax, half of it
// jittered; a remote's own RetryAfter is honoured up to retryAfterMax.
const (
	retryBase     = time.Second
	retryMax      = 5 * time.Minute
	retryAfterMax = 30 * time.Minute
)

// retryDecision says whether a run that failed with err on delivery attempt
// (1-based) is handed back, and after how long. Only a retryable StepError
// is, and never on the last delivery JetStream makes (maxDeliver): that one
// fails the task.
func retryDecision(err error, attempt, maxDeliver int) (delay time.Duration, retry bool) {
	var se *StepError
	if !errors.As(err, &se) || se.Class != StepRetryable || attempt >= maxDeliver {
		return 0, false
	}
	d := retryMax
	if attempt < 10 {
		d = min(retryBase<<(2*(max(attempt, 1)-1)), retryMax)
	}
	// Equal jitter: at least half the backoff, so runs failing together
	// (one forge outage) do not all come back at once.
	d = d/2 + rand.N(d/2+1)
	if after := min(se.RetryAfter, retryAfterMax); after > d {
		d = after
	}
	return d, true
}

// finishRetryable ends a delivery whose run failed with a retryable step
// error while deliveries remain: it says so in the task's log and hands
// the run back to JetStream with the backoff's delay, and reports true.
// Otherwise it reports false and the run fails; a retryable error then
// carries its attempts, which failure adds to the text.
func (w *Worker) finishRetryable(ctx context.Context, msg jetstream.Msg, rep *reporter, err error, attempt int) bool {
	var se *StepError
	if err == nil || !errors.As(err, &se) || se.Class != StepRetryable {
		return false
	}
	delay, retry := retryDecision(err, attempt, w.cfg.MaxDeliver)
	if !retry {
		se.Attempts = attempt
		return false
	}
	rep.line(ctx, "system", fmt.Sprintf("%s: %s; trying again in %s (attempt %d of %d)",
		se.Reason, se.Error(), delay.Round(100*time.Millisecond), attempt, w.cfg.MaxDeliver))
	if err := msg.NakWithDelay(delay); err != nil {
		// Unacknowledged, it comes back after AckWait anyway.
		rep.log.Warn("hand the run back", "err", err)
	}
	return true
}

// transient reports whether err, from a call to something remote, may pass
// if the call is made again later, and how long the remote asked to wait.
// A remote's HTTP status decides when there is one (5xx, 408 and 429 are
// transient, other 4xx are not); then network errors, timeouts, git
// transport failures, NATS timeouts and busy SQLite databases are.
func transient(err error) (ok bool, after time.Duration) {
	if err == nil || errors.Is(err, context.Canceled) {
		return false, 0
	}
	if status, after, found := httpStatus(err); found {
		switch {
		case status == http.StatusTooManyRequests, status == http.StatusRequestTimeout, status >= 500:
			return true, after
		case status == http.StatusForbidden && after > 0:
			// An exhausted rate limit (GitHub answers 403) says when it
			// resets.
			return true, after
		}
		return false, 0
	}
	var pe *worktree.PushError
	if errors.As(err, &pe) {
		return pe.Reason == worktree.PushTransport, 0
	}
	var api *jetstream.APIError
	if errors.As(err, &api) && api.Code != 0 {
		return api.Code >= 500 || api.Code == http.StatusRequestTimeout || api.Code == http.StatusTooManyRequests, 0
	}
	var dns *net.DNSError
	if errors.As(err, &dns) {
		return !dns.IsNotFound, 0
	}
	var ne net.Error
	var op *net.OpError
	switch {
	case errors.As(err, &ne) && ne.Timeout(), errors.As(err, &op):
		return true, 0
	case errors.Is(err, context.DeadlineExceeded), errors.Is(err, io.ErrUnexpectedEOF),
		errors.Is(err, syscall.ECONNREFUSED), errors.Is(err, syscall.ECONNRESET),
		errors.Is(err, syscall.ECONNABORTED), errors.Is(err, syscall.EPIPE),
		errors.Is(err, syscall.ETIMEDOUT), errors.Is(err, syscall.EHOSTUNREACH),
		errors.Is(err, syscall.ENETUNREACH):
		return true, 0
	case errors.Is(err, nats.ErrTimeout), errors.Is(err, nats.ErrNoResponders),
		errors.Is(err, nats.ErrConnectionReconnecting), errors.Is(err, nats.ErrDisconnected),
		errors.Is(err, jetstream.ErrNoStreamResponse), errors.Is(err, jetstream.ErrNoHeartbeat):
		return true, 0
	case errors.Is(err, worktree.ErrConcurrentUpdate):
		return true, 0
	case errors.Is(err, syscall.EMFILE), errors.Is(err, syscall.ENFILE):
		// Out of file descriptors for a moment (many runs at once).
		return true, 5 * time.Second
	case errors.Is(err, syscall.ENOSPC), errors.Is(err, syscall.EDQUOT):
		// A full disk: space is freed, or another worker takes the run.
		return true, 30 * time.Second
	}
	// modernc.org/sqlite names the result code in its text; a vault or
	// identity store another process holds is busy, not broken.
	msg := err.Error()
	if strings.Contains(msg, "SQLITE_BUSY") || strings.Contains(msg, "SQLITE_LOCKED") ||
		strings.Contains(msg, "database is locked") {
		return true, 0
	}
	return false, 0
}

// httpStatus finds the HTTP status of the first error in err's tree that
// carries one, the way API clients expose it: a StatusCode() method (go-git),
// a Response *http.Response field (go-github, go-git), or a Status or
// StatusCode int field (identity/ravi). after is what the response asked
// to wait (Retry-After, or an exhausted X-RateLimit's reset).
func httpStatus(err error) (status int, after time.Duration, found bool) {
	walkErrors(err, func(e error) bool {
		if sc, ok := e.(interface{ StatusCode() int }); ok {
			if s := safeStatusCode(sc); s >= 100 && s <= 599 {
				status, found = s, true
			}
		}
		v := reflect.ValueOf(e)
		for v.Kind() == reflect.Pointer && !v.IsNil() {
			v = v.Elem()
		}
		if v.Kind() != reflect.Struct {
			return found
		}
		if f := field(v, "Response"); f.IsValid() && f.CanInterface() {
			if resp, ok := f.Interface().(*http.Response); ok && resp != nil {
				status, found = resp.StatusCode, true
				after = waitOf(resp.Header)
			}
		}
		if f := field(v, "RetryAfter"); f.IsValid() && f.CanInterface() {
			if d, ok := f.Interface().(*time.Duration); ok && d != nil && *d > after {
				after = *d
			}
		}
		if !found {
			for _, name := range []string{"StatusCode", "Status"} {
				if f := field(v, name); f.IsValid() && f.Kind() == reflect.Int && f.Int() >= 100 && f.Int() <= 599 {
					status, found = int(f.Int()), true
					break
				}
			}
		}
		return found
	})
	return status, after, found
}

// field is struct v's field name, or the zero Value when it has none or
// reaching it goes through a nil embedded pointer.
func field(v reflect.Value, name string) reflect.Value {
	sf, ok := v.Type().FieldByName(name)
	if !ok {
		return reflect.Value{}
	}
	f, err := v.FieldByIndexErr(sf.Index)
	if err != nil {
		return reflect.Value{}
	}
	return f
}

// safeStatusCode calls StatusCode, which panics in go-git's Err when its
// Response is nil.
func safeStatusCode(sc interface{ StatusCode() int }) (s int) {
	defer func() {
		if recover() != nil {
			s = 0
		}
	}()
	return sc.StatusCode()
}

// waitOf is how long a response asks the client to wait: Retry-After in
// seconds or as a date, or the reset of a rate limit with none remaining.
func waitOf(h http.Header) time.Duration {
	if v := h.Get("Retry-After"); v != "" {
		if s, err := strconv.ParseInt(strings.TrimSpace(v), 10, 64); err == nil && s > 0 {
			// Bounded before it is multiplied: a huge value must not wrap.
			return time.Duration(min(s, int64(retryAfterMax/time.Second))) * time.Second
		}
		if t, err := http.ParseTime(v); err == nil {
			return max(time.Until(t), 0)
		}
	}
	if h.Get("X-RateLimit-Remaining") == "0" {
		if s, err := strconv.ParseInt(h.Get("X-RateLimit-Reset"), 10, 64); err == nil {
			return max(time.Until(time.Unix(s, 0)), time.Second)
		}
	}
	return 0
}

// walkErrors calls fn on err and every error it wraps (or holds in an Err
// field), depth first, until fn returns true.
func walkErrors(err error, fn func(error) bool) bool {
	for err != nil {
		if fn(err) {
			return true
		}
		switch u := err.(type) {
		case interface{ Unwrap() []error }:
			for _, e := range u.Unwrap() {
				if walkErrors(e, fn) {
					return true
				}
			}
			return false
		case interface{ Unwrap() error }:
			err = u.Unwrap()
		default:
			// go-git's UnexpectedError and PermanentError hold their
			// cause in Err without unwrapping to it.
			err = nil
			v := reflect.ValueOf(u)
			if v.Kind() == reflect.Pointer && !v.IsNil() && v.Elem().Kind() == reflect.Struct {
				if f := field(v.Elem(), "Err"); f.IsValid() && f.CanInterface() {
					err, _ = f.Interface().(error)
				}
			}
		}
	}
	return false
}
