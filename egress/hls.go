package egress

import (
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"sort"
	"sync"
	"time"

	"github.com/bluenviron/gohlslib/v2"
	"github.com/bluenviron/gohlslib/v2/pkg/codecs"

	"github.com/gradient-cdn/gradient/media"
)

// HLSConfig tunes the HLS egress. The zero value is usable; see the field
// defaults.
type HLSConfig struct {
	// SegmentDuration is the minimum segment duration; a segment always
	// starts at a keyframe, so segments last at least one GOP. Default 1 s.
	SegmentDuration time.Duration

	// PartDuration is the minimum LL-HLS part duration (adjusted by the
	// muxer to the frame duration). Default 200 ms.
	PartDuration time.Duration

	// SegmentCount is how many segments each playlist keeps. Low-Latency HLS
	// needs at least 7. Default 7.
	SegmentCount int

	// IdleTimeout closes a stream's muxer, and releases its hub reader, when
	// no request for the stream came for that long. Default 30 s.
	IdleTimeout time.Duration

	// FirstSegmentTimeout bounds how long the first request for a stream
	// waits for the muxer's first segment, so that players (and ffmpeg)
	// succeed on their first try instead of reading an empty playlist.
	// After it the request is answered 503. Default 10 s.
	FirstSegmentTimeout time.Duration

	// Variant is the gohlslib muxer variant. Default
	// gohlslib.MuxerVariantLowLatency: fMP4 segments with LL-HLS parts and
	// blocking playlist reloads, which non-LL players play as plain HLS.
	Variant gohlslib.MuxerVariant
}

func (c HLSConfig) withDefaults() HLSConfig {
	if c.SegmentDuration <= 0 {
		c.SegmentDuration = time.Second
	}
	if c.PartDuration <= 0 {
		c.PartDuration = 200 * time.Millisecond
	}
	if c.SegmentCount <= 0 {
		c.SegmentCount = 7
	}
	if c.IdleTimeout <= 0 {
		c.IdleTimeout = 30 * time.Second
	}
	if c.FirstSegmentTimeout <= 0 {
		c.FirstSegmentTimeout = 10 * time.Second
	}
	if c.Variant == 0 {
		c.Variant = gohlslib.MuxerVariantLowLatency
	}
	return c
}

// hlsMultivariantPlaylist is the file name a player opens first; it is the
// only request that starts a muxer for a stream.
const hlsMultivariantPlaylist = "index.m3u8"

// HLS serves streams as HLS and Low-Latency HLS. It runs one gohlslib muxer
// per stream path, started by the first request for the stream's
// index.m3u8, fed by one hub reader from the stream's last keyframe, and
// closed when the stream ends or after IdleTimeout without requests.
// HLS is an egress StreamHandler: every file name the muxer serves
// (playlists, init file, segments, parts) is a rest under the stream path.
type HLS struct {
	cfg HLSConfig
	hub *media.Hub
	log *slog.Logger

	mu     sync.Mutex
	muxers map[string]*hlsMuxer
	closed bool
}

// NewHLS returns the HLS egress for hub.
func NewHLS(cfg HLSConfig, hub *media.Hub, log *slog.Logger) (*HLS, error) {
	if hub == nil {
		return nil, errors.New("hls: nil hub")
	}
	cfg = cfg.withDefaults()
	if cfg.Variant == gohlslib.MuxerVariantLowLatency && cfg.SegmentCount < 7 {
		return nil, fmt.Errorf("hls: Low-Latency HLS needs SegmentCount >= 7, got %d", cfg.SegmentCount)
	}
	if cfg.SegmentCount < 3 {
		return nil, fmt.Errorf("hls: SegmentCount must be >= 3, got %d", cfg.SegmentCount)
	}
	if log == nil {
		log = slog.Default()
	}
	h := &HLS{
		cfg:    cfg,
		hub:    hub,
		log:    log.With("component", "hls"),
		muxers: map[string]*hlsMuxer{},
	}
	return h, nil
}

// Start is a no-op kept for the shape every component shares: HLS binds no
// listener of its own and starts muxers on demand.
func (h *HLS) Start() error {
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.closed {
		return errors.New("hls: closed")
	}
	return nil
}

// Close stops every muxer and its goroutines. Requests waiting inside a
// muxer return; later requests are answered 503. Close is idempotent.
func (h *HLS) Close() error {
	h.mu.Lock()
	h.closed = true
	ms := make([]*hlsMuxer, 0, len(h.muxers))
	for path, m := range h.muxers {
		ms = append(ms, m)
		delete(h.muxers, path)
	}
	h.mu.Unlock()
	for _, m := range ms {
		m.stop()
	}
	return nil
}

// Streams lists the stream paths that have a running muxer, sorted.
func (h *HLS) Streams() []string {
	h.mu.Lock()
	defer h.mu.Unlock()
	out := make([]string, 0, len(h.muxers))
	for p := range h.muxers {
		out = append(out, p)
	}
	sort.Strings(out)
	return out
}

// ServeStream implements StreamHandler: rest is the file name the muxer
// serves ("index.m3u8", "video1_stream.m3u8", "<prefix>_video1_part3.mp4" …).
func (h *HLS) ServeStream(w http.ResponseWriter, r *http.Request, path, rest string) {
	sw := &hlsResponseWriter{ResponseWriter: w}
	w = sw

	hd := w.Header()
	hd.Set("Access-Control-Allow-Origin", "*")
	hd.Set("Access-Control-Expose-Headers", "Content-Length, Content-Type")
	switch r.Method {
	case http.MethodGet, http.MethodHead:
	case http.MethodOptions:
		hd.Set("Access-Control-Allow-Methods", "GET, HEAD, OPTIONS")
		hd.Set("Access-Control-Allow-Headers", "Range, Content-Type")
		w.WriteHeader(http.StatusNoContent)
		return
	default:
		hd.Set("Allow", "GET, HEAD, OPTIONS")
		http.Error(w, "method not allowed", http.StatusMethodNotAllowed)
		return
	}
	if rest == "" || rest != pathBase(rest) {
		http.NotFound(w, r)
		return
	}

	m, status, err := h.acquire(path, rest == hlsMultivariantPlaylist)
	if err != nil {
		h.log.Info("rejected HLS request", "stream", path, "file", rest, "remote", r.RemoteAddr, "status", status, "err", err)
		http.Error(w, err.Error(), status)
		return
	}
	defer h.release(m)

	// The first request for a stream waits for the first segment, bounded.
	select {
	case <-m.ready:
	default:
		t := time.NewTimer(h.cfg.FirstSegmentTimeout)
		defer t.Stop()
		select {
		case <-m.ready:
		case <-m.closing:
			if m.ended {
				http.Error(w, fmt.Sprintf("stream %s ended", path), http.StatusNotFound)
			} else {
				http.Error(w, "HLS session closed", http.StatusServiceUnavailable)
			}
			return
		case <-t.C:
			h.log.Warn("no HLS segment in time", "stream", path, "waited", h.cfg.FirstSegmentTimeout)
			w.Header().Set("Retry-After", "1")
			http.Error(w, "stream has no segment yet", http.StatusServiceUnavailable)
			return
		case <-r.Context().Done():
			return
		}
	}

	// gohlslib serves by file name: show it just the name.
	r2 := new(http.Request)
	*r2 = *r
	u := *r.URL
	u.Path, u.RawPath = "/"+rest, ""
	r2.URL = &u
	sw.muxer = m
	m.muxer.Handle(w, r2)
	if !sw.wrote {
		// Not a file of this muxer (expired segment, other session's prefix).
		http.NotFound(w, r)
	}
}

// pathBase is the last element of a slash-separated path.
func pathBase(p string) string {
	for i := len(p) - 1; i >= 0; i-- {
		if p[i] == '/' {
			return p[i+1:]
		}
	}
	return p
}

// acquire returns the stream's muxer, creating it when create is set, and
// counts the request as in flight so that the muxer is not closed as idle
// under it.
func (h *HLS) acquire(path string, create bool) (*hlsMuxer, int, error) {
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.closed {
		return nil, http.StatusServiceUnavailable, errors.New("hls: shutting down")
	}
	m := h.muxers[path]
	if m == nil {
		if !create {
			return nil, http.StatusNotFound, fmt.Errorf("no HLS session for stream %s: open %s first", path, hlsMultivariantPlaylist)
		}
		var err error
		m, err = h.startMuxer(path)
		if err != nil {
			return nil, HTTPStatus(err), err
		}
		h.muxers[path] = m
	}
	m.inflight++
	m.lastRequest = time.Now()
	return m, 0, nil
}

func (h *HLS) release(m *hlsMuxer) {
	h.mu.Lock()
	m.inflight--
	m.lastRequest = time.Now()
	h.mu.Unlock()
}

// removeIfIdle unregisters m when no request came for IdleTimeout. A
// request in flight (waiting for the first segment, or a blocking playlist
// reload) keeps it, but only for FirstSegmentTimeout more: gohlslib holds a
// blocking request, even of a client that left, until the next part comes,
// and of a stalled stream that could be never; closing the muxer lets them go.
func (h *HLS) removeIfIdle(m *hlsMuxer) bool {
	h.mu.Lock()
	defer h.mu.Unlock()
	idle := time.Since(m.lastRequest)
	if idle < h.cfg.IdleTimeout || (m.inflight > 0 && idle < h.cfg.IdleTimeout+h.cfg.FirstSegmentTimeout) {
		return false
	}
	if h.muxers[m.path] == m {
		delete(h.muxers, m.path)
	}
	return true
}

func (h *HLS) remove(m *hlsMuxer) {
	h.mu.Lock()
	if h.muxers[m.path] == m {
		delete(h.muxers, m.path)
	}
	h.mu.Unlock()
}

// startMuxer subscribes to the stream and starts its muxer; called with
// h.mu held (Subscribe and Muxer.Start do not block).
func (h *HLS) startMuxer(path string) (*hlsMuxer, error) {
	rd, err := h.hub.Subscribe(path, "hls")
	if err != nil {
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
			if h.cfg.Variant == gohlslib.MuxerVariantMPEGTS {
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
		Variant:            h.cfg.Variant,
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
	log.Info("HLS muxer started", "tracks", len(tracks), "variant", variantName(h.cfg.Variant))
	m.wg.Add(2)
	go m.run()
	go m.waitFirstSegment()
	return m, nil
}

func variantName(v gohlslib.MuxerVariant) string {
	switch v {
	case gohlslib.MuxerVariantMPEGTS:
		return "mpegts"
	case gohlslib.MuxerVariantFMP4:
		return "fmp4"
	case gohlslib.MuxerVariantLowLatency:
		return "lowLatency"
	}
	return fmt.Sprint(int(v))
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

// hlsResponseWriter notes whether the muxer answered, and turns the 500
// gohlslib answers for a muxer closed under a waiting request into 404
// (the stream ended).
type hlsResponseWriter struct {
	http.ResponseWriter
	muxer  *hlsMuxer
	wrote  bool
	status int
}

func (w *hlsResponseWriter) WriteHeader(code int) {
	if w.wrote {
		return
	}
	w.wrote = true
	if code == http.StatusInternalServerError && w.muxer != nil {
		select {
		case <-w.muxer.closing:
			if w.muxer.ended {
				code = http.StatusNotFound
			} else {
				code = http.StatusServiceUnavailable
			}
		default:
		}
	}
	w.status = code
	w.ResponseWriter.WriteHeader(code)
}

func (w *hlsResponseWriter) Write(b []byte) (int, error) {
	if !w.wrote {
		w.WriteHeader(http.StatusOK)
	}
	return w.ResponseWriter.Write(b)
}

// Flush lets long part downloads stream out.
func (w *hlsResponseWriter) Flush() {
	if f, ok := w.ResponseWriter.(http.Flusher); ok {
		f.Flush()
	}
}

// hlsDiscardWriter is a ResponseWriter that keeps only the status.
type hlsDiscardWriter struct {
	hdr    http.Header
	status int
}

func (w *hlsDiscardWriter) Header() http.Header {
	if w.hdr == nil {
		w.hdr = http.Header{}
	}
	return w.hdr
}

func (w *hlsDiscardWriter) WriteHeader(code int) {
	if w.status == 0 {
		w.status = code
	}
}

func (w *hlsDiscardWriter) Write(b []byte) (int, error) {
	w.WriteHeader(http.StatusOK)
	return len(b), nil
}
