package node

import (
	"crypto/subtle"
	"net/http"
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
	if secret != "" && r.Action == auth.ActionRead && !r.HasCredentials() {
		// With a cluster secret, RTSP reading is for relays and for
		// readers the operator gave credentials: anonymous viewers watch
		// over WHEP or HLS, as before the auth section existed.
		return auth.ErrNoCredentials
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
// their sources, the cluster, plans), the dashboard and pprof need "api".
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
		p == "/", strings.HasPrefix(p, "/debug/"):
		return auth.ActionAPI
	}
	return ""
}
