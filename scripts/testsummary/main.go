// Command testsummary reads `go test -json` on stdin, prints each test's
// result as it ends, then the whole output of every failed test, and a last
// line "summary: N passed, N failed, N skipped". A test that started and
// never ended (its binary hung and was killed, or timed out) counts as
// failed, with its output (where the goroutine dump lands). It exits 1 when
// anything failed (a test, a package, or the build).
package main

import (
	"bufio"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"sort"
	"strings"
)

type event struct {
	Action  string
	Package string
	Test    string
	Output  string
	Elapsed float64
}

func main() { os.Exit(summarize(os.Stdin, os.Stdout)) }

// summarize reads go test -json from r, reports to w and returns the exit code.
func summarize(r io.Reader, w io.Writer) int {
	out := map[string]*strings.Builder{} // package/test → output
	var failed []string
	passed, skipped, failedN := 0, 0, 0
	pkgFailed := false
	running := map[string]bool{} // tests started and not ended
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 1<<20), 64<<20)
	for sc.Scan() {
		line := sc.Bytes()
		var e event
		if json.Unmarshal(line, &e) != nil {
			fmt.Fprintln(w, string(line)) // build errors and other plain text
			pkgFailed = pkgFailed || strings.Contains(string(line), "build failed") || strings.HasPrefix(string(line), "FAIL")
			continue
		}
		key := e.Package + " " + e.Test
		switch e.Action {
		case "run":
			running[key] = true
		case "output":
			b := out[key]
			if b == nil {
				b = &strings.Builder{}
				out[key] = b
			}
			if b.Len() < 256<<10 {
				b.WriteString(e.Output)
			}
		case "pass", "fail", "skip":
			if e.Test == "" {
				if e.Action == "fail" {
					pkgFailed = true
					fmt.Fprintf(w, "FAIL %s (%.1fs)\n", e.Package, e.Elapsed)
					failed = append(failed, key)
				} else {
					fmt.Fprintf(w, "ok   %s (%.1fs)\n", e.Package, e.Elapsed)
				}
				continue
			}
			delete(running, key)
			fmt.Fprintf(w, "--- %s: %s (%.2fs) [%s]\n", strings.ToUpper(e.Action), e.Test, e.Elapsed, e.Package)
			switch e.Action {
			case "pass":
				passed++
			case "skip":
				skipped++
			case "fail":
				failedN++
				failed = append(failed, key)
			}
		}
	}
	for key := range running {
		pkg, test, _ := strings.Cut(key, " ")
		fmt.Fprintf(w, "--- FAIL: %s (did not finish) [%s]\n", test, pkg)
		failedN++
		failed = append(failed, key)
	}
	sort.Strings(failed)
	for _, k := range failed {
		fmt.Fprintf(w, "\n===== output of %s =====\n", k)
		if b := out[k]; b != nil {
			fmt.Fprint(w, b.String())
		}
	}
	fmt.Fprintf(w, "\nsummary: %d passed, %d failed, %d skipped\n", passed, failedN, skipped)
	if failedN > 0 || pkgFailed {
		return 1
	}
	return 0
}
