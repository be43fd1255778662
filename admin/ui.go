package admin

import (
	_ "embed"
	"net/http"
)

// uiPage is the status page: one HTML file with its CSS and JavaScript
// inline and no external assets, so it works on an admin port that has no
// route to the internet. It polls /api/v1/topology and /api/v1/history.
//
//go:embed ui/index.html
var uiPage []byte

// ui serves the status page.
func (s *Server) ui(w http.ResponseWriter, _ *http.Request) {
	h := w.Header()
	h.Set("Content-Type", "text/html; charset=utf-8")
	h.Set("Cache-Control", "no-store")
	// Everything the page needs is in it or on this server.
	h.Set("Content-Security-Policy", "default-src 'none'; script-src 'unsafe-inline'; style-src 'unsafe-inline'; connect-src 'self'; img-src data:")
	h.Set("X-Content-Type-Options", "nosniff")
	_, _ = w.Write(uiPage)
}
