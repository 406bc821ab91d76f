package main

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"gopkg.in/yaml.v3"
)

// tempRepos is a repos[].match naming every local repository under the
// temp dir, where newOrigin creates the tests' origins.
var tempRepos = filepath.Join(os.TempDir(), "**")

// withTempRepos appends a repos[] entry {match: <tmp>/**} to a test config:
// "*" does not name local paths, and the API dispatches a local repository
// only when a repos[].match entry names it. Appended last, the entry
// changes no other entry's settings.
func withTempRepos(t *testing.T, cfg string) string {
	t.Helper()
	var doc yaml.Node
	if err := yaml.Unmarshal([]byte(cfg), &doc); err != nil {
		t.Fatalf("test config is not YAML: %v\n%s", err, cfg)
	}
	entry := &yaml.Node{Kind: yaml.MappingNode, Content: []*yaml.Node{
		{Kind: yaml.ScalarNode, Value: "match"}, {Kind: yaml.ScalarNode, Value: tempRepos, Style: yaml.DoubleQuotedStyle}}}
	if len(doc.Content) == 0 {
		doc = yaml.Node{Kind: yaml.DocumentNode, Content: []*yaml.Node{{Kind: yaml.MappingNode}}}
	}
	root := doc.Content[0]
	for i := 0; i+1 < len(root.Content); i += 2 {
		if root.Content[i].Value == "repos" {
			root.Content[i+1].Content = append(root.Content[i+1].Content, entry)
			return marshalYAML(t, &doc)
		}
	}
	root.Content = append(root.Content, &yaml.Node{Kind: yaml.ScalarNode, Value: "repos"},
		&yaml.Node{Kind: yaml.SequenceNode, Content: []*yaml.Node{entry}})
	return marshalYAML(t, &doc)
}

func marshalYAML(t *testing.T, doc *yaml.Node) string {
	t.Helper()
	b, err := yaml.Marshal(doc)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

// TestDispatchLocalRepoPolicy: serve hands the API its repos[].match
// entries and data dir: a local path no entry names, and a repository
// inside the data dir (where worktrees and agent homes live) are refused
// with a clear message; a named origin is dispatched.
func TestDispatchLocalRepoPolicy(t *testing.T) {
	t.Parallel()
	s := startTestServer(t, yamlWith("true", "2m"))
	origin := newOrigin(t)
	s.dispatch(t, origin, "script", "named by <tmp>/**")

	planted := filepath.Join(s.DataDir, "tasks", "planted.git")
	if err := os.MkdirAll(planted, 0o755); err != nil {
		t.Fatal(err)
	}
	outside, err := os.Getwd() // the package's source dir: exists, and no entry names it
	if err != nil || strings.HasPrefix(outside, os.TempDir()) {
		outside = "/"
	}
	for repo, want := range map[string]string{planted: "data directory", outside: "repos[].match"} {
		out, err := s.cli(t, "dispatch", "--repo", repo, "--agent", "script", "x")
		if err == nil || !strings.Contains(out+err.Error(), want) {
			t.Errorf("dispatch --repo %s: %v %s; want a refusal naming %q", repo, err, out, want)
		}
	}
}
