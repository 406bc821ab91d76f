package main

import (
	"bufio"
	"fmt"
	"net/http"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/nightshift/nightshift/orchestrator"
)

// TestStepDurationsCountEachStepOnce: in the all-in-one server, n tasks
// that each pass through every step leave n observations per step in
// nightshift_task_step_duration_seconds (and n review outcomes), scraped
// from the server's own registry. (Each task has its own origin: the
// count must not depend on pushes racing on one repository.)
func TestStepDurationsCountEachStepOnce(t *testing.T) {
	t.Parallel()
	const n = 12 // more than worker.concurrency, so tasks wait in the queue
	s := startTestServer(t, yamlWith("test -f NOTES.md", "2m"))
	var ids []string
	for i := range n {
		ids = append(ids, s.dispatch(t, newOrigin(t), "script", fmt.Sprintf("add note %d", i)))
	}
	for _, id := range ids {
		if task := s.waitState(t, id, 90*time.Second, orchestrator.StateReview, orchestrator.StateFailed); task.State != orchestrator.StateReview {
			t.Fatalf("task %s: %s %s", id, task.State, task.Error)
		}
	}
	want := map[string]float64{}
	for _, step := range []string{"queued", "provisioning", "running", "testing", "pushing"} {
		want[`nightshift_task_step_duration_seconds_count{step="`+step+`"}`] = n
	}
	want[`nightshift_task_outcomes_total{reason="",state="review"}`] = n
	// The review report may reach the recorder a moment after the API
	// shows it: poll with a deadline.
	var got map[string]float64
	deadline := time.Now().Add(30 * time.Second)
	for {
		got = scrape(t, s.URL+"/metrics")
		ok := true
		for k, v := range want {
			if got[k] != v {
				ok = false
			}
		}
		if ok {
			return
		}
		if time.Now().After(deadline) {
			break
		}
		time.Sleep(50 * time.Millisecond)
	}
	for k, v := range want {
		if got[k] != v {
			t.Errorf("%s = %v, want %v", k, got[k], v)
		}
	}
}

// scrape reads a Prometheus text exposition into series → value.
func scrape(t *testing.T, url string) map[string]float64 {
	t.Helper()
	resp, err := http.Get(url)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	out := map[string]float64{}
	sc := bufio.NewScanner(resp.Body)
	sc.Buffer(make([]byte, 1<<20), 1<<20)
	for sc.Scan() {
		line := sc.Text()
		if strings.HasPrefix(line, "#") {
			continue
		}
		i := strings.LastIndexByte(line, ' ')
		if i < 0 {
			continue
		}
		v, err := strconv.ParseFloat(line[i+1:], 64)
		if err == nil {
			out[line[:i]] = v
		}
	}
	return out
}
