package orchestrator

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"regexp"
	"strings"
	"sync"
	"sync/atomic"
	"time"
)

var redactedRe = regexp.MustCompile(`\[REDACTED(?::([A-Z][A-Z0-9_]*))?\]`)

// secretNames lists the secrets whose markers a redacted text carries.
func secretNames(redacted string) string {
	seen := map[string]bool{}
	var names []string
	for _, m := range redactedRe.FindAllStringSubmatch(redacted, -1) {
		n := m[1]
		if n == "" {
			n = "a secret"
		}
		if !seen[n] {
			seen[n] = true
			names = append(names, n)
		}
	}
	if len(names) == 0 {
		return "a secret"
	}
	return strings.Join(names, ", ")
}

func fmtAttrs(msg string, attrs []any) string {
	var b strings.Builder
	b.WriteString(msg)
	for i := 0; i+1 < len(attrs); i += 2 {
		fmt.Fprintf(&b, " %v=%v", attrs[i], attrs[i+1])
	}
	return b.String()
}

type redactors []Redactor

func (rs redactors) String(s string) string {
	for _, r := range rs {
		s = r.String(s)
	}
	return s
}

func chainRedactors(list ...Redactor) Redactor {
	var rs redactors
	for _, r := range list {
		if r != nil {
			rs = append(rs, r)
		}
	}
	return rs
}

// reporter publishes a run's states and log lines.
type reporter struct {
	bus  *Bus
	recs *Records
	// fence is the run's lease on its task: every state it writes carries it.
	fence Fence
	// landing are the pushes earlier deliveries of the run announced and
	// never confirmed, as the claim found them (Record.landing).
	landing []PushIntent
	// stop ends the run (with the cause) when its state cannot be written.
	stop context.CancelCauseFunc
	// fenced is set once the authority refused a write of the run.
	fenced atomic.Bool
	// logs publishes the run's log lines (flushed at the run's end).
	logs *TaskLogger
	item WorkItem
	// usage is the run's model usage once the agent has run.
	usage *Usage
	// attempt is the delivery attempt of the run: a redelivered run's
	// reports must not be taken for duplicates of the crashed attempt's.
	attempt int
	clock   func() time.Time
	// redact removes the run's tokens and the task's secrets from all the
	// run emits; never nil.
	redact Redactor
	log    *slog.Logger
	mu     sync.Mutex
	seq    int
	// tokens redacts the tokens issued to the run's agent (part of redact).
	tokens *tokenRedactor
}

func (r *reporter) state(ctx context.Context, s State, reason string, p Patch) {
	reason = r.redact.String(reason)
	if p.Error != nil {
		e := r.redact.String(*p.Error)
		p.Error = &e
	}
	if err := r.write(ctx, s, reason, p); err != nil {
		r.log.Warn("state not recorded; stopping the run", "state", s, "err", err)
		if r.stop != nil {
			r.stop(err)
		}
	}
}

// write records a state of the run in the authority, under the run's
// fence, retrying transient failures for a while. A refused write
// (ErrFenced, or a state the task can no longer take) is returned as
// errFenced: the run lost its task and must stop.
func (r *reporter) write(ctx context.Context, s State, reason string, p Patch) error {
	if r.recs == nil {
		return nil
	}
	delay := 100 * time.Millisecond
	for attempt := 1; ; attempt++ {
		_, err := r.recs.Report(ctx, r.item.TaskID, r.fence, s, reason, p)
		if err == nil {
			return nil
		}
		if isTransition(err) {
			// The run still holds its task but asked for a move the state
			// machine forbids: a defect, not a lost lease. Fail the task
			// saying so rather than leave it where it is.
			text := "internal error: " + err.Error()
			reason := "internal"
			if _, ferr := r.recs.Report(ctx, r.item.TaskID, r.fence, StateFailed, reason, Patch{Error: &text, Reason: &reason}); ferr == nil {
				r.log.Error("invalid state move; task failed", "state", s, "err", err)
			}
		}
		if errors.Is(err, ErrFenced) || isTransition(err) || errors.Is(err, ErrNotFound) {
			r.fenced.Store(true)
			return fmt.Errorf("%w: %v", errFenced, err)
		}
		if attempt >= 8 || ctx.Err() != nil {
			return fmt.Errorf("%w: %v", errUnrecorded, err)
		}
		select {
		case <-ctx.Done():
		case <-time.After(delay):
		}
		delay = min(2*delay, 5*time.Second)
	}
}

func (r *reporter) line(ctx context.Context, stream, text string) {
	text = r.redact.String(text)
	l := LogLine{TaskID: r.item.TaskID, Run: r.item.Run, At: r.clock(), Stream: stream, Text: text}
	if err := r.logs.Line(ctx, l); err != nil {
		r.log.Warn("publish log", "err", err)
	}
}

// writer returns a line-splitting writer that logs each line to stream.
func (r *reporter) writer(ctx context.Context, stream string) io.WriteCloser {
	return &lineWriter{emit: func(s string) { r.line(ctx, stream, s) }}
}

type lineWriter struct {
	mu   sync.Mutex
	buf  bytes.Buffer
	emit func(string)
}

func (l *lineWriter) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.buf.Write(p)
	for {
		b := l.buf.Bytes()
		i := bytes.IndexByte(b, '\n')
		if i < 0 {
			if l.buf.Len() > 64<<10 {
				l.emit(l.buf.String())
				l.buf.Reset()
			}
			return len(p), nil
		}
		line := strings.TrimRight(string(b[:i]), "\r")
		if j := strings.LastIndexByte(line, '\r'); j >= 0 {
			line = line[j+1:] // progress output: keep the final state
		}
		l.emit(line)
		l.buf.Next(i + 1)
	}
}

func (l *lineWriter) Close() error {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.buf.Len() > 0 {
		l.emit(l.buf.String())
		l.buf.Reset()
	}
	return nil
}
