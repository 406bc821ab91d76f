package gateway

import (
	"bufio"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"time"
)

// Exchange is one request/response pair as stored in a task transcript.
//
// Replay format: TranscriptDir/<task id>.jsonl holds one Exchange per line,
// in the order the exchanges completed; Seq numbers them per task from 1.
// Request is the request body as the agent sent it (decoded from any
// Content-Encoding); Response is the response body exactly as streamed to
// the agent (for SSE, the raw "event:/data:" text, so a replay can send it
// verbatim with ResponseContentType). Both have passed through the
// redactors; the upstream key and the task token never appear. No headers
// are stored. Exchanges the gateway answered itself carry Refused (budget)
// or Error (upstream unreachable). NewReplayer serves a transcript back.
type Exchange struct {
	Seq                 int       `json:"seq"`
	TaskID              string    `json:"task_id"`
	Time                time.Time `json:"time"`
	Provider            string    `json:"provider"`
	Method              string    `json:"method"`
	Path                string    `json:"path"` // path below the provider prefix, e.g. /v1/messages
	Model               string    `json:"model,omitempty"`
	Status              int       `json:"status"`
	DurationMS          int64     `json:"duration_ms"`
	RequestContentType  string    `json:"request_content_type,omitempty"`
	Request             string    `json:"request,omitempty"`
	ResponseContentType string    `json:"response_content_type,omitempty"`
	Response            string    `json:"response,omitempty"`
	Truncated           bool      `json:"truncated,omitempty"` // a body exceeded MaxTranscriptBytes
	Usage               Usage     `json:"usage"`
	Refused             string    `json:"refused,omitempty"`
	Error               string    `json:"error,omitempty"`
}

// store redacts e and writes it to the task's transcript and OnExchange.
func (g *Gateway) store(t *task, e Exchange, token, key string) {
	if g.cfg.TranscriptDir == "" && g.cfg.OnExchange == nil {
		return
	}
	g.mu.Lock()
	t.seq++
	e.Seq = t.seq
	secrets := append([]string{token, key}, g.secrets...)
	taskRedact := t.hooks.Redact
	g.mu.Unlock()
	e.TaskID = t.id
	red := func(s string) string {
		if s == "" {
			return s
		}
		for _, sec := range secrets {
			if sec != "" {
				s = strings.ReplaceAll(s, sec, "REDACTED")
			}
		}
		if g.cfg.Redact != nil {
			s = g.cfg.Redact(s)
		}
		if taskRedact != nil {
			s = taskRedact(s)
		}
		return s
	}
	e.Request, e.Response, e.Error, e.Refused = red(e.Request), red(e.Response), red(e.Error), red(e.Refused)
	if g.cfg.OnExchange != nil {
		g.cfg.OnExchange(e)
	}
	if g.cfg.TranscriptDir == "" {
		return
	}
	b, err := json.Marshal(e)
	if err != nil {
		g.log.Error("encode transcript", "task_id", t.id, "err", err)
		return
	}
	b = append(b, '\n')
	t.fileMu.Lock()
	defer t.fileMu.Unlock()
	if err := appendFile(TranscriptPath(g.cfg.TranscriptDir, t.id), b); err != nil {
		g.log.Error("write transcript", "task_id", t.id, "err", err)
	}
}

// TranscriptPath returns the transcript file of taskID under dir.
func TranscriptPath(dir, taskID string) string {
	safe := strings.Map(func(r rune) rune {
		switch {
		case r >= 'a' && r <= 'z', r >= 'A' && r <= 'Z', r >= '0' && r <= '9', r == '-', r == '_', r == '.':
			return r
		}
		return '_'
	}, taskID)
	if safe == "" || strings.Trim(safe, ".") == "" {
		safe = "_" + safe
	}
	return filepath.Join(dir, safe+".jsonl")
}

func appendFile(path string, b []byte) error {
	if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
		return err
	}
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_APPEND, 0o600)
	if err != nil {
		return err
	}
	if _, err := f.Write(b); err != nil {
		f.Close()
		return err
	}
	return f.Close()
}

// ReadTranscript parses a transcript file's JSON Lines.
func ReadTranscript(r io.Reader) ([]Exchange, error) {
	var out []Exchange
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 0, 1<<20), 256<<20)
	for n := 1; sc.Scan(); n++ {
		if len(strings.TrimSpace(sc.Text())) == 0 {
			continue
		}
		var e Exchange
		if err := json.Unmarshal(sc.Bytes(), &e); err != nil {
			return out, fmt.Errorf("gateway: transcript line %d: %w", n, err)
		}
		out = append(out, e)
	}
	if err := sc.Err(); err != nil {
		return out, fmt.Errorf("gateway: read transcript: %w", err)
	}
	return out, nil
}

// NewReplayer returns an http.Handler that answers requests from a recorded
// transcript: each request to /<provider>/<path> gets the next unplayed
// exchange with the same provider, method and path, sent with its recorded
// status, content type and body. Unmatched requests get 404. Point an
// agent's base URL at it (like at the gateway) to re-run a task offline.
func NewReplayer(exchanges []Exchange) http.Handler {
	return &replayer{queue: exchanges, used: make([]bool, len(exchanges))}
}

type replayer struct {
	mu    sync.Mutex
	queue []Exchange
	used  []bool
}

func (rp *replayer) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	_, _ = io.Copy(io.Discard, r.Body)
	provider, rest, _ := strings.Cut(strings.TrimPrefix(r.URL.Path, "/"), "/")
	rp.mu.Lock()
	var e *Exchange
	for i := range rp.queue {
		x := &rp.queue[i]
		if !rp.used[i] && x.Provider == provider && x.Method == r.Method && strings.SplitN(x.Path, "?", 2)[0] == "/"+rest {
			rp.used[i], e = true, x
			break
		}
	}
	rp.mu.Unlock()
	if e == nil {
		writeError(w, provider, http.StatusNotFound, errNotFound, "nightshift replay: no recorded exchange left for "+r.Method+" "+r.URL.Path)
		return
	}
	if e.ResponseContentType != "" {
		w.Header().Set("Content-Type", e.ResponseContentType)
	}
	w.WriteHeader(e.Status)
	_, _ = io.WriteString(w, e.Response)
}
