package dashboard

import (
	"bytes"
	"embed"
	"html/template"
	"io/fs"
	"net/http"
)

// AssetsPrefix is the URL prefix of the page's script, style and
// cytoscape; mount Assets there. '_' leads no stream URL.
const AssetsPrefix = "/_dashboard/"

// pageFiles holds the page and its assets. assets/vendor holds a committed
// README.md so that the pattern always matches; cytoscape.min.js is copied
// there by scripts/setup.sh and is embedded when present.
//
//go:embed assets/index.html assets/dashboard.js assets/dashboard.css assets/vendor
var pageFiles embed.FS

var page = template.Must(template.ParseFS(pageFiles, "assets/index.html"))

// PageData is what the page template is given.
type PageData struct {
	// Node is the name of the node serving the page.
	Node string
	// DemoURL is Config.DemoURL ("" for no kill buttons).
	DemoURL string
	// Events is the event stream's URL.
	Events string
	Assets string
}

// ServePage renders the dashboard page.
func ServePage(w http.ResponseWriter, d PageData) {
	if d.Events == "" {
		d.Events = "/api/v1/events"
	}
	d.Assets = AssetsPrefix
	var buf bytes.Buffer
	if err := page.Execute(&buf, d); err != nil {
		http.Error(w, "render dashboard page", http.StatusInternalServerError)
		return
	}
	w.Header().Set("Content-Type", "text/html; charset=utf-8")
	w.Header().Set("Cache-Control", "no-cache")
	w.Write(buf.Bytes())
}

// Assets serves the page's files below AssetsPrefix
// ("/_dashboard/dashboard.js", "/_dashboard/vendor/cytoscape.min.js").
func Assets() http.Handler {
	sub, err := fs.Sub(pageFiles, "assets")
	if err != nil {
		panic(err) // the embed pattern guarantees the folder
	}
	return http.StripPrefix(AssetsPrefix, http.FileServerFS(sub))
}

// HasCytoscape reports whether cytoscape.min.js was embedded.
func HasCytoscape() bool {
	_, err := fs.Stat(pageFiles, "assets/vendor/cytoscape.min.js")
	return err == nil
}
