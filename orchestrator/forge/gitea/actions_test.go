package gitea_test

import (
	"strings"
	"testing"

	"github.com/nightshift/nightshift/orchestrator/forge"
	"github.com/nightshift/nightshift/orchestrator/forge/gitea/giteatest"
)

// TestActionsFailureWithLog: a Gitea Actions job that fails (run by the
// stand-in runner through Gitea's runner protocol) is read back as a
// failing check with the end of its log, timestamps stripped, and its own
// commit status is not reported a second time.
func TestActionsFailureWithLog(t *testing.T) {
	h := newHarness(t).(*harness)
	r := h.CreateRepo(t, "actions-fail", nil)
	runner, err := h.s.Runner(tctx(t))
	if err != nil {
		t.Fatal(err)
	}
	path, wf := giteatest.Workflow("CI", "unit-tests")
	sha := h.Push(t, r, "feature/actions", map[string]string{path: wf, "main.go": "package main\n"})
	job, err := runner.Finish(tctx(t), "failure", "Run go test ./...\n--- FAIL: TestGreeting (0.00s)\n    greet_test.go:9: want a friendly greeting\nFAIL")
	if err != nil {
		t.Fatalf("%v\n%s", err, h.s.Log())
	}
	if job.SHA != sha {
		t.Fatalf("the runner got a job on %s, pushed %s", job.SHA, sha)
	}
	fs, err := h.d.CIFailures(tctx(t), r, forge.CIQuery{Ref: "feature/actions", Prefer: "unit-tests", MaxLogs: 2, LogBytes: 2048})
	if err != nil {
		t.Fatal(err)
	}
	if len(fs) != 1 || fs[0].Kind != forge.CICheck || fs[0].Name != "unit-tests" || fs[0].Conclusion != "failure" || fs[0].URL == "" {
		t.Fatalf("failures %+v", fs)
	}
	if !strings.Contains(fs[0].Log, "--- FAIL: TestGreeting") || strings.Contains(fs[0].Log, "Z ---") {
		t.Fatalf("log %q", fs[0].Log)
	}
}
