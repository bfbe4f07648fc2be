package egress

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"sync"
	"time"

	"github.com/bluenviron/gohlslib/v2"
	"github.com/bluenviron/gohlslib/v2/pkg/codecs"

	"github.com/gradient-cdn/gradient/media"
)

// startMuxer subscribes to the stream and starts its muxer. It is called
// without h.mu: the subscription may wait, within ctx and at most 10 s,
// for an on-demand rendition.
func (h *HLS) startMuxer(ctx context.Context, path string) (*hlsMuxer, error) {
	// A rendition made on demand gets FirstSegmentTimeout to deliver its
	// first keyframe; one that does not is answered 503 (errHLSNotReady).
	sctx, cancel := context.WithTimeout(ctx, h.cfg.FirstSegmentTimeout)
	defer cancel()
	rd, err := h.hub.SubscribeContext(sctx, path, "hls")
	if err != nil {
		if ctx.Err() == nil && errors.Is(sctx.Err(), context.DeadlineExceeded) {
			return nil, fmt.Errorf("hls %s: %w (%v)", path, errHLSNotReady, err)
		}
		return nil, fmt.Errorf("hls %s: %w", path, err)
	}
	log := h.log.With("stream", path)
	m := &hlsMuxer{
		h:           h,
		path:        path,
		log:         log,
		reader:      rd,
		tracks:      map[int]*gohlslib.Track{},
		ready:       make(chan struct{}),
		closing:     make(chan struct{}),
		done:        make(chan struct{}),
		quit:        make(chan struct{}),
		lastRequest: time.Now(),
	}
	desc := rd.Description()
	// The video track goes first: gohlslib leads segmentation with it.
	var tracks []*gohlslib.Track
	for _, i := range []int{desc.VideoTrack(), desc.AudioTrack()} {
		if i < 0 {
			continue
		}
		t := desc.Tracks[i]
		var gt *gohlslib.Track
		switch t.Codec {
		case media.CodecH264:
			gt = &gohlslib.Track{Codec: &codecs.H264{SPS: t.SPS, PPS: t.PPS}, ClockRate: 90000}
		case media.CodecAAC:
			gt = &gohlslib.Track{Codec: &codecs.MPEG4Audio{Config: *t.AAC}, ClockRate: t.AAC.SampleRate}
		case media.CodecOpus:
			if h.cfg.Variant == HLSVariantMPEGTS {
				log.Info("HLS skips track", "track", i, "reason", "Opus is not carried in MPEG-TS HLS")
				continue
			}
			ch := t.Channels
			if ch <= 0 {
				ch = 2
			}
			gt = &gohlslib.Track{Codec: &codecs.Opus{ChannelCount: ch}, ClockRate: 48000}
		default:
			log.Info("HLS skips track", "track", i, "reason", "unsupported codec "+string(t.Codec))
			continue
		}
		m.tracks[i] = gt
		tracks = append(tracks, gt)
	}
	m.muxer = &gohlslib.Muxer{
		Tracks:             tracks,
		Variant:            hlsVariants[h.cfg.Variant],
		SegmentCount:       h.cfg.SegmentCount,
		SegmentMinDuration: h.cfg.SegmentDuration,
		PartMinDuration:    h.cfg.PartDuration,
		OnEncodeError: func(err error) {
			log.Warn("HLS muxer", "err", err)
		},
	}
	if err := m.muxer.Start(); err != nil {
		rd.Close()
		return nil, fmt.Errorf("hls %s: start muxer: %w", path, err)
	}
	log.Info("HLS muxer started", "tracks", len(tracks), "variant", h.cfg.Variant)
	m.wg.Add(2)
	go m.run()
	go m.waitFirstSegment()
	return m, nil
}

// hlsMuxer is one stream's muxer and the goroutine feeding it.
type hlsMuxer struct {
	h      *HLS
	path   string
	log    *slog.Logger
	reader *media.Reader
	muxer  *gohlslib.Muxer
	tracks map[int]*gohlslib.Track // hub track index → muxer track

	ready   chan struct{} // closed once the muxer has its first segment
	closing chan struct{} // closed just before the muxer closes
	done    chan struct{} // closed once the muxer is closed
	quit    chan struct{} // closed by stop
	wg      sync.WaitGroup

	ended bool // the stream ended; written before closing is closed

	stopOnce sync.Once

	// guarded by h.mu
	inflight    int
	lastRequest time.Time
	removed     bool // out of h.muxers for good; start must not add it

	writeErrs int // owned by run
}

// stop closes the muxer and waits for its goroutines.
func (m *hlsMuxer) stop() {
	m.stopOnce.Do(func() { close(m.quit) })
	m.wg.Wait()
}

// waitFirstSegment asks the muxer for its multivariant playlist, which
// gohlslib answers once the first segment exists, and then marks the muxer
// ready. It returns when the muxer closes.
func (m *hlsMuxer) waitFirstSegment() {
	defer m.wg.Done()
	req, _ := http.NewRequest(http.MethodGet, "/"+hlsMultivariantPlaylist, nil)
	var w hlsDiscardWriter
	m.muxer.Handle(&w, req)
	if w.status == http.StatusOK {
		close(m.ready)
	}
}

// run feeds the muxer from the hub reader until the stream ends, the
// muxer is idle or stop is called.
func (m *hlsMuxer) run() {
	defer m.wg.Done()
	reason := "closed"
	defer func() {
		if p := recover(); p != nil {
			reason = fmt.Sprintf("muxer panic: %v", p)
			m.log.Error("HLS muxer failed", "panic", p)
		}
		m.h.remove(m)
		m.ended = reason == "stream ended"
		close(m.closing)
		m.reader.Close()
		m.muxer.Close()
		close(m.done)
		m.log.Info("HLS muxer closed", "reason", reason, "dropped", m.reader.Dropped())
	}()
	check := m.h.cfg.IdleTimeout / 4
	check = min(max(check, 10*time.Millisecond), 5*time.Second)
	tick := time.NewTicker(check)
	defer tick.Stop()
	for {
		select {
		case u, ok := <-m.reader.C():
			if !ok {
				reason = "stream ended"
				return
			}
			m.write(u)
		case <-tick.C:
			if m.h.removeIfIdle(m) {
				reason = fmt.Sprintf("no request for %v", m.h.cfg.IdleTimeout)
				return
			}
		case <-m.quit:
			return
		}
	}
}

func (m *hlsMuxer) write(u *media.Unit) {
	t := m.tracks[u.Track]
	if t == nil {
		return
	}
	ntp := u.Received
	if ntp.IsZero() {
		ntp = time.Now()
	}
	pts := media.DurationToTicks(u.PTS, int64(t.ClockRate))
	var err error
	switch t.Codec.(type) {
	case *codecs.H264:
		au := make([][]byte, 0, len(u.Data))
		for _, n := range u.Data {
			if len(n) > 0 { // gohlslib reads each NALU's header byte
				au = append(au, n)
			}
		}
		if len(au) == 0 {
			return
		}
		err = m.muxer.WriteH264(t, ntp, pts, au)
	case *codecs.MPEG4Audio:
		err = m.muxer.WriteMPEG4Audio(t, ntp, pts, u.Data)
	case *codecs.Opus:
		err = m.muxer.WriteOpus(t, ntp, pts, u.Data)
	}
	if err != nil {
		// Log the first errors and then every 100th, to stay readable
		// when a source keeps sending something the muxer refuses.
		if m.writeErrs++; m.writeErrs <= 3 || m.writeErrs%100 == 0 {
			m.log.Warn("HLS muxer refused unit", "track", u.Track, "errors", m.writeErrs, "err", err)
		}
	}
}
