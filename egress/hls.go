package egress

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"sort"
	"sync"
	"time"

	"github.com/gradient-cdn/gradient/internal/defaults"
	"github.com/gradient-cdn/gradient/media"
)

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

	// ctx ends at Close, so that a start waiting for a rendition gives up.
	ctx    context.Context
	cancel context.CancelFunc

	mu       sync.Mutex
	muxers   map[string]*hlsMuxer
	starting map[string]*hlsStart // muxers being started, outside mu
	starts   sync.WaitGroup       // the starts in flight, which Close waits for
	closed   bool

	viewers hlsViewers
}

// NewHLS returns the HLS egress for hub, or the config's error. It does no
// I/O and starts no goroutine. log may be nil (slog.Default()).
func NewHLS(cfg HLSConfig, hub *media.Hub, log *slog.Logger) (*HLS, error) {
	if hub == nil {
		return nil, errors.New("hls: nil hub")
	}
	defaults.Fill(&cfg, DefaultHLSConfig())
	if err := cfg.Validate(); err != nil {
		return nil, fmt.Errorf("hls: %w", err)
	}
	if log == nil {
		log = slog.Default()
	}
	h := &HLS{
		cfg:      cfg,
		hub:      hub,
		log:      log.With("component", "hls"),
		muxers:   map[string]*hlsMuxer{},
		starting: map[string]*hlsStart{},
	}
	h.ctx, h.cancel = context.WithCancel(context.Background())
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
	h.cancel()
	ms := make([]*hlsMuxer, 0, len(h.muxers))
	for path, m := range h.muxers {
		ms = append(ms, m)
		delete(h.muxers, path)
	}
	h.mu.Unlock()
	for _, m := range ms {
		m.stop()
	}
	h.starts.Wait() // a start that lost the race stops its own muxer
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

	m, status, err := h.acquire(r.Context(), path, rest == hlsMultivariantPlaylist)
	if err != nil {
		if status == http.StatusServiceUnavailable {
			w.Header().Set("Retry-After", "1")
		}
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

var errHLSClosed = errors.New("hls: shutting down")

// hlsStart is a muxer being started: the first request for a stream
// subscribes to it outside h.mu, since that may wait (up to 10 s) for a
// rendition's first frame; concurrent first requests wait on done and
// share its muxer.
type hlsStart struct {
	done chan struct{}
	err  error // set before done is closed
}

// acquire returns the stream's muxer, starting it when create is set, and
// counts the request as in flight so that the muxer is not closed as idle
// under it. h.mu is never held while a muxer starts: a request for a
// rendition that takes seconds to come must not stall the other streams.
func (h *HLS) acquire(ctx context.Context, path string, create bool) (*hlsMuxer, int, error) {
	for {
		h.mu.Lock()
		if h.closed {
			h.mu.Unlock()
			return nil, http.StatusServiceUnavailable, errHLSClosed
		}
		if m := h.muxers[path]; m != nil {
			m.inflight++
			m.lastRequest = time.Now()
			h.mu.Unlock()
			return m, 0, nil
		}
		if !create {
			h.mu.Unlock()
			return nil, http.StatusNotFound, fmt.Errorf("no HLS session for stream %s: open %s first", path, hlsMultivariantPlaylist)
		}
		if st := h.starting[path]; st != nil {
			h.mu.Unlock()
			select {
			case <-st.done:
			case <-ctx.Done():
				return nil, http.StatusServiceUnavailable, ctx.Err()
			}
			// The starter's client leaving is no answer for this one, and
			// Close is answered above: try again.
			if st.err != nil && !errors.Is(st.err, context.Canceled) && !errors.Is(st.err, errHLSClosed) {
				return nil, hlsStatus(st.err), st.err
			}
			continue
		}
		st := &hlsStart{done: make(chan struct{})}
		h.starting[path] = st
		h.starts.Add(1)
		h.mu.Unlock()
		return h.start(ctx, path, st)
	}
}

// start starts path's muxer for acquire, which registered st, and hands it
// to the requests waiting on st.
func (h *HLS) start(ctx context.Context, path string, st *hlsStart) (*hlsMuxer, int, error) {
	defer h.starts.Done()
	// Close cancels the wait for a rendition too.
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	defer context.AfterFunc(h.ctx, cancel)()
	m, err := h.startMuxer(ctx, path)

	h.mu.Lock()
	delete(h.starting, path)
	closed := h.closed
	if closed {
		err = errHLSClosed
	}
	if err == nil {
		// A muxer whose stream already ended stays out of the table; this
		// request still gets it, and answers from its closing.
		if !m.removed {
			h.muxers[path] = m
		}
		m.inflight++
		m.lastRequest = time.Now()
	}
	st.err = err
	close(st.done)
	h.mu.Unlock()
	switch {
	case closed:
		if m != nil {
			m.stop()
		}
		return nil, http.StatusServiceUnavailable, err
	case err != nil:
		return nil, hlsStatus(err), err
	}
	return m, 0, nil
}

// errHLSNotReady: the stream (a rendition made on demand) delivered no
// keyframe within FirstSegmentTimeout.
var errHLSNotReady = errors.New("stream has no keyframe yet")

// hlsStatus is the status a failed muxer start is answered with: 503 for
// a stream not ready in time (the client may retry), else HTTPStatus.
func hlsStatus(err error) int {
	if errors.Is(err, errHLSNotReady) {
		return http.StatusServiceUnavailable
	}
	return HTTPStatus(err)
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
	m.removed = true
	if h.muxers[m.path] == m {
		delete(h.muxers, m.path)
	}
	return true
}

func (h *HLS) remove(m *hlsMuxer) {
	h.mu.Lock()
	m.removed = true
	if h.muxers[m.path] == m {
		delete(h.muxers, m.path)
	}
	h.mu.Unlock()
}
