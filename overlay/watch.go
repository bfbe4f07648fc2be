package overlay

import (
	"context"
	"log/slog"
	"net"
	"net/http"
	"net/url"
	"time"

	"github.com/gradient-cdn/gradient/internal/defaults"
	"github.com/gradient-cdn/gradient/media"
)

// WatchConfig configures the /watch entry point.
type WatchConfig struct {
	// Self is this node's name. Required.
	Self string `yaml:"-"`
	// StreamWait bounds how long /watch waits for the chosen rendition (or
	// its source) to be live here before it redirects. Default 10 s.
	StreamWait time.Duration `yaml:"stream_wait"`
	// Edges, when set, chooses the node a viewer goes to when Full says
	// this one serves no more.
	Edges EdgeSelector `yaml:"-"`
	// Full, when set, tells whether this node takes no more viewers.
	Full func() bool `yaml:"-"`
}

// DefaultWatchConfig returns the defaults of /watch.
func DefaultWatchConfig() WatchConfig { return WatchConfig{StreamWait: 10 * time.Second} }

// Watch serves GET /watch/<stream>?device=phone: it sends a viewer to the
// player of the best edge, at the rendition the plan gives its device
// class there.
//
// The best edge is this node: the viewer reached it, so it is the nearest
// entry the cluster knows of; a full node sends the viewer to the edge
// WatchConfig.Edges chooses instead. At the edge the rendition is the
// plan's for (edge, device); before a plan covers the edge, the best
// rendition present here, else the source from the root (fast start). The
// viewer counts as demand at once (a DemandTracker lease), so the next
// plan includes it.
type Watch struct {
	cfg    WatchConfig
	hub    *media.Hub
	m      *Membership // nil with gossip off
	rec    *Reconciler // nil with gossip off
	demand *DemandTracker
	lease  time.Duration
	log    *slog.Logger
}

// NewWatch returns the /watch handler. m and rec are nil on a node
// without gossip: it then serves its own streams only.
func NewWatch(cfg WatchConfig, hub *media.Hub, m *Membership, rec *Reconciler, demand *DemandTracker, log *slog.Logger) *Watch {
	defaults.Fill(&cfg, DefaultWatchConfig())
	if log == nil {
		log = slog.Default()
	}
	return &Watch{cfg: cfg, hub: hub, m: m, rec: rec, demand: demand, lease: demand.cfg.WatchLease,
		log: log.With("component", "watch")}
}

// ServeHTTP serves a request routed by the pattern "GET /watch/{stream...}".
func (w *Watch) ServeHTTP(rw http.ResponseWriter, r *http.Request) {
	stream := r.PathValue("stream")
	if s, rend, err := media.ParsePath(stream); err != nil {
		http.Error(rw, err.Error(), http.StatusBadRequest)
		return
	} else if rend != "" {
		stream = s
	}
	device := r.URL.Query().Get("device")
	class := w.demand.Class(device)
	if device != "" && class != device {
		w.log.Info("watch with unknown device class, using the default", "device", device, "default", class)
	}
	_, local := w.hub.Lookup(stream)
	var info StreamInfo
	known := false
	if w.m != nil {
		info, known = w.m.Stream(stream)
	}
	if !local && !known {
		http.Error(rw, "stream "+stream+" is not live", http.StatusNotFound)
		return
	}
	if r.URL.Query().Get("edge") == "" && w.cfg.Edges != nil && w.cfg.Full != nil && w.cfg.Full() {
		if edge, ok := w.cfg.Edges.SelectEdge(w.cfg.Self); ok {
			q := url.Values{"device": {class}, "edge": {edge.Name}}
			http.Redirect(rw, r, edge.Meta.HTTPBase()+"/watch/"+stream+"?"+q.Encode(), http.StatusFound)
			return
		}
	}
	path := w.pickRendition(stream, class, info, known)
	// The lease counts the viewer from now, and for WatchLease after the
	// redirect below (the wait for the stream does not eat into it).
	client, _, err := net.SplitHostPort(r.RemoteAddr)
	if err != nil {
		client = r.RemoteAddr
	}
	lease := w.demand.Lease(stream, class, client)
	if w.rec != nil {
		w.rec.Want(path, w.lease)
	}
	// The player starts WHEP at once: wait (bounded) for the stream here,
	// or for its source when a local serverlet can make the rendition on
	// subscribe.
	ctx, cancel := context.WithTimeout(r.Context(), w.cfg.StreamWait)
	_, err = w.hub.Wait(ctx, path, stream)
	cancel()
	if r.Context().Err() != nil {
		return
	}
	if err != nil {
		w.log.Info("watch: stream not here in time, sending the viewer to the player anyway", "path", path, "err", err)
	}
	lease.Renew()
	if w.rec != nil {
		w.rec.Want(path, w.lease)
	}
	http.Redirect(rw, r, "/"+path+"/?"+url.Values{"device": {class}}.Encode(), http.StatusFound)
}

// pickRendition chooses the path a viewer of class watches here.
func (w *Watch) pickRendition(stream, class string, info StreamInfo, known bool) string {
	if w.m != nil {
		if p, ok := w.m.Plan(stream); ok {
			if lv, ok := p.Served(w.cfg.Self, class); ok {
				return p.Path(lv)
			}
		}
	}
	// Not covered yet: the best rung present here, else the source.
	if known {
		for i, l := range info.Ladder {
			path := stream
			if i > 0 {
				path = stream + "@" + l.Name
			}
			if _, ok := w.hub.Lookup(path); ok {
				return path
			}
		}
	}
	return stream
}
