package redact

import (
	"io"
	"strings"
	"testing"
)

// A secret repeated without end must not grow the buffer: bytes inside a
// pending match are dropped, not held.
func TestRepeatedSecretIsNotBuffered(t *testing.T) {
	t.Parallel()
	secret := "repeat-me-please"
	r := New(map[string]string{"S": secret})
	w := r.Writer(io.Discard).(*writer)
	for i := 0; i < 10000; i++ {
		io.WriteString(w, secret)
		if len(w.st.buf) > 2*r.maxLen {
			t.Fatalf("after %d repeats %d bytes are buffered (longest pattern %d)", i, len(w.st.buf), r.maxLen)
		}
	}
	var sb strings.Builder
	w.w = &sb
	w.Close()
	if sb.String() != "[REDACTED:S]" {
		t.Fatalf("tail %q", sb.String())
	}
}
