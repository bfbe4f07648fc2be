package serverlet

import (
	"sort"
	"syscall"
	"time"
)

// latencyWindow is how many of the last frames' delays the stats keep.
const latencyWindow = 1024

// countFrame counts a frame into the decoder (in) or out of the encoder,
// with the delay it took through the serverlet.
func (r *run) countFrame(in bool, latency time.Duration) {
	r.statsMu.Lock()
	defer r.statsMu.Unlock()
	if in {
		r.framesIn++
		return
	}
	r.framesOut++
	if latency > 0 {
		if len(r.latencies) < latencyWindow {
			r.latencies = append(r.latencies, latency)
		} else {
			r.latencies[r.latPos] = latency
			r.latPos = (r.latPos + 1) % latencyWindow
		}
	}
}

// addInlineCPU counts CPU time the run used on the decoder's thread.
func (r *run) addInlineCPU(d time.Duration) {
	r.statsMu.Lock()
	r.inlineCPU += d
	r.statsMu.Unlock()
}

// setScaledFrom records which larger rung's picture the run scales ("":
// the source's), logging a change.
func (r *run) setScaledFrom(rend string) {
	r.statsMu.Lock()
	changed := r.scaledFrom != rend
	r.scaledFrom = rend
	r.statsMu.Unlock()
	if changed {
		from := "the source"
		if rend != "" {
			from = "rung " + rend
		}
		r.log.Debug("scales the picture of " + from)
	}
}

// updateCPU records the run thread's CPU time since cpu0.
func (r *run) updateCPU(cpu0 time.Duration) {
	c := threadCPU() - cpu0
	r.statsMu.Lock()
	r.cpu = c
	r.statsMu.Unlock()
}

// RunStats describes one running serverlet.
type RunStats struct {
	// Rendition is the path it publishes, "live/cam1@360p".
	Rendition string `json:"rendition"`
	// Spec is the serverlet chain, "scale x360 800k".
	Spec    string    `json:"spec"`
	Started time.Time `json:"started"`
	// Transcoding is false when the video passes through (audio-only serverlets).
	Transcoding bool   `json:"transcoding"`
	FramesIn    uint64 `json:"frames_in"`
	FramesOut   uint64 `json:"frames_out"`
	// FPS is output frames per second of wall-clock time since start;
	// Speed is FPS over the frame rate the output should have (1: keeping
	// up with real time).
	FPS   float64 `json:"fps"`
	Speed float64 `json:"speed"`
	// CPUSeconds is the CPU time the serverlet's thread used.
	CPUSeconds float64 `json:"cpu_seconds"`
	// CPULoad is CPU time over wall-clock time: 1 is one core busy.
	CPULoad float64 `json:"cpu_load"`
	// FramesPerCPUSecond is how many frames one core could process per
	// second at this cost (throughput headroom).
	FramesPerCPUSecond float64 `json:"frames_per_cpu_second"`
	// LatencyP50Ms and LatencyP99Ms are the added delay from a frame
	// entering the decoder to its packet leaving the encoder, over the last
	// frames.
	LatencyP50Ms float64 `json:"latency_p50_ms"`
	LatencyP99Ms float64 `json:"latency_p99_ms"`
	Readers      int     `json:"readers"`
	// SharedDecode tells that the serverlet takes its pictures from its
	// source's shared decoder (Stats.Decoders); Dropped counts the frames
	// and units it lost there by falling more than a second behind.
	SharedDecode bool   `json:"shared_decode"`
	Dropped      uint64 `json:"dropped"`
	// Inline tells that the shared decoder's thread runs the serverlet
	// (serverlets.inline_rungs); its CPU time there is in CPUSeconds.
	Inline bool `json:"inline"`
	// ScaledFrom names the larger rung whose scaled picture this one
	// scales further (serverlets.cascade_scale), "720p"; empty: it
	// scales the source's.
	ScaledFrom string `json:"scaled_from,omitempty"`
}

func (r *run) stats() RunStats {
	r.statsMu.Lock()
	defer r.statsMu.Unlock()
	el := time.Since(r.started).Seconds()
	s := RunStats{Rendition: r.path, Spec: r.spec, Started: r.started, Transcoding: r.pipe.TranscodesVideo(),
		FramesIn: r.framesIn, FramesOut: r.framesOut, CPUSeconds: (r.cpu + r.inlineCPU).Seconds()}
	if el > 0 {
		s.FPS = float64(r.framesOut) / el
		s.CPULoad = s.CPUSeconds / el
		if r.pipe.FPS > 0 {
			s.Speed = s.FPS / r.pipe.FPS
		}
	}
	if s.CPUSeconds > 0 {
		s.FramesPerCPUSecond = float64(r.framesOut) / s.CPUSeconds
	}
	if r.dec != nil {
		s.SharedDecode = true
		s.Dropped = r.dec.droppedFor(r)
		s.Inline = r.dec.inlineFor(r)
		if s.Inline {
			s.ScaledFrom = r.scaledFrom
		}
	}
	if n := len(r.latencies); n > 0 {
		l := append([]time.Duration(nil), r.latencies...)
		sort.Slice(l, func(i, j int) bool { return l[i] < l[j] })
		s.LatencyP50Ms = float64(l[n/2]) / 1e6
		s.LatencyP99Ms = float64(l[min(n-1, n*99/100)]) / 1e6
	}
	return s
}

// threadCPU is the calling OS thread's user+system CPU time.
func threadCPU() time.Duration {
	const rusageThread = 1 // RUSAGE_THREAD, Linux
	var ru syscall.Rusage
	if err := syscall.Getrusage(rusageThread, &ru); err != nil {
		return 0
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}
