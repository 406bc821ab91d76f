package vault

import (
	"strings"
	"testing"
)

// FuzzParseHead: a stored chain head either parses and formats back to
// the same text (lower-case hex), or is refused as ErrIntegrity; it never
// panics and never yields a hash that is not 32 bytes.
func FuzzParseHead(f *testing.F) {
	f.Add("0:" + strings.Repeat("00", 32))
	f.Add("42:" + strings.Repeat("ab", 32))
	f.Add("-1:" + strings.Repeat("ff", 32))
	f.Add("7:" + strings.Repeat("AB", 32))
	f.Add("7:abc")
	f.Add(":")
	f.Add("")
	f.Fuzz(func(t *testing.T, s string) {
		h, err := parseHead(s)
		if err != nil {
			if h.Hash != nil {
				t.Fatalf("%q: error with a hash", s)
			}
			return
		}
		if len(h.Hash) != 32 {
			t.Fatalf("%q: hash of %d bytes", s, len(h.Hash))
		}
		back, err := parseHead(formatHead(h))
		if err != nil || back.Seq != h.Seq || string(back.Hash) != string(h.Hash) {
			t.Fatalf("%q: round trip gave %+v %v", s, back, err)
		}
	})
}
