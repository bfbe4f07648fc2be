package node

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"net/url"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/gradient-cdn/gradient/egress"
	"github.com/gradient-cdn/gradient/media"
	"github.com/gradient-cdn/gradient/optimizer"
	"github.com/gradient-cdn/gradient/overlay"
	"github.com/gradient-cdn/gradient/serverlet"
)

// OverlayConfig configures the node's part in the overlay: what it costs,
// how streams rooted here are planned, and the relays between nodes.
type OverlayConfig struct {
	// Secret is the cluster secret: relays between nodes authenticate with
	// it (RTSP Basic, user "gradient"), and RTSP reading on this node
	// requires it. Default: the gossip key (gossip.key); empty with no
	// gossip key: RTSP reading is open.
	Secret string `yaml:"secret"`
	// PricePerMbps is what relaying one Mbps through this node costs; link
	// costs are built from it and the RTT (see overlay.LinkCost). Default 0.01.
	PricePerMbps float64 `yaml:"price_per_mbps"`
	// TranscodeCost is the cost of one rendition made here. Default 0.001.
	TranscodeCost float64 `yaml:"transcode_cost"`
	// Ladder is the rendition ladder of streams published into this node,
	// best first. The first rung is the source (the bare stream path; its
	// name is a label), the others name serverlet renditions
	// ("live/cam1@360p"). Default [{source, 2500}, {360p, 800}].
	Ladder []LadderLevel `yaml:"ladder"`
	// DeviceClasses gives, per device class, the utility of one viewer
	// watching at each rung (by name); the planner trades it against
	// bandwidth cost. Default: phone, laptop and tv (see
	// DefaultDeviceClasses).
	DeviceClasses map[string]map[string]float64 `yaml:"device_classes"`
	// DefaultDevice is the class of a viewer that names none. Default "laptop".
	DefaultDevice string `yaml:"default_device"`
	// LastMileCostPerMbps is what serving a viewer from its edge costs per
	// Mbps. Default 0.05.
	LastMileCostPerMbps float64 `yaml:"last_mile_cost_per_mbps"`
	// PlannerDebounce delays a re-plan after a change. Default 300ms.
	PlannerDebounce time.Duration `yaml:"planner_debounce"`
	// PlannerInterval re-plans without a change. Default 10s.
	PlannerInterval time.Duration `yaml:"planner_interval"`
	// RelayGrace keeps a relayed stream published this long while no
	// upstream feeds it (a parent died), so that viewers only pause. Default 15s.
	RelayGrace time.Duration `yaml:"relay_grace"`
	// ProbeInterval, ProbeTimeout and SuspicionMult tune failure detection
	// (memberlist). A dead node is declared after about SuspicionMult ×
	// ProbeInterval once peers confirm the suspicion. Defaults 1s, 500ms, 4.
	ProbeInterval time.Duration `yaml:"probe_interval"`
	ProbeTimeout  time.Duration `yaml:"probe_timeout"`
	SuspicionMult int           `yaml:"suspicion_mult"`
	// PushPullInterval is the full state exchange period. Default 10s.
	PushPullInterval time.Duration `yaml:"push_pull_interval"`
	// WatchLease is how long a viewer sent to a player by /watch counts as
	// demand (and keeps its rendition relayed here) before its WHEP session
	// starts. Default 30s.
	WatchLease time.Duration `yaml:"watch_lease"`
}

// LadderLevel is one rung of the ladder.
type LadderLevel struct {
	Name string  `yaml:"name"`
	Kbps float64 `yaml:"kbps"`
}

// DefaultDeviceClasses are the utilities of a viewer per rung: a phone
// gains little from more than 360p, a TV a lot.
func DefaultDeviceClasses() map[string]map[string]float64 {
	return map[string]map[string]float64{
		"phone":  {"source": 1.0, "360p": 0.95},
		"laptop": {"source": 1.5, "360p": 1.0},
		"tv":     {"source": 2.0, "360p": 0.8},
	}
}

func defaultOverlayConfig() OverlayConfig {
	return OverlayConfig{
		PricePerMbps:        0.01,
		TranscodeCost:       0.001,
		Ladder:              []LadderLevel{{"source", 2500}, {"360p", 800}},
		DeviceClasses:       DefaultDeviceClasses(),
		DefaultDevice:       "laptop",
		LastMileCostPerMbps: 0.05,
		PlannerDebounce:     300 * time.Millisecond,
		PlannerInterval:     10 * time.Second,
		RelayGrace:          15 * time.Second,
		ProbeInterval:       time.Second,
		ProbeTimeout:        500 * time.Millisecond,
		SuspicionMult:       4,
		PushPullInterval:    10 * time.Second,
		WatchLease:          30 * time.Second,
	}
}

// validate checks the overlay section and names the bad field.
func (c OverlayConfig) validate() error {
	if c.PricePerMbps < 0 {
		return errors.New("overlay.price_per_mbps: must not be negative")
	}
	if c.TranscodeCost < 0 || c.LastMileCostPerMbps < 0 {
		return errors.New("overlay.transcode_cost, overlay.last_mile_cost_per_mbps: must not be negative")
	}
	if len(c.Ladder) == 0 {
		return errors.New("overlay.ladder: needs at least the source rung")
	}
	for i, l := range c.Ladder {
		if l.Name == "" || strings.ContainsAny(l.Name, "/@ ") {
			return fmt.Errorf("overlay.ladder[%d].name: %q is not a rendition name", i, l.Name)
		}
		if l.Kbps <= 0 || (i > 0 && l.Kbps >= c.Ladder[i-1].Kbps) {
			return fmt.Errorf("overlay.ladder[%d].kbps: must be positive and below the rung before", i)
		}
		if i > 0 {
			if _, _, err := media.ParsePath("x@" + l.Name); err != nil {
				return fmt.Errorf("overlay.ladder[%d].name: %q is not a rendition name", i, l.Name)
			}
		}
	}
	if len(c.DeviceClasses) == 0 {
		return errors.New("overlay.device_classes: needs at least one class")
	}
	for class, u := range c.DeviceClasses {
		for lv, v := range u {
			if v < 0 {
				return fmt.Errorf("overlay.device_classes.%s.%s: must not be negative", class, lv)
			}
		}
	}
	if _, ok := c.DeviceClasses[c.DefaultDevice]; !ok {
		return fmt.Errorf("overlay.default_device: %q is not in device_classes", c.DefaultDevice)
	}
	pos := []struct {
		field string
		ok    bool
	}{
		{"overlay.planner_debounce", c.PlannerDebounce > 0},
		{"overlay.planner_interval", c.PlannerInterval > 0},
		{"overlay.relay_grace", c.RelayGrace > 0},
		{"overlay.probe_interval", c.ProbeInterval > 0},
		{"overlay.probe_timeout", c.ProbeTimeout > 0 && c.ProbeTimeout < c.ProbeInterval},
		{"overlay.suspicion_mult", c.SuspicionMult > 0},
		{"overlay.push_pull_interval", c.PushPullInterval > 0},
		{"overlay.watch_lease", c.WatchLease > 0},
	}
	for _, p := range pos {
		if !p.ok {
			return fmt.Errorf("%s: out of range", p.field)
		}
	}
	return nil
}

// clusterSecret is the secret relays use.
func (c Config) clusterSecret() string {
	if c.Overlay.Secret != "" {
		return c.Overlay.Secret
	}
	return c.Gossip.Key
}

// nodeOverlay is the node's side of the overlay: it registers the streams
// published here, counts viewers into demand, runs the planner and the
// reconcile loop, and serves /watch and the cluster API.
type nodeOverlay struct {
	n   *Node
	cfg OverlayConfig
	log *slog.Logger
	m   *overlay.Membership // nil with gossip off

	planner *overlay.Planner
	rec     *overlay.Reconciler

	mu       sync.Mutex
	roots    map[string]bool           // streams registered as rooted here
	sessions map[string]viewerSession  // WHEP session id → what it watches
	hls      map[hlsViewerKey]string   // HLS viewer → its device class, fixed when first counted
	leases   []*viewerLease            // viewers sent to a player, not yet in a session
	reported map[string]map[string]int // demand last reported, by stream

	stop chan struct{}
	done chan struct{}
}

type viewerSession struct {
	path, class string
}

type viewerLease struct {
	stream, class string
	until         time.Time
}

type hlsViewerKey struct {
	path, client string
}

func newNodeOverlay(n *Node) *nodeOverlay {
	return &nodeOverlay{n: n, cfg: n.cfg.Overlay, log: n.log.With("component", "overlay"), roots: map[string]bool{},
		sessions: map[string]viewerSession{}, hls: map[hlsViewerKey]string{}, reported: map[string]map[string]int{},
		stop: make(chan struct{}), done: make(chan struct{})}
}

// start joins the cluster and starts the planner and the reconcile loop.
func (o *nodeOverlay) start(key []byte) error {
	cfg := o.n.cfg
	slots := 0
	if o.n.Serverlets != nil {
		slots = o.n.Serverlets.Stats().Slots
	}
	m, err := overlay.NewMembership(overlay.Config{Name: cfg.Name, BindAddr: cfg.Gossip.Addr, Advertise: cfg.Gossip.Advertise,
		Join: cfg.Gossip.Join, Key: key, Logger: o.n.log,
		Meta: overlay.NodeMeta{ID: cfg.Name, HTTP: cfg.HTTP, RTSP: rtspAdvert(cfg.RTSP.Addr), SRT: rtspAdvert(cfg.SRT.Addr),
			Price: o.cfg.PricePerMbps, TranscodeSlots: slots, TranscodeCost: o.cfg.TranscodeCost},
		ProbeInterval: o.cfg.ProbeInterval, ProbeTimeout: o.cfg.ProbeTimeout, SuspicionMult: o.cfg.SuspicionMult,
		PushPullInterval: o.cfg.PushPullInterval})
	if err != nil {
		return err
	}
	o.m = m
	o.n.Members = m
	o.planner = overlay.NewPlanner(overlay.PlannerConfig{DeviceClasses: o.cfg.DeviceClasses, DefaultClass: o.cfg.DefaultDevice,
		LastMileCostPerMbps: o.cfg.LastMileCostPerMbps, Debounce: o.cfg.PlannerDebounce, Interval: o.cfg.PlannerInterval, Logger: o.n.log}, m)
	o.rec = overlay.NewReconciler(overlay.ReconcilerConfig{Secret: cfg.clusterSecret(), RelayGrace: o.cfg.RelayGrace,
		Replaceable: func(si media.StreamInfo) bool { return strings.HasPrefix(si.Source, serverlet.SourcePrefix) },
		Viewed:      o.viewedPaths, Logger: o.n.log}, m, o.n.Hub)
	o.n.Hub.Observe(o)
	o.planner.Start()
	o.rec.Start()
	go o.run()
	o.log.Info("listening", "service", "gossip", "addr", m.Addr())
	return nil
}

func rtspAdvert(a string) string {
	if a == Off {
		return ""
	}
	return a
}

// close stops everything the overlay started: the loops, the relays, and
// gossip (leaving the cluster).
func (o *nodeOverlay) close() error {
	select {
	case <-o.stop:
		return nil
	default:
	}
	close(o.stop)
	if o.m == nil {
		return nil
	}
	<-o.done
	o.planner.Close()
	o.rec.Close()
	return o.m.Close()
}

// OnHubEvent implements media.HubObserver: a stream published into this
// node (not by a relay) is registered in the overlay with this node as its
// root; it is withdrawn when it ends.
func (o *nodeOverlay) OnHubEvent(ev media.HubEvent) {
	if o.m == nil {
		return
	}
	stream, rendition, err := media.ParsePath(ev.Stream)
	if err != nil || rendition != "" {
		return
	}
	if ev.Published {
		st, ok := o.n.Hub.Lookup(stream)
		if !ok || strings.HasPrefix(st.Info().Source, overlay.RelaySourcePrefix) {
			return
		}
		o.mu.Lock()
		o.roots[stream] = true
		o.mu.Unlock()
		ladder := make([]optimizer.Level, len(o.cfg.Ladder))
		for i, l := range o.cfg.Ladder {
			ladder[i] = optimizer.Level{Name: l.Name, Kbps: l.Kbps}
		}
		o.m.SetStream(overlay.StreamInfo{Name: stream, Ladder: ladder})
		return
	}
	o.mu.Lock()
	was := o.roots[stream]
	delete(o.roots, stream)
	o.mu.Unlock()
	if was {
		o.m.RemoveStream(stream)
	}
}

// run reports demand and transcode use (by stream).
func (o *nodeOverlay) run() {
	defer close(o.done)
	t := time.NewTicker(500 * time.Millisecond)
	defer t.Stop()
	var used map[string]int
	for {
		select {
		case <-o.stop:
			return
		case <-t.C:
		}
		o.pruneSessions()
		o.reportDemand()
		if o.n.Serverlets != nil {
			u := map[string]int{}
			for _, r := range o.n.Serverlets.Stats().Serverlets {
				stream, _, _ := media.ParsePath(r.Rendition)
				u[stream]++
			}
			if used == nil || !sameCounts(u, used) {
				used = u
				o.m.SetTranscodeUse(u)
			}
		}
	}
}

// demand counts viewers per stream and device class: WHEP sessions, HLS
// viewers (clients that fetched the stream's playlists or segments within
// egress.HLSConfig.ViewerTimeout, see egress.HLS.Viewers), plus viewers
// redirected to a player whose session has not started yet.
func (o *nodeOverlay) demand() map[string]map[string]int {
	hls := o.n.HLS.Viewers()
	o.mu.Lock()
	defer o.mu.Unlock()
	now := time.Now()
	out := map[string]map[string]int{}
	add := func(stream, class string) {
		if out[stream] == nil {
			out[stream] = map[string]int{}
		}
		out[stream][class]++
	}
	for _, s := range o.sessions {
		st, _, _ := media.ParsePath(s.path)
		add(st, s.class)
	}
	// An HLS viewer gets its class when first counted, as a WHEP session
	// does (taking the /watch lease it came by), and keeps it until it
	// stops fetching.
	seen := make(map[hlsViewerKey]bool, len(hls))
	for _, v := range hls {
		k := hlsViewerKey{path: v.Path, client: v.Client}
		seen[k] = true
		st, _, _ := media.ParsePath(v.Path)
		class, ok := o.hls[k]
		if !ok {
			class = o.takeLease(st, v.Query.Get("device"))
			o.hls[k] = class
		}
		add(st, class)
	}
	for k := range o.hls {
		if !seen[k] {
			delete(o.hls, k)
		}
	}
	kept := o.leases[:0]
	for _, l := range o.leases {
		if now.Before(l.until) {
			kept = append(kept, l)
			add(l.stream, l.class)
		}
	}
	o.leases = kept
	return out
}

func (o *nodeOverlay) reportDemand() {
	cur := o.demand()
	o.mu.Lock()
	var changed []string
	for s, v := range cur {
		if !sameCounts(v, o.reported[s]) {
			changed = append(changed, s)
		}
	}
	for s := range o.reported {
		if _, ok := cur[s]; !ok {
			changed = append(changed, s)
		}
	}
	for _, s := range changed {
		if cur[s] == nil {
			delete(o.reported, s)
		} else {
			o.reported[s] = cur[s]
		}
	}
	o.mu.Unlock()
	for _, s := range changed {
		o.m.SetDemand(s, cur[s])
	}
}

func sameCounts(a, b map[string]int) bool {
	if len(a) != len(b) {
		return false
	}
	for k, v := range a {
		if b[k] != v {
			return false
		}
	}
	return true
}

// viewedPaths lists the paths local WHEP and HLS viewers watch.
func (o *nodeOverlay) viewedPaths() []string {
	hls := o.n.HLS.Viewers()
	o.mu.Lock()
	defer o.mu.Unlock()
	seen := map[string]bool{}
	var out []string
	for _, s := range o.sessions {
		if !seen[s.path] {
			seen[s.path] = true
			out = append(out, s.path)
		}
	}
	for _, v := range hls {
		if !seen[v.Path] {
			seen[v.Path] = true
			out = append(out, v.Path)
		}
	}
	return out
}

// pruneSessions forgets WHEP sessions that ended without a DELETE (ICE
// failure, timeout).
func (o *nodeOverlay) pruneSessions() {
	o.mu.Lock()
	defer o.mu.Unlock()
	for id := range o.sessions {
		if !o.n.WebRTC.HasSession(id) {
			delete(o.sessions, id)
		}
	}
}

// takeLease returns the device class of a viewer of stream that starts
// being counted: device (the request's ?device=), else the class of the
// oldest /watch redirect for the stream still waiting for its session,
// else the default class; an unknown class is the default. The /watch
// lease of that class, if any, is used up: the viewer now counts by
// itself. Called with o.mu held.
func (o *nodeOverlay) takeLease(stream, device string) string {
	class := device
	if class == "" {
		class = o.cfg.DefaultDevice
		for _, l := range o.leases {
			if l.stream == stream {
				class = l.class
				break
			}
		}
	}
	if _, ok := o.cfg.DeviceClasses[class]; !ok {
		class = o.cfg.DefaultDevice
	}
	for i, l := range o.leases {
		if l.stream == stream && l.class == class {
			o.leases = append(o.leases[:i:i], o.leases[i+1:]...)
			break
		}
	}
	return class
}

// countingWHEP wraps the WHEP handler to count sessions per device class
// (see takeLease).
type countingWHEP struct {
	o *nodeOverlay
	h egress.StreamHandler
}

// whepHandler returns the WHEP handler the router uses.
func (o *nodeOverlay) whepHandler(h egress.StreamHandler) egress.StreamHandler {
	return &countingWHEP{o: o, h: h}
}

type captureWriter struct {
	http.ResponseWriter
	code int
}

func (c *captureWriter) WriteHeader(code int) {
	if c.code == 0 {
		c.code = code
	}
	c.ResponseWriter.WriteHeader(code)
}

func (c *captureWriter) Write(b []byte) (int, error) {
	if c.code == 0 {
		c.code = http.StatusOK
	}
	return c.ResponseWriter.Write(b)
}

func (c *countingWHEP) ServeStream(w http.ResponseWriter, r *http.Request, path, rest string) {
	cw := &captureWriter{ResponseWriter: w}
	c.h.ServeStream(cw, r, path, rest)
	o := c.o
	switch {
	case rest == "whep" && r.Method == http.MethodPost && cw.code == http.StatusCreated:
		loc := w.Header().Get("Location")
		id := loc[strings.LastIndex(loc, "/")+1:]
		stream, _, _ := media.ParsePath(path)
		o.mu.Lock()
		o.sessions[id] = viewerSession{path: path, class: o.takeLease(stream, r.URL.Query().Get("device"))}
		o.mu.Unlock()
	case strings.HasPrefix(rest, "whep/") && r.Method == http.MethodDelete && cw.code == http.StatusOK:
		o.mu.Lock()
		delete(o.sessions, strings.TrimPrefix(rest, "whep/"))
		o.mu.Unlock()
	}
}

// routeOverlay mounts the viewer entry point and the cluster API.
//
//	GET /watch/<stream>?device=phone     302 to the best edge's player for the device
//	GET /api/v1/cluster                  members, RTTs, streams, demand, plans, local relays
//	GET /api/v1/streams/<stream>/plan    the stream's current plan with its cost block
func (o *nodeOverlay) route(mux *http.ServeMux) {
	mux.HandleFunc("GET /watch/{stream...}", o.serveWatch)
	mux.HandleFunc("GET /api/v1/cluster", o.serveCluster)
	mux.HandleFunc("GET /api/v1/streams/{rest...}", o.servePlan)
}

// ClusterStatus is the body of GET /api/v1/cluster.
type ClusterStatus struct {
	Self           string                        `json:"self"`
	Members        []overlay.Member              `json:"members"`
	RTTMillis      map[string]map[string]float64 `json:"rtt_ms"`
	Streams        []overlay.StreamInfo          `json:"streams"`
	Demand         []overlay.Demand              `json:"demand"`
	Plans          []PlanSummary                 `json:"plans"`
	Relays         []overlay.RelayStatus         `json:"relays"`
	Transcodes     []string                      `json:"transcodes"`
	GossipBytesIn  uint64                        `json:"gossip_bytes_in"`
	GossipBytesOut uint64                        `json:"gossip_bytes_out"`
}

// PlanSummary is a plan in the cluster status.
type PlanSummary struct {
	Stream     string                `json:"stream"`
	Root       string                `json:"root"`
	Version    uint64                `json:"version"`
	Arcs       []optimizer.Arc       `json:"arcs"`
	Transcodes []optimizer.Transcode `json:"transcodes"`
	Cost       *optimizer.Cost       `json:"cost,omitempty"`
}

// Status returns the node's view of the cluster.
func (o *nodeOverlay) Status() ClusterStatus {
	st := ClusterStatus{Self: o.n.cfg.Name}
	if o.m == nil {
		return st
	}
	st.Members = o.m.Members()
	st.RTTMillis = o.m.RTTs()
	st.Streams = o.m.Streams()
	st.Demand = o.m.Demands("")
	for _, p := range o.m.Plans() {
		st.Plans = append(st.Plans, PlanSummary{Stream: p.Stream, Root: p.Root, Version: p.Version, Arcs: p.Plan.Arcs,
			Transcodes: p.Plan.Transcodes, Cost: p.Plan.Cost})
	}
	st.Relays = o.rec.Relays()
	st.Transcodes = o.rec.Transcodes()
	st.GossipBytesIn, st.GossipBytesOut = o.m.GossipBytes()
	return st
}

func (o *nodeOverlay) serveCluster(w http.ResponseWriter, r *http.Request) {
	writeJSON(w, o.Status())
}

func (o *nodeOverlay) servePlan(w http.ResponseWriter, r *http.Request) {
	stream, ok := strings.CutSuffix(r.PathValue("rest"), "/plan")
	if !ok {
		http.Error(w, "no such API endpoint", http.StatusNotFound)
		return
	}
	if _, rend, err := media.ParsePath(stream); err != nil || rend != "" {
		http.Error(w, fmt.Sprintf("bad stream name %q", stream), http.StatusBadRequest)
		return
	}
	if o.m == nil {
		http.Error(w, "gossip is off on this node: no plans", http.StatusNotFound)
		return
	}
	p, ok := o.m.Plan(stream)
	if !ok {
		http.Error(w, "no plan for "+stream, http.StatusNotFound)
		return
	}
	writeJSON(w, p)
}

// serveWatch sends a viewer to the player of the best edge, at the
// rendition the plan gives its device class there.
//
// The best edge is this node: the viewer reached it, so it is the nearest
// entry the cluster knows of; a node whose WebRTC sessions are full sends
// the viewer to the alive member with the cheapest link from it instead.
// At the edge the rendition is the plan's for (edge, device); before a
// plan covers the edge, the best rendition present here, else the source
// from the root (fast start). The viewer counts as demand at once, so the
// next plan includes it.
func (o *nodeOverlay) serveWatch(w http.ResponseWriter, r *http.Request) {
	stream := r.PathValue("stream")
	if s, rend, err := media.ParsePath(stream); err != nil {
		http.Error(w, err.Error(), http.StatusBadRequest)
		return
	} else if rend != "" {
		stream = s
	}
	class := r.URL.Query().Get("device")
	if class == "" {
		class = o.cfg.DefaultDevice
	}
	if _, ok := o.cfg.DeviceClasses[class]; !ok {
		o.log.Info("watch with unknown device class, using the default", "device", class, "default", o.cfg.DefaultDevice)
		class = o.cfg.DefaultDevice
	}
	_, local := o.n.Hub.Lookup(stream)
	var info overlay.StreamInfo
	known := false
	if o.m != nil {
		info, known = o.m.Stream(stream)
	}
	if !local && !known {
		http.Error(w, "stream "+stream+" is not live", http.StatusNotFound)
		return
	}
	if r.URL.Query().Get("edge") == "" {
		if edge, ok := o.otherEdge(); ok {
			q := url.Values{"device": {class}, "edge": {edge.Name}}
			http.Redirect(w, r, "http://"+edge.Meta.HTTP+"/watch/"+stream+"?"+q.Encode(), http.StatusFound)
			return
		}
	}
	path := o.pickRendition(stream, class, info, known)
	o.mu.Lock()
	// The lease counts the viewer from now, and for WatchLease after the
	// redirect below (the wait for the stream does not eat into it).
	lease := &viewerLease{stream: stream, class: class, until: time.Now().Add(o.cfg.WatchLease)}
	o.leases = append(o.leases, lease)
	o.mu.Unlock()
	if o.rec != nil {
		o.rec.Want(path, o.cfg.WatchLease)
	}
	// The player starts WHEP at once: wait (bounded) for the stream here,
	// or for its source when a local serverlet can make the rendition on
	// subscribe.
	if _, _, err := media.ParsePath(path); err == nil {
		ctx, cancel := context.WithTimeout(r.Context(), 10*time.Second)
		_, err := o.n.Hub.Wait(ctx, path, stream)
		cancel()
		if r.Context().Err() != nil {
			return
		}
		if err != nil {
			o.log.Info("watch: stream not here in time, sending the viewer to the player anyway", "path", path, "err", err)
		}
		o.mu.Lock()
		now := time.Now()
		if now.After(lease.until) && !slices.Contains(o.leases, lease) {
			o.leases = append(o.leases, lease) // expired while waiting (not taken by a session)
		}
		lease.until = now.Add(o.cfg.WatchLease)
		o.mu.Unlock()
		if o.rec != nil {
			o.rec.Want(path, o.cfg.WatchLease)
		}
	}
	http.Redirect(w, r, "/"+path+"/?"+url.Values{"device": {class}}.Encode(), http.StatusFound)
}

// otherEdge returns another node to send a viewer to when this one is
// full.
func (o *nodeOverlay) otherEdge() (overlay.Member, bool) {
	if o.m == nil || o.n.WebRTC.Sessions() < o.n.cfg.WebRTC.MaxSessions {
		return overlay.Member{}, false
	}
	self, _ := o.m.Member(o.n.cfg.Name)
	var best overlay.Member
	bestCost := -1.0
	for _, x := range o.m.Alive() {
		if x.Name == self.Name || x.Meta.HTTP == "" {
			continue
		}
		rtt, ok := o.m.RTT(self.Name, x.Name)
		if !ok {
			rtt = 50 * time.Millisecond
		}
		c := overlay.LinkCost(self.Meta.Price, x.Meta.Price, rtt, 50*time.Millisecond)
		if bestCost < 0 || c < bestCost {
			best, bestCost = x, c
		}
	}
	return best, bestCost >= 0
}

// pickRendition chooses the path a viewer of class watches here.
func (o *nodeOverlay) pickRendition(stream, class string, info overlay.StreamInfo, known bool) string {
	self := o.n.cfg.Name
	if o.m != nil {
		if p, ok := o.m.Plan(stream); ok {
			if lv, ok := p.Served(self, class); ok {
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
			if _, ok := o.n.Hub.Lookup(path); ok {
				return path
			}
		}
	}
	return stream
}

// renditions is the hub's RenditionProvider on a node: a rendition that a
// relay is bringing from the plan's parent is waited for rather than made
// again here, so that a viewer arriving while the relay connects does not
// start a local serverlet that then holds the path (and, fed by the
// fast-start source, ends with it); anything else the serverlets make.
type renditions struct {
	n *Node
}

// relayWait bounds how long a reader waits for a starting relay before a
// local serverlet makes the rendition instead.
const relayWait = 5 * time.Second

func (p renditions) Ensure(ctx context.Context, path string) error {
	if ov := p.n.ov; ov != nil && ov.rec != nil && ov.rec.Relaying(path) {
		wctx, cancel := context.WithTimeout(ctx, relayWait)
		_, err := p.n.Hub.Wait(wctx, path)
		cancel()
		if err == nil {
			return nil
		}
		if ctx.Err() != nil {
			return ctx.Err()
		}
	}
	return p.n.Serverlets.Ensure(ctx, path)
}
