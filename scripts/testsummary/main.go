// Command testsummary reads `go test -json` on stdin, prints each test's
// result as it ends, then the whole output of every failed test, and a last
// line "summary: N passed, N failed, N skipped". It exits 1 when anything
// failed (a test, a package, or the build).
package main

import (
	"bufio"
	"encoding/json"
	"fmt"
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

func main() {
	out := map[string]*strings.Builder{} // package/test → output
	var failed []string
	passed, skipped, failedN := 0, 0, 0
	pkgFailed := false
	sc := bufio.NewScanner(os.Stdin)
	sc.Buffer(make([]byte, 1<<20), 64<<20)
	for sc.Scan() {
		line := sc.Bytes()
		var e event
		if json.Unmarshal(line, &e) != nil {
			fmt.Println(string(line)) // build errors and other plain text
			pkgFailed = pkgFailed || strings.Contains(string(line), "build failed") || strings.HasPrefix(string(line), "FAIL")
			continue
		}
		key := e.Package + " " + e.Test
		switch e.Action {
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
					fmt.Printf("FAIL %s (%.1fs)\n", e.Package, e.Elapsed)
					failed = append(failed, key)
				} else {
					fmt.Printf("ok   %s (%.1fs)\n", e.Package, e.Elapsed)
				}
				continue
			}
			fmt.Printf("--- %s: %s (%.2fs) [%s]\n", strings.ToUpper(e.Action), e.Test, e.Elapsed, e.Package)
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
	sort.Strings(failed)
	for _, k := range failed {
		fmt.Printf("\n===== output of %s =====\n", k)
		if b := out[k]; b != nil {
			fmt.Print(b.String())
		}
	}
	fmt.Printf("\nsummary: %d passed, %d failed, %d skipped\n", passed, failedN, skipped)
	if failedN > 0 || pkgFailed {
		os.Exit(1)
	}
}
