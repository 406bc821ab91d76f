package main

import (
	"log/slog"
	"net/http"

	"github.com/nightshift/nightshift/ingress/api"
	"github.com/nightshift/nightshift/ingress/board"
	"github.com/nightshift/nightshift/orchestrator"
)

// boardHandler returns the web board for ingress.Routes.Board. It shares
// apiSrv's authentication (tokens, login sessions, CSRF); the pages read
// everything else through the REST API, so bus and store are not needed yet.
func boardHandler(apiSrv *api.Server, _ *orchestrator.Bus, _ *orchestrator.Store, logger *slog.Logger) http.Handler {
	b, err := board.New(apiSrv, board.Config{Logger: logger})
	if err != nil {
		// Only a broken embedded asset set gets here; a test catches it.
		logger.Error("board disabled", "err", err)
		return http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
			http.Error(w, "the board is unavailable: "+err.Error(), http.StatusInternalServerError)
		})
	}
	return b
}
