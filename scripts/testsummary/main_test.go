package main

import (
	"strings"
	"testing"
)

// TestUnfinishedTestFails: a test binary killed while a test runs (a hang
// caught by SIGQUIT or -timeout) leaves a test that started and never
// ended; it must count as failed and its output (the goroutine dump) be
// printed, not vanish behind "0 failed".
func TestUnfinishedTestFails(t *testing.T) {
	in := strings.Join([]string{
		`{"Action":"run","Package":"p","Test":"TestHung"}`,
		`{"Action":"output","Package":"p","Test":"TestHung","Output":"goroutine 7 [select]:\n"}`,
		`{"Action":"run","Package":"p","Test":"TestOK"}`,
		`{"Action":"pass","Package":"p","Test":"TestOK"}`,
		`{"Action":"run","Package":"p","Test":"TestParent"}`,
		`{"Action":"run","Package":"p","Test":"TestParent/sub"}`,
		`{"Action":"pass","Package":"p","Test":"TestParent/sub"}`,
		`{"Action":"pass","Package":"p","Test":"TestParent"}`,
	}, "\n")
	var out strings.Builder
	code := summarize(strings.NewReader(in), &out)
	got := out.String()
	if code != 1 || !strings.Contains(got, "--- FAIL: TestHung (did not finish)") || !strings.Contains(got, "goroutine 7 [select]") ||
		!strings.Contains(got, "summary: 3 passed, 1 failed, 0 skipped") {
		t.Fatalf("exit %d\n%s", code, got)
	}
	out.Reset()
	if code := summarize(strings.NewReader(`{"Action":"run","Package":"p","Test":"TestOK"}`+"\n"+`{"Action":"pass","Package":"p","Test":"TestOK"}`), &out); code != 0 {
		t.Fatalf("a clean run exits %d\n%s", code, out.String())
	}
}
