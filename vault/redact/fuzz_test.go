package redact_test

import (
	"bytes"
	"encoding/base64"
	"math/rand/v2"
	"net/url"
	"strings"
	"testing"

	"github.com/nightshift/nightshift/vault/redact"
)

// FuzzRedact checks that redaction never panics, that streaming in random
// chunks equals String, and that no configured value survives in any form:
// with a marker byte that appears in no secret, no piece of output between
// markers may contain any form of any secret.
func FuzzRedact(f *testing.F) {
	f.Add("hunter2hunter2", "ghp_abcdef", "pre hunter2hunter2 mid ghp_abcdef post", "x", uint64(1))
	f.Add("aaaaaa", "aaaaab", "aaaaaaaaaaab", "aaaa", uint64(7))
	f.Add("p@ss w/rd&", "\xff\xfe\xfd\xfc\xfb\xfa", "", "u:", uint64(3))
	f.Fuzz(func(t *testing.T, s1, s2, input, wrap string, seed uint64) {
		const marker = "\x00"
		if strings.Contains(s1+s2, marker) || len(input) > 4096 || len(s1) > 256 || len(s2) > 256 {
			t.Skip()
		}
		secrets := map[string]string{"ONE": s1, "TWO": s2}
		// Plant the secrets, raw and encoded, so matches are exercised.
		in := input + s1 + wrap + base64.StdEncoding.EncodeToString([]byte(wrap+s2+wrap)) + url.QueryEscape(s1) + input + s2
		r := redact.NewWithOptions(secrets, redact.Options{Replacement: func(string) string { return marker }})
		out := r.String(in)
		got, err := chunked(r, in, rand.New(rand.NewPCG(seed, seed>>7)))
		if err != nil {
			t.Fatal(err)
		}
		if got != out {
			t.Fatalf("stream %q != string %q", got, out)
		}
		if !bytes.Equal(r.Bytes([]byte(in)), []byte(out)) {
			t.Fatal("Bytes != String")
		}
		for _, piece := range strings.Split(out, marker) {
			for _, s := range []string{s1, s2} {
				for _, form := range redact.Forms(s) {
					if strings.Contains(piece, form) {
						t.Fatalf("form %q of %q survived in %q", form, s, out)
					}
				}
			}
		}
		for _, s := range []string{s1, s2} {
			if len(s) >= redact.MinLen && strings.Contains(out, s) {
				t.Fatalf("%q survived in %q", s, out)
			}
		}
		// Default markers: no panic.
		_ = redact.New(secrets).String(in)
	})
}
