package egress

import (
	"errors"
	"log/slog"
	"net/http"
	"strings"

	"github.com/gradient-cdn/gradient/auth"
	"github.com/gradient-cdn/gradient/media"
)

// StreamHandler serves one protocol's requests for one stream path.
// path is the validated stream path ("live/cam1" or "live/cam1@360p") and
// rest what follows it in the URL ("whep", "whep/<session>",
// "index.m3u8", "part.mp4" …).
type StreamHandler interface {
	ServeStream(w http.ResponseWriter, r *http.Request, path, rest string)
}

// Router serves the viewer URLs of every stream:
//
//	POST   /<stream>/whep            WHEP offer → answer (WebRTC)
//	PATCH/DELETE /<stream>/whep/<id> WHEP session resource
//	POST   /<stream>/whip            WHIP offer → answer (WebRTC publish)
//	PATCH/DELETE /<stream>/whip/<id> WHIP session resource
//	GET    /<stream>/publish         the browser publish page
//	GET    /<stream>/index.m3u8 …    HLS and LL-HLS playlists and segments
//	GET    /<stream>/                the player page
//
// Stream paths are validated before any handler sees them; an invalid one
// is answered 400.
type Router struct {
	WHEP   StreamHandler
	WHIP   StreamHandler // nil: no WebRTC publishing (404)
	HLS    StreamHandler
	Player StreamHandler
	Log    *slog.Logger

	// Authorize, when set, is asked before a viewer request is served,
	// with action "read" and the stream path; the node sets it from the
	// auth section. An error is answered by auth.RefuseHTTP: 401 with a
	// Bearer challenge, or 403. CORS preflights (OPTIONS) and WHEP and WHIP
	// session resources (whose unguessable URL the authorized offer got)
	// are not asked; a WHIP offer is asked for action "publish". Default
	// nil: everybody reads and publishes.
	Authorize func(r *http.Request, action, path string) error
}

// ServeHTTP implements http.Handler.
func (rt *Router) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	p := strings.TrimPrefix(r.URL.Path, "/")
	path, rest, h := rt.route(p)
	if h == nil {
		if p != "" && !strings.HasSuffix(p, "/") && r.Method == http.MethodGet {
			// "/live/cam1" → the player page at "/live/cam1/".
			if _, _, err := media.ParsePath(p); err == nil {
				target := "/" + p + "/"
				if r.URL.RawQuery != "" {
					// A token or a signed URL's exp and sig come along.
					target += "?" + r.URL.RawQuery
				}
				http.Redirect(w, r, target, http.StatusMovedPermanently)
				return
			}
		}
		http.NotFound(w, r)
		return
	}
	if _, _, err := media.ParsePath(path); err != nil {
		rt.logger().Info("rejected request for invalid stream path", "path", path, "remote", r.RemoteAddr, "err", err)
		http.Error(w, err.Error(), http.StatusBadRequest)
		return
	}
	if rt.Authorize != nil && r.Method != http.MethodOptions && !strings.HasPrefix(rest, "whep/") && !strings.HasPrefix(rest, "whip/") {
		action := auth.ActionRead
		if rest == "whip" {
			action = auth.ActionPublish
		}
		if err := rt.Authorize(r, action, path); err != nil {
			// Browsers show a cross-origin player the refusal only with CORS.
			w.Header().Set("Access-Control-Allow-Origin", "*")
			w.Header().Set("Access-Control-Expose-Headers", "WWW-Authenticate")
			auth.RefuseHTTP(w, err)
			return
		}
	}
	h.ServeStream(w, r, path, rest)
}

func (rt *Router) logger() *slog.Logger {
	if rt.Log != nil {
		return rt.Log
	}
	return slog.Default()
}

// route splits a URL path into the stream path, the protocol-specific rest
// and the handler for it.
func (rt *Router) route(p string) (path, rest string, h StreamHandler) {
	segs := strings.Split(p, "/")
	n := len(segs)
	switch {
	case n >= 2 && segs[n-1] == "whep":
		return strings.Join(segs[:n-1], "/"), "whep", rt.WHEP
	case n >= 3 && segs[n-2] == "whep":
		return strings.Join(segs[:n-2], "/"), "whep/" + segs[n-1], rt.WHEP
	case n >= 2 && segs[n-1] == "whip" && rt.WHIP != nil:
		return strings.Join(segs[:n-1], "/"), "whip", rt.WHIP
	case n >= 3 && segs[n-2] == "whip" && rt.WHIP != nil:
		return strings.Join(segs[:n-2], "/"), "whip/" + segs[n-1], rt.WHIP
	case n >= 2 && segs[n-1] == "publish":
		return strings.Join(segs[:n-1], "/"), "publish", rt.Player
	case n >= 2 && isHLSFile(segs[n-1]):
		return strings.Join(segs[:n-1], "/"), segs[n-1], rt.HLS
	case n >= 2 && segs[n-1] == "":
		return strings.Join(segs[:n-1], "/"), "", rt.Player
	}
	return "", "", nil
}

func isHLSFile(name string) bool {
	for _, ext := range []string{".m3u8", ".mp4", ".m4s", ".ts"} {
		if strings.HasSuffix(name, ext) {
			return true
		}
	}
	return false
}

// HTTPStatus maps hub errors to HTTP status codes: unknown stream 404,
// invalid name 400, taken 409, no capacity 503, anything else 500.
func HTTPStatus(err error) int {
	switch {
	case errors.Is(err, media.ErrNotFound), errors.Is(err, media.ErrStreamEnded):
		return http.StatusNotFound
	case errors.Is(err, media.ErrInvalidName):
		return http.StatusBadRequest
	case errors.Is(err, media.ErrAlreadyPublished):
		return http.StatusConflict
	case errors.Is(err, media.ErrNoCapacity):
		return http.StatusServiceUnavailable
	}
	return http.StatusInternalServerError
}
