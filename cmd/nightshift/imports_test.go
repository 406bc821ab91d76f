package main

import (
	"encoding/json"
	"io"
	"os/exec"
	"strings"
	"testing"
)

// TestImportGraphPointsInward fails when a package imports one it must not:
// leaves never import the orchestrator, ingress or cmd (nor, mostly, each
// other); the orchestrator never imports ingress or cmd; the agent adapters
// and the model gateway never import the orchestrator's root (it imports
// them); ingress never imports cmd.
func TestImportGraphPointsInward(t *testing.T) {
	t.Parallel()
	const mod = "github.com/nightshift/nightshift/"
	out, err := exec.Command("go", "list", "-json=ImportPath,Imports", mod+"...").Output()
	if err != nil {
		t.Fatalf("go list: %v", err)
	}
	forbidden := map[string][]string{
		"config":       {"orchestrator", "ingress", "cmd", "sandbox", "worktree", "identity", "vault"},
		"sandbox":      {"orchestrator", "ingress", "cmd", "worktree", "identity", "vault", "config"},
		"worktree":     {"orchestrator", "ingress", "cmd", "sandbox", "identity", "vault", "config"},
		"vault":        {"orchestrator", "ingress", "cmd", "sandbox", "worktree", "identity", "config"},
		"identity":     {"orchestrator", "ingress", "cmd", "sandbox", "worktree", "config"},
		"orchestrator": {"ingress", "cmd"},
		"ingress":      {"cmd"},
	}
	dec := json.NewDecoder(strings.NewReader(string(out)))
	checked := 0
	for {
		var p struct {
			ImportPath string
			Imports    []string
		}
		if err := dec.Decode(&p); err == io.EOF {
			break
		} else if err != nil {
			t.Fatal(err)
		}
		rel := strings.TrimPrefix(p.ImportPath, mod)
		top, _, _ := strings.Cut(rel, "/")
		for _, imp := range p.Imports {
			if !strings.HasPrefix(imp, mod) {
				continue
			}
			impTop, _, _ := strings.Cut(strings.TrimPrefix(imp, mod), "/")
			for _, bad := range forbidden[top] {
				if impTop == bad {
					t.Errorf("%s imports %s", p.ImportPath, imp)
				}
			}
			if (strings.HasPrefix(rel, "orchestrator/agent") || strings.HasPrefix(rel, "orchestrator/gateway")) && imp == mod+"orchestrator" {
				t.Errorf("%s imports the orchestrator root, which imports it", p.ImportPath)
			}
			checked++
		}
	}
	if checked < 20 {
		t.Fatalf("only %d internal imports seen: the check is not looking at the module", checked)
	}
}
