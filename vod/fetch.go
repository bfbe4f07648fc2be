package vod

import (
	"context"
	"crypto/tls"
	"errors"
	"io"
	"log/slog"
	"net"
	"net/http"
	"strings"
	"sync"
	"time"
)

// Peer is a cluster member as the fetcher reaches it.
type Peer struct {
	Name     string
	HTTPBase string // scheme://host:port of its internal HTTP, e.g. "http://127.0.0.1:8081"
}

// Peers is the cluster as this node sees it; the node wires it from
// membership. Alive may include this node (it is skipped by name).
type Peers interface {
	Self() string
	Alive() []Peer
}

// FetcherConfig tunes a Fetcher; zero values take the defaults.
type FetcherConfig struct {
	// Secret is the cluster secret; empty means an open cluster (see
	// VerifyPeerRequest).
	Secret string
	// Owners is how many first rendezvous owners of a chunk may fill it
	// from the origin (default 2; a node passes vod.replicas, at least
	// 1): the origin's upload is spent on them, and every other node gets
	// the chunk from them (and keeps a copy only of what is hot there,
	// see DiskCache.Admits).
	Owners int
	// Pinned is how many first rendezvous owners of a chunk (among the
	// members other than its origin) pin it in their store: vod.replicas
	// - 1. A peer's fill asks them (without filling) before the origin,
	// so that a chunk already replicated costs the origin nothing again.
	Pinned int
	// Parent, when set, is the HTTP base of the node every miss is asked
	// first (to fill), before the owners and the origin (vod.parent).
	Parent string
	// TLS verifies peers that serve HTTPS (overlay.peer_ca); nil: the
	// system pool.
	TLS *tls.Config
	// StallTimeout: a source that sends no byte (headers included) for
	// this long is abandoned for the next one (default 2s).
	StallTimeout time.Duration
	// ConnectTimeout bounds the TCP connect to a source (default 2s).
	ConnectTimeout time.Duration
	// Origin is the cluster's origin store when titles are kept in an
	// object store (S3Origin): the last source of every flight, after the
	// title's origin node, which may be gone or may never have kept the
	// chunk. Nil (the default, titles in their origin node's data dir):
	// none, the origin node is the last source.
	Origin OriginStore
}

// ChunkCache is where fetched chunks are kept. *ChunkStore satisfies it.
type ChunkCache interface {
	// Open answers ErrChunkNotFound when the chunk is absent.
	Open(d Digest) (io.ReadSeekCloser, int64, error)
	Put(r io.Reader) (Chunk, error)
}

var _ ChunkCache = (*ChunkStore)(nil)

// admitter is a ChunkCache with an admission policy (DiskCache): Admits
// counts a request of chunk d that the fetcher got from elsewhere and
// reports whether the cache would keep a copy.
type admitter interface {
	Admits(d Digest, size int64) bool
}

var _ admitter = (*DiskCache)(nil)

// peerChunkPath is the internal route of chunk requests between nodes.
const peerChunkPath = "/internal/vod/chunks/"

// maxFetchBytes bounds what one flight buffers: a chunk is a media segment
// of a few seconds, and a source that sends more is broken.
const maxFetchBytes = 512 << 20

// Fetcher serves chunks this node may not hold: from its own store, from
// its cache, else from the cluster, filling the cache on the way.
//
// A chunk missing here is asked of its rendezvous owners (Owners over the
// alive nodes), then of its origin, the node that packaged it, then of the
// origin store (cfg.Origin) when there is one. The first cfg.Owners owners
// may fill from the origin node or, when it does not hold the chunk or is
// gone, from the origin store (a second hop), so the origin uploads a
// chunk once to its owners however many nodes want it, and every other
// node reads it from an owner. A request from a peer never makes this
// node ask another owner: at most two hops.
//
// Concurrent requests for one missing chunk share one upstream fetch (a
// flight) and stream its bytes as they arrive; the flight belongs to the
// Fetcher, not to a viewer, so it completes into the cache when viewers
// leave. A flight fails over to the next source mid-chunk with a Range
// request, and hashes the bytes as they come: the last byte is held back
// from every viewer until the whole chunk matches its digest, so no viewer
// ever receives a complete corrupt chunk.
type Fetcher struct {
	cfg    FetcherConfig
	local  *ChunkStore
	cache  ChunkCache
	peers  Peers
	log    *slog.Logger
	client *http.Client

	ctx    context.Context
	cancel context.CancelFunc
	wg     sync.WaitGroup

	mu        sync.Mutex
	closed    bool
	flights   map[Digest]*flight
	est       map[string]*peerEstimate
	served    map[string]uint64 // bytes by source
	upstream  map[string]uint64 // requests by "peer"/"origin"/"store"
	integrity map[string]uint64
	hits      uint64
	misses    uint64
	authSeen  map[string]bool // peers whose refused request was logged
}

// NewFetcher makes a Fetcher. local is the node's own store (titles it
// packaged or pinned; may be nil); cache keeps what is fetched.
func NewFetcher(cfg FetcherConfig, local *ChunkStore, cache ChunkCache, peers Peers, log *slog.Logger) *Fetcher {
	if log == nil {
		log = slog.Default()
	}
	if cfg.Owners <= 0 {
		cfg.Owners = 2
	}
	if cfg.StallTimeout <= 0 {
		cfg.StallTimeout = 2 * time.Second
	}
	if cfg.ConnectTimeout <= 0 {
		cfg.ConnectTimeout = 2 * time.Second
	}
	// One client for every peer: chunk requests are many and small, so
	// connections are kept alive, many per host (a flash crowd on many
	// chunks runs many flights to the same owner). No total timeout: a
	// chunk may take long on a slow link; the stall timer fails a source
	// that stops sending instead.
	tr := &http.Transport{
		Proxy:                 nil,
		DialContext:           (&net.Dialer{Timeout: cfg.ConnectTimeout, KeepAlive: 15 * time.Second}).DialContext,
		MaxIdleConns:          1024,
		MaxIdleConnsPerHost:   128,
		IdleConnTimeout:       90 * time.Second,
		ResponseHeaderTimeout: cfg.StallTimeout,
		// Chunks are compressed media; the exact bytes and length count.
		DisableCompression: true,
		TLSClientConfig:    cfg.TLS,
	}
	ctx, cancel := context.WithCancel(context.Background())
	return &Fetcher{
		cfg: cfg, local: local, cache: cache, peers: peers,
		log:       log.With("component", "vod-fetch"),
		client:    &http.Client{Transport: tr},
		ctx:       ctx,
		cancel:    cancel,
		flights:   map[Digest]*flight{},
		est:       map[string]*peerEstimate{},
		served:    map[string]uint64{},
		upstream:  map[string]uint64{},
		integrity: map[string]uint64{},
		authSeen:  map[string]bool{},
	}
}

// Close cancels the flights in progress (their viewers are cut off) and
// waits for their goroutines. Later misses answer 503.
func (f *Fetcher) Close() error {
	f.mu.Lock()
	f.closed = true
	f.mu.Unlock()
	f.cancel()
	f.wg.Wait()
	f.client.CloseIdleConnections()
	return nil
}

// ServeChunk answers a viewer's GET or HEAD for chunk d, with the headers
// of ChunkStore.ServeChunk: from the node's own store, else from the
// cache, else through a flight that fetches it from the cluster (origin is
// the node that packaged it). A whole-chunk GET streams the bytes as they
// arrive; a Range or HEAD request waits for the verified chunk and is then
// answered by http.ServeContent (206, 416).
//
// When a flight finds its bytes corrupt after some were sent to this
// viewer, the response is cut (panic(http.ErrAbortHandler): the
// connection is reset, the player sees a failed segment and retries,
// which is then served from the good copy). Sending the rest of a good
// copy instead would splice two bodies; an error status is impossible
// after the headers. A viewer that had received nothing just gets the
// good copy.
func (f *Fetcher) ServeChunk(w http.ResponseWriter, r *http.Request, d Digest, contentType string, origin string) {
	if r.Method != http.MethodGet && r.Method != http.MethodHead {
		w.Header().Set("Allow", "GET, HEAD")
		http.Error(w, "method not allowed", http.StatusMethodNotAllowed)
		return
	}
	if f.serveHeld(w, r, d, contentType) {
		return
	}
	f.count(func() { f.misses++ })
	if etagMatches(r.Header.Get("If-None-Match"), d) {
		// The ETag is the digest: the client holds these bytes already.
		setChunkHeaders(w.Header(), d, contentType)
		w.WriteHeader(http.StatusNotModified)
		return
	}
	fl, err := f.flightFor(d, origin, false, false)
	if err != nil {
		f.refuse(w, d, err)
		return
	}
	f.serveFlight(w, r, fl, contentType)
}

// ServePeer answers GET /internal/vod/chunks/{hex}[?fill=1[&origin=<node>]]
// from another node: it checks the Gradient-Peer signature (401), serves
// the chunk when this node holds it, and on a miss fetches it from the
// origin node, then the origin store, only when asked to fill (this node
// is one of the chunk's first owners); otherwise it answers 404 at once so
// that the asker tries its next source. A fill never asks another owner:
// at most two hops.
func (f *Fetcher) ServePeer(w http.ResponseWriter, r *http.Request) {
	if r.Method != http.MethodGet && r.Method != http.MethodHead {
		w.Header().Set("Allow", "GET, HEAD")
		http.Error(w, "method not allowed", http.StatusMethodNotAllowed)
		return
	}
	node, err := VerifyPeerRequest(r, f.cfg.Secret, time.Now())
	if err != nil {
		f.logRefused(r, node, err)
		w.Header().Set("WWW-Authenticate", PeerAuthScheme)
		http.Error(w, "unauthorized", http.StatusUnauthorized)
		return
	}
	d, err := ParseDigest(r.PathValue("hex"))
	if err != nil {
		http.Error(w, "bad chunk digest", http.StatusNotFound)
		return
	}
	const ct = "application/octet-stream"
	if f.serveHeld(w, r, d, ct) {
		return
	}
	q := r.URL.Query()
	if q.Get("fill") != "1" {
		http.Error(w, "chunk not held here", http.StatusNotFound)
		return
	}
	f.count(func() { f.misses++ })
	fl, err := f.flightFor(d, q.Get("origin"), true, false)
	if err != nil {
		if !errors.Is(err, errNoSource) && !errors.Is(err, errBusy) {
			f.log.Debug("peer fill refused", "digest", d.String(), "peer", node, "err", err)
		}
		f.refuse(w, d, err)
		return
	}
	f.serveFlight(w, r, fl, ct)
}

// Prefetch starts fetching d into the cache without a viewer and returns
// at once; it does nothing when the chunk is held or already in flight.
func (f *Fetcher) Prefetch(d Digest, origin string) {
	if f.holds(d) {
		return
	}
	if _, err := f.flightFor(d, origin, false, true); err != nil && !errors.Is(err, errNoSource) {
		f.log.Debug("prefetch not started", "digest", d.String(), "err", err)
	}
}

var (
	errNoSource = errors.New("no live source for the chunk")
	errBusy     = errors.New("chunk is being fetched from another owner")
	errClosed   = errors.New("fetcher closed")
)

// refuse answers a miss that cannot be fetched.
func (f *Fetcher) refuse(w http.ResponseWriter, d Digest, err error) {
	switch {
	case errors.Is(err, errClosed):
		http.Error(w, "shutting down", http.StatusServiceUnavailable)
	default:
		// errNoSource, errBusy: the asker moves on to its next source.
		http.Error(w, "chunk not found", http.StatusNotFound)
	}
}

// logRefused logs a refused peer request once per peer address (not per
// claimed name, which anyone can vary), so that a misconfigured peer is
// seen without flooding the log; later refusals are logged at debug.
func (f *Fetcher) logRefused(r *http.Request, node string, err error) {
	key, _, serr := net.SplitHostPort(r.RemoteAddr)
	if serr != nil {
		key = r.RemoteAddr
	}
	f.mu.Lock()
	first := !f.authSeen[key] && len(f.authSeen) < 4096
	if first {
		f.authSeen[key] = true
	}
	f.mu.Unlock()
	if first {
		f.log.Warn("peer chunk request refused (logged once per peer address)", "peer", node, "addr", r.RemoteAddr, "path", r.URL.Path, "err", err)
	} else {
		f.log.Debug("peer chunk request refused", "peer", node, "addr", r.RemoteAddr, "err", err)
	}
}

// holds reports whether the node's store or cache has d. A cache with a
// Has method (ChunkStore's does not hash the file) is asked that.
func (f *Fetcher) holds(d Digest) bool {
	if f.local != nil && f.local.Has(d) {
		return true
	}
	if h, ok := f.cache.(interface{ Has(Digest) bool }); ok {
		return h.Has(d)
	}
	if rs, _, err := f.cache.Open(d); err == nil {
		rs.Close()
		return true
	}
	return false
}

// serveHeld serves d from the node's store or cache and reports whether it
// did; a chunk either does not hold (or holds corrupt, which the store
// logs and drops) is a miss.
func (f *Fetcher) serveHeld(w http.ResponseWriter, r *http.Request, d Digest, contentType string) bool {
	src := "local"
	var rs io.ReadSeekCloser
	var err error = ErrChunkNotFound
	if f.local != nil {
		rs, _, err = f.local.Open(d)
	}
	if err != nil {
		src = "cache"
		rs, _, err = f.cache.Open(d)
	}
	if err != nil {
		if !errors.Is(err, ErrChunkNotFound) && !errors.Is(err, ErrChunkCorrupt) {
			f.log.Warn("chunk cache unreadable: fetching instead", "digest", d.String(), "err", err)
		}
		return false
	}
	defer rs.Close()
	f.count(func() { f.hits++ })
	setChunkHeaders(w.Header(), d, contentType)
	cw := &countingWriter{ResponseWriter: w}
	http.ServeContent(cw, r, "", time.Time{}, rs)
	f.count(func() { f.served[src] += uint64(cw.n) })
	return true
}

// setChunkHeaders sets the headers of every chunk answer (ChunkStore's
// and the fetcher's): the digest as ETag and Repr-Digest, immutable
// caching, ranges.
func setChunkHeaders(h http.Header, d Digest, contentType string) {
	if contentType == "" {
		contentType = "application/octet-stream"
	}
	h.Set("Content-Type", contentType)
	h.Set("ETag", `"`+d.String()+`"`)
	h.Set("Repr-Digest", d.ReprDigest())
	h.Set("Cache-Control", chunkCacheControl)
	h.Set("Accept-Ranges", "bytes")
	h.Set("X-Content-Type-Options", "nosniff")
}

// etagMatches reports whether an If-None-Match or ETag value names d
// ("*" does not: a chunk being fetched may turn out to exist nowhere).
func etagMatches(v string, d Digest) bool {
	if v == "" {
		return false
	}
	want := `"` + d.String() + `"`
	for _, t := range strings.Split(v, ",") {
		t = strings.TrimPrefix(strings.TrimSpace(t), "W/")
		if t == want {
			return true
		}
	}
	return false
}

// countingWriter counts the body bytes written.
type countingWriter struct {
	http.ResponseWriter
	n int64
}

func (c *countingWriter) Write(p []byte) (int, error) {
	n, err := c.ResponseWriter.Write(p)
	c.n += int64(n)
	return n, err
}

// Unwrap lets http.ResponseController reach the connection (Flush).
func (c *countingWriter) Unwrap() http.ResponseWriter { return c.ResponseWriter }

// count runs a counter update under the fetcher's lock.
func (f *Fetcher) count(update func()) {
	f.mu.Lock()
	update()
	f.mu.Unlock()
}
