package redact_test

import (
	"bytes"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"errors"
	"io"
	"math/rand/v2"
	"net/url"
	"strings"
	"testing"

	"github.com/nightshift/nightshift/vault/redact"
)

const (
	token = "ghp_R3dactM3PleaseXYZ"
	pem   = "-----BEGIN KEY-----\nAbC/dEf+gh==\n-----END KEY-----\n"
)

func TestString(t *testing.T) {
	t.Parallel()
	r := redact.New(map[string]string{"GITHUB_TOKEN": token, "KEY": pem, "SHORT": "abc12", "PASS": "p@ss w/rd&more?", "HTML": "<a&b>\n-secret-"})
	b64 := func(enc *base64.Encoding, prefix string) string {
		return enc.EncodeToString([]byte(prefix + token + "!"))
	}
	for _, tc := range []struct{ name, in string }{
		{"raw", "token=" + token + " end"},
		{"base64 std a0", "Authorization: Basic " + b64(base64.StdEncoding, "")},
		{"base64 std a1", "x " + b64(base64.StdEncoding, "u") + " y"},
		{"base64 std a2", b64(base64.StdEncoding, "us")},
		{"base64 url a1", b64(base64.URLEncoding, "x")},
		{"base64 raw url a2", b64(base64.RawURLEncoding, "user:")},
		{"base64 raw std", b64(base64.RawStdEncoding, "ab")},
		{"whole base64", base64.StdEncoding.EncodeToString([]byte(token))},
		{"query escaped", "https://x/?a=1&p=" + url.QueryEscape("p@ss w/rd&more?")},
		{"path escaped", "https://x/" + url.PathEscape("p@ss w/rd&more?") + "/y"},
		{"lower percent", "q=" + strings.ToLower(url.QueryEscape("p@ss w/rd&more?"))},
		{"hex", "dump " + hex.EncodeToString([]byte(token))},
		{"json escaped pem", func() string { b, _ := json.Marshal(map[string]string{"k": pem}); return string(b) }()},
		{"raw pem", "key:\n" + pem + "done"},
		{"json without html escapes", `{"k":"<a&b>\n-secret-"}`},
	} {
		out := r.String(tc.in)
		if !strings.Contains(out, "[REDACTED") {
			t.Errorf("%s: nothing redacted in %q", tc.name, out)
		}
		for _, v := range []string{token, pem, "p@ss w/rd&more?"} {
			for _, f := range redact.Forms(v) {
				if strings.Contains(out, f) {
					t.Errorf("%s: form %q survived in %q", tc.name, f, out)
				}
			}
		}
	}
	if got := r.String("token=" + token + "."); got != "token=[REDACTED:GITHUB_TOKEN]." {
		t.Errorf("marker: %q", got)
	}
	if got := r.String("abc12 is short"); got != "abc12 is short" {
		t.Errorf("short value matched: %q", got)
	}
	if got := r.String(""); got != "" {
		t.Errorf("empty: %q", got)
	}
}

func TestOverlapsBecomeOneMarker(t *testing.T) {
	t.Parallel()
	r := redact.New(map[string]string{"A": "abcdefgh", "B": "efghijkl", "C": "zzzzzzzz"})
	for in, want := range map[string]string{
		"x abcdefghijkl y":     "x [REDACTED] y",            // overlapping, two secrets
		"abcdefghabcdefgh":     "[REDACTED:A]",              // touching, same secret
		"abcdefgh zzzzzzzz":    "[REDACTED:A] [REDACTED:C]", // separate
		"zzzzzzzzzzzzz":        "[REDACTED:C]",              // self-overlapping repeats
		"abcdefgXfghijkl":      "abcdefgXfghijkl",           // near misses
		"..abcdefgh":           "..[REDACTED:A]",
		"abcdefgh..":           "[REDACTED:A]..",
		"\x00abcdefgh\xff\xfe": "\x00[REDACTED:A]\xff\xfe",
	} {
		if got := r.String(in); got != want {
			t.Errorf("%q: got %q, want %q", in, got, want)
		}
	}
	same := redact.New(map[string]string{"ONE": "shared-value", "TWO": "shared-value"})
	if got := same.String("shared-value"); got != "[REDACTED]" {
		t.Errorf("value under two names: %q", got)
	}
}

// chunked writes s through a redacting writer in pieces cut at cuts.
func chunked(r *redact.Redactor, s string, rnd *rand.Rand) (string, error) {
	var out bytes.Buffer
	w := r.Writer(&out)
	for len(s) > 0 {
		n := 1 + rnd.IntN(len(s))
		if rnd.IntN(3) == 0 {
			n = 1
		}
		if _, err := w.Write([]byte(s[:n])); err != nil {
			return "", err
		}
		s = s[n:]
	}
	err := w.Close()
	return out.String(), err
}

func TestWriterMatchesStringAtEverySplit(t *testing.T) {
	t.Parallel()
	r := redact.New(map[string]string{"GITHUB_TOKEN": token, "KEY": pem})
	in := "log: " + token + "\nb64: " + base64.StdEncoding.EncodeToString([]byte("u:"+token)) + "\n" + pem + " tail"
	want := r.String(in)
	for cut := 0; cut <= len(in); cut++ {
		var out bytes.Buffer
		w := r.Writer(&out)
		io.WriteString(w, in[:cut])
		io.WriteString(w, in[cut:])
		if err := w.Close(); err != nil {
			t.Fatal(err)
		}
		if out.String() != want {
			t.Fatalf("split at %d: %q, want %q", cut, out.String(), want)
		}
	}
	rnd := rand.New(rand.NewPCG(1, 2))
	for i := 0; i < 200; i++ {
		got, err := chunked(r, in, rnd)
		if err != nil || got != want {
			t.Fatalf("random chunks: %q %v", got, err)
		}
	}
}

func TestWriterHoldsBackOnlyATail(t *testing.T) {
	t.Parallel()
	r := redact.New(map[string]string{"GITHUB_TOKEN": token})
	var out bytes.Buffer
	w := r.Writer(&out)
	line := strings.Repeat("x", 1000)
	io.WriteString(w, line)
	max := 0
	for _, f := range redact.Forms(token) {
		if len(f) > max {
			max = len(f)
		}
	}
	if held := len(line) - out.Len(); held >= max {
		t.Fatalf("held back %d bytes, longest pattern is %d", held, max)
	}
	for i := 0; i < 1000; i++ {
		io.WriteString(w, token)
	}
	w.Close()
	if got := out.String(); got != line+"[REDACTED:GITHUB_TOKEN]" {
		t.Fatalf("got %q", got[len(line):])
	}
	if _, err := w.Write([]byte("x")); err == nil {
		t.Fatal("write after close")
	}
}

type failWriter struct{}

func (failWriter) Write(p []byte) (int, error) { return 0, errors.New("disk full") }

func TestWriterErrors(t *testing.T) {
	t.Parallel()
	w := redact.New(map[string]string{"T": token}).Writer(failWriter{})
	if _, err := w.Write(bytes.Repeat([]byte("y"), 100)); err == nil {
		t.Fatal("error from the underlying writer lost")
	}
	if err := w.Close(); err == nil {
		t.Fatal("close after error")
	}
	var out bytes.Buffer
	empty := redact.New(nil).Writer(&out)
	io.WriteString(empty, "pass through")
	empty.Close()
	if out.String() != "pass through" {
		t.Fatal(out.String())
	}
}

func TestBase64Alignments(t *testing.T) {
	t.Parallel()
	// Every alignment, alphabet and padding, at every offset in a blob.
	secret := "\xff\xfe\xfd-secret-\xfb\xfa\xf9"
	r := redact.New(map[string]string{"S": secret})
	for pre := 0; pre < 6; pre++ {
		for post := 0; post < 4; post++ {
			blob := []byte(strings.Repeat("\x00", pre) + secret + strings.Repeat("\x01", post))
			for _, enc := range []*base64.Encoding{base64.StdEncoding, base64.URLEncoding, base64.RawStdEncoding, base64.RawURLEncoding} {
				in := "data:" + enc.EncodeToString(blob) + ";"
				out := r.String(in)
				if out == in {
					t.Errorf("pre %d post %d: not redacted: %q", pre, post, in)
				}
			}
		}
	}
}

func BenchmarkWriter(b *testing.B) {
	secrets := map[string]string{}
	for i := 0; i < 20; i++ {
		secrets[string(rune('A'+i))+"_TOKEN"] = strings.Repeat(string(rune('a'+i)), 4) + "-secret-value-0123456789abcdef"
	}
	r := redact.New(secrets)
	line := []byte("2026-01-01T00:00:00Z INFO agent: running go test ./... in /work/tree, 42 packages ok\n")
	b.SetBytes(int64(len(line)))
	w := r.Writer(io.Discard)
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		w.Write(line)
	}
	w.Close()
}

func BenchmarkBaselineCopy(b *testing.B) {
	line := []byte("2026-01-01T00:00:00Z INFO agent: running go test ./... in /work/tree, 42 packages ok\n")
	b.SetBytes(int64(len(line)))
	var sink bytes.Buffer
	for i := 0; i < b.N; i++ {
		sink.Reset()
		sink.Write(line)
	}
}
