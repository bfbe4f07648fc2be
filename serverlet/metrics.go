package serverlet

import "github.com/prometheus/client_golang/prometheus"

// collector exports the manager's Stats as Prometheus metrics.
type collector struct {
	m                                        *Manager
	slots, used, load, failed, refused       *prometheus.Desc
	fps, cpu, framesOut, latP50, latP99, rdr *prometheus.Desc
	decoders, decFrames                      *prometheus.Desc
}

func newCollector(m *Manager) *collector {
	l := []string{"rendition"}
	return &collector{m: m,
		slots:     prometheus.NewDesc("gradient_serverlet_slots", "Transcode capacity: serverlets the node runs at most.", nil, nil),
		used:      prometheus.NewDesc("gradient_serverlet_slots_used", "Serverlets running.", nil, nil),
		load:      prometheus.NewDesc("gradient_serverlet_cpu_load", "CPU cores the running serverlets use (CPU time over wall time, summed).", nil, nil),
		failed:    prometheus.NewDesc("gradient_serverlet_failures_total", "Serverlets stopped by an error (decoder, plugin panic).", nil, nil),
		refused:   prometheus.NewDesc("gradient_serverlet_refused_total", "Renditions refused for lack of transcode capacity.", nil, nil),
		fps:       prometheus.NewDesc("gradient_serverlet_fps", "Output frames per second of a running serverlet.", l, nil),
		cpu:       prometheus.NewDesc("gradient_serverlet_cpu_seconds_total", "CPU time a running serverlet used.", l, nil),
		framesOut: prometheus.NewDesc("gradient_serverlet_frames_out_total", "Frames a running serverlet produced.", l, nil),
		latP50:    prometheus.NewDesc("gradient_serverlet_latency_p50_seconds", "Median delay a serverlet adds (decoder in to encoder out).", l, nil),
		latP99:    prometheus.NewDesc("gradient_serverlet_latency_p99_seconds", "99th percentile of the delay a serverlet adds.", l, nil),
		rdr:       prometheus.NewDesc("gradient_serverlet_readers", "Readers of a serverlet's rendition.", l, nil),
		decoders:  prometheus.NewDesc("gradient_serverlet_shared_decoders", "Shared decoders running (one per source with video rungs).", nil, nil),
		decFrames: prometheus.NewDesc("gradient_serverlet_shared_decoder_frames_total", "Pictures a source's shared decoder decoded.", []string{"source"}, nil),
	}
}

func (c *collector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{c.slots, c.used, c.load, c.failed, c.refused, c.fps, c.cpu, c.framesOut, c.latP50, c.latP99, c.rdr, c.decoders, c.decFrames} {
		ch <- d
	}
}

func (c *collector) Collect(ch chan<- prometheus.Metric) {
	st := c.m.Stats()
	ch <- prometheus.MustNewConstMetric(c.slots, prometheus.GaugeValue, float64(st.Slots))
	ch <- prometheus.MustNewConstMetric(c.used, prometheus.GaugeValue, float64(st.Used))
	ch <- prometheus.MustNewConstMetric(c.load, prometheus.GaugeValue, st.CPULoad)
	ch <- prometheus.MustNewConstMetric(c.failed, prometheus.CounterValue, float64(st.Failed))
	ch <- prometheus.MustNewConstMetric(c.refused, prometheus.CounterValue, float64(st.Refused))
	ch <- prometheus.MustNewConstMetric(c.decoders, prometheus.GaugeValue, float64(len(st.Decoders)))
	for _, d := range st.Decoders {
		ch <- prometheus.MustNewConstMetric(c.decFrames, prometheus.CounterValue, float64(d.Frames), d.Source)
	}
	for _, s := range st.Serverlets {
		ch <- prometheus.MustNewConstMetric(c.fps, prometheus.GaugeValue, s.FPS, s.Rendition)
		ch <- prometheus.MustNewConstMetric(c.cpu, prometheus.CounterValue, s.CPUSeconds, s.Rendition)
		ch <- prometheus.MustNewConstMetric(c.framesOut, prometheus.CounterValue, float64(s.FramesOut), s.Rendition)
		ch <- prometheus.MustNewConstMetric(c.latP50, prometheus.GaugeValue, s.LatencyP50Ms/1000, s.Rendition)
		ch <- prometheus.MustNewConstMetric(c.latP99, prometheus.GaugeValue, s.LatencyP99Ms/1000, s.Rendition)
		ch <- prometheus.MustNewConstMetric(c.rdr, prometheus.GaugeValue, float64(s.Readers), s.Rendition)
	}
}
