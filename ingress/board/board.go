// Package board serves Nightshift's web board at /: a Kanban of tasks
// (queued, running, needs input, review, done, failed) that updates live
// over Server-Sent Events, a task page with the live log, the diff, the
// identity's inbox and the cancel, retry and follow-up actions, the
// automations (a page each with its switch, next fire time and timeline)
// and the inbox of automation runs (read or unread per person), and the
// login page where a person pastes an API token to get a session.
//
// The pages are plain HTML, CSS and JavaScript embedded in the binary: no
// build step. Everything they show comes from the REST API (ingress/api),
// with the session cookie and the CSRF token it hands out; the board
// itself serves no task data. Pages other than the login page and the
// static assets need a session (or bearer token) unless the API runs open
// (no tokens, loopback only).
package board

import (
	"embed"
	"errors"
	"html/template"
	"io/fs"
	"log/slog"
	"net/http"
	"net/url"
	"path"
	"strings"

	"github.com/nightshift/nightshift/ingress/api"
)

//go:embed assets
var assetFS embed.FS

// Config configures the board. Zero values mean the documented defaults.
type Config struct {
	// Title is shown in the header and the page titles. Default "Nightshift".
	Title string
	// Logger receives login failures; nil discards.
	Logger *slog.Logger
}

func (c Config) withDefaults() Config {
	if c.Title == "" {
		c.Title = "Nightshift"
	}
	if c.Logger == nil {
		c.Logger = slog.New(slog.DiscardHandler)
	}
	return c
}

// Board is the board's HTTP handler.
type Board struct {
	api    *api.Server
	cfg    Config
	log    *slog.Logger
	mux    *http.ServeMux
	assets fs.FS
	pages  *template.Template
}

var _ http.Handler = (*Board)(nil)

// New returns the board. apiSrv authenticates its visitors and starts
// their sessions.
func New(apiSrv *api.Server, cfg Config) (*Board, error) {
	if apiSrv == nil {
		return nil, errors.New("board: nil api server")
	}
	cfg = cfg.withDefaults()
	assets, err := fs.Sub(assetFS, "assets")
	if err != nil {
		return nil, err
	}
	pages, err := template.ParseFS(assets, "*.html")
	if err != nil {
		return nil, err
	}
	b := &Board{api: apiSrv, cfg: cfg, log: cfg.Logger.With("component", "board"), mux: http.NewServeMux(),
		assets: assets, pages: pages}
	b.mux.HandleFunc("GET /{$}", b.page("board.html"))
	b.mux.HandleFunc("GET /tasks/{id}", b.page("task.html"))
	b.mux.HandleFunc("GET /automations", b.page("automations.html"))
	b.mux.HandleFunc("GET /automations/{name}", b.page("automation.html"))
	b.mux.HandleFunc("GET /inbox", b.page("inbox.html"))
	b.mux.HandleFunc("GET /login", b.loginPage)
	b.mux.HandleFunc("POST /login", b.login)
	b.mux.HandleFunc("POST /logout", b.logout)
	b.mux.Handle("GET /assets/", http.StripPrefix("/assets/", http.HandlerFunc(b.asset)))
	b.mux.HandleFunc("GET /favicon.ico", func(w http.ResponseWriter, r *http.Request) {
		http.Redirect(w, r, "/assets/favicon.svg", http.StatusMovedPermanently)
	})
	b.mux.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) {
		b.render(w, http.StatusNotFound, "notfound.html", pageData{Title: b.cfg.Title})
	})
	return b, nil
}

// ServeHTTP serves the board.
func (b *Board) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	h := w.Header()
	h.Set("Content-Security-Policy", "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; "+
		"connect-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'")
	h.Set("X-Frame-Options", "DENY")
	b.mux.ServeHTTP(w, r)
}

// pageData is what the page templates see.
type pageData struct {
	Title string
	Error string
	Next  string
	Open  bool
}

func (b *Board) render(w http.ResponseWriter, code int, name string, d pageData) {
	w.Header().Set("Content-Type", "text/html; charset=utf-8")
	w.Header().Set("Cache-Control", "no-store")
	w.WriteHeader(code)
	if err := b.pages.ExecuteTemplate(w, name, d); err != nil {
		b.log.Error("render page", "page", name, "err", err)
	}
}

// page serves a page that needs a session: without one the visitor is
// sent to the login page, which brings them back.
func (b *Board) page(name string) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		if b.api.RoleOf(r) == api.RoleNone {
			http.Redirect(w, r, "/login?next="+url.QueryEscape(r.URL.RequestURI()), http.StatusSeeOther)
			return
		}
		b.render(w, http.StatusOK, name, pageData{Title: b.cfg.Title, Open: b.api.Open()})
	}
}

func (b *Board) asset(w http.ResponseWriter, r *http.Request) {
	name := path.Clean(r.URL.Path)
	if strings.HasSuffix(name, ".html") || strings.Contains(name, "..") {
		http.NotFound(w, r)
		return
	}
	w.Header().Set("Cache-Control", "no-cache")
	http.ServeFileFS(w, r, b.assets, name)
}

// safeNext keeps the post-login redirect on this site.
func safeNext(next string) string {
	if next == "" || !strings.HasPrefix(next, "/") || strings.HasPrefix(next, "//") || strings.HasPrefix(next, "/\\") {
		return "/"
	}
	return next
}

func (b *Board) loginPage(w http.ResponseWriter, r *http.Request) {
	next := safeNext(r.URL.Query().Get("next"))
	if b.api.Open() || b.api.RoleOf(r) != api.RoleNone {
		http.Redirect(w, r, next, http.StatusSeeOther)
		return
	}
	b.render(w, http.StatusOK, "login.html", pageData{Title: b.cfg.Title, Next: next})
}

func (b *Board) login(w http.ResponseWriter, r *http.Request) {
	if !api.SameOrigin(r) {
		b.render(w, http.StatusForbidden, "login.html", pageData{Title: b.cfg.Title, Error: "This login form was sent from another site; it was refused."})
		return
	}
	r.Body = http.MaxBytesReader(w, r.Body, 64<<10)
	if err := r.ParseForm(); err != nil {
		b.render(w, http.StatusBadRequest, "login.html", pageData{Title: b.cfg.Title, Error: "The form could not be read."})
		return
	}
	next := safeNext(r.PostForm.Get("next"))
	tok := strings.TrimSpace(r.PostForm.Get("token"))
	if tok == "" {
		b.render(w, http.StatusBadRequest, "login.html", pageData{Title: b.cfg.Title, Next: next, Error: "Paste an API token to log in."})
		return
	}
	if _, err := b.api.LoginWithToken(w, r, tok); err != nil {
		code, msg := http.StatusInternalServerError, "Logging in failed; see the server log."
		if errors.Is(err, api.ErrBadCredentials) {
			code, msg = http.StatusUnauthorized, "That token is not valid. Use one of api.tokens or api.read_only_tokens."
		} else {
			b.log.Error("login", "err", err)
		}
		b.render(w, code, "login.html", pageData{Title: b.cfg.Title, Next: next, Error: msg})
		return
	}
	http.Redirect(w, r, next, http.StatusSeeOther)
}

// logout ends the session. It is a form POST; the Origin check stands in
// for a CSRF token (logging someone out is the worst a forger could do).
func (b *Board) logout(w http.ResponseWriter, r *http.Request) {
	if !api.SameOrigin(r) {
		http.Error(w, "cross-origin request refused", http.StatusForbidden)
		return
	}
	if err := b.api.Logout(w, r); err != nil {
		b.log.Warn("logout", "err", err)
	}
	http.Redirect(w, r, "/login", http.StatusSeeOther)
}
