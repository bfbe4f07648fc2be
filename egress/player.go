package egress

import (
	"bytes"
	"embed"
	"errors"
	"fmt"
	"html/template"
	"io/fs"
	"log/slog"
	"net/http"
	"strings"

	"github.com/gradient-cdn/gradient/internal/defaults"
)

// PlayerAssetsPrefix is the URL prefix the player page loads its script,
// style and hls.js from; mount PlayerAssets there. It cannot be mistaken
// for a stream: '_' leads no valid stream URL the Router serves, and the
// Router only routes paths ending in a protocol file or "/".
const PlayerAssetsPrefix = "/_player/"

// playerFiles holds the page and its assets. player/vendor holds a
// committed README.md so that the pattern always matches; hls.min.js is
// copied there by scripts/setup.sh and is embedded when present.
//
//go:embed player/index.html player/player.js player/publish.html player/publish.js player/rtc.js player/*.css player/vendor
var playerFiles embed.FS

var playerPage = template.Must(template.ParseFS(playerFiles, "player/index.html"))

// publishPage is the browser publisher (WHIP) of a stream, "/<stream>/publish".
var publishPage = template.Must(template.ParseFS(playerFiles, "player/publish.html"))

// PlayerConfig tunes the player page. DefaultPlayerConfig gives the
// defaults; NewPlayer fills the zero fields of a hand-built config from it.
type PlayerConfig struct {
	// Title prefixes the page title, e.g. the node's name. Default "Gradient".
	Title string `yaml:"title"`
}

// DefaultPlayerConfig returns the player page defaults.
func DefaultPlayerConfig() PlayerConfig {
	return PlayerConfig{Title: "Gradient"}
}

// Validate checks every field and names the bad one by its YAML key.
func (c PlayerConfig) Validate() error {
	if strings.ContainsAny(c.Title, "\r\n") {
		return errors.New("title: must be one line")
	}
	return nil
}

// Player serves the browser player page of a stream (the Router's
// "/<stream>/"). The page plays WebRTC through the stream's WHEP endpoint
// and falls back to HLS (hls.js, or the browser's own HLS); its script and
// hls.js come from PlayerAssets.
type Player struct {
	cfg PlayerConfig
	log *slog.Logger
}

// NewPlayer returns the player page handler, or the config's error.
// log may be nil (slog.Default()).
func NewPlayer(cfg PlayerConfig, log *slog.Logger) (*Player, error) {
	defaults.Fill(&cfg, DefaultPlayerConfig())
	if err := cfg.Validate(); err != nil {
		return nil, fmt.Errorf("player: %w", err)
	}
	if log == nil {
		log = slog.Default()
	}
	return &Player{cfg: cfg, log: log.With("component", "player")}, nil
}

// ServeStream implements StreamHandler for rest == "": the page itself.
// The page is served whether or not the stream is live; it reports and
// retries when there is nothing to play yet. rest == "publish" is the
// publish page, which sends the camera (or a test pattern) over WHIP.
func (p *Player) ServeStream(w http.ResponseWriter, r *http.Request, path, rest string) {
	page := playerPage
	switch rest {
	case "":
	case "publish":
		page = publishPage
	default:
		http.NotFound(w, r)
		return
	}
	if r.Method != http.MethodGet && r.Method != http.MethodHead {
		w.Header().Set("Allow", "GET, HEAD")
		http.Error(w, "method not allowed", http.StatusMethodNotAllowed)
		return
	}
	var buf bytes.Buffer
	err := page.Execute(&buf, struct {
		Title, Stream, Assets string
	}{p.cfg.Title, path, PlayerAssetsPrefix})
	if err != nil {
		p.log.Error("render player page", "stream", path, "err", err)
		http.Error(w, "render player page", http.StatusInternalServerError)
		return
	}
	w.Header().Set("Content-Type", "text/html; charset=utf-8")
	w.Header().Set("Cache-Control", "no-cache")
	w.Write(buf.Bytes())
}

// PlayerAssets serves the player page's script, style and hls.js under
// PlayerAssetsPrefix ("/_player/player.js", "/_player/vendor/hls.min.js").
// Mount it at that prefix in the node's mux. Without hls.min.js in the
// binary (scripts/setup.sh not run) its URL answers 404 and the page
// plays WebRTC only.
func PlayerAssets() http.Handler {
	sub, err := fs.Sub(playerFiles, "player")
	if err != nil {
		panic(err) // the embed pattern guarantees the folder
	}
	files := http.FileServerFS(sub)
	return http.StripPrefix(strings.TrimSuffix(PlayerAssetsPrefix, "/"), http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		name := strings.TrimPrefix(r.URL.Path, "/")
		// No directory listings, and the page is served per stream only.
		if name == "" || strings.HasSuffix(name, "/") || name == "index.html" || name == "publish.html" {
			http.NotFound(w, r)
			return
		}
		if r.Method != http.MethodGet && r.Method != http.MethodHead {
			w.Header().Set("Allow", "GET, HEAD")
			http.Error(w, "method not allowed", http.StatusMethodNotAllowed)
			return
		}
		if strings.HasPrefix(name, "vendor/") {
			w.Header().Set("Cache-Control", "public, max-age=86400")
		} else {
			w.Header().Set("Cache-Control", "no-cache")
		}
		files.ServeHTTP(w, r)
	}))
}
