package node

import (
	"crypto/subtle"
	"net/http"
	"net/netip"
	"strings"

	"github.com/gradient-cdn/gradient/auth"
	"github.com/gradient-cdn/gradient/media"
	"github.com/gradient-cdn/gradient/overlay"
)

// buildAuth makes the node's one authorizer from the auth section and
// warns, once at start, of every door it leaves open.
func (n *Node) buildAuth() (err error) {
	if n.auth, err = auth.New(n.cfg.Auth, n.log); err != nil {
		return err
	}
	n.reg.MustRegister(n.auth.Collector())
	for _, d := range n.auth.OpenDoors() {
		n.log.Warn("auth: open door", "what", d)
	}
	if n.cfg.RTSP.Addr != Off && n.auth.NeedsClearPassword() {
		n.log.Warn("auth: RTSP challenges with Basic (hashed passwords or the http/jwt method need the password): " +
			"RTSP passwords cross the network in clear; publish over a trusted network or a tunnel")
	}
	if n.cfg.clusterSecret() == "" && n.cfg.Gossip.Addr != Off && !loopbackAddr(n.cfg.Gossip.Addr) {
		n.log.Warn("auth: no cluster secret: relays read over RTSP as anonymous readers")
	}
	return nil
}

// authorizeRTSP is the RTSP server's Authorize hook: relay users of other
// nodes first, proving the password derived from the cluster secret, then
// the operator's authorizer.
func (n *Node) authorizeRTSP(r auth.Request) error {
	secret := n.cfg.clusterSecret()
	if secret != "" && strings.HasPrefix(r.User, overlay.RelayUser+".") {
		want := overlay.RelayPassword(secret, r.User, r.Path)
		proved := (r.Pass != "" && subtle.ConstantTimeCompare([]byte(r.Pass), []byte(want)) == 1) ||
			(r.Pass == "" && r.VerifyPass != nil && r.VerifyPass(want))
		switch {
		case !proved:
			return auth.ErrBadCredentials
		case r.Action != auth.ActionRead:
			return auth.ErrForbidden // relays pull; they never publish
		}
		return nil
	}
	// Anybody else, anonymous viewers included, is the operator's to
	// decide: the cluster secret guards only the relay users above, so a
	// viewer's RTSP read is as open as its WHEP or HLS read.
	if r.Action == auth.ActionRead && !n.takeStart(r.IP, r.Path) {
		return auth.ErrForbidden
	}
	return n.auth.Authorize(r)
}

// authorizeHTTP is the egress Router's Authorize hook.
func (n *Node) authorizeHTTP(r *http.Request, action, path string) error {
	proto := "http"
	switch {
	case strings.HasSuffix(r.URL.Path, "/whep"), strings.HasSuffix(r.URL.Path, "/whip"):
		proto = "webrtc"
	case strings.Contains(r.URL.Path, ".m3u8"), strings.HasSuffix(r.URL.Path, ".mp4"):
		proto = "hls"
	}
	return n.auth.Authorize(auth.FromHTTP(r, action, path, proto))
}

// guardWatch checks that the viewer may read the stream before /watch
// counts and redirects it, and keeps its token or signature in the
// redirect.
func (n *Node) guardWatch(h http.Handler) http.Handler {
	carry := auth.CarryRedirects(h)
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		stream := r.PathValue("stream")
		if _, _, err := media.ParsePath(stream); err == nil {
			if err := n.auth.Authorize(auth.FromHTTP(r, auth.ActionRead, stream, "http")); err != nil {
				auth.RefuseHTTP(w, err)
				return
			}
		}
		carry.ServeHTTP(w, r)
	})
}

// guardHTTP puts the node's own HTTP surface to the authorizer: /metrics
// needs "metrics"; API writes (any method but GET and HEAD under /api/),
// the API reads that show clients' and nodes' addresses (streams with
// their sources, the cluster, plans), the dashboard with its event stream
// (/api/v1/events) and pprof need "api".
// Viewer URLs are the Router's, /internal/ has the cluster secret.
func (n *Node) guardHTTP(h http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if action := httpAction(r); action != "" {
			if err := n.auth.Authorize(auth.FromHTTP(r, action, r.URL.Path, "http")); err != nil {
				auth.RefuseHTTP(w, err)
				return
			}
		}
		h.ServeHTTP(w, r)
	})
}

// httpAction is the permission a request to the node's own endpoints
// needs, "" for none.
func httpAction(r *http.Request) string {
	p := r.URL.Path
	read := r.Method == http.MethodGet || r.Method == http.MethodHead
	switch {
	case p == "/metrics":
		return auth.ActionMetrics
	case strings.HasPrefix(p, "/api/") && !read:
		return auth.ActionAPI
	case p == "/api/v1/streams", strings.HasPrefix(p, "/api/v1/streams/"), p == "/api/v1/cluster",
		p == "/api/v1/events", p == "/", strings.HasPrefix(p, "/debug/"):
		return auth.ActionAPI
	}
	return ""
}

// takeStart counts a read of path by ip against the client's rendition
// starts (serverlets.max_starts_per_client a minute) when the read would
// start a rendition: path names one ("live/cam1@360p") that is not live
// yet. Loopback clients are exempt unless limit_loopback is set. It
// reports whether the read may go on.
func (n *Node) takeStart(ip netip.Addr, path string) bool {
	if n.starts == nil || !strings.Contains(path, "@") {
		return true
	}
	if ip.IsLoopback() && !n.cfg.LimitLoopback {
		return true
	}
	if _, live := n.Hub.Lookup(path); live {
		return true
	}
	if n.starts.Take(ip.String()) {
		return true
	}
	if n.startsLogged.Allow(ip.String()) {
		n.log.Warn("rendition start refused: too many from one client", "ip", ip.String(), "path", path,
			"max_starts_per_client", n.cfg.Serverlets.MaxStartsPerClient)
	}
	return false
}

// guardStarts answers 429 to a WHEP offer or an HLS playlist request that
// would start one rendition too many for its client this minute.
func (n *Node) guardStarts(h http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if path := startingPath(r); path != "" {
			ip := auth.FromHTTP(r, auth.ActionRead, path, "http").IP
			if !n.takeStart(ip, path) {
				w.Header().Set("Retry-After", "60")
				http.Error(w, "too many rendition starts from this client: try again in a minute", http.StatusTooManyRequests)
				return
			}
		}
		h.ServeHTTP(w, r)
	})
}

// startingPath is the stream path of a request that may start a
// rendition (a WHEP offer, an HLS playlist), "" for any other.
func startingPath(r *http.Request) string {
	p := strings.TrimPrefix(r.URL.Path, "/")
	i := strings.LastIndexByte(p, '/')
	if i <= 0 || !strings.Contains(p[:i], "@") {
		return ""
	}
	last := p[i+1:]
	switch {
	case last == "whep" && r.Method == http.MethodPost, strings.HasSuffix(last, ".m3u8") && r.Method == http.MethodGet:
		return p[:i]
	}
	return ""
}
