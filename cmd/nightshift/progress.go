package main

import (
	"fmt"
	"io"
	"os"
	"strings"
	"sync"
	"time"
	"unicode/utf8"

	"golang.org/x/sys/unix"

	"github.com/nightshift/nightshift/orchestrator"
)

// progress shows a followed task. On a terminal, log lines scroll above a
// status line that is redrawn in place (state, current step, elapsed time,
// tokens); elsewhere (a pipe, a file, a test buffer) every state change and
// log line is one plain line. Colors only on a terminal, and never with
// NO_COLOR set.
type progress struct {
	mu      sync.Mutex
	w       io.Writer
	tty     bool
	color   bool
	width   func() int
	now     func() time.Time
	start   time.Time
	state   orchestrator.State
	step    string
	usage   orchestrator.Usage
	frame   int
	drawn   bool
	stopped bool
}

// isTerminal reports whether w is a terminal: an *os.File that is a
// character device answering terminal ioctls (so /dev/null is not one).
func isTerminal(w io.Writer) bool {
	f, ok := w.(*os.File)
	if !ok {
		return false
	}
	fi, err := f.Stat()
	if err != nil || fi.Mode()&os.ModeCharDevice == 0 {
		return false
	}
	_, err = unix.IoctlGetTermios(int(f.Fd()), unix.TCGETS)
	return err == nil
}

func newProgress(a *app, t orchestrator.Task) *progress {
	p := &progress{w: a.stdout, now: time.Now, start: t.CreatedAt, state: t.State, usage: t.Usage, width: func() int { return 80 }}
	p.tty = isTerminal(a.stdout)
	if p.tty {
		_, noColor := a.env["NO_COLOR"]
		p.color = !noColor && a.getenv("TERM") != "dumb"
		f := a.stdout.(*os.File)
		p.width = func() int {
			if ws, err := unix.IoctlGetWinsize(int(f.Fd()), unix.TIOCGWINSZ); err == nil && ws.Col > 0 {
				return int(ws.Col)
			}
			return 80
		}
	}
	if p.start.IsZero() {
		p.start = p.now()
	}
	return p
}

// run redraws the status line until stop is closed (terminals only).
func (p *progress) run(stop <-chan struct{}) {
	if !p.tty {
		return
	}
	tick := time.NewTicker(200 * time.Millisecond)
	defer tick.Stop()
	for {
		select {
		case <-stop:
			return
		case <-tick.C:
			p.mu.Lock()
			if !p.stopped {
				p.frame++
				p.redraw()
			}
			p.mu.Unlock()
		}
	}
}

const (
	ansiReset = "\x1b[0m"
	ansiBold  = "\x1b[1m"
	ansiDim   = "\x1b[2m"
	ansiRed   = "\x1b[31m"
	ansiGreen = "\x1b[32m"
	ansiYel   = "\x1b[33m"
	ansiBlue  = "\x1b[34m"
	ansiMag   = "\x1b[35m"
	ansiCyan  = "\x1b[36m"
	clearLine = "\r\x1b[2K"
)

func (p *progress) paint(code, s string) string {
	if !p.color || s == "" {
		return s
	}
	return code + s + ansiReset
}

func stateColor(s orchestrator.State) string {
	switch s {
	case orchestrator.StateReview, orchestrator.StateDone:
		return ansiGreen
	case orchestrator.StateFailed, orchestrator.StateCancelled:
		return ansiRed
	case orchestrator.StateNeedsInput:
		return ansiYel
	}
	return ansiBlue
}

func streamColor(s string) string {
	switch s {
	case "agent":
		return ansiCyan
	case "tool":
		return ansiMag
	case "test":
		return ansiYel
	}
	return ansiDim
}

// line prints one line above the status line.
func (p *progress) line(s string) {
	if p.tty {
		if p.drawn {
			io.WriteString(p.w, clearLine)
			p.drawn = false
		}
		io.WriteString(p.w, s+"\n")
		p.redraw()
		return
	}
	io.WriteString(p.w, s+"\n")
}

func (p *progress) log(l orchestrator.LogLine) {
	p.mu.Lock()
	defer p.mu.Unlock()
	switch l.Stream {
	case "agent", "tool", "test", "setup":
		p.step = l.Stream
	}
	p.line(p.paint(streamColor(l.Stream), padStream(l.Stream)) + " | " + l.Text)
}

func (p *progress) report(r orchestrator.StateReport) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.state = r.State
	p.step = stepOf(r.State)
	if r.Patch.Usage != nil {
		p.usage = *r.Patch.Usage
	}
	if r.Task != nil && r.Task.Usage.InputTokens+r.Task.Usage.OutputTokens > 0 {
		p.usage = r.Task.Usage
	}
	s := "==> " + p.paint(ansiBold+stateColor(r.State), string(r.State))
	if r.Reason != "" {
		s += " (" + r.Reason + ")"
	}
	p.line(s)
}

func stepOf(s orchestrator.State) string {
	switch s {
	case orchestrator.StateQueued:
		return "waiting for a worker"
	case orchestrator.StateProvisioning:
		return "cloning"
	case orchestrator.StateRunning:
		return "agent"
	case orchestrator.StateTesting:
		return "tests"
	case orchestrator.StatePushing:
		return "push"
	}
	return ""
}

var spinner = []string{"⠋", "⠙", "⠹", "⠸", "⠼", "⠴", "⠦", "⠧", "⠇", "⠏"}

// status is the in-place line: spinner, state, step, elapsed, tokens.
func (p *progress) status() string {
	parts := []string{string(p.state)}
	if p.step != "" && p.step != string(p.state) {
		parts = append(parts, p.step)
	}
	parts = append(parts, fmtElapsed(p.now().Sub(p.start)))
	if n := p.usage.InputTokens + p.usage.OutputTokens; n > 0 {
		tok := compactCount(n) + " tokens"
		if p.usage.CostUSD > 0 {
			tok += fmt.Sprintf(" $%.2f", p.usage.CostUSD)
		}
		parts = append(parts, tok)
	}
	s := spinner[p.frame%len(spinner)] + " " + strings.Join(parts, " · ")
	if w := p.width() - 1; utf8.RuneCountInString(s) > w && w > 10 {
		s = string([]rune(s)[:w-1]) + "…"
	}
	return s
}

func (p *progress) redraw() {
	if !p.tty || p.stopped {
		return
	}
	io.WriteString(p.w, clearLine+p.paint(ansiDim, p.status()))
	p.drawn = true
}

// stop clears the status line for good.
func (p *progress) stop() {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.tty && p.drawn {
		io.WriteString(p.w, clearLine)
	}
	p.drawn, p.stopped = false, true
}

func fmtElapsed(d time.Duration) string {
	d = d.Round(time.Second)
	if d < 0 {
		d = 0
	}
	h, m, s := int(d.Hours()), int(d.Minutes())%60, int(d.Seconds())%60
	if h > 0 {
		return fmt.Sprintf("%d:%02d:%02d", h, m, s)
	}
	return fmt.Sprintf("%d:%02d", m, s)
}

func compactCount(n int64) string {
	switch {
	case n >= 1_000_000:
		return strings.TrimSuffix(fmt.Sprintf("%.1f", float64(n)/1e6), ".0") + "M"
	case n >= 1000:
		return strings.TrimSuffix(fmt.Sprintf("%.1f", float64(n)/1e3), ".0") + "k"
	}
	return fmt.Sprint(n)
}
