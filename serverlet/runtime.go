package serverlet

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"runtime"
	"runtime/debug"
	"sort"
	"strconv"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/asticode/go-astiav"
	"github.com/bluenviron/mediacommon/v2/pkg/codecs/h264"

	"github.com/gradient-cdn/gradient/media"
)

// videoClock is the time base of video timestamps inside the runtime.
const videoClock = 90000

// EncoderConfig tunes the video encoder of every serverlet.
type EncoderConfig struct {
	// Preset is libx264's speed/quality preset. Default "veryfast".
	Preset string
	// Threads is how many threads one serverlet's encoder (and decoder)
	// use. Default 1: a node runs many serverlets, and one thread each
	// keeps their CPU accounting exact and adds no frame delay. With more,
	// the accounting (the serverlet thread's own CPU time) misses the
	// codec threads' share.
	Threads int
}

// run is one serverlet running between a source stream and its rendition:
// one goroutine, locked to its OS thread so that the thread's CPU time is
// the serverlet's.
type run struct {
	path, spec string
	pipe       *Pipeline
	enc        EncoderConfig
	hub        *media.Hub
	src        *media.Reader
	srcDesc    media.Description
	log        *slog.Logger
	idleStop   time.Duration

	ctx       context.Context
	cancel    context.CancelFunc
	published chan struct{} // closed once the rendition is in the hub
	done      chan struct{} // closed when the goroutine has ended
	err       error         // why it ended; valid after done

	pub    *media.Publisher
	outIdx []int // source track index → output track index, -1 dropped
	desc   media.Description
	video  *videoPath
	audio  *audioPath

	touched atomic.Bool // a reader is on its way (Ensure returned); not idle

	statsMu   sync.Mutex
	started   time.Time
	framesIn  uint64
	framesOut uint64
	cpu       time.Duration
	latencies []time.Duration // ring of the last latencyWindow input→output delays
	latPos    int
}

const latencyWindow = 1024

func newRun(hub *media.Hub, src *media.Reader, path, spec string, pipe *Pipeline, enc EncoderConfig, idleStop time.Duration, log *slog.Logger) *run {
	ctx, cancel := context.WithCancel(context.Background())
	return &run{
		path: path, spec: spec, pipe: pipe, enc: enc, hub: hub, src: src, srcDesc: src.Description(),
		log: log.With("rendition", path), idleStop: idleStop, ctx: ctx, cancel: cancel,
		published: make(chan struct{}), done: make(chan struct{}), started: time.Now(),
	}
}

// touch marks the run as about to get a reader.
func (r *run) touch() { r.touched.Store(true) }

// stop ends the run and waits for its goroutine.
func (r *run) stop() {
	r.cancel()
	<-r.done
}

// loop is the run's goroutine.
func (r *run) loop() {
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	cpu0 := threadCPU()
	defer func() {
		if p := recover(); p != nil {
			r.err = fmt.Errorf("serverlet %s panicked: %v", r.path, p)
			r.log.Error("serverlet panicked", "panic", p, "stack", string(debug.Stack()))
		}
		r.updateCPU(cpu0)
		r.close()
		close(r.done)
	}()
	r.err = r.process(cpu0)
	if errors.Is(r.err, media.ErrStreamEnded) {
		r.log.Info("serverlet stopped: source ended")
	} else if r.err != nil && !errors.Is(r.err, context.Canceled) {
		r.log.Error("serverlet failed; rendition stopped", "spec", r.spec, "err", r.err)
	}
}

func (r *run) process(cpu0 time.Duration) error {
	if err := r.setup(); err != nil {
		return err
	}
	if !r.pipe.TranscodesVideo() {
		if err := r.publish(); err != nil {
			return err
		}
	}
	tick := time.NewTicker(max(10*time.Millisecond, min(r.idleStop/4, 500*time.Millisecond)))
	defer tick.Stop()
	var idleSince time.Time
	for {
		select {
		case <-r.ctx.Done():
			return r.ctx.Err()
		case u, ok := <-r.src.C():
			if !ok {
				return fmt.Errorf("source %w", media.ErrStreamEnded)
			}
			if err := r.unit(u); err != nil {
				return err
			}
		case now := <-tick.C:
			r.updateCPU(cpu0)
			if r.pub == nil {
				continue
			}
			select {
			case <-r.pub.Replaced():
				r.log.Info("serverlet stopped: a relay took its rendition over")
				return nil
			default:
			}
			if r.touched.Swap(false) || r.pub.Stream().Info().Readers > 0 {
				idleSince = time.Time{}
				continue
			}
			if idleSince.IsZero() {
				idleSince = now
			} else if now.Sub(idleSince) >= r.idleStop {
				r.log.Info("serverlet stopped: no reader", "idle", r.idleStop)
				return nil
			}
		}
	}
}

// setup maps the tracks and opens what does not depend on the first frame.
func (r *run) setup() error {
	r.outIdx = make([]int, len(r.srcDesc.Tracks))
	for i, t := range r.srcDesc.Tracks {
		r.outIdx[i] = -1
		switch {
		case t.Codec == media.CodecH264:
			r.outIdx[i] = len(r.desc.Tracks)
			r.desc.Tracks = append(r.desc.Tracks, t) // replaced by the encoder's when transcoding
			if r.pipe.TranscodesVideo() {
				r.video = &videoPath{run: r, srcTrack: t}
			}
		case r.pipe.Audio == AudioDrop:
		case r.pipe.Audio == AudioOpus && t.Codec == media.CodecAAC:
			a, err := openAudioPath(r, t, r.pipe.OpusBitrate)
			if err != nil {
				return err
			}
			r.audio = a
			r.outIdx[i] = len(r.desc.Tracks)
			r.desc.Tracks = append(r.desc.Tracks, a.track)
		default:
			r.outIdx[i] = len(r.desc.Tracks)
			r.desc.Tracks = append(r.desc.Tracks, t)
		}
	}
	return nil
}

// SourcePrefix starts the hub source of every rendition a serverlet
// publishes ("serverlet scale x360 800k").
const SourcePrefix = "serverlet "

func (r *run) publish() error {
	pub, err := r.hub.Publish(r.path, r.desc, SourcePrefix+r.spec)
	if err != nil {
		return err
	}
	r.pub = pub
	close(r.published)
	return nil
}

func (r *run) unit(u *media.Unit) error {
	if u.Track < 0 || u.Track >= len(r.outIdx) || r.outIdx[u.Track] < 0 {
		return nil
	}
	out := r.outIdx[u.Track]
	t := r.srcDesc.Tracks[u.Track]
	switch {
	case t.Codec == media.CodecH264 && r.video != nil:
		return r.video.unit(u)
	case t.Codec != media.CodecH264 && r.audio != nil:
		if r.pub == nil {
			return nil
		}
		return r.audio.unit(u)
	}
	// Passed through as it is.
	if r.pub == nil {
		return nil
	}
	if t.Codec == media.CodecH264 {
		r.countFrame(true, 0)
		r.countFrame(false, 0)
	}
	if out != u.Track {
		c := *u
		c.Track = out
		u = &c
	}
	r.pub.Write(u)
	return nil
}

func (r *run) write(u *media.Unit) {
	if r.pub != nil {
		r.pub.Write(u)
	}
}

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

func (r *run) updateCPU(cpu0 time.Duration) {
	c := threadCPU() - cpu0
	r.statsMu.Lock()
	r.cpu = c
	r.statsMu.Unlock()
}

// close frees everything and ends the rendition in the hub.
func (r *run) close() {
	r.src.Close()
	if r.pub != nil {
		r.pub.Close()
	}
	if r.video != nil {
		r.video.close()
	}
	if r.audio != nil {
		r.audio.close()
	}
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
}

func (r *run) stats() RunStats {
	r.statsMu.Lock()
	defer r.statsMu.Unlock()
	el := time.Since(r.started).Seconds()
	s := RunStats{Rendition: r.path, Spec: r.spec, Started: r.started, Transcoding: r.pipe.TranscodesVideo(),
		FramesIn: r.framesIn, FramesOut: r.framesOut, CPUSeconds: r.cpu.Seconds()}
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

// ---- video: decode → filter graph → frame functions → libx264 ----

type inFrame struct {
	pts      int64 // 90 kHz
	fed      time.Time
	received time.Time
	capture  time.Time
}

type videoPath struct {
	run      *run
	srcTrack *media.Track

	dec    *astiav.CodecContext
	pkt    *astiav.Packet
	frm    *astiav.Frame
	filt   *astiav.Frame
	graph  *astiav.FilterGraph
	bsrc   *astiav.FilterContext
	bsink  *astiav.FilterContext
	sinkTB astiav.Rational
	enc    *astiav.CodecContext
	encPkt *astiav.Packet

	keys    []int64   // source keyframe PTS not matched to an output frame yet
	pending []inFrame // frames fed to the decoder, in order
}

func (v *videoPath) open() error {
	codec := astiav.FindDecoder(astiav.CodecIDH264)
	if codec == nil {
		return errors.New("no H.264 decoder in this FFmpeg")
	}
	v.dec = astiav.AllocCodecContext(codec)
	v.dec.SetThreadCount(v.run.enc.Threads)
	v.dec.SetFlags(v.dec.Flags().Add(astiav.CodecContextFlagLowDelay))
	if err := v.dec.Open(codec, nil); err != nil {
		return fmt.Errorf("open H.264 decoder: %w", err)
	}
	v.pkt, v.frm, v.filt, v.encPkt = astiav.AllocPacket(), astiav.AllocFrame(), astiav.AllocFrame(), astiav.AllocPacket()
	return nil
}

func (v *videoPath) unit(u *media.Unit) error {
	if v.dec == nil {
		if err := v.open(); err != nil {
			return err
		}
	}
	au := u.Data
	if u.Key && !hasNALU(au, h264.NALUTypeSPS) {
		au = append([][]byte{v.srcTrack.SPS, v.srcTrack.PPS}, au...)
	}
	b, err := h264.AnnexB(au).Marshal()
	if err != nil {
		return fmt.Errorf("source access unit: %w", err)
	}
	pts := media.DurationToTicks(u.PTS, videoClock)
	if u.Key {
		v.keys = append(v.keys, pts)
	}
	in := inFrame{pts: pts, fed: time.Now(), received: u.Received}
	if t, ok := media.CaptureTime(u.Data); ok {
		in.capture = t
	}
	v.pending = append(v.pending, in)
	if len(v.pending) > 256 { // a decoder that swallows frames must not grow this forever
		v.pending = v.pending[1:]
	}
	if err := v.pkt.FromData(b); err != nil {
		return err
	}
	v.pkt.SetPts(pts)
	v.pkt.SetDts(media.DurationToTicks(u.DTS, videoClock))
	if u.Key {
		v.pkt.SetFlags(v.pkt.Flags().Add(astiav.PacketFlagKey))
	}
	err = v.dec.SendPacket(v.pkt)
	v.pkt.Unref()
	if err != nil {
		return fmt.Errorf("decode H.264: %w", err)
	}
	for {
		err := v.dec.ReceiveFrame(v.frm)
		if errors.Is(err, astiav.ErrEagain) || errors.Is(err, astiav.ErrEof) {
			return nil
		}
		if err != nil {
			return fmt.Errorf("decode H.264: %w", err)
		}
		v.run.countFrame(true, 0)
		err = v.filter(v.frm)
		v.frm.Unref()
		if err != nil {
			return err
		}
	}
}

func (v *videoPath) filter(f *astiav.Frame) error {
	if v.graph == nil {
		if err := v.openGraph(f); err != nil {
			return err
		}
	}
	if err := v.bsrc.BuffersrcAddFrame(f, astiav.NewBuffersrcFlags(astiav.BuffersrcFlagKeepRef)); err != nil {
		return fmt.Errorf("filter graph input: %w", err)
	}
	for {
		err := v.bsink.BuffersinkGetFrame(v.filt, astiav.NewBuffersinkFlags())
		if errors.Is(err, astiav.ErrEagain) || errors.Is(err, astiav.ErrEof) {
			return nil
		}
		if err != nil {
			return fmt.Errorf("filter graph: %w", err)
		}
		err = v.encode(v.filt)
		v.filt.Unref()
		if err != nil {
			return err
		}
	}
}

func (v *videoPath) openGraph(f *astiav.Frame) error {
	spec := v.run.pipe.filterGraph()
	v.graph = astiav.AllocFilterGraph()
	v.graph.SetThreadCount(1)
	fps := v.run.pipe.In.FPS
	if fps <= 0 {
		fps = 30
	}
	sar := f.SampleAspectRatio()
	if sar.Num() <= 0 || sar.Den() <= 0 {
		sar = astiav.NewRational(1, 1)
	}
	var err error
	if v.bsrc, err = v.graph.NewFilterContext(astiav.FindFilterByName("buffer"), "in", astiav.FilterArgs{
		"video_size":   fmt.Sprintf("%dx%d", f.Width(), f.Height()),
		"pix_fmt":      strconv.Itoa(int(f.PixelFormat())),
		"time_base":    "1/" + strconv.Itoa(videoClock),
		"pixel_aspect": fmt.Sprintf("%d/%d", sar.Num(), sar.Den()),
		"frame_rate":   fmt.Sprintf("%d/1000", int(fps*1000+0.5)),
	}); err != nil {
		return fmt.Errorf("filter graph buffer source: %w", err)
	}
	if v.bsink, err = v.graph.NewFilterContext(astiav.FindFilterByName("buffersink"), "out", nil); err != nil {
		return fmt.Errorf("filter graph sink: %w", err)
	}
	if err := linkGraph(v.graph, v.bsrc, v.bsink, spec); err != nil {
		return fmt.Errorf("filter graph %q: %w", spec, err)
	}
	v.sinkTB = astiav.NewRational(1, videoClock)
	if in := v.bsink.Inputs(); len(in) > 0 {
		v.sinkTB = in[0].TimeBase()
	}
	v.run.log.Debug("filter graph", "graph", spec)
	return nil
}

func (v *videoPath) encode(f *astiav.Frame) error {
	pts := rescale(f.Pts(), v.sinkTB, videoClock)
	f.SetPts(pts)
	// The output's keyframes are the source's: the first frame at (or
	// within half an output frame of) a source keyframe becomes an IDR.
	tol := int64(0)
	if v.run.pipe.FPS > 0 {
		tol = int64(videoClock / v.run.pipe.FPS / 2)
	}
	key := false
	for len(v.keys) > 0 && v.keys[0] <= pts+tol {
		key = true
		v.keys = v.keys[1:]
	}
	if fs := v.run.pipe.frames; len(fs) > 0 {
		if err := makeWritable(f); err != nil {
			return err
		}
		fr := &Frame{f: f, PTS: media.TicksToDuration(pts, videoClock), Key: key}
		for _, fn := range fs {
			if err := callFrameFunc(fn, fr); err != nil {
				return err
			}
		}
	}
	if key {
		f.SetPictureType(astiav.PictureTypeI)
	} else {
		f.SetPictureType(astiav.PictureTypeNone)
	}
	if v.enc == nil {
		if err := v.openEncoder(f); err != nil {
			return err
		}
	}
	if err := v.enc.SendFrame(f); err != nil {
		return fmt.Errorf("encode H.264: %w", err)
	}
	for {
		err := v.enc.ReceivePacket(v.encPkt)
		if errors.Is(err, astiav.ErrEagain) || errors.Is(err, astiav.ErrEof) {
			return nil
		}
		if err != nil {
			return fmt.Errorf("encode H.264: %w", err)
		}
		err = v.emit(v.encPkt)
		v.encPkt.Unref()
		if err != nil {
			return err
		}
	}
}

// callFrameFunc runs an operator's function, turning a panic into an error
// so that a faulty plugin stops only its rendition.
func callFrameFunc(fn FrameFunc, f *Frame) (err error) {
	defer func() {
		if p := recover(); p != nil {
			err = fmt.Errorf("frame function panicked: %v", p)
		}
	}()
	if err := fn(f); err != nil {
		return fmt.Errorf("frame function: %w", err)
	}
	return nil
}

func (v *videoPath) openEncoder(f *astiav.Frame) error {
	codec := astiav.FindEncoderByName("libx264")
	if codec == nil {
		return errors.New("this FFmpeg has no libx264 encoder")
	}
	p := v.run.pipe
	fps := p.FPS
	if fps <= 0 {
		fps = 30
	}
	bitrate := p.Bitrate
	if bitrate <= 0 {
		est := *p
		est.Width, est.Height = f.Width(), f.Height()
		bitrate = est.estimateBitrate()
	}
	v.enc = astiav.AllocCodecContext(codec)
	v.enc.SetWidth(f.Width())
	v.enc.SetHeight(f.Height())
	v.enc.SetPixelFormat(astiav.PixelFormatYuv420P)
	v.enc.SetTimeBase(astiav.NewRational(1, videoClock))
	v.enc.SetFramerate(astiav.NewRational(int(fps*1000+0.5), 1000))
	v.enc.SetSampleAspectRatio(astiav.NewRational(1, 1))
	v.enc.SetThreadCount(v.run.enc.Threads)
	// The global header gives SPS/PPS before hub.Publish; repeat-headers
	// keeps them in band before every IDR for readers joining later.
	v.enc.SetFlags(v.enc.Flags().Add(astiav.CodecContextFlagGlobalHeader))
	b := strconv.Itoa(bitrate)
	opts := astiav.NewDictionary()
	defer opts.Free()
	for _, kv := range [][2]string{
		{"preset", v.run.enc.Preset},
		{"tune", "zerolatency"},
		{"b", b},
		{"maxrate", b},
		{"bufsize", strconv.Itoa(bitrate)},
		{"bf", "0"},
		{"g", "-1"},
		{"sc_threshold", "0"},
		{"forced-idr", "1"},
		// keyint=infinite: x264 never places a keyframe of its own; they
		// come only where the source has them (pict_type I).
		{"x264-params", "keyint=infinite:min-keyint=1:scenecut=0:open-gop=0:repeat-headers=1:aud=0:log=-1"},
	} {
		if err := opts.Set(kv[0], kv[1], 0); err != nil {
			return fmt.Errorf("libx264 option %s: %w", kv[0], err)
		}
	}
	if err := v.enc.Open(codec, opts); err != nil {
		return fmt.Errorf("open libx264 (preset %s): %w", v.run.enc.Preset, err)
	}
	sps, pps := media.ParameterSets(v.enc.ExtraData())
	if sps == nil || pps == nil {
		return errors.New("libx264 gave no SPS/PPS")
	}
	for i, t := range v.run.desc.Tracks {
		if t.Codec == media.CodecH264 {
			v.run.desc.Tracks[i] = &media.Track{Codec: media.CodecH264, SPS: sps, PPS: pps}
		}
	}
	return v.run.publish()
}

func (v *videoPath) emit(pkt *astiav.Packet) error {
	var au h264.AnnexB
	if err := au.Unmarshal(pkt.Data()); err != nil {
		return fmt.Errorf("libx264 output: %w", err)
	}
	pts := pkt.Pts()
	var in inFrame
	found := false
	for len(v.pending) > 0 && v.pending[0].pts <= pts {
		in, found = v.pending[0], true
		v.pending = v.pending[1:]
	}
	now := time.Now()
	if !found {
		in = inFrame{pts: pts, fed: now, received: now}
	}
	data := [][]byte(au)
	if !in.capture.IsZero() {
		data = append([][]byte{media.CaptureSEI(in.capture)}, data...)
	}
	t := media.TicksToDuration(pts, videoClock)
	v.run.write(&media.Unit{
		Track:    v.run.outIdx[v.run.srcDesc.VideoTrack()],
		PTS:      t,
		DTS:      t,
		Data:     data,
		Key:      pkt.Flags().Has(astiav.PacketFlagKey),
		Received: in.received,
	})
	v.run.countFrame(false, now.Sub(in.fed))
	return nil
}

func (v *videoPath) close() {
	if v.enc != nil {
		v.enc.Free()
	}
	if v.dec != nil {
		v.dec.Free()
	}
	if v.graph != nil {
		v.graph.Free()
	}
	for _, f := range []*astiav.Frame{v.frm, v.filt} {
		if f != nil {
			f.Free()
		}
	}
	for _, p := range []*astiav.Packet{v.pkt, v.encPkt} {
		if p != nil {
			p.Free()
		}
	}
}

func hasNALU(au [][]byte, typ h264.NALUType) bool {
	for _, n := range au {
		if len(n) > 0 && h264.NALUType(n[0]&0x1f) == typ {
			return true
		}
	}
	return false
}

// linkGraph parses spec between the graph's source ("in") and sink
// ("out") and configures the graph.
func linkGraph(g *astiav.FilterGraph, src, sink *astiav.FilterContext, spec string) error {
	outputs, inputs := astiav.AllocFilterInOut(), astiav.AllocFilterInOut()
	defer outputs.Free()
	defer inputs.Free()
	outputs.SetName("in")
	outputs.SetFilterContext(src)
	outputs.SetPadIdx(0)
	outputs.SetNext(nil)
	inputs.SetName("out")
	inputs.SetFilterContext(sink)
	inputs.SetPadIdx(0)
	inputs.SetNext(nil)
	if err := g.Parse(spec, inputs, outputs); err != nil {
		return err
	}
	return g.Configure()
}

// rescale converts ts in time base tb to 1/rate.
func rescale(ts int64, tb astiav.Rational, rate int64) int64 {
	if tb.Num() == 1 && int64(tb.Den()) == rate {
		return ts
	}
	return ts * int64(tb.Num()) * rate / int64(tb.Den())
}
