package webhook

import (
	"testing"
)

func BenchmarkNormalizeGitHub(b *testing.B) {
	body := editJSON(b, readFixture(b, "octokit-webhooks/issue_comment.created.json"), func(m map[string]any) {
		obj(m, "comment")["body"] = "@nightshift fix it"
	})
	b.SetBytes(int64(len(body)))
	for b.Loop() {
		n, err := normalizeGitHub("issue_comment", body, githubOptions{Trigger: "@nightshift", Label: "nightshift"})
		if err != nil || n.ev == nil {
			b.Fatal(err, n.ignore)
		}
	}
}

func BenchmarkVerifyGitHub(b *testing.B) {
	body := readFixture(b, "octokit-webhooks/issue_comment.created.json")
	sig := SignGitHub("s", body)
	b.SetBytes(int64(len(body)))
	for b.Loop() {
		if err := VerifyGitHub([]string{"s"}, sig, body); err != nil {
			b.Fatal(err)
		}
	}
}
