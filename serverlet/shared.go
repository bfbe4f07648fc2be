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
// each decoded frame is fanned out by reference (av_frame_ref, no copy) to
// every rung's queue, and each rung runs its own filter graph, frame
// functions and libx264 on its own goroutine, so that a rung failing or
// panicking ends that rung only. A rung starting later attaches to the
// running decoder and begins at the next decoded frame (its encoder's
// first frame is an IDR); one stopping detaches; the decoder ends with its
// last rung, or ends every rung when its source ends or does not decode.
// The source's other tracks (audio) are fanned out to the rungs as the
// hub gave them.

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

	mu     sync.Mutex
	rungs  map[*run]*rungFeed
	ending bool // no more rungs attach

	keys    []int64   // source keyframe PTS not matched to a decoded frame yet
	pending []inFrame // packets fed, in order

	statsMu sync.Mutex
	started time.Time
	frames  uint64
	cpu     time.Duration
}

// newDecoder subscribes to the source; start runs it.
func newDecoder(hub *media.Hub, stream string, threads int, log *slog.Logger) (*decoder, error) {
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
		stream: stream, src: src, srcDesc: desc, vtrack: v, track: desc.Tracks[v], threads: threads,
		log: log.With("decoder", stream), ctx: ctx, cancel: cancel, done: make(chan struct{}),
		rungs: map[*run]*rungFeed{}, started: time.Now(),
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
		case u, ok := <-d.src.C():
			if !ok {
				return fmt.Errorf("source %w", media.ErrStreamEnded)
			}
			if u.Track != d.vtrack {
				if u.Track >= 0 && u.Track < len(d.srcDesc.Tracks) {
					d.fanout(feedItem{unit: u})
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

// fanoutFrame gives every rung its own reference to frm.
func (d *decoder) fanoutFrame(frm *astiav.Frame, info inFrame, key bool) error {
	d.mu.Lock()
	defer d.mu.Unlock()
	for _, f := range d.rungs {
		if len(f.ch) == cap(f.ch) { // full: this rung loses the frame, the others do not wait
			f.dropped++
			f.keyOwed = f.keyOwed || key
			continue
		}
		c := astiav.AllocFrame()
		if err := c.Ref(frm); err != nil {
			c.Free()
			return fmt.Errorf("reference decoded frame: %w", err)
		}
		f.ch <- feedItem{frame: c, info: info, key: key || f.keyOwed}
		f.keyOwed = false
	}
	return nil
}

// fanout gives every rung a unit of another track.
func (d *decoder) fanout(it feedItem) {
	d.mu.Lock()
	defer d.mu.Unlock()
	for _, f := range d.rungs {
		select {
		case f.ch <- it:
		default:
			f.dropped++
		}
	}
}

func (d *decoder) updateCPU(cpu0 time.Duration) {
	c := threadCPU() - cpu0
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
	// CPUSeconds is the CPU time of the decoder's thread; CPULoad that over
	// wall-clock time.
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
