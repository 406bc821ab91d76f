package api

import (
	"encoding/json"
	"slices"
	"testing"

	"github.com/nightshift/nightshift/orchestrator"
	"github.com/nightshift/nightshift/orchestrator/forge"
)

// TestListBySourceAutomation: GET /api/v1/tasks?source=automation lists the
// tasks an automation started (and only those), and every source a task
// can have is in the OpenAPI document's Source enum.
func TestListBySourceAutomation(t *testing.T) {
	t.Parallel()
	w := newWorld(t)
	ts := serve(t, New(w.bus, w.store, Config{}))
	auto := w.addTask(t, orchestrator.SourceAutomation, "/repo", "nightly")
	w.addTask(t, orchestrator.SourceAPI, "/repo", "by hand")
	w.addTask(t, orchestrator.Source(forge.KindGitLab), "/repo", "from gitlab")
	for q, want := range map[string]int{"source=automation": 1, "source=gitlab": 1, "source=gitea": 0, "source=api": 1} {
		var lr ListResponse
		r := call(t, "GET", ts.URL+"/api/v1/tasks?"+q, "")
		if r.code != 200 {
			t.Fatalf("?%s: %d %s", q, r.code, r.body)
		}
		r.json(t, &lr)
		if len(lr.Tasks) != want {
			t.Errorf("?%s: %d tasks, want %d", q, len(lr.Tasks), want)
		}
		if q == "source=automation" && len(lr.Tasks) == 1 && lr.Tasks[0].ID != auto.ID {
			t.Errorf("?%s listed %s, want %s", q, lr.Tasks[0].ID, auto.ID)
		}
	}

	var doc struct {
		Components struct {
			Schemas map[string]struct {
				Enum []string `json:"enum"`
			} `json:"schemas"`
		} `json:"components"`
	}
	if err := json.Unmarshal(openAPIDoc, &doc); err != nil {
		t.Fatal(err)
	}
	enum := doc.Components.Schemas["Source"].Enum
	for _, s := range sources {
		if !slices.Contains(enum, string(s)) {
			t.Errorf("OpenAPI Source enum %v lacks %q", enum, s)
		}
	}
	if len(enum) != len(sources) {
		t.Errorf("OpenAPI Source enum %v, filter accepts %v", enum, sources)
	}
}
