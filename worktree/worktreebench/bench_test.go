package worktreebench

import (
	"bytes"
	"context"
	"regexp"
	"testing"
)

func TestRunSmall(t *testing.T) {
	if testing.Short() {
		t.Skip("generates repositories")
	}
	var out bytes.Buffer
	err := Run(context.Background(), &out, []string{"-files", "60", "-small", "0", "-commits", "5", "-runs", "1", "-dir", t.TempDir()})
	if err != nil {
		t.Fatalf("%v\n%s", err, out.String())
	}
	if !regexp.MustCompile(`(?m)\nratio=[0-9.]+\n$`).MatchString(out.String()) {
		t.Fatalf("output does not end with ratio=:\n%s", out.String())
	}
}
