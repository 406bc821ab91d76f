// Package redact removes secret values from text before it leaves Nightshift:
// task logs, agent transcripts, diffs posted anywhere, pull request bodies and
// notifications.
//
// A Redactor is built once from the secrets handed to a task (name -> value)
// and is safe for concurrent use. It matches every value in these forms:
//
//   - the raw bytes;
//   - standard and URL-safe base64, padded or raw, at all three byte
//     alignments (so a value embedded in a larger base64 blob is found too:
//     the characters that depend only on the value are matched);
//   - URL query escaping and path escaping (upper and lower case hex);
//   - lower and upper case hex;
//   - the JSON string escaping, with and without Go's HTML escapes (for
//     values with quotes, backslashes, control characters or <>&, such as
//     PEM keys inside a JSON transcript).
//
// Every byte covered by any match is replaced; overlapping or touching
// matches become one marker, "[REDACTED:NAME]" when they belong to one
// secret and "[REDACTED]" otherwise.
//
// Values shorter than MinLen bytes are not matched: short values collide with
// ordinary text so often that redacting them would shred the logs while
// protecting little. Keep real secrets long.
//
// The streaming form (Writer) holds back only the bytes that could still be
// the start of a match (the longest pattern minus one), so a value split
// across writes is caught, and output is byte-identical to String on the
// concatenated input. Not recognized: base64 wrapped across lines (MIME,
// PEM) beyond its unbroken runs, encodings of encodings (base64 then URL
// escaping), and a value whose own text re-forms across a replacement
// marker (it would have to contain the marker text).
package redact

import (
	"bytes"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"io"
	"net/url"
	"sort"
	"strings"
	"sync"
)

// MinLen is the shortest value, in bytes, that a Redactor matches.
const MinLen = 6

// Options tunes a Redactor. The zero value is the default.
type Options struct {
	// Replacement returns the text that replaces a match. name is the
	// secret's name, or "" when the match covers more than one secret or the
	// secret has no name. Nil means "[REDACTED:NAME]" or "[REDACTED]".
	Replacement func(name string) string
}

// Redactor finds secret values, raw or encoded, in text and replaces them.
type Redactor struct {
	names   []string // secret index -> name
	ac      *automaton
	maxLen  int // longest pattern in bytes
	replace func(name string) string
}

// New returns a Redactor for secrets (name -> value) with default options.
func New(secrets map[string]string) *Redactor { return NewWithOptions(secrets, Options{}) }

// NewWithOptions returns a Redactor for secrets (name -> value).
func NewWithOptions(secrets map[string]string, opts Options) *Redactor {
	r := &Redactor{replace: opts.Replacement}
	if r.replace == nil {
		r.replace = defaultReplacement
	}
	names := make([]string, 0, len(secrets))
	for n := range secrets {
		names = append(names, n)
	}
	sort.Strings(names)
	b := newBuilder()
	for _, n := range names {
		v := secrets[n]
		if len(v) < MinLen {
			continue
		}
		idx := len(r.names)
		r.names = append(r.names, n)
		for _, f := range Forms(v) {
			b.add(f, idx)
			if len(f) > r.maxLen {
				r.maxLen = len(f)
			}
		}
	}
	if r.maxLen > 0 {
		r.ac = b.build()
	}
	return r
}

func defaultReplacement(name string) string {
	if name == "" {
		return "[REDACTED]"
	}
	return "[REDACTED:" + name + "]"
}

// Empty reports whether the Redactor has nothing to match.
func (r *Redactor) Empty() bool { return r == nil || r.ac == nil }

// String returns s with every secret replaced.
func (r *Redactor) String(s string) string {
	if r.Empty() {
		return s
	}
	var sb strings.Builder
	sb.Grow(len(s))
	st := r.newStream()
	st.write([]byte(s), &sb)
	st.close(&sb)
	return sb.String()
}

// Bytes returns b with every secret replaced, as a new slice.
func (r *Redactor) Bytes(b []byte) []byte {
	if r.Empty() {
		return append([]byte(nil), b...)
	}
	var sb strings.Builder
	sb.Grow(len(b))
	st := r.newStream()
	st.write(b, &sb)
	st.close(&sb)
	return []byte(sb.String())
}

// Writer returns a writer that redacts everything written to it before
// passing it on to w. It holds back at most the longest pattern minus one
// byte; Close flushes that tail (it does not close w). Writes after Close
// fail. The writer is safe for concurrent use, though concurrent writers
// interleave at write boundaries as they would on w.
func (r *Redactor) Writer(w io.Writer) io.WriteCloser {
	return &writer{r: r, w: w, st: r.newStream()}
}

// Forms returns the encoded forms of value that a Redactor matches,
// deduplicated, longest first. It is exported for tests and diagnostics.
func Forms(value string) []string {
	if len(value) < MinLen {
		return nil
	}
	seen := map[string]bool{}
	var out []string
	add := func(s string) {
		if len(s) >= MinLen-2 && !seen[s] {
			seen[s] = true
			out = append(out, s)
		}
	}
	add(value)
	add(base64.StdEncoding.EncodeToString([]byte(value)))
	add(base64.URLEncoding.EncodeToString([]byte(value)))
	for _, enc := range []*base64.Encoding{base64.RawStdEncoding, base64.RawURLEncoding} {
		for align := 0; align < 3; align++ {
			add(base64Core(enc, []byte(value), align))
		}
	}
	q := url.QueryEscape(value)
	p := url.PathEscape(value)
	add(q)
	add(p)
	add(lowerEscapes(q))
	add(lowerEscapes(p))
	add(hex.EncodeToString([]byte(value)))
	add(strings.ToUpper(hex.EncodeToString([]byte(value))))
	if j, err := json.Marshal(value); err == nil { // Go: <, >, & as \u003c...
		add(string(j[1 : len(j)-1]))
	}
	var jb bytes.Buffer // most other encoders leave <, >, & alone
	enc := json.NewEncoder(&jb)
	enc.SetEscapeHTML(false)
	if enc.Encode(value) == nil {
		j := bytes.TrimSuffix(jb.Bytes(), []byte("\n"))
		add(string(j[1 : len(j)-1]))
	}
	sort.SliceStable(out, func(i, j int) bool { return len(out[i]) > len(out[j]) })
	return out
}

// base64Core returns the base64 characters that depend only on value when
// value starts align bytes (mod 3) into a longer encoded stream.
func base64Core(enc *base64.Encoding, value []byte, align int) string {
	buf := make([]byte, align+len(value))
	copy(buf[align:], value)
	s := enc.EncodeToString(buf)
	full := (len(buf) / 3) * 4
	end := full
	switch len(buf) % 3 {
	case 1:
		end = full + 1
	case 2:
		end = full + 2
	}
	drop := [3]int{0, 2, 3}[align]
	if end > len(s) {
		end = len(s)
	}
	if drop >= end {
		return ""
	}
	return s[drop:end]
}

// lowerEscapes lowercases the hex digits of percent escapes.
func lowerEscapes(s string) string {
	b := []byte(s)
	for i := 0; i+2 < len(b); i++ {
		if b[i] == '%' {
			b[i+1] = lowerHex(b[i+1])
			b[i+2] = lowerHex(b[i+2])
			i += 2
		}
	}
	return string(b)
}

func lowerHex(c byte) byte {
	if c >= 'A' && c <= 'F' {
		return c + ('a' - 'A')
	}
	return c
}

// interval is a half-open range of stream offsets to redact, with the set of
// secrets (bit per index, spilling to a map for many) it covers.
type interval struct {
	start, end int64
	owner      int // secret index, or -1 when several
}

// stream is the incremental matcher shared by String, Bytes and Writer.
type stream struct {
	r       *Redactor
	state   int32
	total   int64 // bytes seen
	emitted int64 // stream offset of buf[0]
	buf     []byte
	ivs     []interval
}

func (r *Redactor) newStream() *stream { return &stream{r: r} }

type byteSink interface {
	Write(p []byte) (int, error)
	WriteString(s string) (int, error)
}

// write feeds p and emits everything that can no longer change.
func (st *stream) write(p []byte, out byteSink) {
	ac := st.r.ac
	for _, c := range p {
		st.state = ac.step(st.state, c)
		st.total++
		for n := st.state; n > 0; n = ac.dict[n] {
			pid := ac.out[n]
			if pid < 0 {
				continue
			}
			pat := ac.pats[pid]
			st.addMatch(st.total-int64(pat.length), st.total, pat.owner)
		}
	}
	st.buf = append(st.buf, p...)
	st.flush(st.total-int64(st.r.maxLen-1), false, out)
}

func (st *stream) addMatch(start, end int64, owner int) {
	// Matches arrive in order of end offset; a new match can only merge with
	// the trailing intervals.
	iv := interval{start: start, end: end, owner: owner}
	for len(st.ivs) > 0 {
		last := st.ivs[len(st.ivs)-1]
		if last.end < iv.start {
			break
		}
		st.ivs = st.ivs[:len(st.ivs)-1]
		if last.start < iv.start {
			iv.start = last.start
		}
		if last.end > iv.end {
			iv.end = last.end
		}
		if last.owner != iv.owner {
			iv.owner = -1
		}
	}
	st.ivs = append(st.ivs, iv)
}

// flush emits what no future match can change: verbatim bytes before limit
// and intervals that end before it. With final set, everything is emitted.
func (st *stream) flush(limit int64, final bool, out byteSink) {
	if final {
		limit = st.total
	}
	pos := st.emitted
	for {
		if len(st.ivs) > 0 && st.ivs[0].start <= pos {
			iv := st.ivs[0]
			if !final && iv.end >= limit {
				// A later match may still extend it. Its bytes are never
				// emitted, so drop them now rather than hold them.
				pos = iv.end
				break
			}
			name := ""
			if iv.owner >= 0 {
				name = st.r.names[iv.owner]
			}
			out.WriteString(st.r.replace(name))
			pos = iv.end
			st.ivs = st.ivs[1:]
			continue
		}
		stop := limit
		if len(st.ivs) > 0 && st.ivs[0].start < stop {
			stop = st.ivs[0].start
		}
		if stop <= pos {
			break
		}
		out.Write(st.buf[pos-st.emitted : stop-st.emitted])
		pos = stop
	}
	// Keep the held-back tail at the front of the buffer, reusing it.
	n := copy(st.buf, st.buf[pos-st.emitted:])
	st.buf = st.buf[:n]
	st.emitted = pos
	if len(st.ivs) == 0 {
		st.ivs = st.ivs[:0]
	}
}

// close emits the held-back tail.
func (st *stream) close(out byteSink) { st.flush(0, true, out) }

type writer struct {
	mu     sync.Mutex
	r      *Redactor
	w      io.Writer
	st     *stream
	out    bytes.Buffer
	err    error
	closed bool
}

func (w *writer) Write(p []byte) (int, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.err != nil {
		return 0, w.err
	}
	if w.closed {
		return 0, errClosed
	}
	if w.r.Empty() {
		return w.w.Write(p)
	}
	w.out.Reset()
	w.st.write(p, &w.out)
	if err := w.pass(); err != nil {
		return 0, err
	}
	return len(p), nil
}

func (w *writer) pass() error {
	if w.out.Len() == 0 {
		return nil
	}
	if _, err := w.w.Write(w.out.Bytes()); err != nil {
		w.err = err
		return err
	}
	return nil
}

func (w *writer) Close() error {
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.closed {
		return w.err
	}
	w.closed = true
	if w.err != nil || w.r.Empty() {
		return w.err
	}
	w.out.Reset()
	w.st.close(&w.out)
	return w.pass()
}

type redactError string

func (e redactError) Error() string { return string(e) }

const errClosed = redactError("redact: write after close")
