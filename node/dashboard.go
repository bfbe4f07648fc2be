package node

import (
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"sync"
	"time"

	"github.com/gradient-cdn/gradient/dashboard"
	"github.com/gradient-cdn/gradient/media"
	"github.com/gradient-cdn/gradient/optimizer"
	"github.com/gradient-cdn/gradient/overlay"
)

// dashParts is the node's dashboard wiring: the event broker, the
// collector that feeds it, and the per-path WHEP session counts for the
// load event.
type dashParts struct {
	broker *dashboard.Broker
	col    *dashboard.Collector
	meter  *dashboard.Meter
	mux    *http.ServeMux // for the VoD cache counters (served by vod)

	mu     sync.Mutex
	webrtc map[string]int // open WHEP sessions by hub path
	ids    map[string]string
}

// buildDashboard builds the broker and collector (after buildOverlay).
func (n *Node) buildDashboard() error {
	b, err := dashboard.NewBroker(n.cfg.Dashboard, n.log.With("component", "dashboard"))
	if err != nil {
		return err
	}
	d := &dashParts{broker: b, meter: dashboard.NewMeter(), webrtc: map[string]int{}, ids: map[string]string{}}
	src := dashboard.Source{Self: n.cfg.Name, LocalLoad: n.localLoad}
	src.Client = &http.Client{Timeout: 1500 * time.Millisecond, Transport: &http.Transport{TLSClientConfig: n.peerTLS}} // peers may speak HTTPS
	if m := n.Members; m != nil {
		src.Members = m.Members
		src.LinkCost = m.LinkCost
		src.Plans = m.Plans
		src.Demands = func() []overlay.Demand { return m.Demands("") }
		src.Changes = m.Subscribe
		src.Problem = func(stream string) (*optimizer.Problem, []overlay.Group, bool) {
			s, ok := m.Stream(stream)
			if !ok {
				return nil, nil, false
			}
			prob, groups := n.planner.Problem(s)
			return prob, groups, true
		}
	}
	d.col = dashboard.NewCollector(b, src)
	n.dash = d
	return nil
}

// startDashboard starts the collector (after startOverlay).
func (n *Node) startDashboard() {
	n.dash.col.Start()
	n.closers = append(n.closers, n.dash.col.Close)
}

// routeDashboard mounts the page, its assets and the event stream.
//
//	GET /                 the dashboard page
//	GET /api/v1/events    Server-Sent Events: hello, members, plan, demand, load
//	GET /api/v1/load      this node's load (streams, readers, serverlets, CPU)
func (n *Node) routeDashboard(mux *http.ServeMux) {
	n.dash.mux = mux
	mux.HandleFunc("GET /{$}", func(w http.ResponseWriter, r *http.Request) {
		dashboard.ServePage(w, dashboard.PageData{Node: n.cfg.Name, DemoURL: n.cfg.Dashboard.DemoURL})
	})
	mux.Handle("GET "+dashboard.AssetsPrefix, dashboard.Assets())
	mux.HandleFunc("GET /api/v1/events", func(w http.ResponseWriter, r *http.Request) {
		n.dash.broker.Serve(w, r, map[string]any{"node": n.cfg.Name, "demo_url": n.cfg.Dashboard.DemoURL,
			"gossip": n.Members != nil, "cytoscape": dashboard.HasCytoscape()})
	})
	mux.HandleFunc("GET /api/v1/load", func(w http.ResponseWriter, r *http.Request) {
		writeJSON(w, n.localLoad())
	})
}

// localLoad is this node's part of the "load" event.
func (n *Node) localLoad() dashboard.NodeLoad {
	d := n.dash
	st := n.Serverlets.Stats()
	l := dashboard.NodeLoad{Node: n.cfg.Name, CPU: d.meter.CPU(), LoadAvg: dashboard.LoadAvg(), Cores: dashboard.Cores(),
		Slots: st.Slots, SlotsUsed: st.Used, Streams: []dashboard.StreamLoad{}, Serverlets: []dashboard.ServerletLoad{}}
	hls := map[string]int{}
	for _, v := range n.HLS.Viewers() {
		hls[v.Path]++
	}
	d.mu.Lock()
	webrtc := make(map[string]int, len(d.webrtc))
	for p, c := range d.webrtc {
		webrtc[p] = c
	}
	d.mu.Unlock()
	var paths []string
	for _, s := range n.Hub.Streams() {
		paths = append(paths, s.Path)
		in := d.meter.Kbps(s.Path, s.BytesIn, s.Kbps)
		l.Streams = append(l.Streams, dashboard.StreamLoad{Path: s.Path, KbpsIn: in, KbpsOut: in * float64(s.Readers),
			Readers: map[string]int{"webrtc": webrtc[s.Path], "hls": hls[s.Path], "hub": s.Readers}, Player: "/" + s.Path + "/"})
	}
	d.meter.Keep(paths)
	for _, r := range st.Serverlets {
		l.Serverlets = append(l.Serverlets, dashboard.ServerletLoad{Rendition: r.Rendition, Spec: r.Spec, FPS: r.FPS,
			Speed: r.Speed, CPU: r.CPULoad})
	}
	if d.mux != nil && n.VoD != nil {
		// The VoD cache counters as GET /api/v1/vod/cache serves them.
		rec := httptest.NewRecorder()
		req, _ := http.NewRequest(http.MethodGet, "/api/v1/vod/cache", nil)
		d.mux.ServeHTTP(rec, req)
		if rec.Code == http.StatusOK && json.Valid(rec.Body.Bytes()) {
			l.VoD = json.RawMessage(rec.Body.Bytes())
		}
	}
	return l
}

// sessionOpened and sessionClosed count WHEP sessions by path.
func (n *Node) dashSessionOpened(id, path string) {
	if n.dash == nil {
		return
	}
	if _, _, err := media.ParsePath(path); err != nil {
		return
	}
	n.dash.mu.Lock()
	n.dash.ids[id] = path
	n.dash.webrtc[path]++
	n.dash.mu.Unlock()
}

func (n *Node) dashSessionClosed(id string) {
	if n.dash == nil {
		return
	}
	n.dash.mu.Lock()
	defer n.dash.mu.Unlock()
	p, ok := n.dash.ids[id]
	if !ok {
		return
	}
	delete(n.dash.ids, id)
	if n.dash.webrtc[p]--; n.dash.webrtc[p] <= 0 {
		delete(n.dash.webrtc, p)
	}
}
