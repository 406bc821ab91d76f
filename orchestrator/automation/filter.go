package automation

import (
	"encoding/json"
	"fmt"
	"path"
	"reflect"
	"regexp"
	"strconv"
	"strings"

	"github.com/nightshift/nightshift/config"
	"github.com/nightshift/nightshift/orchestrator"
)

// Filter is a compiled on + where: source and kind globs and conditions
// over fields of the normalized event.
//
// A field is a dotted JSON path of orchestrator.Event (repo, kind,
// actor.login, target.number, automation.name), raw.<path> into the
// original payload, or label (the label an issues/pull_request labeled
// payload names, and the names of a Linear issue's labels). Numbers and
// booleans compare as their JSON text. repo also answers as host/owner/name
// and owner/name, so glob acme/* fits https://github.com/acme/api.git. A
// field with several values (label, repo) matches when any value does; ne
// matches when none is equal. A missing field is the empty string.
type Filter struct {
	source, kind string
	conds        []cond
}

type cond struct {
	field []string
	op    string
	vals  []string
	re    *regexp.Regexp
}

// CompileFilter compiles on and where; the error names the bad key.
func CompileFilter(on config.On, where []config.Filter) (*Filter, error) {
	f := &Filter{source: on.Source, kind: on.Kind}
	for k, g := range map[string]string{"on.source": on.Source, "on.kind": on.Kind} {
		if _, err := path.Match(g, ""); err != nil {
			return nil, &config.Error{Key: k, Msg: fmt.Sprintf("bad glob %q", g)}
		}
	}
	for i, w := range where {
		key := fmt.Sprintf("where[%d]", i)
		if err := (config.Automation{Name: "x", On: &on, Prompt: "x", Where: []config.Filter{w}}).Validate(); err != nil {
			return nil, &config.Error{Key: key + strings.TrimPrefix(err.Key, "where[0]"), Msg: err.Msg}
		}
		p := strings.Split(w.Field, ".")
		if err := checkField(p); err != nil {
			return nil, &config.Error{Key: key + ".field", Msg: err.Error()}
		}
		c := cond{field: p, op: w.Op, vals: w.Value}
		if w.Op == "regex" {
			c.re = regexp.MustCompile(w.Value[0]) // checked by Validate
		}
		f.conds = append(f.conds, c)
	}
	return f, nil
}

// eventFields is every JSON path of orchestrator.Event, leaves and
// objects, computed from its json tags.
var eventFields = func() map[string]bool {
	m := map[string]bool{"label": true}
	var walk func(t reflect.Type, prefix string)
	walk = func(t reflect.Type, prefix string) {
		for t.Kind() == reflect.Pointer {
			t = t.Elem()
		}
		for i := range t.NumField() {
			f := t.Field(i)
			name, _, _ := strings.Cut(f.Tag.Get("json"), ",")
			if name == "" || name == "-" {
				continue
			}
			p := prefix + name
			m[p] = true
			ft := f.Type
			for ft.Kind() == reflect.Pointer {
				ft = ft.Elem()
			}
			if ft.Kind() == reflect.Struct && ft.String() != "time.Time" {
				walk(ft, p+".")
			}
		}
	}
	walk(reflect.TypeOf(orchestrator.Event{}), "")
	return m
}()

func checkField(p []string) error {
	full := strings.Join(p, ".")
	for _, s := range p {
		if s == "" {
			return fmt.Errorf("%q: empty path segment", full)
		}
	}
	if p[0] == "raw" {
		return nil
	}
	if !eventFields[full] {
		return fmt.Errorf("unknown field %q (an event field such as repo, kind, actor.login, target.number, label, or raw.<path> into the payload)", full)
	}
	return nil
}

// Match reports whether ev passes the filter.
func (f *Filter) Match(ev *orchestrator.Event) bool {
	if ok, _ := path.Match(orStar(f.source), string(ev.Source)); !ok {
		return false
	}
	if ok, _ := path.Match(orStar(f.kind), ev.Kind); !ok {
		return false
	}
	if len(f.conds) == 0 {
		return true
	}
	doc := eventDoc(ev)
	for _, c := range f.conds {
		if !c.match(fieldValues(doc, ev, c.field)) {
			return false
		}
	}
	return true
}

func (f *Filter) matchesSource(src orchestrator.Source) bool {
	ok, _ := path.Match(orStar(f.source), string(src))
	return ok
}

func orStar(g string) string {
	if g == "" {
		return "*"
	}
	return g
}

func (c cond) match(vals []string) bool {
	if len(vals) == 0 {
		vals = []string{""}
	}
	if c.op == "ne" {
		for _, v := range vals {
			if v == c.vals[0] {
				return false
			}
		}
		return true
	}
	for _, v := range vals {
		switch c.op {
		case "eq":
			if v == c.vals[0] {
				return true
			}
		case "glob":
			if ok, _ := path.Match(c.vals[0], v); ok {
				return true
			}
		case "regex":
			if c.re.MatchString(v) {
				return true
			}
		case "contains":
			if strings.Contains(v, c.vals[0]) {
				return true
			}
		case "in":
			for _, w := range c.vals {
				if v == w {
					return true
				}
			}
		}
	}
	return false
}

// eventDoc is ev as generic JSON without its raw payload.
func eventDoc(ev *orchestrator.Event) map[string]any {
	cp := *ev
	cp.Raw = nil
	b, _ := json.Marshal(&cp)
	var m map[string]any
	json.Unmarshal(b, &m)
	return m
}

func fieldValues(doc map[string]any, ev *orchestrator.Event, p []string) []string {
	switch {
	case p[0] == "raw":
		var raw any
		if len(ev.Raw) == 0 || json.Unmarshal(ev.Raw, &raw) != nil {
			return nil
		}
		return leaves(walk(raw, p[1:]))
	case len(p) == 1 && p[0] == "label":
		return labels(ev)
	case len(p) == 1 && p[0] == "repo" && ev.Repo != "":
		key := config.RepoKey(ev.Repo)
		out := []string{ev.Repo, key}
		if _, rest, ok := strings.Cut(key, "/"); ok && !strings.HasPrefix(key, "/") {
			out = append(out, rest)
		}
		return out
	}
	return leaves(walk(doc, p))
}

func walk(v any, p []string) any {
	for _, s := range p {
		switch x := v.(type) {
		case map[string]any:
			v = x[s]
		case []any:
			i, err := strconv.Atoi(s)
			if err != nil || i < 0 || i >= len(x) {
				return nil
			}
			v = x[i]
		default:
			return nil
		}
	}
	return v
}

// leaves turns a value into the strings it compares as: a scalar is one,
// a list of scalars is each.
func leaves(v any) []string {
	switch x := v.(type) {
	case nil:
		return nil
	case string:
		return []string{x}
	case []any:
		var out []string
		for _, e := range x {
			switch e.(type) {
			case map[string]any, []any:
				continue
			}
			out = append(out, leaves(e)...)
		}
		return out
	case map[string]any:
		b, _ := json.Marshal(x)
		return []string{string(b)}
	default:
		b, _ := json.Marshal(x)
		return []string{string(b)}
	}
}

// labels returns the label names an event's payload carries: the label
// a GitHub labeled/unlabeled payload names (only that one); otherwise
// Linear's data.labels[].name, the issue's or pull request's labels
// (GitHub, Gitea: issue.labels[].name, pull_request.labels[].name), and
// GitLab's labels an update added (changes.labels current minus previous)
// or else its labels[].title.
func labels(ev *orchestrator.Event) []string {
	type named struct {
		ID    json.RawMessage `json:"id"`
		Name  string          `json:"name"`
		Title string          `json:"title"`
	}
	var p struct {
		Label *named `json:"label"`
		Data  struct {
			Labels []named `json:"labels"`
		} `json:"data"`
		Issue struct {
			Labels []named `json:"labels"`
		} `json:"issue"`
		PullRequest struct {
			Labels []named `json:"labels"`
		} `json:"pull_request"`
		Labels  []named `json:"labels"`
		Changes struct {
			Labels *struct {
				Previous []named `json:"previous"`
				Current  []named `json:"current"`
			} `json:"labels"`
		} `json:"changes"`
	}
	if len(ev.Raw) == 0 || json.Unmarshal(ev.Raw, &p) != nil {
		return nil
	}
	if p.Label != nil && p.Label.Name != "" {
		return []string{p.Label.Name} // the label just added or removed
	}
	var out []string
	for _, list := range [][]named{p.Data.Labels, p.Issue.Labels, p.PullRequest.Labels} {
		for _, l := range list {
			out = append(out, l.Name)
		}
	}
	if c := p.Changes.Labels; c != nil {
		had := map[string]bool{}
		for _, l := range c.Previous {
			had[string(l.ID)+"\x00"+l.Title] = true
		}
		for _, l := range c.Current {
			if !had[string(l.ID)+"\x00"+l.Title] {
				out = append(out, l.Title)
			}
		}
		return out
	}
	for _, l := range p.Labels {
		out = append(out, l.Title)
	}
	return out
}
