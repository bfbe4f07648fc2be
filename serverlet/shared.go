package serverlet

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"runtime"
	"runtime/debug"
	"sort"
	"sync"
	"time"

	"github.com/asticode/go-astiav"
	"github.com/bluenviron/mediacommon/v2/pkg/codecs/h264"

	"github.com/gradient-cdn/gradient/media"
)

// Shared decode: every rung of one source that transcodes video ("live/cam1@720p",
// "…@360p", …) takes its pictures from one decoder, the way one
// `ffmpeg -filter_complex split=N` command does. The decoder runs on its
// own goroutine (locked to its thread, whose CPU time is the decoder's);
// each decoded frame goes by reference (av_frame_ref, no copy) to every
// rung, which runs its own filter graph, frame functions and libx264, so
// that a rung failing or panicking ends that rung only. A rung starting
// later attaches to the running decoder and begins at the next decoded
// frame (its encoder's first frame is an IDR); one stopping detaches; the
// decoder ends with its last rung, or ends every rung when its source ends
// or does not decode. The source's other tracks (audio) go to the rungs as
// the hub gave them.
//
// Where a rung runs (serverlets.inline_rungs): by default the decoder's
// thread runs every rung's filters and encoder itself, one rung after the
// other after each decoded frame, as one ffmpeg command runs its whole
// graph on one thread: no queue, no thread wake-up per rung and frame, no
// rung thread migrating between CPUs with its encoder's working set (about
// 5 % less CPU per ladder frame than a thread per rung on this project's
// benchmark). A rung's CPU time on the decoder's thread is measured around
// each call and counted as the rung's. When the decoder's thread is busy
// more than serverlets.inline_busy_max (0.8) of the time at two checks in
// a row, 0.5 s apart (it is near falling behind real time), the rung that
// used most CPU there moves to a thread of its own, and stays there; the
// next move needs two more such checks. A ladder that needs more than one
// core gets it. A rung on its own thread is fed
// through a queue of feedQueue items; with inline_rungs false every rung
// starts there.
//
// Cascade (serverlets.cascade_scale): on the decoder's thread the rungs run
// larger picture first, and those whose pipeline only scales lend the
// picture they made of the frame (a reference, before their encoder) to
// the ones after: a rung whose pipeline begins with a scale takes the
// smallest such picture at least its size instead of the source's, as a
// chain of scale filters in one ffmpeg command would (720p → 480p → 360p
// → 240p instead of 1080p → each). The pictures differ from the source's
// scaled directly by rounding only, and scaling costs in proportion to the
// input's size. A lending rung that stops, fails or moves off the thread
// just lends nothing: the others scale the source again from the next
// frame, their filter graph rebuilt for the new input size (transcoder.
// filter), their encoder untouched.

// feedQueue is how many items a rung may have waiting: one second at 30
// fps. A rung further behind loses the newest frames (see decoder.fanout),
// never slowing the decoder or the other rungs down.
const feedQueue = 32

// feedItem is what a shared decoder hands a rung: a decoded picture, which
// the rung owns (it frees it), or a unit of another track.
type feedItem struct {
	frame *astiav.Frame
	info  inFrame
	key   bool // at a source keyframe
	unit  *media.Unit
	// pics, for a rung on the decoder's thread with cascade_scale, holds
	// the pictures larger rungs made of the same frame by scaling alone.
	pics *framePics
}

// free releases the item's picture reference.
func (it *feedItem) free() {
	if it.frame != nil {
		it.frame.Free()
		it.frame = nil
	}
}

// rungFeed is a rung's attachment to a decoder.
type rungFeed struct {
	ch       chan feedItem
	keyOwed  bool   // a keyframe was dropped: mark the next frame delivered
	dropped  uint64 // items lost to a full queue
	attached time.Time
	// inline: the decoder's thread runs the rung (set once the rung's own
	// goroutine has set it up and emptied its queue); moved: it was moved
	// off that thread and stays on its own.
	inline, moved bool
	// winCPU is the CPU time the rung used on the decoder's thread since
	// the last balance check (the decoder's goroutine only).
	winCPU time.Duration
}

// decoder is the shared decode of one source stream.
type decoder struct {
	stream  string
	src     *media.Reader
	srcDesc media.Description
	vtrack  int
	track   *media.Track
	threads int
	log     *slog.Logger

	ctx    context.Context
	cancel context.CancelFunc
	done   chan struct{}
	err    error // why it ended; valid after done

	mu      sync.Mutex
	rungs   map[*run]*rungFeed
	ending  bool    // no more rungs attach
	inline  bool    // rungs may run on the decoder's thread (inline_rungs)
	busyMax float64 // inline_busy_max
	cascade bool    // cascade_scale
	hook    func(rendition string)

	// The decoder's goroutine only: CPU time its thread spent in inline
	// rungs, and the last balance check's thread CPU and time.
	inlineCPU time.Duration
	lastCPU   time.Duration
	lastCheck time.Time
	hotChecks int

	keys    []int64   // source keyframe PTS not matched to a decoded frame yet
	pending []inFrame // packets fed, in order

	statsMu sync.Mutex
	started time.Time
	frames  uint64
	cpu     time.Duration
}

// newDecoder subscribes to the source; start runs it.
func newDecoder(hub *media.Hub, stream string, cfg ManagerConfig, log *slog.Logger) (*decoder, error) {
	src, err := hub.Subscribe(stream, "serverlet decoder "+stream)
	if err != nil {
		return nil, err
	}
	desc := src.Description()
	v := desc.VideoTrack()
	if v < 0 || desc.Tracks[v].Codec != media.CodecH264 {
		src.Close()
		return nil, fmt.Errorf("source %s: no H.264 video track", stream)
	}
	ctx, cancel := context.WithCancel(context.Background())
	return &decoder{
		stream: stream, src: src, srcDesc: desc, vtrack: v, track: desc.Tracks[v], threads: cfg.Encoder.Threads,
		log: log.With("decoder", stream), ctx: ctx, cancel: cancel, done: make(chan struct{}),
		rungs: map[*run]*rungFeed{}, started: time.Now(),
		inline: *cfg.InlineRungs, busyMax: cfg.InlineBusyMax, hook: cfg.InlineItemHook, cascade: *cfg.CascadeScale,
	}, nil
}

// attach adds r to the rungs fed by d and gives it its queue; false when
// d is ending (the caller starts a new decoder).
func (d *decoder) attach(r *run) bool {
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.ending {
		return false
	}
	f := &rungFeed{ch: make(chan feedItem, feedQueue), attached: time.Now()}
	d.rungs[r] = f
	r.dec, r.feed = d, f.ch
	return true
}

// detach removes r; the decoder ends with its last rung. r then frees
// what is left in its queue.
func (d *decoder) detach(r *run) {
	d.mu.Lock()
	if _, ok := d.rungs[r]; ok {
		delete(d.rungs, r)
		if len(d.rungs) == 0 {
			d.ending = true
			d.cancel()
		}
	}
	d.mu.Unlock()
	for {
		select {
		case it, ok := <-r.feed:
			if !ok {
				return
			}
			it.free()
		default:
			return
		}
	}
}

// goInline asks the decoder to run r on its own thread from the next
// frame on; r's goroutine calls it between items. It does so when inline
// rungs are on, r was not moved off that thread, and r's queue is empty
// (so r's items stay in order). done false: ask again after the next item.
func (d *decoder) goInline(r *run) (done bool) {
	d.mu.Lock()
	defer d.mu.Unlock()
	f := d.rungs[r]
	if f == nil || !d.inline || f.moved {
		return true
	}
	if len(f.ch) > 0 {
		return false
	}
	f.inline = true
	return true
}

// inlineFor tells whether r runs on the decoder's thread.
func (d *decoder) inlineFor(r *run) bool {
	d.mu.Lock()
	defer d.mu.Unlock()
	f := d.rungs[r]
	return f != nil && f.inline
}

// fail ends r after it failed on the decoder's thread: its queue is
// closed with err for its goroutine to return.
func (d *decoder) fail(r *run, err error) {
	d.mu.Lock()
	defer d.mu.Unlock()
	f, ok := d.rungs[r]
	if !ok {
		return
	}
	delete(d.rungs, r)
	r.inlineErr = err // before the close: r's goroutine reads it after
	close(f.ch)
	if len(d.rungs) == 0 {
		d.ending = true
		d.cancel()
	}
}

// ended is the error a rung ends with when the decoder closed its queue.
func (d *decoder) ended() error {
	<-d.done
	if d.err == nil || errors.Is(d.err, context.Canceled) {
		return fmt.Errorf("shared decoder of %s stopped: %w", d.stream, media.ErrStreamEnded)
	}
	return d.err
}

// loop is the decoder's goroutine; onEnd runs once it no longer feeds any
// rung.
func (d *decoder) loop(onEnd func()) {
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	cpu0 := threadCPU()
	defer func() {
		if p := recover(); p != nil {
			d.err = fmt.Errorf("shared decoder of %s panicked: %v", d.stream, p)
			d.log.Error("shared decoder panicked", "panic", p, "stack", string(debug.Stack()))
		}
		d.updateCPU(cpu0)
		d.src.Close()
		onEnd()
		d.mu.Lock()
		d.ending = true
		close(d.done) // before the queues: a rung seeing its queue closed reads d.err
		for r, f := range d.rungs {
			close(f.ch)
			delete(d.rungs, r)
		}
		d.mu.Unlock()
	}()
	d.err = d.process(cpu0)
	switch {
	case d.err == nil, errors.Is(d.err, context.Canceled):
		d.log.Debug("shared decoder stopped: no rung left")
	case errors.Is(d.err, media.ErrStreamEnded):
		d.log.Info("shared decoder stopped: source ended")
	default:
		d.log.Error("shared decoder failed; its rungs stop", "err", d.err)
	}
}

func (d *decoder) process(cpu0 time.Duration) error {
	codec := astiav.FindDecoder(astiav.CodecIDH264)
	if codec == nil {
		return errors.New("no H.264 decoder in this FFmpeg")
	}
	dec := astiav.AllocCodecContext(codec)
	defer dec.Free()
	if d.threads > 0 {
		dec.SetThreadCount(d.threads)
	}
	dec.SetFlags(dec.Flags().Add(astiav.CodecContextFlagLowDelay))
	if err := dec.Open(codec, nil); err != nil {
		return fmt.Errorf("open H.264 decoder: %w", err)
	}
	pkt, frm := astiav.AllocPacket(), astiav.AllocFrame()
	defer pkt.Free()
	defer frm.Free()
	tick := time.NewTicker(500 * time.Millisecond)
	defer tick.Stop()
	for {
		select {
		case <-d.ctx.Done():
			return d.ctx.Err()
		case <-tick.C:
			d.updateCPU(cpu0)
			d.balance()
		case u, ok := <-d.src.C():
			if !ok {
				return fmt.Errorf("source %w", media.ErrStreamEnded)
			}
			if u.Track != d.vtrack {
				if u.Track >= 0 && u.Track < len(d.srcDesc.Tracks) {
					d.runInline(d.fanout(feedItem{unit: u}))
				}
				continue
			}
			if err := d.decode(dec, pkt, frm, u); err != nil {
				return err
			}
		}
	}
}

// decode feeds one access unit to the decoder and fans out the frames
// that come out.
func (d *decoder) decode(dec *astiav.CodecContext, pkt *astiav.Packet, frm *astiav.Frame, u *media.Unit) error {
	b, pts, err := annexBPacket(u, d.track)
	if err != nil {
		return err
	}
	if u.Key {
		d.keys = append(d.keys, pts)
	}
	in := inFrame{pts: pts, fed: time.Now(), received: u.Received}
	if t, ok := media.CaptureTime(u.Data); ok {
		in.capture = t
	}
	d.pending = append(d.pending, in)
	if len(d.pending) > 256 { // a decoder that swallows frames must not grow this forever
		d.pending = d.pending[1:]
	}
	if err := pkt.FromData(b); err != nil {
		return err
	}
	pkt.SetPts(pts)
	pkt.SetDts(media.DurationToTicks(u.DTS, videoClock))
	if u.Key {
		pkt.SetFlags(pkt.Flags().Add(astiav.PacketFlagKey))
	}
	err = dec.SendPacket(pkt)
	pkt.Unref()
	if err != nil {
		return fmt.Errorf("decode H.264: %w", err)
	}
	for {
		err := dec.ReceiveFrame(frm)
		if errors.Is(err, astiav.ErrEagain) || errors.Is(err, astiav.ErrEof) {
			return nil
		}
		if err != nil {
			return fmt.Errorf("decode H.264: %w", err)
		}
		fp := frm.Pts()
		key := false
		for len(d.keys) > 0 && d.keys[0] <= fp {
			key = true
			d.keys = d.keys[1:]
		}
		info := inFrame{pts: fp, fed: time.Now(), received: time.Now()}
		for len(d.pending) > 0 && d.pending[0].pts <= fp {
			info = d.pending[0]
			d.pending = d.pending[1:]
		}
		info.pts = fp
		d.statsMu.Lock()
		d.frames++
		d.statsMu.Unlock()
		err = d.fanoutFrame(frm, info, key)
		frm.Unref()
		if err != nil {
			return err
		}
	}
}

// inlineItem is an item for a rung the decoder's thread runs.
type inlineItem struct {
	r  *run
	f  *rungFeed
	it feedItem
}

// fanoutFrame gives every rung its own reference to frm: queued for the
// rungs on threads of their own, then run here for the inline ones.
func (d *decoder) fanoutFrame(frm *astiav.Frame, info inFrame, key bool) error {
	var inline []inlineItem
	d.mu.Lock()
	for r, f := range d.rungs {
		if !f.inline && len(f.ch) == cap(f.ch) { // full: this rung loses the frame, the others do not wait
			f.dropped++
			f.keyOwed = f.keyOwed || key
			continue
		}
		c := astiav.AllocFrame()
		if err := c.Ref(frm); err != nil {
			c.Free()
			d.mu.Unlock()
			for _, x := range inline {
				x.it.free()
			}
			return fmt.Errorf("reference decoded frame: %w", err)
		}
		it := feedItem{frame: c, info: info, key: key || f.keyOwed}
		f.keyOwed = false
		if f.inline {
			inline = append(inline, inlineItem{r, f, it})
		} else {
			f.ch <- it
		}
	}
	d.mu.Unlock()
	if d.cascade && len(inline) > 1 && frm.PixelFormat() == astiav.PixelFormatYuv420P {
		// Larger pictures first: a smaller rung may scale the picture of
		// a larger one made just before it (see framePics).
		sort.SliceStable(inline, func(i, j int) bool {
			a, b := inline[i].r.pipe, inline[j].r.pipe
			return a.Width*a.Height > b.Width*b.Height
		})
		pics := &framePics{}
		defer pics.free()
		for i := range inline {
			inline[i].it.pics = pics
		}
	}
	d.runInline(inline)
	return nil
}

// framePics are the pictures that the rungs on a decoder's thread whose
// pipeline only scales (Pipeline.onlyScales) made of one decoded frame:
// a rung whose pipeline begins with a scale takes the smallest of them
// at least its size instead of the source's picture
// (ManagerConfig.CascadeScale). The decoder's goroutine only.
type framePics struct {
	pics  []*astiav.Frame
	rends []string
}

// add keeps a reference to f, rung rend's picture.
func (p *framePics) add(f *astiav.Frame, rend string) {
	c := astiav.AllocFrame()
	if err := c.Ref(f); err != nil {
		c.Free()
		return
	}
	p.pics = append(p.pics, c)
	p.rends = append(p.rends, rend)
}

// swap replaces the item's picture with the smallest picture at least w×h
// there is, and returns the rung that made it ("" when none: it keeps
// the source's).
func (p *framePics) swap(it *feedItem, w, h int) string {
	best := -1
	for i, f := range p.pics {
		if f.Width() >= w && f.Height() >= h && (best < 0 || f.Width()*f.Height() < p.pics[best].Width()*p.pics[best].Height()) {
			best = i
		}
	}
	if best < 0 {
		return ""
	}
	c := astiav.AllocFrame()
	if err := c.Ref(p.pics[best]); err != nil {
		c.Free()
		return ""
	}
	it.frame.Free()
	it.frame = c
	return p.rends[best]
}

func (p *framePics) free() {
	for _, f := range p.pics {
		f.Free()
	}
	p.pics, p.rends = nil, nil
}

// fanout gives every rung a unit of another track and returns the
// inline rungs' items for the caller to run.
func (d *decoder) fanout(it feedItem) []inlineItem {
	var inline []inlineItem
	d.mu.Lock()
	defer d.mu.Unlock()
	for r, f := range d.rungs {
		if f.inline {
			inline = append(inline, inlineItem{r, f, it})
			continue
		}
		select {
		case f.ch <- it:
		default:
			f.dropped++
		}
	}
	return inline
}

// runInline runs the inline rungs' items one after the other on the
// decoder's thread (outside d.mu: attaching, detaching and stats do not
// wait for encoders), counting each call's CPU time as the rung's. A rung
// that fails or panics is ended alone.
func (d *decoder) runInline(items []inlineItem) {
	for _, x := range items {
		t0 := threadCPU()
		if x.it.frame != nil {
			from := ""
			if w, h, ok := x.r.pipe.scalesFirst(); ok && x.it.pics != nil {
				from = x.it.pics.swap(&x.it, w, h)
			}
			x.r.setScaledFrom(from)
		}
		err := x.r.runItem(x.it, d.hook)
		dt := threadCPU() - t0
		x.f.winCPU += dt
		d.inlineCPU += dt
		x.r.addInlineCPU(dt)
		if err != nil {
			d.fail(x.r, err)
		}
	}
}

// balance moves the rung that used most of the decoder's thread to a
// thread of its own when that thread was busy more than busyMax of the
// time at two checks in a row.
func (d *decoder) balance() {
	now, cpu := time.Now(), threadCPU()
	busy, win := 0.0, now.Sub(d.lastCheck)
	if !d.lastCheck.IsZero() && win > 0 {
		busy = float64(cpu-d.lastCPU) / float64(win)
	}
	d.lastCPU, d.lastCheck = cpu, now
	if busy > d.busyMax {
		d.hotChecks++
	} else {
		d.hotChecks = 0
	}
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.hotChecks >= 2 {
		var hot *run
		var hf *rungFeed
		for r, f := range d.rungs {
			if f.inline && (hf == nil || f.winCPU > hf.winCPU) {
				hot, hf = r, f
			}
		}
		if hf != nil {
			hf.inline, hf.moved = false, true
			d.hotChecks = 0
			d.log.Info("shared decoder busy: a rung moves to a thread of its own", "rung", hot.rend,
				"busy", fmt.Sprintf("%.0f%%", 100*busy), "rung_busy", fmt.Sprintf("%.0f%%", 100*float64(hf.winCPU)/float64(win)))
		}
	}
	for _, f := range d.rungs {
		f.winCPU = 0
	}
}

func (d *decoder) updateCPU(cpu0 time.Duration) {
	c := threadCPU() - cpu0 - d.inlineCPU
	d.statsMu.Lock()
	d.cpu = c
	d.statsMu.Unlock()
}

// DecoderStats describes one shared decoder.
type DecoderStats struct {
	// Source is the stream decoded, "live/cam1".
	Source string `json:"source"`
	// Rungs are the renditions it feeds, "360p", "720p", sorted.
	Rungs   []string  `json:"rungs"`
	Started time.Time `json:"started"`
	// Frames counts decoded pictures; FPS is Frames per second of
	// wall-clock time since the decoder started.
	Frames uint64  `json:"frames"`
	FPS    float64 `json:"fps"`
	// CPUSeconds is the CPU time of the decoder's thread, less what the
	// rungs it runs inline used there (counted as theirs); CPULoad that
	// over wall-clock time.
	CPUSeconds float64 `json:"cpu_seconds"`
	CPULoad    float64 `json:"cpu_load"`
	// Dropped counts items (frames, audio units) that rungs too far behind
	// lost, summed over the rungs attached now.
	Dropped uint64 `json:"dropped"`
}

func (d *decoder) stats() DecoderStats {
	d.mu.Lock()
	s := DecoderStats{Source: d.stream, Started: d.started, Rungs: []string{}}
	for r, f := range d.rungs {
		s.Rungs = append(s.Rungs, r.rend)
		s.Dropped += f.dropped
	}
	d.mu.Unlock()
	sort.Strings(s.Rungs)
	d.statsMu.Lock()
	s.Frames, s.CPUSeconds = d.frames, d.cpu.Seconds()
	d.statsMu.Unlock()
	if el := time.Since(d.started).Seconds(); el > 0 {
		s.FPS = float64(s.Frames) / el
		s.CPULoad = s.CPUSeconds / el
	}
	return s
}

// droppedFor is how many items r lost to a full queue.
func (d *decoder) droppedFor(r *run) uint64 {
	d.mu.Lock()
	defer d.mu.Unlock()
	if f := d.rungs[r]; f != nil {
		return f.dropped
	}
	return 0
}

// annexBPacket is a source access unit as the Annex-B packet a decoder
// takes (with SPS/PPS before a keyframe) and its PTS in videoClock ticks.
func annexBPacket(u *media.Unit, t *media.Track) ([]byte, int64, error) {
	au := u.Data
	if u.Key {
		au = media.WithParameterSets(au, t.SPS, t.PPS)
	}
	b, err := h264.AnnexB(au).Marshal()
	if err != nil {
		return nil, 0, fmt.Errorf("source access unit: %w", err)
	}
	return b, media.DurationToTicks(u.PTS, videoClock), nil
}
