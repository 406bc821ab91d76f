package agent_test

import (
	"go/parser"
	"go/token"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
)

// TestImports keeps the agent and gateway packages leaves: the root
// orchestrator package imports them, so they must not import it (or
// ingress or cmd).
func TestImports(t *testing.T) {
	t.Parallel()
	const mod = "github.com/nightshift/nightshift/"
	forbidden := []string{mod + "orchestrator", mod + "ingress", mod + "cmd"}
	for _, dir := range []string{".", "modelserver", "../gateway"} {
		files, _ := filepath.Glob(filepath.Join(dir, "*.go"))
		if len(files) == 0 {
			t.Fatalf("no Go files in %s", dir)
		}
		for _, f := range files {
			if strings.HasSuffix(f, "_test.go") {
				continue
			}
			src, err := os.ReadFile(f)
			if err != nil {
				t.Fatal(err)
			}
			af, err := parser.ParseFile(token.NewFileSet(), f, src, parser.ImportsOnly)
			if err != nil {
				t.Fatal(err)
			}
			for _, imp := range af.Imports {
				p, _ := strconv.Unquote(imp.Path.Value)
				for _, bad := range forbidden {
					if p == bad || strings.HasPrefix(p, bad+"/") && !strings.HasPrefix(p, mod+"orchestrator/agent") && !strings.HasPrefix(p, mod+"orchestrator/gateway") {
						t.Errorf("%s imports %s", f, p)
					}
				}
			}
		}
	}
}
