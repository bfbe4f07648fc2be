package egress

import (
	"log/slog"
	"net"
	"net/http"
	"net/url"
	"sort"
	"strings"
	"sync"
	"time"
)

// HLSViewerParam is the query parameter that names one player's HLS
// session: a token the player draws once per page (the player page sends
// it on index.m3u8, and the muxer repeats the query on every playlist,
// segment and part URL it lists). A client without one is known by its
// remote IP and User-Agent, so that players behind one address with one
// browser count as one viewer.
const HLSViewerParam = "viewer"

// maxHLSViewers bounds the viewers tracked at once, so that clients
// inventing tokens cannot grow the table without end; past it new clients
// are not counted until old ones expire.
const maxHLSViewers = 100000

// maxHLSViewerQuery bounds the query kept per viewer: a longer one is not
// kept (the player's is a few dozen bytes).
const maxHLSViewerQuery = 1024

// HLSViewer is a client that fetched a file of a stream (a playlist, the
// init section, a segment or a part) within ViewerTimeout.
type HLSViewer struct {
	// Path is the stream path requested, with its rendition ("live/cam1@360p").
	Path string
	// Client identifies the viewer: "viewer:<token>" with HLSViewerParam,
	// else "<remote IP> <User-Agent>".
	Client string
	// Query is the query of the viewer's first request that had one,
	// without LL-HLS's own _HLS_ parameters (device=phone&viewer=… from the
	// player page).
	Query url.Values
	// First and Last are the times of its first and last answered request.
	First, Last time.Time
}

// Viewers lists the clients that fetched a file of a stream within
// ViewerTimeout (only answered requests count: a 404 for a stream that is
// not here, or a refused request, makes no viewer), sorted by path, then
// client. A viewer that stops fetching is dropped once the window passes.
func (h *HLS) Viewers() []HLSViewer {
	return h.viewers.list(time.Now())
}

type hlsViewerKey struct{ path, client string }

type hlsViewer struct {
	query       url.Values
	first, last time.Time
}

// hlsViewers is the table behind HLS.Viewers.
type hlsViewers struct {
	window time.Duration
	log    *slog.Logger

	mu        sync.Mutex
	m         map[hlsViewerKey]*hlsViewer
	lastPrune time.Time
	full      bool // the table is at maxHLSViewers (logged once per episode)
}

func (v *hlsViewers) init(window time.Duration, log *slog.Logger) {
	v.window, v.log, v.m = window, log, map[hlsViewerKey]*hlsViewer{}
}

// seen notes an answered request of r for a file of path.
func (v *hlsViewers) seen(path string, r *http.Request, now time.Time) {
	var q url.Values
	if len(r.URL.RawQuery) <= maxHLSViewerQuery {
		q = r.URL.Query()
	}
	for k := range q {
		if strings.HasPrefix(k, "_HLS_") {
			delete(q, k)
		}
	}
	key := hlsViewerKey{path: path, client: hlsClient(r, q.Get(HLSViewerParam))}
	v.mu.Lock()
	defer v.mu.Unlock()
	if now.Sub(v.lastPrune) >= v.window {
		v.prune(now)
	}
	if x := v.m[key]; x != nil {
		x.last = now
		if len(x.query) == 0 && len(q) > 0 {
			x.query = q
		}
		return
	}
	if len(v.m) >= maxHLSViewers {
		if !v.full {
			v.full = true
			v.log.Warn("HLS viewer table full: new viewers are not counted until others leave", "max", maxHLSViewers)
		}
		return
	}
	v.m[key] = &hlsViewer{query: q, first: now, last: now}
}

// prune forgets viewers idle for the window; called with v.mu held.
func (v *hlsViewers) prune(now time.Time) {
	v.lastPrune = now
	for k, x := range v.m {
		if now.Sub(x.last) >= v.window {
			delete(v.m, k)
		}
	}
	if len(v.m) < maxHLSViewers {
		v.full = false
	}
}

func (v *hlsViewers) list(now time.Time) []HLSViewer {
	v.mu.Lock()
	v.prune(now)
	out := make([]HLSViewer, 0, len(v.m))
	for k, x := range v.m {
		out = append(out, HLSViewer{Path: k.path, Client: k.client, Query: cloneValues(x.query), First: x.first, Last: x.last})
	}
	v.mu.Unlock()
	sort.Slice(out, func(i, j int) bool {
		if out[i].Path != out[j].Path {
			return out[i].Path < out[j].Path
		}
		return out[i].Client < out[j].Client
	})
	return out
}

func (v *hlsViewers) clear() {
	v.mu.Lock()
	clear(v.m)
	v.mu.Unlock()
}

// hlsClient is the viewer key of a request: its player token when it
// carries a plausible one, else its remote IP and User-Agent.
func hlsClient(r *http.Request, token string) string {
	if validViewerToken(token) {
		return "viewer:" + token
	}
	ip, _, err := net.SplitHostPort(r.RemoteAddr)
	if err != nil {
		ip = r.RemoteAddr
	}
	ua := r.UserAgent()
	if len(ua) > 256 {
		ua = ua[:256]
	}
	return ip + " " + ua
}

// validViewerToken accepts 8 to 64 characters of [A-Za-z0-9_-].
func validViewerToken(s string) bool {
	if len(s) < 8 || len(s) > 64 {
		return false
	}
	for _, c := range []byte(s) {
		switch {
		case c >= 'a' && c <= 'z', c >= 'A' && c <= 'Z', c >= '0' && c <= '9', c == '_', c == '-':
		default:
			return false
		}
	}
	return true
}

func cloneValues(q url.Values) url.Values {
	out := make(url.Values, len(q))
	for k, v := range q {
		out[k] = append([]string(nil), v...)
	}
	return out
}
