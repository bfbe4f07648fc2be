package node

import (
	"encoding/base64"
	"fmt"
	"net/http"
	"strings"

	"github.com/gradient-cdn/gradient/egress"
	"github.com/gradient-cdn/gradient/media"
	"github.com/gradient-cdn/gradient/overlay"
	"github.com/gradient-cdn/gradient/serverlet"
)

// clusterSecret is the secret relays use.
func (c Config) clusterSecret() string {
	if c.Overlay.Secret != "" {
		return c.Overlay.Secret
	}
	return c.Gossip.Key
}

// buildOverlay builds the node's overlay parts without I/O: the demand
// tracker and /watch always; with gossip on, the membership, the
// planner, the reconciler and the announcer of the streams published
// here, which observes the hub from now on. It binds the hub's rendition
// provider to the reconciler, so that every field a hub reader reaches is
// set before anything can read.
func (n *Node) buildOverlay(rend *overlay.Renditions) (err error) {
	cfg := n.cfg
	dc := cfg.Overlay.Demand()
	dc.Viewers = n.hlsViewers
	dc.TranscodeUse = n.transcodeUse
	wc := overlay.DefaultWatchConfig()
	wc.Self = cfg.Name
	wc.Full = func() bool { return n.WebRTC.Sessions() >= cfg.WebRTC.MaxSessions }
	if n.peerTLS, err = cfg.Overlay.PeerTLS(); err != nil { // checked by Validate
		return err
	}
	if cfg.Gossip.Addr != Off {
		mc := cfg.Overlay.Membership()
		mc.Name, mc.BindAddr, mc.Advertise, mc.Join = cfg.Name, cfg.Gossip.Addr, cfg.Gossip.Advertise, cfg.Gossip.Join
		mc.Key, _ = base64.StdEncoding.DecodeString(cfg.Gossip.Key) // checked by Validate
		mc.Meta.ID, mc.Meta.HTTP, mc.Meta.RTSP, mc.Meta.SRT = cfg.Name, cfg.HTTP, advert(cfg.RTSP.Addr), advert(cfg.SRT.Addr)
		mc.Meta.TranscodeSlots = n.Serverlets.Stats().Slots
		mc.Meta.HTTPS, mc.Meta.RTSPS = cfg.HTTPTLSCert != "", cfg.RTSP.TLSCert != ""
		if n.Members, err = overlay.NewMembership(mc, n.log); err != nil {
			return err
		}
		n.closers = append(n.closers, n.Members.Close)
	}
	var sink overlay.DemandSink
	if n.Members != nil {
		sink = n.Members
	}
	if n.demand, err = overlay.NewDemandTracker(dc, sink, n.log); err != nil {
		return err
	}
	n.closers = append(n.closers, n.demand.Close)
	if n.Members != nil {
		if n.planner, err = overlay.NewPlanner(cfg.Overlay.Planner(), n.Members, n.log); err != nil {
			return err
		}
		n.closers = append(n.closers, n.planner.Close)
		rc := cfg.Overlay.Reconciler(cfg.clusterSecret())
		rc.Replaceable = func(si media.StreamInfo) bool { return strings.HasPrefix(si.Source, serverlet.SourcePrefix) }
		rc.Viewed = n.demand.ViewedPaths
		rc.TLS = n.peerTLS
		if n.rec, err = overlay.NewReconciler(rc, n.Members, n.Hub, n.log); err != nil {
			return err
		}
		n.closers = append(n.closers, n.rec.Close)
		wc.Edges = overlay.CheapestLink{M: n.Members}
		n.Hub.Observe(overlay.NewAnnouncer(n.Members, n.Hub, cfg.Overlay.Levels()))
	}
	rend.Bind(n.Hub, n.Serverlets, n.rec)
	n.watch = overlay.NewWatch(wc, n.Hub, n.Members, n.rec, n.demand, n.log)
	return nil
}

// startOverlay joins the cluster and starts the loops.
func (n *Node) startOverlay() error {
	if n.Members != nil {
		if err := n.Members.Start(); err != nil {
			return err
		}
		n.log.Info("listening", "service", "gossip", "addr", n.Members.Addr())
		if err := n.planner.Start(); err != nil {
			return err
		}
		if err := n.rec.Start(); err != nil {
			return err
		}
		n.startVoDSync()
	}
	return n.demand.Start()
}

// hlsViewers adapts the HLS viewer table to the demand tracker's viewers.
func (n *Node) hlsViewers() []overlay.Viewer {
	hv := n.HLS.Viewers()
	out := make([]overlay.Viewer, len(hv))
	for i, v := range hv {
		out[i] = overlay.Viewer{Path: v.Path, Client: v.Client, Device: v.Query.Get("device")}
	}
	return out
}

// transcodeUse counts the renditions the serverlets make, by stream.
func (n *Node) transcodeUse() map[string]int {
	u := map[string]int{}
	for _, r := range n.Serverlets.Stats().Serverlets {
		stream, _, _ := media.ParsePath(r.Rendition)
		u[stream]++
	}
	return u
}

func advert(a string) string {
	if a == Off {
		return ""
	}
	return a
}

// sessionHooks reports every WHEP session's start and end (however it
// ends: DELETE, ICE failure, timeout) to the demand tracker. It is
// given to egress when the WebRTC component is built; egress calls it only
// once sessions exist, after buildOverlay has set n.demand.
type sessionHooks struct{ n *Node }

func (h sessionHooks) OnSessionOpen(c *egress.SessionOpenCtx) {
	h.n.demand.SessionOpened(c.ID, c.Path, c.Device)
	h.n.dashSessionOpened(c.ID, c.Path)
}

func (h sessionHooks) OnSessionClose(c *egress.SessionCloseCtx) {
	h.n.demand.SessionClosed(c.ID)
	h.n.dashSessionClosed(c.ID)
}

// routeOverlay mounts the viewer entry point and the cluster API.
//
//	GET /watch/<stream>?device=phone     302 to the best edge's player for the device
//	GET /api/v1/cluster                  members, RTTs, streams, demand, plans, local relays
//	GET /api/v1/streams/<stream>/plan    the stream's current plan with its cost block
func (n *Node) routeOverlay(mux *http.ServeMux) {
	mux.Handle("GET /watch/{stream...}", n.guardWatch(n.watch))
	mux.HandleFunc("GET /api/v1/cluster", func(w http.ResponseWriter, r *http.Request) {
		writeJSON(w, overlay.Status(n.cfg.Name, n.Members, n.rec))
	})
	mux.HandleFunc("GET /api/v1/streams/{rest...}", n.servePlan)
}

func (n *Node) servePlan(w http.ResponseWriter, r *http.Request) {
	stream, ok := strings.CutSuffix(r.PathValue("rest"), "/plan")
	if !ok {
		http.Error(w, "no such API endpoint", http.StatusNotFound)
		return
	}
	if _, rend, err := media.ParsePath(stream); err != nil || rend != "" {
		http.Error(w, fmt.Sprintf("bad stream name %q", stream), http.StatusBadRequest)
		return
	}
	if n.Members == nil {
		http.Error(w, "gossip is off on this node: no plans", http.StatusNotFound)
		return
	}
	p, ok := n.Members.Plan(stream)
	if !ok {
		http.Error(w, "no plan for "+stream, http.StatusNotFound)
		return
	}
	writeJSON(w, p)
}
