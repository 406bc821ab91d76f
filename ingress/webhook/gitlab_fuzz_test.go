package webhook

import (
	"errors"
	"strings"
	"testing"
)

func FuzzVerifyGitLab(f *testing.F) {
	f.Add("798d3dd3-67f5-41df-ad19-7882cc6263bf", "798d3dd3-67f5-41df-ad19-7882cc6263bf")
	f.Add("secret", "")
	f.Add("", "x")
	f.Fuzz(func(t *testing.T, secret, token string) {
		err := VerifyGitLab([]string{secret}, token)
		want := secret != "" && token == secret
		if (err == nil) != want {
			t.Fatalf("VerifyGitLab([%q], %q) = %v", secret, token, err)
		}
		if err != nil && !errors.Is(err, ErrMissingSignature) && !errors.Is(err, ErrBadSignature) {
			t.Fatalf("unexpected error %v", err)
		}
		if secret != "" {
			if err := VerifyGitLab([]string{"x" + secret, secret}, secret); err != nil {
				t.Fatalf("rotated secret refused: %v", err)
			}
			if VerifyGitLab([]string{"x" + secret}, secret) == nil {
				t.Fatal("other secret verified")
			}
		}
	})
}

func FuzzNormalizeGitLab(f *testing.F) {
	for _, e := range gitlabManifest(f) {
		b := readGitLabFixture(f, e.File)
		f.Add(e.EventHeader, b)
		for _, ev := range []string{glNoteHook, glIssueHook, glPipelineHook, glJobHook, ""} {
			f.Add(ev, b)
		}
	}
	f.Add(glNoteHook, []byte(`{"object_kind":"note","user":{"username":"a"},"project":{"path_with_namespace":"g/p","git_http_url":"file:///tmp/x.git"},"object_attributes":{"id":1,"note":"@nightshift x","noteable_type":"Issue"},"issue":{"iid":1}}`))
	f.Add(glNoteHook, []byte(`{"object_kind":"note","user":{"username":"a"},"project":{"path_with_namespace":"../../tmp/x"},"object_attributes":{"id":1,"note":"@nightshift x","noteable_type":"Issue"},"issue":{"iid":1}}`))
	f.Add(glPipelineHook, []byte(`{"object_kind":"pipeline","project":{"path_with_namespace":"g/p"},"object_attributes":"x"}`))
	f.Fuzz(func(t *testing.T, event string, body []byte) {
		res, err := GitLabSource().Normalize(gitlabHeader(event), body, gitlabTestOptions)
		if err != nil {
			var mal *MalformedError
			if !errors.As(err, &mal) {
				t.Fatalf("error %v is not a MalformedError", err)
			}
			return
		}
		n := 0
		for _, set := range []bool{res.Event != nil, res.Answer != nil, res.Ignore != ""} {
			if set {
				n++
			}
		}
		if n != 1 {
			t.Fatalf("want exactly one of event, answer, ignore: %+v", res)
		}
		if ev := res.Event; ev != nil {
			if ev.Kind == "" || !strings.HasPrefix(ev.IdempotencyKey, "gitlab:") {
				t.Fatalf("incomplete event %+v", ev)
			}
			checkRemote(t, ev.Repo, ev.Target.HeadRepo)
			if !strings.HasPrefix(ev.Repo, "https://git.example.com/") {
				t.Fatalf("repo %q is not on the configured GitLab", ev.Repo)
			}
		}
		if a := res.Answer; a != nil && !strings.HasPrefix(a.Repo, "https://git.example.com/") {
			t.Fatalf("answer repo %q", a.Repo)
		}
	})
}
