package egress

import (
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"net/url"
	"sort"
	"strings"
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

	// ViewerTimeout is how long a client counts as a viewer of a stream
	// (see Viewers) after its last answered request for one of the
	// stream's files. A playing client reloads the media playlist at least
	// once per target duration (a segment: SegmentDuration or one GOP,
	// whichever is longer) and an LL-HLS client several times a second, so
	// the window must exceed the stream's longest segment. Default 10 s,
	// or 3 × SegmentDuration where that is longer.
	ViewerTimeout time.Duration
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
	if c.ViewerTimeout <= 0 {
		c.ViewerTimeout = max(10*time.Second, 3*c.SegmentDuration)
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
//
// HLS also tracks who watches (see Viewers): HLS is stateless HTTP, so a
// viewer is a client that keeps fetching a stream's files.
type HLS struct {
	cfg HLSConfig
	hub *media.Hub
	log *slog.Logger

	mu     sync.Mutex
	muxers map[string]*hlsMuxer
	closed bool

	viewers hlsViewers
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
	h.viewers.init(cfg.ViewerTimeout, h.log)
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
	h.viewers.clear()
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
		return
	}
	if sw.status >= 200 && sw.status < 300 {
		h.viewers.seen(path, r, time.Now())
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

// HLSViewerParam is the query parameter that names one player's HLS
// session: a token the player draws once per page (the player page sends
// it on index.m3u8, and the muxer repeats the query on every playlist,
// segment and part URL it lists). A client without one is known by its
// remote IP and User-Agent, so that players behind one address with one
// browser count as one viewer.
const HLSViewerParam = "viewer"

// maxHLSViewers bounds the viewers tracked at once, so that clients
// inventing tokens cannot grow the table without end; past it new clients
// are not counted until old ones expire.
const maxHLSViewers = 100000

// maxHLSViewerQuery bounds the query kept per viewer: a longer one is not
// kept (the player's is a few dozen bytes).
const maxHLSViewerQuery = 1024

// HLSViewer is a client that fetched a file of a stream (a playlist, the
// init section, a segment or a part) within ViewerTimeout.
type HLSViewer struct {
	// Path is the stream path requested, with its rendition ("live/cam1@360p").
	Path string
	// Client identifies the viewer: "viewer:<token>" with HLSViewerParam,
	// else "<remote IP> <User-Agent>".
	Client string
	// Query is the query of the viewer's first request that had one,
	// without LL-HLS's own _HLS_ parameters (device=phone&viewer=… from the
	// player page).
	Query url.Values
	// First and Last are the times of its first and last answered request.
	First, Last time.Time
}

// Viewers lists the clients that fetched a file of a stream within
// ViewerTimeout (only answered requests count: a 404 for a stream that is
// not here, or a refused request, makes no viewer), sorted by path, then
// client. A viewer that stops fetching is dropped once the window passes.
func (h *HLS) Viewers() []HLSViewer {
	return h.viewers.list(time.Now())
}

type hlsViewerKey struct{ path, client string }

type hlsViewer struct {
	query       url.Values
	first, last time.Time
}

// hlsViewers is the table behind HLS.Viewers.
type hlsViewers struct {
	window time.Duration
	log    *slog.Logger

	mu        sync.Mutex
	m         map[hlsViewerKey]*hlsViewer
	lastPrune time.Time
	full      bool // the table is at maxHLSViewers (logged once per episode)
}

func (v *hlsViewers) init(window time.Duration, log *slog.Logger) {
	v.window, v.log, v.m = window, log, map[hlsViewerKey]*hlsViewer{}
}

// seen notes an answered request of r for a file of path.
func (v *hlsViewers) seen(path string, r *http.Request, now time.Time) {
	var q url.Values
	if len(r.URL.RawQuery) <= maxHLSViewerQuery {
		q = r.URL.Query()
	}
	for k := range q {
		if strings.HasPrefix(k, "_HLS_") {
			delete(q, k)
		}
	}
	key := hlsViewerKey{path: path, client: hlsClient(r, q.Get(HLSViewerParam))}
	v.mu.Lock()
	defer v.mu.Unlock()
	if now.Sub(v.lastPrune) >= v.window {
		v.prune(now)
	}
	if x := v.m[key]; x != nil {
		x.last = now
		if len(x.query) == 0 && len(q) > 0 {
			x.query = q
		}
		return
	}
	if len(v.m) >= maxHLSViewers {
		if !v.full {
			v.full = true
			v.log.Warn("HLS viewer table full: new viewers are not counted until others leave", "max", maxHLSViewers)
		}
		return
	}
	v.m[key] = &hlsViewer{query: q, first: now, last: now}
}

// prune forgets viewers idle for the window; called with v.mu held.
func (v *hlsViewers) prune(now time.Time) {
	v.lastPrune = now
	for k, x := range v.m {
		if now.Sub(x.last) >= v.window {
			delete(v.m, k)
		}
	}
	if len(v.m) < maxHLSViewers {
		v.full = false
	}
}

func (v *hlsViewers) list(now time.Time) []HLSViewer {
	v.mu.Lock()
	v.prune(now)
	out := make([]HLSViewer, 0, len(v.m))
	for k, x := range v.m {
		out = append(out, HLSViewer{Path: k.path, Client: k.client, Query: cloneValues(x.query), First: x.first, Last: x.last})
	}
	v.mu.Unlock()
	sort.Slice(out, func(i, j int) bool {
		if out[i].Path != out[j].Path {
			return out[i].Path < out[j].Path
		}
		return out[i].Client < out[j].Client
	})
	return out
}

func (v *hlsViewers) clear() {
	v.mu.Lock()
	clear(v.m)
	v.mu.Unlock()
}

// hlsClient is the viewer key of a request: its player token when it
// carries a plausible one, else its remote IP and User-Agent.
func hlsClient(r *http.Request, token string) string {
	if validViewerToken(token) {
		return "viewer:" + token
	}
	ip, _, err := net.SplitHostPort(r.RemoteAddr)
	if err != nil {
		ip = r.RemoteAddr
	}
	ua := r.UserAgent()
	if len(ua) > 256 {
		ua = ua[:256]
	}
	return ip + " " + ua
}

// validViewerToken accepts 8 to 64 characters of [A-Za-z0-9_-].
func validViewerToken(s string) bool {
	if len(s) < 8 || len(s) > 64 {
		return false
	}
	for _, c := range []byte(s) {
		switch {
		case c >= 'a' && c <= 'z', c >= 'A' && c <= 'Z', c >= '0' && c <= '9', c == '_', c == '-':
		default:
			return false
		}
	}
	return true
}

func cloneValues(q url.Values) url.Values {
	out := make(url.Values, len(q))
	for k, v := range q {
		out[k] = append([]string(nil), v...)
	}
	return out
}
