package webhookbench

import (
	"bytes"
	"context"
	"encoding/json"
	"regexp"
	"testing"
	"time"
)

func TestPayloadIsJSON(t *testing.T) {
	if !json.Valid(payload(1)) || !json.Valid(gitlabPayload(1)) || !json.Valid(giteaPayload(1)) {
		t.Fatal("payload is not JSON")
	}
}

// TestRunSmall runs a tiny benchmark: it must finish, report both sides
// and end with the ratio line. It asserts no timing.
func TestRunSmall(t *testing.T) {
	var out bytes.Buffer
	err := RunWith(context.Background(), &out, Options{Clients: 4, Requests: 200, Warmup: 20, Rounds: 1, Duration: 20 * time.Second})
	if err != nil {
		t.Fatalf("%v\n%s", err, out.String())
	}
	if !regexp.MustCompile(`(?m)^ratio=\d+\.\d\d\n$`).Match(out.Bytes()) {
		t.Fatalf("output does not end with the ratio line:\n%s", out.String())
	}
	if !regexp.MustCompile(`(?m)^gitlab_ratio=\d+\.\d\d$`).Match(out.Bytes()) {
		t.Fatalf("output has no GitLab ratio line:\n%s", out.String())
	}
	if !regexp.MustCompile(`(?m)^gitea_ratio=\d+\.\d\d$`).Match(out.Bytes()) {
		t.Fatalf("output has no Gitea ratio line:\n%s", out.String())
	}
}
