package api

import (
	"encoding/json"
	"os"
	"regexp"
	"strings"
	"testing"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/nightshift/nightshift/orchestrator"
)

// recorder is a Registerer that keeps what is registered, so the test can
// list every metric name (vectors without children included).
type recorder struct{ cs []prometheus.Collector }

func (r *recorder) Register(c prometheus.Collector) error   { r.cs = append(r.cs, c); return nil }
func (r *recorder) MustRegister(cs ...prometheus.Collector) { r.cs = append(r.cs, cs...) }
func (r *recorder) Unregister(prometheus.Collector) bool    { return false }

// TestGrafanaDashboardUsesExportedMetrics checks every nightshift_* name in
// deploy/grafana/nightshift.json is exported by the API, its collectors or
// the orchestrator (webhook metrics are listed by hand: their constructor
// is private to ingress/webhook).
func TestGrafanaDashboardUsesExportedMetrics(t *testing.T) {
	t.Parallel()
	raw, err := os.ReadFile("../../deploy/grafana/nightshift.json")
	if err != nil {
		t.Fatal(err)
	}
	var dash struct {
		Panels []struct {
			Targets []struct {
				Expr string `json:"expr"`
			} `json:"targets"`
		} `json:"panels"`
	}
	if err := json.Unmarshal(raw, &dash); err != nil {
		t.Fatalf("dashboard JSON: %v", err)
	}
	rec := &recorder{}
	NewMetrics(rec)
	NewStepRecorder(nil, rec)
	orchestrator.NewMetrics(rec)
	rec.cs = append(rec.cs, NewCollector(nil))
	known := map[string]bool{"nightshift_webhook_deliveries_total": true, "nightshift_webhook_refused_total": true,
		"nightshift_webhook_duration_seconds": true}
	fq := regexp.MustCompile(`fqName: "([^"]+)"`)
	for _, c := range rec.cs {
		ch := make(chan *prometheus.Desc, 16)
		go func() { c.Describe(ch); close(ch) }()
		for d := range ch {
			if m := fq.FindStringSubmatch(d.String()); m != nil {
				known[m[1]] = true
			}
		}
	}
	name := regexp.MustCompile(`nightshift_[a-z_]+`)
	used := 0
	for _, p := range dash.Panels {
		for _, tg := range p.Targets {
			for _, n := range name.FindAllString(tg.Expr, -1) {
				used++
				base := n
				for _, suf := range []string{"_bucket", "_sum", "_count"} {
					if b, ok := strings.CutSuffix(n, suf); ok && known[b] {
						base = b
					}
				}
				if !known[base] {
					t.Errorf("the dashboard queries %s, which nothing exports", n)
				}
			}
		}
	}
	if used < 20 {
		t.Fatalf("only %d metric references in the dashboard", used)
	}
}
