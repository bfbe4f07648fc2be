package node

import (
	"encoding/json"
	"net/http"
	"net/http/pprof"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/gradient-cdn/gradient/media"
	"github.com/gradient-cdn/gradient/serverlet"
)

// routeAPI mounts the JSON API, /metrics, /healthz and the dashboard.
//
//	GET /api/v1/node      this node: name, version, uptime, sessions
//	GET /api/v1/streams   live streams with tracks, readers and bitrate
//	GET /api/v1/cluster   members as gossip sees them (routed in node/overlay.go)
//	GET /api/v1/serverlets  transcode slots, running serverlets (fps, CPU, latency), the ladder
//	GET /, /api/v1/events, /api/v1/load  the dashboard (node/dashboard.go)
func (n *Node) routeAPI(mux *http.ServeMux) {
	mux.HandleFunc("GET /api/v1/node", func(w http.ResponseWriter, r *http.Request) {
		writeJSON(w, map[string]any{
			"name":            n.cfg.Name,
			"uptime_seconds":  time.Since(n.started).Seconds(),
			"webrtc_sessions": n.WebRTC.Sessions(),
			"hls_streams":     n.HLS.Streams(),
			"streams":         len(n.Hub.Streams()),
		})
	})
	mux.HandleFunc("GET /api/v1/streams", func(w http.ResponseWriter, r *http.Request) {
		writeJSON(w, map[string]any{"streams": n.Hub.Streams()})
	})
	mux.HandleFunc("GET /api/v1/serverlets", func(w http.ResponseWriter, r *http.Request) {
		writeJSON(w, struct {
			serverlet.Stats
			Ladder map[string]string `json:"ladder"`
		}{n.Serverlets.Stats(), n.Serverlets.Ladder()})
	})
	mux.HandleFunc("/api/", func(w http.ResponseWriter, r *http.Request) {
		http.Error(w, "no such API endpoint", http.StatusNotFound)
	})
	mux.Handle("GET /metrics", promhttp.HandlerFor(n.reg, promhttp.HandlerOpts{}))
	if n.cfg.PProf {
		// Go's profiler, for operators chasing CPU or memory on a live node.
		mux.HandleFunc("/debug/pprof/", pprof.Index)
		mux.HandleFunc("/debug/pprof/cmdline", pprof.Cmdline)
		mux.HandleFunc("/debug/pprof/profile", pprof.Profile)
		mux.HandleFunc("/debug/pprof/symbol", pprof.Symbol)
		mux.HandleFunc("/debug/pprof/trace", pprof.Trace)
	}
	mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, r *http.Request) { w.Write([]byte("ok\n")) })
	n.routeDashboard(mux)
}

func writeJSON(w http.ResponseWriter, v any) {
	w.Header().Set("Content-Type", "application/json")
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	enc.Encode(v)
}

// hubCollector exports the hub's streams as Prometheus metrics.
type hubCollector struct {
	hub                    *media.Hub
	readers, bytesIn, kbps *prometheus.Desc
}

func newHubCollector(h *media.Hub) *hubCollector {
	l := []string{"stream"}
	return &hubCollector{hub: h,
		readers: prometheus.NewDesc("gradient_stream_readers", "Hub readers of a live stream (one per protocol muxer or session).", l, nil),
		bytesIn: prometheus.NewDesc("gradient_stream_bytes_in_total", "Payload bytes published into a stream.", l, nil),
		kbps:    prometheus.NewDesc("gradient_stream_input_kbps", "Average input bitrate of a stream since it was published.", l, nil),
	}
}

func (c *hubCollector) Describe(ch chan<- *prometheus.Desc) {
	ch <- c.readers
	ch <- c.bytesIn
	ch <- c.kbps
}

func (c *hubCollector) Collect(ch chan<- prometheus.Metric) {
	for _, s := range c.hub.Streams() {
		ch <- prometheus.MustNewConstMetric(c.readers, prometheus.GaugeValue, float64(s.Readers), s.Path)
		ch <- prometheus.MustNewConstMetric(c.bytesIn, prometheus.CounterValue, float64(s.BytesIn), s.Path)
		ch <- prometheus.MustNewConstMetric(c.kbps, prometheus.GaugeValue, s.Kbps, s.Path)
	}
}
