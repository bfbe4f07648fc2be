package media

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"sort"
	"sync"
	"sync/atomic"
	"time"
)

// Errors returned by the Hub. Callers match them with errors.Is and turn them
// into protocol errors (404, 409, RTSP 404/400 …).
var (
	ErrNotFound         = errors.New("stream not found")
	ErrAlreadyPublished = errors.New("stream is already being published")
	ErrStreamEnded      = errors.New("stream ended")
	ErrHubClosed        = errors.New("hub closed")
	// ErrNoCapacity: the node cannot take on the work a request needs (a
	// transcode beyond its slots); try again later or elsewhere.
	ErrNoCapacity = errors.New("no capacity")
)

// HubConfig tunes a Hub; DefaultHubConfig gives the defaults. It is the
// `hub` section of a node's configuration.
type HubConfig struct {
	// ReaderQueue is how many units a reader may have waiting before it is
	// considered slow and skips to the next keyframe. Default 512 (about 8 s
	// of 30 fps video with audio).
	ReaderQueue int `yaml:"reader_queue"`

	// GOPCacheUnits caps the units kept since the last keyframe for new
	// readers. A longer GOP than this disables the cache until the next
	// keyframe. Default 2048.
	GOPCacheUnits int `yaml:"gop_cache_units"`

	// GOPCacheBytes caps the payload bytes of those units, so that a
	// publisher with huge frames (or a hostile one) cannot make the node
	// hold GOPCacheUnits of them per stream. A GOP over it disables the
	// cache until the next keyframe. Default 32 MiB (a 20 Mbit/s stream
	// with 10 s between keyframes fits).
	GOPCacheBytes int `yaml:"gop_cache_bytes"`

	// Renditions, when set, is asked to produce a rendition
	// ("live/cam1@360p") that a reader subscribes to and nobody publishes
	// yet; see RenditionProvider. Default nil: only published paths are
	// read.
	Renditions RenditionProvider `yaml:"-"`
}

// DefaultHubConfig returns the defaults of every HubConfig field.
func DefaultHubConfig() HubConfig {
	return HubConfig{ReaderQueue: 512, GOPCacheUnits: 2048, GOPCacheBytes: 32 << 20}
}

// Validate checks the fields and names a bad one by its YAML key.
func (c HubConfig) Validate() error {
	if c.ReaderQueue <= 0 {
		return fmt.Errorf("reader_queue: %d must be > 0", c.ReaderQueue)
	}
	if c.GOPCacheUnits <= 0 {
		return fmt.Errorf("gop_cache_units: %d must be > 0", c.GOPCacheUnits)
	}
	if c.GOPCacheBytes <= 0 {
		return fmt.Errorf("gop_cache_bytes: %d must be > 0", c.GOPCacheBytes)
	}
	return nil
}

// RenditionProvider makes renditions on demand, for example by starting a
// serverlet that transcodes the source. Ensure returns once the rendition
// is published in the hub, or with an error that says why it cannot be
// (wrap ErrNotFound for "no such rendition").
type RenditionProvider interface {
	Ensure(ctx context.Context, path string) error
}

// HubEvent tells a HubObserver that a stream started or ended.
type HubEvent struct {
	Stream    string
	Published bool // true when published, false when it ended
}

// HubObserver is notified of streams that start and end, for example by the
// overlay to gossip them. Callbacks run without hub locks held, one at a
// time, in the order the streams started and ended (a path's Ended comes
// before the Published of its republish); they run on the goroutine that
// caused them, or on one delivering an earlier event at the time. They
// must not block.
type HubObserver interface {
	OnHubEvent(HubEvent)
}

// Hub is a node's stream table: one publisher per stream, any number of
// readers per stream.
type Hub struct {
	cfg HubConfig
	log *slog.Logger

	mu         sync.Mutex
	streams    map[string]*Stream
	observers  []HubObserver
	events     []HubEvent                 // queued for the observers, in order
	delivering bool                       // a goroutine is delivering events
	waiters    map[chan struct{}][]string // Wait calls and their paths
	closed     bool
}

// NewHub returns an empty hub. Zero fields of cfg take their defaults
// (DefaultHubConfig); a nil log is slog.Default().
func NewHub(cfg HubConfig, log *slog.Logger) (*Hub, error) {
	def := DefaultHubConfig()
	if cfg.ReaderQueue == 0 {
		cfg.ReaderQueue = def.ReaderQueue
	}
	if cfg.GOPCacheUnits == 0 {
		cfg.GOPCacheUnits = def.GOPCacheUnits
	}
	if cfg.GOPCacheBytes == 0 {
		cfg.GOPCacheBytes = def.GOPCacheBytes
	}
	if err := cfg.Validate(); err != nil {
		return nil, fmt.Errorf("hub: %w", err)
	}
	if log == nil {
		log = slog.Default()
	}
	return &Hub{cfg: cfg, log: log.With("component", "hub"), streams: map[string]*Stream{}}, nil
}

// Observe registers an observer of stream events.
func (h *Hub) Observe(o HubObserver) {
	h.mu.Lock()
	h.observers = append(h.observers, o)
	h.mu.Unlock()
}

// queueLocked queues ev for the observers in the same critical section of
// h.mu as the change it reports, so that the events of a path are
// delivered in the order the changes happened (an old stream's Ended
// before a republish's Published). Called with h.mu held.
func (h *Hub) queueLocked(ev HubEvent) {
	h.events = append(h.events, ev)
	if ev.Published {
		for ch, paths := range h.waiters {
			if slices.Contains(paths, ev.Stream) {
				close(ch)
				delete(h.waiters, ch)
			}
		}
	}
}

// deliver hands the queued events to the observers, in order, without
// hub locks held. One goroutine delivers at a time: one that finds
// another delivering leaves its events to it.
func (h *Hub) deliver() {
	h.mu.Lock()
	if h.delivering {
		h.mu.Unlock()
		return
	}
	h.delivering = true
	for len(h.events) > 0 {
		ev := h.events[0]
		h.events = h.events[1:]
		obs := append([]HubObserver(nil), h.observers...)
		h.mu.Unlock()
		for _, o := range obs {
			o.OnHubEvent(ev)
		}
		h.mu.Lock()
	}
	h.events = nil
	h.delivering = false
	h.mu.Unlock()
}

// Wait returns the first of paths that is live, waiting for one to be
// published until ctx ends (then it returns ctx's error).
func (h *Hub) Wait(ctx context.Context, paths ...string) (*Stream, error) {
	for {
		h.mu.Lock()
		for _, p := range paths {
			if s, ok := h.streams[p]; ok {
				h.mu.Unlock()
				return s, nil
			}
		}
		if h.closed {
			h.mu.Unlock()
			return nil, ErrHubClosed
		}
		ch := make(chan struct{})
		if h.waiters == nil {
			h.waiters = map[chan struct{}][]string{}
		}
		h.waiters[ch] = paths
		h.mu.Unlock()
		select {
		case <-ch:
		case <-ctx.Done():
			h.mu.Lock()
			delete(h.waiters, ch)
			h.mu.Unlock()
			return nil, ctx.Err()
		}
	}
}

// Publish registers a publisher for the stream path (a stream name, with an
// optional "@rendition"). It fails with ErrInvalidName, ErrAlreadyPublished
// or a description error; it never takes a live stream over.
// source describes the publisher for logs and the API ("rtsp 10.0.0.5:4312").
func (h *Hub) Publish(path string, desc Description, source string) (*Publisher, error) {
	if _, _, err := ParsePath(path); err != nil {
		return nil, err
	}
	if err := desc.Validate(); err != nil {
		return nil, fmt.Errorf("publish %s: %w", path, err)
	}
	h.mu.Lock()
	if h.closed {
		h.mu.Unlock()
		return nil, ErrHubClosed
	}
	if _, ok := h.streams[path]; ok {
		h.mu.Unlock()
		return nil, fmt.Errorf("publish %s: %w", path, ErrAlreadyPublished)
	}
	s := &Stream{
		hub:       h,
		path:      path,
		desc:      desc,
		source:    source,
		published: time.Now(),
		video:     desc.VideoTrack(),
		readers:   map[*Reader]struct{}{},
	}
	p := &Publisher{s: s, replaced: make(chan struct{})}
	s.owner = p
	h.streams[path] = s
	h.queueLocked(HubEvent{Stream: path, Published: true})
	h.mu.Unlock()
	h.log.Info("stream published", "stream", path, "source", source, "tracks", trackList(desc))
	h.deliver()
	return p, nil
}

// Takeover publishes path like Publish, but when the path is live it takes
// the stream over from its publisher instead of failing, provided that
// allow accepts the stream and desc has the same tracks (codecs, order,
// video size): the readers stay and read on from the new publisher, the
// old one's writes are dropped from now on and its Replaced channel is
// closed. This is how a relay of a planned rendition replaces a local
// serverlet making the same rendition without cutting its viewers. The new
// publisher should start at a keyframe and continue the stream's timeline
// (Stream.Last).
func (h *Hub) Takeover(path string, desc Description, source string, allow func(StreamInfo) bool) (*Publisher, error) {
	p, err := h.Publish(path, desc, source)
	if !errors.Is(err, ErrAlreadyPublished) {
		return p, err
	}
	s, ok := h.Lookup(path)
	if !ok {
		return h.Publish(path, desc, source) // ended meanwhile
	}
	if !allow(s.Info()) || !SameTracks(s.desc, desc) {
		return nil, err
	}
	s.mu.Lock()
	if s.ended {
		s.mu.Unlock()
		return h.Publish(path, desc, source)
	}
	old, oldSource := s.owner, s.source
	p = &Publisher{s: s, replaced: make(chan struct{})}
	s.owner, s.source = p, source
	// Readers joining now must wait for the new publisher's keyframe.
	clear(s.gop)
	s.gop, s.gopSize, s.gopOK = s.gop[:0], 0, false
	s.mu.Unlock()
	close(old.replaced)
	h.log.Info("stream taken over", "stream", path, "source", source, "from", oldSource)
	return p, nil
}

// SameTracks reports whether units described by b can continue a stream
// described by a: the same codecs in the same order and the same video
// size.
func SameTracks(a, b Description) bool {
	if len(a.Tracks) != len(b.Tracks) {
		return false
	}
	for i := range a.Tracks {
		if a.Tracks[i].Codec != b.Tracks[i].Codec {
			return false
		}
		if a.Tracks[i].Codec == CodecH264 {
			aw, ah, _, errA := a.Tracks[i].Video()
			bw, bh, _, errB := b.Tracks[i].Video()
			if errA != nil || errB != nil || aw != bw || ah != bh {
				return false
			}
		}
	}
	return true
}

func trackList(d Description) []string {
	out := make([]string, len(d.Tracks))
	for i, t := range d.Tracks {
		out[i] = t.String()
	}
	return out
}

// Subscribe returns a reader of the stream that starts at its last keyframe.
// A rendition that is not running yet is asked of the RenditionProvider,
// waiting at most 10 s for it; SubscribeContext bounds the wait otherwise.
func (h *Hub) Subscribe(path string, client string) (*Reader, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	return h.SubscribeContext(ctx, path, client)
}

// SubscribeContext is Subscribe with a context bounding the wait for an
// on-demand rendition.
func (h *Hub) SubscribeContext(ctx context.Context, path string, client string) (*Reader, error) {
	h.mu.Lock()
	s, ok := h.streams[path]
	h.mu.Unlock()
	if !ok {
		stream, rendition, err := ParsePath(path)
		if err != nil {
			return nil, fmt.Errorf("read %s: %w", path, err)
		}
		if rendition == "" || h.cfg.Renditions == nil {
			return nil, fmt.Errorf("read %s: %w", path, ErrNotFound)
		}
		if _, live := h.Lookup(stream); !live {
			return nil, fmt.Errorf("read %s: source %s: %w", path, stream, ErrNotFound)
		}
		if err := h.cfg.Renditions.Ensure(ctx, path); err != nil {
			return nil, fmt.Errorf("read %s: %w", path, err)
		}
		if s, ok = h.Lookup(path); !ok {
			return nil, fmt.Errorf("read %s: rendition ended at once: %w", path, ErrNotFound)
		}
	}
	return s.subscribe(client)
}

// Lookup returns the live stream at path.
func (h *Hub) Lookup(path string) (*Stream, bool) {
	h.mu.Lock()
	defer h.mu.Unlock()
	s, ok := h.streams[path]
	return s, ok
}

// Streams lists the live streams, sorted by path.
func (h *Hub) Streams() []StreamInfo {
	h.mu.Lock()
	ss := make([]*Stream, 0, len(h.streams))
	for _, s := range h.streams {
		ss = append(ss, s)
	}
	h.mu.Unlock()
	out := make([]StreamInfo, len(ss))
	for i, s := range ss {
		out[i] = s.Info()
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Path < out[j].Path })
	return out
}

// Close ends every stream; readers get ErrStreamEnded. Later Publish calls
// fail with ErrHubClosed.
func (h *Hub) Close() error {
	h.mu.Lock()
	h.closed = true
	for ch := range h.waiters {
		close(ch)
	}
	h.waiters = nil
	ss := make([]*Stream, 0, len(h.streams))
	for _, s := range h.streams {
		ss = append(ss, s)
	}
	h.mu.Unlock()
	for _, s := range ss {
		s.end()
	}
	return nil
}

// StreamInfo is a snapshot of a stream for the API and metrics.
type StreamInfo struct {
	Path        string    `json:"path"`
	Source      string    `json:"source"`
	Tracks      []string  `json:"tracks"`
	Readers     int       `json:"readers"`
	PublishedAt time.Time `json:"published_at"`
	BytesIn     uint64    `json:"bytes_in"`
	UnitsIn     uint64    `json:"units_in"`
	// Kbps is the average input bitrate since publishing.
	Kbps float64 `json:"kbps"`
}

// Stream is one published stream in the hub.
type Stream struct {
	hub       *Hub
	path      string
	desc      Description
	source    string
	published time.Time
	video     int

	bytesIn atomic.Uint64
	unitsIn atomic.Uint64

	mu      sync.Mutex
	owner   *Publisher // the publisher whose writes count (Takeover)
	lastPTS time.Duration
	lastAt  time.Time // when the unit with lastPTS was written
	readers map[*Reader]struct{}
	gop     []*Unit // units since the last video keyframe
	gopSize int     // payload bytes of gop
	gopOK   bool    // gop starts at a keyframe and is complete
	ended   bool
}

// Path is the stream's path ("live/cam1" or "live/cam1@360p").
func (s *Stream) Path() string { return s.path }

// Description is the publisher's description. It must not be modified.
func (s *Stream) Description() Description { return s.desc }

// Info returns a snapshot of the stream.
func (s *Stream) Info() StreamInfo {
	s.mu.Lock()
	n, source := len(s.readers), s.source
	s.mu.Unlock()
	b := s.bytesIn.Load()
	el := time.Since(s.published).Seconds()
	kbps := 0.0
	if el > 0 {
		kbps = float64(b) * 8 / 1000 / el
	}
	return StreamInfo{
		Path: s.path, Source: source, Tracks: trackList(s.desc), Readers: n,
		PublishedAt: s.published, BytesIn: b, UnitsIn: s.unitsIn.Load(), Kbps: kbps,
	}
}

func (s *Stream) subscribe(client string) (*Reader, error) {
	r := &Reader{s: s, client: client, ch: make(chan *Unit, s.hub.cfg.ReaderQueue)}
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.ended {
		return nil, fmt.Errorf("read %s: %w", s.path, ErrStreamEnded)
	}
	if s.gopOK {
		for _, u := range s.gop {
			r.offer(u, s.video)
		}
	} else {
		r.waitKey = true
	}
	s.readers[r] = struct{}{}
	return r, nil
}

// Last returns the largest PTS written so far and when it was written: a
// publisher taking the stream over continues the timeline from there.
func (s *Stream) Last() (pts time.Duration, at time.Time) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.lastPTS, s.lastAt
}

func (s *Stream) write(p *Publisher, u *Unit) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.ended || s.owner != p {
		return
	}
	s.bytesIn.Add(uint64(u.Size()))
	s.unitsIn.Add(1)
	if u.PTS > s.lastPTS || s.lastAt.IsZero() {
		s.lastPTS, s.lastAt = u.PTS, time.Now()
	}
	if u.Track == s.video && u.Key {
		clear(s.gop)
		s.gop, s.gopSize = s.gop[:0], 0
		s.gopOK = true
	}
	if s.gopOK {
		size := u.Size()
		if len(s.gop) >= s.hub.cfg.GOPCacheUnits || s.gopSize+size > s.hub.cfg.GOPCacheBytes {
			clear(s.gop)
			s.gop, s.gopSize, s.gopOK = s.gop[:0], 0, false
		} else {
			s.gop = append(s.gop, u)
			s.gopSize += size
		}
	}
	for r := range s.readers {
		r.offer(u, s.video)
	}
}

func (s *Stream) end() {
	s.mu.Lock()
	if s.ended {
		s.mu.Unlock()
		return
	}
	s.ended = true
	for r := range s.readers {
		r.closeQueue()
	}
	s.readers = nil
	s.gop = nil
	source := s.source
	s.mu.Unlock()

	h := s.hub
	h.mu.Lock()
	if h.streams[s.path] == s {
		delete(h.streams, s.path)
	}
	h.queueLocked(HubEvent{Stream: s.path, Published: false})
	h.mu.Unlock()
	h.log.Info("stream ended", "stream", s.path, "source", source,
		"bytes_in", s.bytesIn.Load(), "duration", time.Since(s.published).Round(time.Millisecond))
	h.deliver()
}

// Publisher writes units into a stream. Write and Close may be called from
// one goroutine at a time.
type Publisher struct {
	s        *Stream
	replaced chan struct{}
}

// Replaced is closed when another publisher took the stream over
// (Hub.Takeover): this one's writes are dropped, and it should stop.
func (p *Publisher) Replaced() <-chan struct{} { return p.replaced }

// Stream returns the published stream.
func (p *Publisher) Stream() *Stream { return p.s }

// Write fans the unit out to every reader without blocking. The unit must
// not be modified afterwards.
func (p *Publisher) Write(u *Unit) {
	if u.Track < 0 || u.Track >= len(p.s.desc.Tracks) {
		return
	}
	p.s.write(p, u)
}

// Close ends the stream: readers drain what they have and then get
// ErrStreamEnded, and the path can be published again. The Close of a
// publisher that was taken over does nothing.
func (p *Publisher) Close() {
	p.s.mu.Lock()
	owner := p.s.owner == p
	p.s.mu.Unlock()
	if owner {
		p.s.end()
	}
}

// Reader reads one stream's units in order.
type Reader struct {
	s      *Stream
	client string
	ch     chan *Unit

	// guarded by s.mu
	waitKey  bool
	chClosed bool

	dropped atomic.Uint64
	skips   atomic.Uint64
}

// offer queues u for the reader; called with s.mu held.
func (r *Reader) offer(u *Unit, video int) {
	if r.waitKey {
		if !(u.Key && (u.Track == video || video < 0)) {
			r.dropped.Add(1)
			return
		}
		r.waitKey = false
	}
	select {
	case r.ch <- u:
		return
	default:
	}
	// The reader fell behind a full queue: drop what it has and resume at
	// the next keyframe so that it decodes cleanly again.
	n := 1
	for drained := false; !drained; {
		select {
		case <-r.ch:
			n++
		default:
			drained = true
		}
	}
	r.dropped.Add(uint64(n))
	if r.skips.Add(1) == 1 {
		r.s.hub.log.Warn("slow reader skips to next keyframe", "stream", r.s.path, "client", r.client)
	}
	r.waitKey = true
}

func (r *Reader) closeQueue() {
	if !r.chClosed {
		r.chClosed = true
		close(r.ch)
	}
}

// Stream returns the stream being read.
func (r *Reader) Stream() *Stream { return r.s }

// Description is the stream's description.
func (r *Reader) Description() Description { return r.s.desc }

// C returns the reader's queue. It is closed when the stream ends or the
// reader is closed. Use it to select on units together with other events.
func (r *Reader) C() <-chan *Unit { return r.ch }

// Read returns the next unit; it blocks until one is there, and returns
// ErrStreamEnded once the stream ended and the queue is drained.
func (r *Reader) Read() (*Unit, error) {
	u, ok := <-r.ch
	if !ok {
		return nil, ErrStreamEnded
	}
	return u, nil
}

// Dropped counts the units this reader lost because it was too slow.
func (r *Reader) Dropped() uint64 { return r.dropped.Load() }

// Skips counts how many times the reader fell behind and skipped to a keyframe.
func (r *Reader) Skips() uint64 { return r.skips.Load() }

// Close stops reading; a pending Read returns ErrStreamEnded.
func (r *Reader) Close() {
	s := r.s
	s.mu.Lock()
	delete(s.readers, r)
	r.closeQueue()
	s.mu.Unlock()
}
