package automation

import (
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/nightshift/nightshift/config"
	"github.com/nightshift/nightshift/orchestrator"
)

const goldenDir = "../../ingress/webhook/testdata"

// goldenEvents returns the normalized event of every golden file that has
// one, by file name, with the golden's JSON as a generic document.
func goldenEvents(t testing.TB) (map[string]*orchestrator.Event, map[string]map[string]any) {
	files, err := filepath.Glob(filepath.Join(goldenDir, "*.golden.json"))
	if err != nil || len(files) < 40 {
		t.Fatalf("golden files: %d, %v", len(files), err)
	}
	evs, docs := map[string]*orchestrator.Event{}, map[string]map[string]any{}
	for _, f := range files {
		b, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		var g struct {
			Event json.RawMessage `json:"event"`
		}
		if err := json.Unmarshal(b, &g); err != nil {
			t.Fatalf("%s: %v", f, err)
		}
		if len(g.Event) == 0 {
			continue
		}
		var ev orchestrator.Event
		var doc map[string]any
		if err := json.Unmarshal(g.Event, &ev); err != nil {
			t.Fatal(err)
		}
		json.Unmarshal(g.Event, &doc)
		name := strings.TrimSuffix(filepath.Base(f), ".golden.json")
		evs[name], docs[name] = &ev, doc
	}
	return evs, docs
}

// leafPaths lists the scalar leaves of a JSON document with their text.
func leafPaths(prefix string, v any, out map[string]string) {
	switch x := v.(type) {
	case map[string]any:
		for k, c := range x {
			leafPaths(strings.TrimPrefix(prefix+"."+k, "."), c, out)
		}
	case string:
		out[prefix] = x
	case []any:
	default:
		b, _ := json.Marshal(x)
		out[prefix] = string(b)
	}
}

func mustFilter(t *testing.T, on config.On, where ...config.Filter) *Filter {
	t.Helper()
	f, err := CompileFilter(on, where)
	if err != nil {
		t.Fatal(err)
	}
	return f
}

// TestFilterEveryFieldOfEveryGolden addresses every field of every golden
// normalized event with every operator, each once matching and once not.
func TestFilterEveryFieldOfEveryGolden(t *testing.T) {
	t.Parallel()
	evs, docs := goldenEvents(t)
	if len(evs) < 20 {
		t.Fatalf("only %d golden events", len(evs))
	}
	checked := 0
	for name, ev := range evs {
		leaves := map[string]string{}
		leafPaths("", docs[name], leaves)
		for field, val := range leaves {
			if field == "repo" {
				continue // also answers as host/owner/name: see TestFilterTable
			}
			if !eventFields[field] {
				t.Errorf("%s: golden field %q is not addressable", name, field)
				continue
			}
			on := config.On{Source: string(ev.Source), Kind: ev.Kind}
			other := val + "-not"
			for _, tc := range []struct {
				w    config.Filter
				want bool
			}{
				{config.Filter{Field: field, Op: "eq", Value: config.Values{val}}, true},
				{config.Filter{Field: field, Op: "eq", Value: config.Values{other}}, false},
				{config.Filter{Field: field, Op: "ne", Value: config.Values{val}}, false},
				{config.Filter{Field: field, Op: "ne", Value: config.Values{other}}, true},
				{config.Filter{Field: field, Op: "glob", Value: config.Values{"*"}}, !strings.Contains(val, "/")},
				{config.Filter{Field: field, Op: "regex", Value: config.Values{"^" + regexp.QuoteMeta(val) + "$"}}, true},
				{config.Filter{Field: field, Op: "regex", Value: config.Values{"^" + regexp.QuoteMeta(other) + "$"}}, false},
				{config.Filter{Field: field, Op: "contains", Value: config.Values{val}}, true},
				{config.Filter{Field: field, Op: "contains", Value: config.Values{other}}, false},
				{config.Filter{Field: field, Op: "in", Value: config.Values{other, val}}, true},
				{config.Filter{Field: field, Op: "in", Value: config.Values{other}}, false},
			} {
				if got := mustFilter(t, on, tc.w).Match(ev); got != tc.want {
					t.Errorf("%s: %s %s %q = %v, want %v", name, tc.w.Field, tc.w.Op, tc.w.Value, got, tc.want)
				}
				checked++
			}
		}
		// The right source and kind match with no where; a wrong one never.
		if !mustFilter(t, config.On{Source: string(ev.Source), Kind: ev.Kind}).Match(ev) {
			t.Errorf("%s: on {%s, %s} does not match", name, ev.Source, ev.Kind)
		}
		if mustFilter(t, config.On{Source: string(ev.Source), Kind: ev.Kind + ".x"}).Match(ev) {
			t.Errorf("%s: on kind %s.x matches", name, ev.Kind)
		}
	}
	if checked < 1000 {
		t.Fatalf("only %d checks", checked)
	}
}

// TestFilterTable holds hand-written automations over golden events.
func TestFilterTable(t *testing.T) {
	t.Parallel()
	evs, _ := goldenEvents(t)
	w := func(field, op string, vals ...string) config.Filter {
		return config.Filter{Field: field, Op: op, Value: vals}
	}
	gh := config.On{Source: "github"}
	for _, tc := range []struct {
		golden string
		on     config.On
		where  []config.Filter
		want   bool
	}{
		{"derived.issues.labeled.nightshift", config.On{Source: "github", Kind: "issue.labeled"}, []config.Filter{w("repo", "glob", "Codertocat/*")}, true},
		{"derived.issues.labeled.nightshift", config.On{Source: "github", Kind: "issue.labeled"}, []config.Filter{w("repo", "glob", "acme/*")}, false},
		{"derived.issues.labeled.nightshift", gh, []config.Filter{w("repo", "eq", "github.com/Codertocat/Hello-World")}, true},
		{"derived.issues.labeled.nightshift", gh, []config.Filter{w("target.number", "eq", "1"), w("actor.login", "eq", "Codertocat")}, true},
		{"derived.issues.labeled.nightshift", gh, []config.Filter{w("target.number", "in", "2", "3")}, false},
		{"derived.issues.labeled.nightshift", config.On{Kind: "issue.*"}, []config.Filter{w("instruction", "contains", "README")}, true},
		{"derived.issues.labeled.nightshift", gh, []config.Filter{w("target.url", "regex", `/issues/\d+$`)}, true},
		{"derived.issues.labeled.nightshift", gh, []config.Filter{w("actor.is_bot", "eq", "true")}, false},
		{"derived.issues.labeled.nightshift", gh, []config.Filter{w("target.head_sha", "eq", "")}, true},
		{"derived.issues.labeled.nightshift", gh, []config.Filter{w("label", "eq", "bug")}, false}, // no payload kept in goldens
		{"derived.linear.issue_update.assigned", config.On{Source: "linear", Kind: "ticket.*"}, nil, true},
		{"derived.linear.issue_update.assigned", gh, nil, false},
		{"derived.slack.command", config.On{Source: "slack"}, []config.Filter{w("kind", "ne", "slack.action")}, true},
	} {
		ev, ok := evs[tc.golden]
		if !ok {
			t.Fatalf("no golden event %s", tc.golden)
		}
		if got := mustFilter(t, tc.on, tc.where...).Match(ev); got != tc.want {
			t.Errorf("%s %+v %+v = %v, want %v", tc.golden, tc.on, tc.where, got, tc.want)
		}
	}
}

// TestFilterLabelFromPayload reads the label of a real issues.labeled
// payload (the triage-bugs example) and a Linear issue's labels.
func TestFilterLabelFromPayload(t *testing.T) {
	t.Parallel()
	raw, err := os.ReadFile(filepath.Join(goldenDir, "fixtures/octokit-webhooks/issues.labeled.json"))
	if err != nil {
		t.Fatal(err)
	}
	ev := &orchestrator.Event{Source: "github", Kind: "issue.labeled", Repo: "https://github.com/acme/api.git", Raw: raw}
	f := mustFilter(t, config.On{Source: "github", Kind: "issue.labeled"},
		config.Filter{Field: "label", Op: "eq", Value: config.Values{"bug"}}, config.Filter{Field: "repo", Op: "glob", Value: config.Values{"acme/*"}})
	if !f.Match(ev) {
		t.Error("triage-bugs does not match a bug label on acme/api")
	}
	if mustFilter(t, config.On{}, config.Filter{Field: "label", Op: "eq", Value: config.Values{"nightshift"}}).Match(ev) {
		t.Error("label nightshift matches a bug label")
	}
	if !mustFilter(t, config.On{}, config.Filter{Field: "raw.issue.user.login", Op: "eq", Value: config.Values{"Codertocat"}}).Match(ev) {
		t.Error("raw.issue.user.login does not reach into the payload")
	}
	lin := &orchestrator.Event{Source: "linear", Raw: json.RawMessage(`{"data":{"labels":[{"name":"Bug"},{"name":"p1"}]}}`)}
	if !mustFilter(t, config.On{}, config.Filter{Field: "label", Op: "in", Value: config.Values{"p1"}}).Match(lin) {
		t.Error("Linear labels are not read")
	}
}

func TestCompileErrorsNameTheKey(t *testing.T) {
	t.Parallel()
	base := config.Automation{Name: "a", On: &config.On{Kind: "x"}, Prompt: "p"}
	for _, tc := range []struct {
		mut func(*config.Automation)
		key string
	}{
		{func(a *config.Automation) {
			a.Where = []config.Filter{{Field: "actor.logn", Op: "eq", Value: config.Values{"x"}}}
		}, "where[0].field"},
		{func(a *config.Automation) {
			a.Where = []config.Filter{{Field: "repo", Op: "like", Value: config.Values{"x"}}}
		}, "where[0].op"},
		{func(a *config.Automation) { a.Prompt = "{{.Target.Link}}" }, "prompt"},
		{func(a *config.Automation) { a.Prompt = "{{.Target.URL" }, "prompt"},
		{func(a *config.Automation) { a.On, a.Schedule, a.Repo = nil, "61 * * * *", "r" }, "schedule"},
		{func(a *config.Automation) { a.On, a.Schedule, a.Repo = nil, "@every 1500ms", "r" }, "schedule"},
		{func(a *config.Automation) { a.On, a.Schedule, a.Repo, a.Timezone = nil, "@daily", "r", "Mars/Olympus" }, "timezone"},
	} {
		a := base
		tc.mut(&a)
		_, err := Compile(a)
		var ce *config.Error
		if err == nil || !errorsAs(err, &ce) || ce.Key != tc.key {
			t.Errorf("%+v: err = %v, want key %s", a, err, tc.key)
		}
	}
	if _, err := Compile(config.Automation{Name: "n", Schedule: "0 3 * * 1-5", Timezone: "Europe/Paris", Repo: "r", Prompt: "{{.Automation.Name}} {{.Repo}}"}); err != nil {
		t.Fatal(err)
	}
}

func TestNextFire(t *testing.T) {
	t.Parallel()
	c, err := Compile(config.Automation{Name: "n", Schedule: "0 3 * * 1-5", Timezone: "Europe/Paris", Repo: "r", Prompt: "p"})
	if err != nil {
		t.Fatal(err)
	}
	sat := mustTime(t, "2026-12-05T12:00:00Z") // a Saturday
	if got := c.Next(sat); !got.Equal(mustTime(t, "2026-12-07T02:00:00Z")) {
		t.Errorf("next of weekday 03:00 Paris after Saturday noon = %v", got)
	}
	e, _ := Compile(config.Automation{Name: "e", Schedule: "@every 30m", Repo: "r", Prompt: "p"})
	if got := e.Next(mustTime(t, "2026-12-05T12:29:59Z")); !got.Equal(mustTime(t, "2026-12-05T12:30:00Z")) {
		t.Errorf("@every 30m after 12:29:59 = %v", got)
	}
	if got := e.Next(mustTime(t, "2026-12-05T12:30:00Z")); !got.Equal(mustTime(t, "2026-12-05T13:00:00Z")) {
		t.Errorf("@every 30m after 12:30:00 = %v", got)
	}
}

func FuzzCompileFilter(f *testing.F) {
	evs, _ := goldenEvents(f)
	names := make([]string, 0, len(evs))
	for n := range evs {
		names = append(names, n)
	}
	sort.Strings(names)
	for i, n := range names {
		ev := evs[n]
		f.Add(string(ev.Source), ev.Kind, "actor.login", config.FilterOps[i%len(config.FilterOps)], ev.Actor.Login, uint(i))
		f.Add(string(ev.Source), ev.Kind+"*", "target.url", "regex", `^https://.*/(\d+)$`, uint(i))
	}
	f.Add("[", "*", "raw.a.0.b", "glob", "[", uint(0))
	f.Fuzz(func(t *testing.T, source, kind, field, op, value string, pick uint) {
		ev := evs[names[int(pick%uint(len(names)))]]
		flt, err := CompileFilter(config.On{Source: source, Kind: kind}, []config.Filter{{Field: field, Op: op, Value: config.Values{value}}})
		if err != nil {
			if !strings.Contains(err.Error(), ":") {
				t.Fatalf("error without a key: %v", err)
			}
			return
		}
		flt.Match(ev) // must not panic
		a := config.Automation{Name: "f", On: &config.On{Source: source, Kind: kind}, Prompt: fmt.Sprintf("{{.Repo}} %s", value),
			Where: []config.Filter{{Field: field, Op: op, Value: config.Values{value}}}}
		if c, err := Compile(a); err == nil {
			c.Matches(ev)
		}
	})
}

func errorsAs(err error, target **config.Error) bool { return errors.As(err, target) }

func mustTime(t *testing.T, s string) time.Time {
	t.Helper()
	v, err := time.Parse(time.RFC3339, s)
	if err != nil {
		t.Fatal(err)
	}
	return v
}

// TestREADMEExampleCompiles loads and compiles the automations example of
// the README's Automations section, as written.
func TestREADMEExampleCompiles(t *testing.T) {
	t.Parallel()
	readme, err := os.ReadFile("../../README.md")
	if err != nil {
		t.Fatal(err)
	}
	_, section, ok := strings.Cut(string(readme), "\n### Automations\n")
	if !ok {
		t.Fatal("README has no Automations section")
	}
	_, block, _ := strings.Cut(section, "```yaml\n")
	block, _, _ = strings.Cut(block, "```")
	var c config.Config
	if err := config.Parse([]byte(block), &c); err != nil {
		t.Fatal(err)
	}
	if len(c.Automations) != 2 {
		t.Fatalf("%d automations in the README example", len(c.Automations))
	}
	for _, a := range c.Automations {
		if _, err := Compile(a); err != nil {
			t.Errorf("%s: %v", a.Name, err)
		}
	}
}

// TestFilterLabelOfForges: label reads Gitea's issue labels (a real
// Gitea's label_updated delivery) and the labels a GitLab update added
// (GitLab's issue hook: API replaced by Platform), not those it removed;
// a GitHub labeled payload answers only the label it names, not the
// issue's other labels.
func TestFilterLabelOfForges(t *testing.T) {
	t.Parallel()
	read := func(name string) json.RawMessage {
		b, err := os.ReadFile(filepath.Join(goldenDir, name))
		if err != nil {
			t.Fatal(err)
		}
		return b
	}
	label := func(v string) *Filter {
		return mustFilter(t, config.On{}, config.Filter{Field: "label", Op: "eq", Value: config.Values{v}})
	}
	gitea := &orchestrator.Event{Source: "gitea", Kind: "issue.labeled", Raw: read("gitea/issues.label_updated.nightshift.json")}
	if !label("nightshift").Match(gitea) || label("bug").Match(gitea) {
		t.Error("Gitea issue labels are not read")
	}
	gitlab := &orchestrator.Event{Source: "gitlab", Kind: "issue.labeled", Raw: read("gitlab/client-go/issue.json")}
	if !label("Platform").Match(gitlab) || label("API").Match(gitlab) {
		t.Error("GitLab: label is not the label the update added")
	}
	gh := &orchestrator.Event{Source: "github", Kind: "issue.labeled", Raw: json.RawMessage(
		`{"label":{"name":"documentation"},"issue":{"labels":[{"name":"bug"},{"name":"documentation"}]}}`)}
	if label("bug").Match(gh) || !label("documentation").Match(gh) {
		t.Error("GitHub labeled: label is not only the label added")
	}
}
