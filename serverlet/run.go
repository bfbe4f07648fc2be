package serverlet

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"runtime"
	"runtime/debug"
	"sync"
	"sync/atomic"
	"time"

	"github.com/gradient-cdn/gradient/media"
)

// run is one serverlet running between a source stream and its rendition:
// one goroutine, locked to its OS thread so that the thread's CPU time is
// the serverlet's. With shared decode and inline rungs, the decoder's
// thread processes the run's items (runItem) and the goroutine only
// watches idleness, stops and failures.
type run struct {
	path, spec string
	rend       string // "360p"
	pipe       *Pipeline
	enc        EncoderConfig
	hub        *media.Hub
	src        *media.Reader // the source, when this run decodes it itself
	srcDesc    media.Description
	// dec and feed, with shared decode: the source's decoder and the
	// queue it fills for this run (set by decoder.attach).
	dec        *decoder
	feed       chan feedItem
	log        *slog.Logger
	idleStop   time.Duration
	startLimit time.Duration // no output by then: the run ends

	ctx       context.Context
	cancel    context.CancelFunc
	published chan struct{} // closed once the rendition is in the hub
	done      chan struct{} // closed when the goroutine has ended
	err       error         // why it ended; valid after done

	// procMu is held while an item is processed (on this run's goroutine
	// or the decoder's thread) and by what reads pub, video or audio
	// elsewhere; closed is set under it once they are freed.
	procMu sync.Mutex
	closed bool
	pub    *media.Publisher
	outIdx []int // source track index → output track index, -1 dropped
	desc   media.Description
	video  *videoPath
	audio  *audioPath
	// inlineErr is why the run failed on the decoder's thread; set before
	// the decoder closes feed.
	inlineErr error

	touched atomic.Bool // a reader is on its way (Ensure returned); not idle

	statsMu   sync.Mutex
	started   time.Time
	framesIn  uint64
	framesOut uint64
	cpu       time.Duration // this run's own thread
	inlineCPU time.Duration // on the decoder's thread
	// scaledFrom is the larger rung whose picture the run scales (""
	// the source's; ManagerConfig.CascadeScale).
	scaledFrom string
	latencies  []time.Duration // ring of the last latencyWindow input→output delays
	latPos     int
}

// newRun makes a run reading src, or (src nil) fed by a shared decoder
// it is attached to next.
func newRun(hub *media.Hub, src *media.Reader, srcDesc media.Description, path, spec string, pipe *Pipeline, enc EncoderConfig, idleStop, startLimit time.Duration, log *slog.Logger) *run {
	ctx, cancel := context.WithCancel(context.Background())
	_, rend, _ := media.ParsePath(path)
	return &run{
		path: path, rend: rend, spec: spec, pipe: pipe, enc: enc, hub: hub, src: src, srcDesc: srcDesc,
		log: log.With("rendition", path), idleStop: idleStop, startLimit: startLimit, ctx: ctx, cancel: cancel,
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
	var srcC <-chan *media.Unit
	if r.src != nil {
		srcC = r.src.C()
	}
	// A rung calling Go frame functions (plugins, annotate) keeps its own
	// thread: operator code that stalls must not stall the other rungs.
	wantInline := r.dec != nil && len(r.pipe.frames) == 0
	for {
		if wantInline && len(r.feed) == 0 {
			wantInline = !r.dec.goInline(r)
		}
		select {
		case <-r.ctx.Done():
			return r.ctx.Err()
		case u, ok := <-srcC:
			if !ok {
				return fmt.Errorf("source %w", media.ErrStreamEnded)
			}
			if err := r.unit(u); err != nil {
				return err
			}
		case it, ok := <-r.feed:
			if !ok {
				if r.inlineErr != nil {
					return r.inlineErr
				}
				return r.dec.ended()
			}
			r.procMu.Lock()
			err := r.item(it)
			r.procMu.Unlock()
			if err != nil {
				return err
			}
		case now := <-tick.C:
			r.updateCPU(cpu0)
			r.procMu.Lock()
			pub := r.pub
			r.procMu.Unlock()
			if pub == nil {
				if now.Sub(r.started) >= r.startLimit {
					return fmt.Errorf("no output within %v (start_timeout): the source sent nothing decodable", r.startLimit)
				}
				continue
			}
			select {
			case <-pub.Replaced():
				r.log.Info("serverlet stopped: a relay took its rendition over")
				return nil
			default:
			}
			if r.touched.Swap(false) || pub.Stream().Info().Readers > 0 {
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
		case r.pipe.Audio == AudioOpus && t.Codec == media.CodecAAC,
			r.pipe.Audio == AudioAAC && t.Codec == media.CodecOpus:
			open, bitrate := openAudioPath, r.pipe.OpusBitrate
			if r.pipe.Audio == AudioAAC {
				open, bitrate = openAACPath, r.pipe.AACBitrate
			}
			a, err := open(r, t, bitrate)
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

// runItem processes one item on the decoder's thread: nothing once the
// run is closed, and a panic becomes the run's error.
func (r *run) runItem(it feedItem, hook func(rendition string)) (err error) {
	r.procMu.Lock()
	defer r.procMu.Unlock()
	if r.closed || r.ctx.Err() != nil {
		it.free()
		return nil
	}
	defer func() {
		if p := recover(); p != nil {
			err = fmt.Errorf("serverlet %s panicked: %v", r.path, p)
			r.log.Error("serverlet panicked", "panic", p, "stack", string(debug.Stack()))
		}
	}()
	err = r.item(it) // frees it
	if hook != nil {
		hook(r.rend)
	}
	return err
}

// item takes one thing from the shared decoder: a picture for the video
// path, or a unit of another track.
func (r *run) item(it feedItem) error {
	if it.frame == nil {
		return r.unit(it.unit)
	}
	defer it.free()
	if r.video == nil {
		return nil
	}
	return r.video.decoded(it)
}

func (r *run) write(u *media.Unit) {
	if r.pub != nil {
		r.pub.Write(u)
	}
}

// close frees everything and ends the rendition in the hub.
func (r *run) close() {
	if r.src != nil {
		r.src.Close()
	}
	if r.dec != nil {
		r.dec.detach(r)
	}
	// The decoder's thread may be inside runItem: wait for it; it does
	// nothing for this run afterwards.
	r.procMu.Lock()
	defer r.procMu.Unlock()
	r.closed = true
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
