package github_test

import (
	"go/parser"
	"go/token"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
)

// TestImports keeps the dependency graph a DAG: reporters may use the
// orchestrator's domain, never the ingress or the binary.
func TestImports(t *testing.T) {
	checkImports(t, ".")
}

func checkImports(t *testing.T, dir string) {
	t.Helper()
	files, _ := filepath.Glob(filepath.Join(dir, "*.go"))
	for _, f := range files {
		if strings.HasSuffix(f, "_test.go") {
			continue
		}
		af, err := parser.ParseFile(token.NewFileSet(), f, nil, parser.ImportsOnly)
		if err != nil {
			t.Fatal(err)
		}
		for _, imp := range af.Imports {
			p, _ := strconv.Unquote(imp.Path.Value)
			for _, bad := range []string{"github.com/nightshift/nightshift/ingress", "github.com/nightshift/nightshift/cmd"} {
				if strings.HasPrefix(p, bad) {
					t.Errorf("%s imports %s", f, p)
				}
			}
		}
	}
}
