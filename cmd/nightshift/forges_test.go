package main

import (
	"context"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/nightshift/nightshift/config"
	"github.com/nightshift/nightshift/orchestrator/forge"
)

// TestForgeWiring: every forges: entry with a token becomes a driver of
// its kind on its host (the github: block is newRoundTrip's), entries
// without one get none, and the webhook side gets each entry's resolved
// secrets, trigger and git URL.
func TestForgeWiring(t *testing.T) {
	p := filepath.Join(t.TempDir(), "nightshift.yaml")
	if err := os.WriteFile(p, []byte(`
github:
  token: "${env:GH}"
forges:
  - kind: gitlab
    api_url: https://gitlab.example.test/api/v4/
    token: "${env:GL}"
    webhook_secrets: ["${env:GL_HOOK}", old]
    trigger: "@bot"
  - kind: forgejo
    api_url: https://code.example.test/api/v1/
    token: "${env:GT}"
  - kind: github
    api_url: https://ghe.example.test/api/v3/
    webhook_secrets: [ghe]
  - kind: gitea
    api_url: https://hooks-only.example.test/api/v1/
`), 0o600); err != nil {
		t.Fatal(err)
	}
	env := map[string]string{"GH": "ghp", "GL": "glpat", "GL_HOOK": "s3cret", "GT": "gitea"}
	cfg, err := config.Load(p, env)
	if err != nil {
		t.Fatal(err)
	}
	resolve := func(s config.Secret) (string, error) { return s.Resolve(context.Background(), env, nil) }
	resolveAll := func(l []config.Secret) ([]string, error) { return config.ResolveAll(context.Background(), l, env, nil) }
	log := slog.New(slog.DiscardHandler)

	ds, err := newForgeDrivers(cfg, resolve, func(s string) string { return s }, log)
	if err != nil {
		t.Fatal(err)
	}
	var got []string
	for _, d := range ds {
		got = append(got, string(d.Kind())+"@"+d.Host())
	}
	if strings.Join(got, " ") != "gitlab@gitlab.example.test gitea@code.example.test" {
		t.Fatalf("drivers %v", got)
	}
	reg, err := forge.NewRegistry(ds...)
	if err != nil {
		t.Fatal(err)
	}
	if d, r, ok := reg.ForRepo("https://gitlab.example.test/acme/platform/app.git"); !ok || d.Kind() != forge.KindGitLab || r.Owner != "acme/platform" {
		t.Fatalf("gitlab repo routed to %v %+v %v", d, r, ok)
	}

	hooks, sources, err := forgeWebhooks(cfg, resolveAll, log)
	if err != nil {
		t.Fatal(err)
	}
	if len(sources) != 2 || len(hooks) != 4 {
		t.Fatalf("%d sources, %d hosts: %+v", len(sources), len(hooks), hooks)
	}
	gl := hooks[0]
	if gl.Kind != forge.KindGitLab || gl.GitURL != "https://gitlab.example.test/" || strings.Join(gl.Secrets, ",") != "s3cret,old" || gl.Trigger != "@bot" {
		t.Fatalf("gitlab hooks %+v", gl)
	}
	if hooks[1].Kind != forge.KindGitea || hooks[2].Kind != forge.KindGitHub || hooks[2].GitURL != "https://ghe.example.test/" {
		t.Fatalf("hooks %+v", hooks)
	}
	if keys := forgeSecretKeys(cfg); len(keys) != 2 || keys["forges[0].token"] != "${env:GL}" {
		t.Fatalf("secret keys %v", keys)
	}
}
