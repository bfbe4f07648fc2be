package bench

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"os/exec"
	"regexp"
	"runtime"
	"strconv"
	"syscall"
	"testing"
	"time"

	"github.com/bluenviron/mediacommon/v2/pkg/codecs/h264"

	"github.com/gradient-cdn/gradient/internal/testutil"
	"github.com/gradient-cdn/gradient/media"
	"github.com/gradient-cdn/gradient/serverlet"
)

// Serverlet benchmarks from issue 4. Anchors:
//   - throughput: the ffmpeg command doing the same 1280x720 → 640x360
//     scale with the same libx264 settings on the same input, run side by
//     side; target: the serverlet at >= 0.95 of ffmpeg's frames per CPU-second;
//   - added latency of a running scale serverlet (decoder in → encoder
//     out): target p99 < 2 frame intervals at 30 fps (66.7 ms);
//   - how many 720p → 360p serverlets run in real time on this machine.

// ensureFunc is a media.RenditionProvider made of a function.
type ensureFunc func(ctx context.Context, path string) error

func (f ensureFunc) Ensure(ctx context.Context, path string) error { return f(ctx, path) }

// serverletHub is a hub whose renditions a manager makes, with the 720p
// benchmark clip published at live/bench in real time.
func serverletHub(b *testing.B, cfg serverlet.ManagerConfig) (*media.Hub, *serverlet.Manager) {
	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	// The hub is built first, with a provider that asks the manager.
	var m *serverlet.Manager
	hub := testutil.NewHub(b, media.HubConfig{
		Renditions: ensureFunc(func(ctx context.Context, path string) error { return m.Ensure(ctx, path) })}, log)
	m, err := serverlet.NewManager(cfg, hub, log)
	if err != nil {
		b.Fatal(err)
	}
	if err := m.Start(); err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() {
		m.Close()
		hub.Close()
	})
	stop := testutil.PublishFile(b, hub, "live/bench", benchClip(b), false)
	b.Cleanup(stop)
	return hub, m
}

func selfCPU() time.Duration {
	var ru syscall.Rusage
	syscall.Getrusage(syscall.RUSAGE_SELF, &ru)
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// drain reads r until it ends, so that the rendition has a reader.
func drain(r *media.Reader) {
	for {
		if _, err := r.Read(); err != nil {
			return
		}
	}
}

func BenchmarkServerletScaleThroughputVsFFmpeg(b *testing.B) {
	header(b, "serverlet throughput: 1280x720 → 640x360, libx264 veryfast zerolatency 800k, 1 thread each")
	const seconds = 12
	hub, m := serverletHub(b, serverlet.ManagerConfig{Ladder: map[string]string{"s": "scale x360 800k"}})

	r, err := hub.Subscribe("live/bench@s", "bench")
	if err != nil {
		b.Fatal(err)
	}
	go drain(r)
	defer r.Close()
	time.Sleep(2 * time.Second) // warm-up: a benchmark, not a test condition
	st0, cpu0, t0 := m.Stats().Serverlets[0], selfCPU(), time.Now()
	// Side by side: the ffmpeg command paced in real time (-re) like the
	// serverlet, over the same seconds.
	ffFrames, ffCPU := ffmpegScale(b, true, seconds)
	time.Sleep(time.Until(t0.Add(seconds * time.Second)))
	st1, cpu1, el := m.Stats().Serverlets[0], selfCPU(), time.Since(t0)
	ffRate := float64(ffFrames) / ffCPU

	slFrames := float64(st1.FramesOut - st0.FramesOut)
	threadRate := slFrames / (st1.CPUSeconds - st0.CPUSeconds)
	procRate := slFrames / (cpu1 - cpu0).Seconds()
	fmt.Printf("ffmpeg command, -re (anchor): %d frames in %.2f CPU-s = %.0f frames per CPU-second\n", ffFrames, ffCPU, ffRate)
	fmt.Printf("serverlet (its thread):       %.0f frames in %.2f CPU-s = %.0f frames per CPU-second = %.2f x ffmpeg (target >= 0.95)\n",
		slFrames, st1.CPUSeconds-st0.CPUSeconds, threadRate, threadRate/ffRate)
	fmt.Printf("serverlet (whole process, incl. demux, hub, GC): %.2f CPU-s = %.0f frames per CPU-second = %.2f x ffmpeg\n",
		(cpu1 - cpu0).Seconds(), procRate, procRate/ffRate)
	fmt.Printf("serverlet pace: %.1f fps over %.1f s\n", slFrames/el.Seconds(), el.Seconds())
	r.Close()
	m.Stop("live/bench@s")

	// Flat out, one after the other: ffmpeg as fast as it goes, and the
	// serverlet fed as fast as it takes the frames.
	fastFrames, fastCPU := ffmpegScale(b, false, 0)
	ffFast := float64(fastFrames) / fastCPU
	slFast, slFastFrames, slFastCPU := serverletFlatOut(b, hub, m)
	fmt.Printf("flat out: ffmpeg command %d frames in %.2f CPU-s = %.0f frames per CPU-second (anchor)\n", fastFrames, fastCPU, ffFast)
	fmt.Printf("flat out: serverlet %d frames in %.2f CPU-s = %.0f frames per CPU-second = %.2f x ffmpeg (target >= 0.95)\n",
		slFastFrames, slFastCPU, slFast, slFast/ffFast)
}

// serverletFlatOut publishes the benchmark clip's access units into a
// stream as fast as the scale serverlet takes them (never more than 32
// ahead, so the hub never drops any) and returns the serverlet's frames per
// CPU-second of its thread.
func serverletFlatOut(b *testing.B, hub *media.Hub, m *serverlet.Manager) (rate float64, frames uint64, cpu float64) {
	aus, sps, pps := annexBClip(b)
	pub, err := hub.Publish("live/fast", media.Description{Tracks: []*media.Track{{Codec: media.CodecH264, SPS: sps, PPS: pps}}}, "bench")
	if err != nil {
		b.Fatal(err)
	}
	defer pub.Close()
	i := 0
	write := func() {
		au := aus[i%len(aus)]
		pts := time.Duration(i) * time.Second / 30
		pub.Write(&media.Unit{PTS: pts, DTS: pts, Data: au.nalus, Key: au.key, Received: time.Now()})
		i++
	}
	for i < 30 { // the first GOP, for the serverlet to start from
		write()
	}
	r, err := hub.Subscribe("live/fast@s", "bench")
	if err != nil {
		b.Fatal(err)
	}
	go drain(r)
	defer r.Close()
	stat := func() serverlet.RunStats {
		for _, s := range m.Stats().Serverlets {
			if s.Rendition == "live/fast@s" {
				return s
			}
		}
		b.Fatal("the flat-out serverlet stopped")
		return serverlet.RunStats{}
	}
	for deadline := time.Now().Add(10 * time.Second); stat().FramesIn < 25; {
		if time.Now().After(deadline) {
			b.Fatalf("flat-out serverlet decoded %d of the first 30 frames", stat().FramesIn)
		}
		time.Sleep(time.Millisecond)
	}
	st0 := stat()
	total := 2 * len(aus)
	for i < total {
		if st := stat(); uint64(i)-st.FramesIn < 32 {
			write()
		} else {
			time.Sleep(200 * time.Microsecond)
		}
	}
	deadline := time.Now().Add(30 * time.Second)
	for st := stat(); st.FramesOut < uint64(total)-2; st = stat() {
		if time.Now().After(deadline) {
			b.Fatalf("flat-out serverlet stuck at %d of %d frames in, %d out", st.FramesIn, total, st.FramesOut)
		}
		time.Sleep(time.Millisecond)
	}
	st1 := stat()
	frames = st1.FramesOut - st0.FramesOut
	cpu = st1.CPUSeconds - st0.CPUSeconds
	return float64(frames) / cpu, frames, cpu
}

type accessUnit struct {
	nalus [][]byte
	key   bool
}

// annexBClip extracts the benchmark clip's H.264 access units (one slice
// and its SPS/PPS.
func annexBClip(b *testing.B) (aus []accessUnit, sps, pps []byte) {
	raw, err := exec.Command("ffmpeg", "-hide_banner", "-loglevel", "error", "-i", benchClip(b), "-map", "0:v", "-c", "copy",
		"-bsf:v", "h264_mp4toannexb", "-f", "h264", "-").Output()
	if err != nil {
		b.Fatalf("extract H.264: %v", err)
	}
	var cur [][]byte
	hasVCL, key := false, false
	flush := func() {
		if hasVCL {
			aus = append(aus, accessUnit{nalus: cur, key: key})
		}
		cur, hasVCL, key = nil, false, false
	}
	for _, n := range splitAnnexB(raw) {
		if len(n) < 2 {
			continue
		}
		t := h264.NALUType(n[0] & 0x1f)
		switch t {
		case h264.NALUTypeSPS:
			sps = n
		case h264.NALUTypePPS:
			pps = n
		}
		vcl := t == h264.NALUTypeIDR || t == h264.NALUTypeNonIDR
		// A new picture: a parameter set, SEI or delimiter after slices, or a
		// slice whose first_mb_in_slice is 0 (its ue(v) is the single bit 1).
		if hasVCL && (!vcl || n[1]&0x80 != 0) {
			flush()
		}
		cur = append(cur, n)
		if vcl {
			hasVCL = true
			key = key || t == h264.NALUTypeIDR
		}
	}
	flush()
	if len(aus) < 100 || sps == nil || pps == nil {
		b.Fatalf("clip gave %d access units", len(aus))
	}
	return aus, sps, pps
}

// ffmpegScale runs the ffmpeg command doing what the serverlet does (decode
// → bicubic scale → libx264 with the same settings, IDRs where the source
// has them, one thread per stage)
// on the benchmark clip, paced (-re, for seconds) or flat out (the clip
// twice), and returns the frames it encoded and its CPU time.
func ffmpegScale(b *testing.B, paced bool, seconds int) (int, float64) {
	args := []string{"-hide_banner", "-nostats", "-threads", "1"}
	if paced {
		args = append(args, "-re", "-t", strconv.Itoa(seconds))
	} else {
		args = append(args, "-stream_loop", "1")
	}
	args = append(args, "-i", benchClip(b), "-filter_threads", "1", "-vf", "scale=640:360:flags=bicubic",
		"-c:v", "libx264", "-preset", "veryfast", "-tune", "zerolatency", "-b:v", "800k", "-maxrate", "800k",
		"-bufsize", "800k", "-bf", "0", "-threads", "1", "-force_key_frames", "source",
		"-x264-params", "keyint=infinite:scenecut=0:repeat-headers=1",
		"-f", "null", "-")
	ff := exec.Command("ffmpeg", args...)
	out := &cappedBuffer{}
	ff.Stdout, ff.Stderr = out, out
	if err := ff.Run(); err != nil {
		b.Fatalf("ffmpeg: %v\n%s", err, out.String())
	}
	cpu := (ff.ProcessState.UserTime() + ff.ProcessState.SystemTime()).Seconds()
	frames := regexp.MustCompile(`frame=\s*(\d+)`).FindAllStringSubmatch(out.String(), -1)
	if len(frames) == 0 {
		b.Fatalf("no frame count in ffmpeg's output:\n%s", out.String())
	}
	n, _ := strconv.Atoi(frames[len(frames)-1][1])
	return n, cpu
}

func BenchmarkServerletScaleLatency(b *testing.B) {
	header(b, "serverlet added latency: 1280x720 → 640x360 scale, decoder in → encoder out")
	hub, m := serverletHub(b, serverlet.ManagerConfig{Ladder: map[string]string{"s": "scale x360 800k"}})
	r, err := hub.Subscribe("live/bench@s", "bench")
	if err != nil {
		b.Fatal(err)
	}
	go drain(r)
	defer r.Close()
	time.Sleep(12 * time.Second) // about 350 frames in the latency window
	st := m.Stats().Serverlets[0]
	fmt.Printf("p50 %.1f ms, p99 %.1f ms over the last %d frames (target p99 < 66.7 ms = 2 frame intervals at 30 fps)\n",
		st.LatencyP50Ms, st.LatencyP99Ms, min(st.FramesOut, 1024))
}

func BenchmarkServerletsInRealTime(b *testing.B) {
	header(b, "720p → 360p serverlets running in real time at once")
	ladder := map[string]string{}
	for i := 1; i <= 16; i++ {
		ladder[fmt.Sprintf("s%d", i)] = "scale x360 800k"
	}
	hub, m := serverletHub(b, serverlet.ManagerConfig{Ladder: ladder, Slots: 16})
	held := 0
	for k := 1; k <= 16; k++ {
		r, err := hub.Subscribe(fmt.Sprintf("live/bench@s%d", k), "bench")
		if err != nil {
			b.Fatal(err)
		}
		go drain(r)
		defer r.Close()
		time.Sleep(2 * time.Second) // warm-up
		before := m.Stats().Serverlets
		time.Sleep(5 * time.Second)
		after := m.Stats().Serverlets
		worst, load := 1e9, 0.0
		for i := range after {
			fps := float64(after[i].FramesOut-before[i].FramesOut) / 5
			worst = min(worst, fps)
			load += (after[i].CPUSeconds - before[i].CPUSeconds) / 5
		}
		fmt.Printf("  %2d serverlets: slowest %.1f fps (source 30), CPU load %.2f cores\n", k, worst, load)
		if worst < 28.5 {
			break
		}
		held = k
	}
	fmt.Printf("%d 720p → 360p serverlets ran in real time (>= 95%% of 30 fps) on %d CPUs\n", held, runtime.NumCPU())
}

// cappedBuffer keeps the last 64 KiB written.
type cappedBuffer struct{ b []byte }

func (c *cappedBuffer) Write(p []byte) (int, error) {
	c.b = append(c.b, p...)
	if len(c.b) > 64<<10 {
		c.b = c.b[len(c.b)-64<<10:]
	}
	return len(p), nil
}

func (c *cappedBuffer) String() string { return string(c.b) }

// splitAnnexB splits an Annex-B byte stream at its start codes (h264.AnnexB
// caps an access unit's NAL count, and this is a whole file).
func splitAnnexB(b []byte) [][]byte {
	var out [][]byte
	start := -1
	for i := 0; i+3 <= len(b); {
		if b[i] == 0 && b[i+1] == 0 && b[i+2] == 1 {
			if start >= 0 {
				end := i
				for end > start && b[end-1] == 0 { // a 4-byte start code's leading zero
					end--
				}
				out = append(out, b[start:end])
			}
			i += 3
			start = i
			continue
		}
		i++
	}
	if start >= 0 && start < len(b) {
		out = append(out, b[start:])
	}
	return out
}
