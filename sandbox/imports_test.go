package sandbox_test

import (
	"os/exec"
	"strings"
	"testing"
)

// TestImports keeps the sandbox a leaf: it must not depend on the task
// domain, ingress or the command.
func TestImports(t *testing.T) {
	out, err := exec.Command("go", "list", "-deps", "-test=false", "github.com/nightshift/nightshift/sandbox/...").CombinedOutput()
	if err != nil {
		t.Skipf("missing capability: go list: %v %s", err, out)
	}
	for _, dep := range strings.Fields(string(out)) {
		for _, bad := range []string{"/orchestrator", "/ingress", "/cmd/", "/worktree", "/identity", "/vault", "/config"} {
			if strings.HasPrefix(dep, "github.com/nightshift/nightshift") && strings.Contains(dep, bad) {
				t.Errorf("sandbox depends on %s", dep)
			}
		}
	}
}
