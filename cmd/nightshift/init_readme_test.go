package main

import (
	"bytes"
	"context"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"

	"github.com/nightshift/nightshift/config"
)

// appendSnippets returns the body of every README snippet that appends to
// nightshift.yaml (cat >> nightshift.yaml <<'EOF' ... EOF).
func appendSnippets(t *testing.T) []string {
	t.Helper()
	readme, err := os.ReadFile("../../README.md")
	if err != nil {
		t.Fatal(err)
	}
	re := regexp.MustCompile(`(?s)cat >> nightshift\.yaml <<'EOF'\n(.*?)\nEOF\n`)
	var out []string
	for _, m := range re.FindAllStringSubmatch(string(readme), -1) {
		out = append(out, m[1]+"\n")
	}
	if len(out) == 0 {
		t.Fatal("README.md has no snippet that appends to nightshift.yaml (the \"Real agents\" one was expected)")
	}
	return out
}

// TestInitComposesWithTheREADMESnippets: `nightshift init`, then every
// README snippet that appends to nightshift.yaml, as written, loads; so
// does the quickstart's nightshift.yaml with the same snippets.
// A key really given twice is still refused, by name.
func TestInitComposesWithTheREADMESnippets(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	var out, errb bytes.Buffer
	if err := run(context.Background(), []string{"nightshift", "init", "--dir", dir}, baseEnv(t), strings.NewReader(""), &out, &errb); err != nil {
		t.Fatalf("init: %v\n%s", err, errb.String())
	}
	path := filepath.Join(dir, "nightshift.yaml")
	starter, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	composed := string(starter)
	for _, snip := range appendSnippets(t) {
		composed += snip
	}
	if err := os.WriteFile(path, []byte(composed), 0o600); err != nil {
		t.Fatal(err)
	}
	cfg, err := config.Load(path, nil)
	if err != nil {
		t.Fatalf("init + README snippets: %v\n%s", err, composed)
	}
	if cfg.DefaultAgent != "claude" || !cfg.Models.Anthropic.APIKey.IsSet() {
		t.Fatalf("the Real agents snippet did not take: default_agent %q, models.anthropic.api_key set %v",
			cfg.DefaultAgent, cfg.Models.Anthropic.APIKey.IsSet())
	}

	// The quickstart's own nightshift.yaml (cat > nightshift.yaml), then
	// the same snippets, loads too.
	readme, err := os.ReadFile("../../README.md")
	if err != nil {
		t.Fatal(err)
	}
	m := regexp.MustCompile(`(?s)cat > nightshift\.yaml <<'EOF'\n(.*?)\nEOF\n`).FindSubmatch(readme)
	if m == nil {
		t.Fatal("README.md has no quickstart nightshift.yaml (cat > nightshift.yaml <<'EOF')")
	}
	quick := string(m[1]) + "\n"
	for _, snip := range appendSnippets(t) {
		quick += snip
	}
	qpath := filepath.Join(t.TempDir(), "nightshift.yaml")
	if err := os.WriteFile(qpath, []byte(quick), 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := config.Load(qpath, nil); err != nil {
		t.Fatalf("quickstart + README snippets: %v\n%s", err, quick)
	}

	// The loader still refuses a real duplicate and names the key.
	if err := os.WriteFile(path, []byte(composed+"default_agent: codex\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := config.Load(path, nil); err == nil || !strings.Contains(err.Error(), "default_agent") || !strings.Contains(err.Error(), "already defined") {
		t.Fatalf("a duplicate default_agent: %v", err)
	}
}
