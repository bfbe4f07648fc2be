package bench

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/exec"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/asticode/go-astiav"

	"github.com/gradient-cdn/gradient/internal/testutil"
	"github.com/gradient-cdn/gradient/media"
	"github.com/gradient-cdn/gradient/serverlet"
)

// Shared-decode ladder benchmark from issue 14. Anchor: one
// `ffmpeg -filter_complex split=4` command making the same four rungs
// (720p, 480p, 360p, 240p) of a 1080p30 source with the same libx264
// settings, paced in real time (-re) like a live source; the figure is
// ladder frames (source frames turned into all four rungs) per CPU-second
// of the whole process. Target: the serverlet manager with shared decode
// >= 1.0 x ffmpeg; shown beside it, the same manager with
// serverlets.shared_decode off (one decoder per rung, as before).

// ladderRungs are the benchmark's rungs with the default ladder's specs and
// the sizes they give a 1920x1080 source.
var ladderRungs = []struct {
	name, spec string
	w, h       int
	kbps       int
}{
	{"720p", "scale x720 2500k", 1280, 720, 2500},
	{"480p", "scale x480 1200k", 854, 480, 1200},
	{"360p", "scale x360 800k", 640, 360, 800},
	{"240p", "scale x240 400k", 426, 240, 400},
}

const (
	ladderWindow = 8 * time.Second
	ladderRounds = 6
	// ladderWarmUp passes before each side's window: encoders opened,
	// queues settled.
	ladderWarmUp = 3 * time.Second
)

// ladderClip is a 1080p30 H.264 clip (testsrc2, libx264, 5 Mbit/s, an IDR
// every 2 s), made once and cached under the system temp folder.
func ladderClip(b *testing.B) string {
	return testutil.Clip(b, testutil.ClipOptions{Width: 1920, Height: 1080, FPS: 30, Seconds: 20, Bitrate: "5M", GOP: 60})
}

// ladderResult is one side's measurement.
type ladderResult struct {
	frames     float64 // ladder frames: source frames turned into every rung
	cpu        float64 // process CPU-s
	threadsCPU float64 // decoder + rung threads' CPU-s (serverlet side)
	wall       float64 // s
	decoders   int
	inline     int // rungs on the decoder's thread at the window's end
	cascaded   int // rungs scaling a larger rung's picture then
	dropped    uint64
}

func (r ladderResult) rate() float64 { return r.frames / r.cpu }

func (r *ladderResult) add(o ladderResult) {
	r.frames += o.frames
	r.cpu += o.cpu
	r.threadsCPU += o.threadsCPU
	r.wall += o.wall
	r.decoders = max(r.decoders, o.decoders)
	r.inline = o.inline
	r.cascaded = o.cascaded
	r.dropped += o.dropped
}

// cpuPerLadderSecond is the CPU a ladder costs per second of video.
func (r ladderResult) cpuPerLadderSecond() float64 { return r.cpu / (r.frames / 30) }

// ffmpegLadder runs the anchor command paced (-re) and returns the frames
// it made and the CPU time it took in a window of seconds after
// ladderWarmUp, as serverletLadder measures its side. With pin, ffmpeg
// runs under `taskset -c 0` (one CPU). With cascade, each rung scales
// the picture of the rung above it (720p the source's, 480p 720p's, …),
// as the serverlets do with cascade_scale; without, every rung scales the
// source's (split=4: the anchor).
func ffmpegLadder(b *testing.B, clip string, seconds int, pin, cascade bool) ladderResult {
	var fc strings.Builder
	if cascade {
		in := "[0:v]"
		for i, r := range ladderRungs {
			if i > 0 {
				fc.WriteString(";")
			}
			if i == len(ladderRungs)-1 {
				fmt.Fprintf(&fc, "%sscale=%d:%d:flags=bicubic,format=yuv420p[o%d]", in, r.w, r.h, i)
				break
			}
			fmt.Fprintf(&fc, "%sscale=%d:%d:flags=bicubic,split=2[p%d][c%d];[p%d]format=yuv420p[o%d]", in, r.w, r.h, i, i, i, i)
			in = fmt.Sprintf("[c%d]", i)
		}
	} else {
		fc.WriteString("[0:v]split=4")
		for i := range ladderRungs {
			fmt.Fprintf(&fc, "[s%d]", i)
		}
		for i, r := range ladderRungs {
			fmt.Fprintf(&fc, ";[s%d]scale=%d:%d:flags=bicubic,format=yuv420p[o%d]", i, r.w, r.h, i)
		}
	}
	args := []string{"-hide_banner", "-nostats", "-threads", "1", "-re", "-stream_loop", "-1", "-t", strconv.Itoa(seconds + int(ladderWarmUp/time.Second) + 2),
		"-i", clip, "-filter_threads", "1", "-filter_complex_threads", "1", "-filter_complex", fc.String()}
	for i, r := range ladderRungs {
		k := strconv.Itoa(r.kbps) + "k"
		args = append(args, "-map", fmt.Sprintf("[o%d]", i), "-c:v", "libx264", "-preset", "veryfast", "-tune", "zerolatency",
			"-b:v", k, "-maxrate", k, "-bufsize", k, "-bf", "0", "-threads", "1", "-force_key_frames", "source",
			"-x264-params", "keyint=infinite:scenecut=0:repeat-headers=1", "-f", "null", "-")
	}
	args = append(args, "-progress", "pipe:1", "-stats_period", "0.25")
	ff := exec.Command("ffmpeg", args...)
	if pin {
		// taskset execs ffmpeg: the same process, whose CPU time is read.
		ff = exec.Command("taskset", append([]string{"-c", "0", "ffmpeg"}, args...)...)
	}
	stdout, err := ff.StdoutPipe()
	if err != nil {
		b.Fatal(err)
	}
	errOut := &cappedBuffer{}
	ff.Stderr = errOut
	if err := ff.Start(); err != nil {
		b.Fatalf("ffmpeg: %v", err)
	}
	defer func() {
		ff.Process.Kill()
		ff.Wait()
	}()
	// -progress writes frame=N every 0.25 s: the frames output so far.
	var frames atomic.Int64
	go func() {
		sc := bufio.NewScanner(stdout)
		for sc.Scan() {
			if v, ok := strings.CutPrefix(sc.Text(), "frame="); ok {
				if n, err := strconv.ParseInt(strings.TrimSpace(v), 10, 64); err == nil {
					frames.Store(n)
				}
			}
		}
	}()
	// The same warm-up and window as the serverlet side: ffmpeg's start
	// (opening four encoders) is not counted, nor is the serverlets'.
	time.Sleep(ladderWarmUp)
	f0, c0, t0 := frames.Load(), procCPU(b, ff.Process.Pid), time.Now()
	time.Sleep(time.Duration(seconds) * time.Second)
	f1, c1, el := frames.Load(), procCPU(b, ff.Process.Pid), time.Since(t0)
	if f1 <= f0 {
		b.Fatalf("ffmpeg made no frame in the window:\n%s", errOut.String())
	}
	return ladderResult{frames: float64(f1 - f0), cpu: (c1 - c0).Seconds(), wall: el.Seconds()}
}

// procCPU is the user+system CPU time of process pid so far
// (/proc/pid/stat, in clock ticks of 10 ms).
func procCPU(b *testing.B, pid int) time.Duration {
	raw, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		b.Fatal(err)
	}
	// The fields after the command name (in parentheses, which may hold
	// spaces): utime and stime are the 12th and 13th after it.
	f := strings.Fields(string(raw[strings.LastIndexByte(string(raw), ')')+1:]))
	ut, _ := strconv.ParseInt(f[11], 10, 64)
	st, _ := strconv.ParseInt(f[12], 10, 64)
	return time.Duration(ut+st) * 10 * time.Millisecond
}

// pinProcess restricts every thread of this process (and the threads
// they start) to CPU 0 with taskset, and returns what undoes it.
func pinProcess(b *testing.B) func() {
	pid := strconv.Itoa(os.Getpid())
	if out, err := exec.Command("taskset", "-a", "-p", "-c", "0", pid).CombinedOutput(); err != nil {
		b.Fatalf("taskset: %v\n%s", err, out)
	}
	return func() {
		all := fmt.Sprintf("0-%d", runtime.NumCPU()-1)
		if out, err := exec.Command("taskset", "-a", "-p", "-c", all, pid).CombinedOutput(); err != nil {
			b.Fatalf("taskset: %v\n%s", err, out)
		}
	}
}

// serverletLadder runs the four rungs through a serverlet manager (with
// or without shared decode) on a hub where the clip is published in real
// time, and measures a window after a warm-up.
func serverletLadder(b *testing.B, clip string, shared, inline, cascade bool) ladderResult {
	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	var m *serverlet.Manager
	hub, err := media.NewHub(media.HubConfig{
		Renditions: ensureFunc(func(ctx context.Context, path string) error { return m.Ensure(ctx, path) })}, log)
	if err != nil {
		b.Fatal(err)
	}
	defer hub.Close()
	ladder := map[string]string{}
	for _, r := range ladderRungs {
		ladder[r.name] = r.spec
	}
	m, err = serverlet.NewManager(serverlet.ManagerConfig{Ladder: ladder, Slots: 8, SharedDecode: &shared, InlineRungs: &inline, CascadeScale: &cascade}, hub, log)
	if err != nil {
		b.Fatal(err)
	}
	if err := m.Start(); err != nil {
		b.Fatal(err)
	}
	defer m.Close()
	stop := testutil.PublishFile(b, hub, "live/bench", clip, false)
	defer stop()
	for _, r := range ladderRungs {
		rd, err := hub.Subscribe("live/bench@"+r.name, "bench")
		if err != nil {
			b.Fatal(err)
		}
		go drain(rd)
		defer rd.Close()
	}
	time.Sleep(ladderWarmUp) // a benchmark, not a test condition
	// Ladder frames: the rungs' output frames over the number of rungs (a
	// rung that lost frames to a full queue counts for what it made).
	sum := func(st serverlet.Stats) (frames float64, cpu float64) {
		for _, s := range st.Serverlets {
			frames += float64(s.FramesOut) / float64(len(ladderRungs))
			cpu += s.CPUSeconds
		}
		for _, d := range st.Decoders {
			cpu += d.CPUSeconds
		}
		return frames, cpu
	}
	st0, cpu0, t0 := m.Stats(), selfCPU(), time.Now()
	time.Sleep(ladderWindow)
	st1, cpu1, el := m.Stats(), selfCPU(), time.Since(t0)
	if len(st1.Serverlets) != len(ladderRungs) {
		b.Fatalf("%d serverlets run, want %d: %+v", len(st1.Serverlets), len(ladderRungs), st1)
	}
	f0, c0 := sum(st0)
	f1, c1 := sum(st1)
	res := ladderResult{frames: f1 - f0, cpu: (cpu1 - cpu0).Seconds(), threadsCPU: c1 - c0, wall: el.Seconds(), decoders: len(st1.Decoders)}
	for _, s := range st1.Serverlets {
		res.dropped += s.Dropped
		if s.Inline {
			res.inline++
		}
		if s.ScaledFrom != "" {
			res.cascaded++
		}
	}
	return res
}

func BenchmarkLadderSharedDecodeVsFFmpeg(b *testing.B) {
	header(b, "ladder of a 1080p30 source: 720p+480p+360p+240p, libx264 veryfast zerolatency, 1 thread per codec")
	clip := ladderClip(b)
	astiav.SetLogLevel(astiav.LogLevelError) // libx264's banner per rung
	fmt.Printf("  load average before: %s\n", loadAvg())
	// The machine is shared and its speed drifts over minutes: the sides
	// take turns in short windows, ladderRounds times, in an order
	// reversed every other round, and their sums are compared. Round 0
	// warms the machine up (file cache, the process's first encoders: in
	// some runs the first serverlet window ran 10-15 % slower than the
	// later ones, ffmpeg's did not) and is shown but not counted.
	var ff, fc, sh, nc, un ladderResult
	for round := 0; round <= ladderRounds; round++ {
		var f, c, s, n, u ladderResult
		sides := []func(){
			func() { f = ffmpegLadder(b, clip, int(ladderWindow/time.Second), false, false) },
			func() { c = ffmpegLadder(b, clip, int(ladderWindow/time.Second), false, true) },
			func() { s = serverletLadder(b, clip, true, true, true) },
			func() { n = serverletLadder(b, clip, true, true, false) },
			func() { u = serverletLadder(b, clip, false, false, false) },
		}
		if round%2 == 0 {
			slices.Reverse(sides)
		}
		for _, side := range sides {
			side()
		}
		fmt.Printf("  round %d: ffmpeg split=4 %.1f, ffmpeg cascade %.1f, serverlets %.1f (cascade_scale off %.1f), per-rung decoders %.1f ladder frames per CPU-second (load average %s)%s\n",
			round, f.rate(), c.rate(), s.rate(), n.rate(), u.rate(), loadAvg(), map[bool]string{true: " — warm-up, not counted"}[round == 0])
		if round == 0 {
			continue
		}
		ff.add(f)
		fc.add(c)
		sh.add(s)
		nc.add(n)
		un.add(u)
	}
	ffRate, fcRate := ff.rate(), fc.rate()
	fmt.Printf("ffmpeg -filter_complex split=4, -re (anchor; CPU of the process over the same windows): %.0f ladder frames in %.2f CPU-s = %.1f ladder frames per CPU-second\n",
		ff.frames, ff.cpu, ffRate)
	fmt.Printf("ffmpeg, each rung scaling the rung above's picture (the same work as cascade_scale): %.0f ladder frames in %.2f CPU-s = %.1f per CPU-second = %.2f x split=4\n",
		fc.frames, fc.cpu, fcRate, fcRate/ffRate)
	for _, s := range []struct {
		name   string
		r      ladderResult
		anchor float64
		of     string
	}{{"shared decode, rungs on the decoder's thread, cascade_scale (the defaults)", sh, ffRate, "ffmpeg split=4 (target >= 1.0)"},
		{"the same, against ffmpeg doing the same scaling", sh, fcRate, "ffmpeg cascade"},
		{"shared decode, rungs on the decoder's thread, cascade_scale: false", nc, ffRate, "ffmpeg split=4"},
		{"one decoder per rung (shared_decode: false)", un, ffRate, "ffmpeg split=4"}} {
		fmt.Printf("serverlets, %s: %d decoder(s), %d of 4 rungs inline and %d scaling a larger rung's picture at the end, %.0f ladder frames in %.2f CPU-s of the process = %.1f per CPU-second = %.2f x %s; "+
			"decoder+rung threads %.2f CPU-s = %.2f x; %.1f fps, %d frames dropped\n",
			s.name, s.r.decoders, s.r.inline, s.r.cascaded, s.r.frames, s.r.cpu, s.r.rate(), s.r.rate()/s.anchor, s.of,
			s.r.threadsCPU, (s.r.frames/s.r.threadsCPU)/s.anchor, s.r.frames/s.r.wall, s.r.dropped)
	}
	fmt.Printf("shared decode vs one decoder per rung: %.2f x the ladder frames per CPU-second; cascade_scale on vs off: %.2f x\n",
		sh.rate()/un.rate(), sh.rate()/nc.rate())
	// ffmpeg 5.1 runs decode, filters and the four encoders of this
	// command on one thread, as the serverlets' decoder thread does with
	// the rungs inline; pinned to one CPU, both sides' work per ladder
	// frame is compared apart from CPU migrations and the runtime's
	// threads running beside it.
	if _, err := exec.LookPath("taskset"); err == nil {
		fp := ffmpegLadder(b, clip, int(ladderWindow/time.Second), true, true)
		unpin := pinProcess(b)
		sp := serverletLadder(b, clip, true, true, true)
		unpin()
		fmt.Printf("both on one CPU (taskset), the same scaling (cascade): ffmpeg %.1f, serverlets %.1f ladder frames per CPU-second = %.2f x ffmpeg (serverlets unpinned above: %.2f x their pinned rate)\n",
			fp.rate(), sp.rate(), sp.rate()/fp.rate(), sh.rate()/sp.rate())
		b.ReportMetric(sp.rate()/fp.rate(), "x-ffmpeg-cascade-1cpu")
	}
	cores := float64(runtime.NumCPU())
	fmt.Printf("ladders in real time on %.0f cores (estimate: cores / CPU-s per ladder-second): ffmpeg split=4 %.1f, ffmpeg cascade %.1f, serverlets %.1f, cascade_scale off %.1f, per-rung decoders %.1f "+
		"(%.3f, %.3f, %.3f, %.3f, %.3f CPU-s per ladder-second)\n",
		cores, cores/ff.cpuPerLadderSecond(), cores/fc.cpuPerLadderSecond(), cores/sh.cpuPerLadderSecond(), cores/nc.cpuPerLadderSecond(), cores/un.cpuPerLadderSecond(),
		ff.cpuPerLadderSecond(), fc.cpuPerLadderSecond(), sh.cpuPerLadderSecond(), nc.cpuPerLadderSecond(), un.cpuPerLadderSecond())
	b.ReportMetric(sh.rate()/ffRate, "x-ffmpeg-shared")
	b.ReportMetric(sh.rate()/fcRate, "x-ffmpeg-cascade")
	b.ReportMetric(un.rate()/ffRate, "x-ffmpeg-unshared")
}
