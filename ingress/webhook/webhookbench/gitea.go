package webhookbench

import (
	"bytes"
	"context"
	"net/http"
	"strconv"
	"strings"

	"github.com/nightshift/nightshift/ingress/webhook"
)

// giteaHost is the Gitea host of the Gitea deliveries.
const giteaHost = "gitea.example.com"

// giteaDialect is Gitea's issue_comment delivery, signed like Gitea signs
// (X-Gitea-Signature: hex HMAC-SHA256 of the body).
var giteaDialect = dialect{name: "gitea", route: "/hooks/gitea", check: "hmac", request: func(ctx context.Context, url string, id int64) *http.Request {
	body := giteaPayload(id)
	req, _ := http.NewRequestWithContext(ctx, http.MethodPost, url, bytes.NewReader(body))
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("X-Gitea-Event", "issue_comment")
	req.Header.Set("X-Gitea-Event-Type", "issue_comment")
	req.Header.Set("X-Gitea-Delivery", "bench-"+strconv.FormatInt(id, 10))
	req.Header.Set("X-Gitea-Signature", webhook.SignGitea(secret, body))
	return req
}}

// giteaPayload is an issue_comment delivery a real Gitea v1.27.3 sent
// (ingress/webhook/testdata/gitea/issue_comment.created.trigger.json,
// moved to gitea.example.com/acme/app), with a unique comment id.
func giteaPayload(id int64) []byte {
	return []byte(strings.ReplaceAll(giteaTemplate, "COMMENT_ID", strconv.FormatInt(1_000_000+id, 10)))
}

const giteaTemplate = `{"action":"created","issue":{"id":1,"url":"https://gitea.example.com/api/v1/repos/acme/app/issues/1","html_url":"https://gitea.example.com/acme/app/issues/1","number":1,"user":{"id":2,"login":"alice","login_name":"","source_id":0,"full_name":"","email":"alice@example.test","avatar_url":"https://gitea.example.com/avatars/2960a687c8031d3d105b67802b5e130e","html_url":"https://gitea.example.com/alice","language":"","is_admin":false,"last_login":"1970-01-01T00:00:00Z","created":"2026-12-06T07:27:37Z","restricted":false,"active":true,"prohibit_login":false,"location":"","website":"","description":"","visibility":"public","followers_count":0,"following_count":0,"starred_repos_count":0,"username":"alice"},"original_author":"","original_author_id":0,"title":"Typo in README","body":"The README says Helo.","ref":"","assets":[],"labels":[],"milestone":null,"projects":null,"assignee":null,"assignees":null,"state":"open","is_locked":false,"comments":1,"created_at":"2026-12-06T07:27:37Z","updated_at":"2026-12-06T07:27:37Z","closed_at":null,"due_date":null,"time_estimate":0,"pull_request":null,"repository":{"id":1,"name":"app","owner":"nsadmin","full_name":"acme/app"},"pin_order":0,"content_version":0},"comment":{"id":COMMENT_ID,"html_url":"https://gitea.example.com/acme/app/issues/1#issuecomment-COMMENT_ID","pull_request_url":"","issue_url":"https://gitea.example.com/acme/app/issues/1","user":{"id":2,"login":"alice","login_name":"","source_id":0,"full_name":"","email":"2+alice@noreply.gitea.example.com","avatar_url":"https://gitea.example.com/avatars/2960a687c8031d3d105b67802b5e130e","html_url":"https://gitea.example.com/alice","language":"","is_admin":false,"last_login":"0001-01-01T00:00:00Z","created":"2026-12-06T07:27:37Z","restricted":false,"active":false,"prohibit_login":false,"location":"","website":"","description":"","visibility":"public","followers_count":0,"following_count":0,"starred_repos_count":0,"username":"alice"},"original_author":"","original_author_id":0,"body":"Thanks!\n\n@nightshift fix the typo in ` + "`" + `README.md` + "`" + `","assets":[],"created_at":"2026-12-06T07:27:37Z","updated_at":"2026-12-06T07:27:37Z"},"repository":{"id":1,"owner":{"id":1,"login":"nsadmin","login_name":"","source_id":0,"full_name":"","email":"nsadmin@example.test","avatar_url":"https://gitea.example.com/avatars/f73a557df04c8b3ad6d56020d9c71621","html_url":"https://gitea.example.com/nsadmin","language":"","is_admin":false,"last_login":"0001-01-01T00:00:00Z","created":"2026-12-06T07:27:35Z","restricted":false,"active":false,"prohibit_login":false,"location":"","website":"","description":"","visibility":"public","followers_count":0,"following_count":0,"starred_repos_count":0,"username":"nsadmin"},"name":"app","full_name":"acme/app","description":"","empty":false,"private":false,"fork":false,"template":false,"mirror":false,"size":25,"language":"","languages_url":"https://gitea.example.com/api/v1/repos/acme/app/languages","html_url":"https://gitea.example.com/acme/app","url":"https://gitea.example.com/api/v1/repos/acme/app","link":"","ssh_url":"root@gitea.example.com:acme/app.git","clone_url":"https://gitea.example.com/acme/app.git","original_url":"","website":"","stars_count":0,"forks_count":0,"watchers_count":1,"branch_count":1,"open_issues_count":1,"open_pr_counter":0,"release_counter":0,"default_branch":"main","archived":false,"created_at":"2026-12-06T07:27:36Z","updated_at":"2026-12-06T07:27:37Z","archived_at":"1970-01-01T00:00:00Z","permissions":{"admin":false,"push":true,"pull":true},"has_code":true,"has_issues":true,"internal_tracker":{"enable_time_tracker":true,"allow_only_contributors_to_track_time":true,"enable_issue_dependencies":true},"has_wiki":true,"has_pull_requests":true,"has_projects":true,"projects_mode":"all","has_releases":true,"has_packages":true,"has_actions":true,"ignore_whitespace_conflicts":false,"allow_merge_commits":true,"allow_rebase":true,"allow_rebase_explicit":true,"allow_squash_merge":true,"allow_fast_forward_only_merge":true,"allow_merge_update":true,"allow_rebase_update":true,"allow_manual_merge":false,"autodetect_manual_merge":false,"default_delete_branch_after_merge":false,"default_merge_style":"merge","default_update_style":"merge","default_allow_maintainer_edit":true,"avatar_url":"","internal":false,"mirror_interval":"","object_format_name":"sha1","mirror_updated":"0001-01-01T00:00:00Z","mirror_last_sync_at":"0001-01-01T00:00:00Z","topics":[],"licenses":[]},"sender":{"id":2,"login":"alice","login_name":"","source_id":0,"full_name":"","email":"2+alice@noreply.gitea.example.com","avatar_url":"https://gitea.example.com/avatars/2960a687c8031d3d105b67802b5e130e","html_url":"https://gitea.example.com/alice","language":"","is_admin":false,"last_login":"0001-01-01T00:00:00Z","created":"2026-12-06T07:27:37Z","restricted":false,"active":false,"prohibit_login":false,"location":"","website":"","description":"","visibility":"public","followers_count":0,"following_count":0,"starred_repos_count":0,"username":"alice"},"is_pull":false}`
