package vod

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/netip"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

// Every node of a cluster is a chunk cache. A chunk the node's own store
// holds (titles packaged here, and chunks pinned here as a replica) is
// served from it; any other goes through the Fetcher: the node's DiskCache,
// else the chunk's rendezvous owners, else the title's origin, one
// collapsed and verified fetch however many viewers ask (fetch.go). While a
// viewer plays a rendition, the next PrefetchSegments segments are fetched
// ahead of it.
//
// Replicas: every chunk of a ready title is pinned, in the store, on the
// Replicas-1 first rendezvous owners of the chunk among the alive members
// other than the title's origin (pinner), so that the origin's death
// leaves every title playable. When the membership changes, the new owners
// pin what they should hold.

// startChunks opens the cache and the fetcher when the node is in a
// cluster (Peers set).
func (s *Service) startChunks() error {
	if s.Peers == nil {
		return nil
	}
	dir := s.cfg.CacheDir
	if dir == "" {
		dir = filepath.Join(s.dir, "cache")
	}
	var err error
	if s.cache, err = NewDiskCache(DiskCacheConfig{Dir: dir, MaxBytes: s.cfg.CacheSize, MemoryBytes: s.cfg.MemoryCache}, s.log); err != nil {
		return err
	}
	s.allow, _ = parseNetworks(s.cfg.AllowNetworks) // checked by Validate
	s.fetch = NewFetcher(FetcherConfig{Secret: s.Secret, TLS: s.PeerTLS, Owners: max(1, s.cfg.Replicas), Pinned: max(0, s.cfg.Replicas-1), Parent: strings.TrimRight(s.cfg.Parent, "/"), Origin: s.origin}, s.store, s.cache, s.Peers, s.log)
	s.manifests = newManifestCache(64)
	if s.FetchManifest == nil {
		s.FetchManifest = s.fetchSmall
	}
	s.pinWake = make(chan struct{}, 1)
	s.wg.Add(1)
	go s.pinner()
	s.startFill()
	return nil
}

// closeChunks stops the fetcher and closes the cache, after the pinner
// stopped (s.wg).
func (s *Service) closeChunks() []error {
	var errs []error
	if s.fetch != nil {
		errs = append(errs, s.fetch.Close())
	}
	if s.cache != nil {
		errs = append(errs, s.cache.Close())
	}
	return errs
}

// Fetcher is the node's cluster chunk fetcher, nil on a node alone.
func (s *Service) Fetcher() *Fetcher { return s.fetch }

// MembersChanged tells the service that the cluster's members or titles
// changed: the chunks this node should pin may have changed.
func (s *Service) MembersChanged() { s.wakePinner() }

// serveDigest answers a request for chunk d: from the store, else (in a
// cluster) through the fetcher.
func (s *Service) serveDigest(w http.ResponseWriter, r *http.Request, d Digest, contentType string) {
	if s.fetch == nil {
		s.store.ServeChunk(w, r, d, contentType)
		return
	}
	// In a cluster every answer goes through the fetcher, held or not, so
	// that its counters (bytes by source, hit ratios) cover all of them.
	if s.store.Has(d) {
		s.fetch.ServeChunk(w, r, d, contentType, "")
		return
	}
	if !s.mayFill(r) && !s.cache.Has(d) {
		http.Error(w, "chunk not cached here", http.StatusNotFound)
		return
	}
	origin, next := s.chunkPlace(d)
	s.fetch.ServeChunk(w, r, d, contentType, origin)
	for _, n := range next {
		if !s.store.Has(n) {
			s.fetch.Prefetch(n, origin)
		}
	}
}

// ServePeer answers another node's chunk request (GET
// /internal/vod/chunks/{hex}).
func (s *Service) ServePeer(w http.ResponseWriter, r *http.Request) {
	if s.fetch == nil {
		http.Error(w, "this node is not in a cluster", http.StatusNotFound)
		return
	}
	s.fetch.ServePeer(w, r)
}

// mayFill reports whether the viewer's network may cause a cache fill.
func (s *Service) mayFill(r *http.Request) bool {
	if len(s.allow) == 0 {
		return true
	}
	host, _, err := net.SplitHostPort(r.RemoteAddr)
	if err != nil {
		host = r.RemoteAddr
	}
	a, err := netip.ParseAddr(host)
	if err != nil {
		return false
	}
	a = a.Unmap()
	for _, p := range s.allow {
		if p.Contains(a) {
			return true
		}
	}
	return false
}

func parseNetworks(cidrs []string) ([]netip.Prefix, error) {
	var out []netip.Prefix
	for _, c := range cidrs {
		p, err := netip.ParsePrefix(c)
		if err != nil {
			return nil, fmt.Errorf("%q is not a CIDR: %w", c, err)
		}
		out = append(out, p.Masked())
	}
	return out, nil
}

// chunkPlace finds the title d belongs to: its origin node, and the next
// segments of d's rendition to prefetch.
func (s *Service) chunkPlace(d Digest) (origin string, next []Digest) {
	ids, err := s.cat.TitlesWithChunk(d)
	if err != nil || len(ids) == 0 {
		return "", nil
	}
	t, ok := s.manifests.get(ids[0])
	if !ok {
		if t, err = s.cat.Get(ids[0]); err != nil {
			return "", nil
		}
		s.manifests.put(t)
	}
	if t.Manifest == nil || s.cfg.PrefetchSegments <= 0 {
		return t.Origin, nil
	}
	for _, rd := range t.Manifest.Renditions {
		for i, c := range rd.Segments {
			if c.Digest == d {
				for _, n := range rd.Segments[i+1 : min(len(rd.Segments), i+1+s.cfg.PrefetchSegments)] {
					if prefetchPays(s.cfg.CacheSize, n.Size) {
						next = append(next, n.Digest)
					}
				}
				return t.Origin, next
			}
		}
	}
	return t.Origin, nil
}

// minPrefetchChunks is how many chunks of a size a cache must hold for
// prefetching that size to pay: in a smaller one the admission policy
// (its window is 1 % of the bytes) evicts a prefetched chunk before the
// player reaches it, and every prefetch is upload spent for nothing (the
// cluster offload benchmark, ~30 chunks per cache: offload -5 % with
// prefetch, 34 % without).
const minPrefetchChunks = 200

func prefetchPays(cacheBytes, chunkBytes int64) bool {
	return chunkBytes <= 0 || cacheBytes/chunkBytes >= minPrefetchChunks
}

// manifestCache keeps the catalog entries (with manifests) of the titles
// whose chunks were asked for lately, so that a chunk request does not
// parse its title's manifest.
type manifestCache struct {
	mu    sync.Mutex
	max   int
	order []string
	byID  map[string]Title
}

func newManifestCache(n int) *manifestCache { return &manifestCache{max: n, byID: map[string]Title{}} }

func (c *manifestCache) get(id string) (Title, bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	t, ok := c.byID[id]
	return t, ok
}

func (c *manifestCache) put(t Title) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if _, ok := c.byID[t.ID]; !ok {
		c.order = append(c.order, t.ID)
		if len(c.order) > c.max {
			delete(c.byID, c.order[0])
			c.order = c.order[1:]
		}
	}
	c.byID[t.ID] = t
}

func (c *manifestCache) drop(id string) {
	c.mu.Lock()
	defer c.mu.Unlock()
	delete(c.byID, id)
	c.order = slices.DeleteFunc(c.order, func(x string) bool { return x == id })
}

func (s *Service) wakePinner() {
	if s.pinWake == nil {
		return
	}
	select {
	case s.pinWake <- struct{}{}:
	default:
	}
}

// replicaDamaged handles a chunk of title id found corrupt in the store
// when the title is another node's: the copy was a replica pinned here,
// and the title is whole on its origin and other owners. The title stays
// as its origin says (failing it here would make it unplayable through
// this node, and the pinner skip it, until its origin's entry changes);
// the pinner is woken to pin the chunk again, verified. It reports
// whether id is such a title.
func (s *Service) replicaDamaged(id string, d Digest) bool {
	t, err := s.cat.Get(id)
	if err != nil || t.Origin == "" {
		return false
	}
	s.log.Warn("replica chunk corrupt on disk: pinning it again from the cluster", "id", id, "origin", t.Origin, "digest", d.String())
	s.wakePinner()
	return true
}

// repairOwn starts the repair of a chunk of a title packaged here (this
// node is its origin) that was found corrupt in the store, from the
// cluster: this node's cache, else the chunk's owners (a pinned replica,
// or a cache that holds it), in rendezvous order. The title stays ready
// meanwhile (a viewer's request is served through the fetcher, from the
// same owners); only if no node can send the chunk is the title marked
// failed. It reports false when this node is not in a cluster, or the
// repair of d is already running.
func (s *Service) repairOwn(id string, d Digest) bool {
	if s.fetch == nil || s.Peers == nil || s.ctx.Err() != nil {
		return false
	}
	t, err := s.cat.Get(id)
	if err != nil || t.Origin != "" {
		return false
	}
	s.repairMu.Lock()
	if s.repairing == nil {
		s.repairing = map[Digest]bool{}
	}
	if s.repairing[d] {
		s.repairMu.Unlock()
		return true
	}
	s.repairing[d] = true
	s.repairMu.Unlock()
	s.log.Warn("chunk of a local title corrupt on disk: repairing it from the cluster", "id", id, "digest", d.String())
	s.wg.Add(1)
	go func() {
		defer s.wg.Done()
		defer func() {
			s.repairMu.Lock()
			delete(s.repairing, d)
			s.repairMu.Unlock()
		}()
		self := s.Peers.Self()
		byName := map[string]Peer{}
		var names []string
		for _, p := range s.Peers.Alive() {
			if p.Name != "" && p.Name != self {
				if _, dup := byName[p.Name]; !dup {
					byName[p.Name] = p
					names = append(names, p.Name)
				}
			}
		}
		err := s.pinChunk(d, "", Owners(d, names), byName)
		if err == nil {
			s.log.Info("corrupt chunk repaired from the cluster", "id", id, "digest", d.String())
			return
		}
		if s.ctx.Err() != nil {
			return
		}
		s.log.Error("title damaged: a corrupt chunk no node could send again", "id", id, "digest", d.String(), "err", err)
		if err := s.cat.SetFailed(id, "damaged: chunk "+d.String()+" no longer matches its digest on disk, and no node holds it"); err != nil {
			s.log.Error("damaged title not marked", "id", id, "err", err)
		}
	}()
	return true
}

// pinRetry is how often the pinner looks again without being woken (a
// source that failed, a title whose manifest came late).
const pinRetry = 30 * time.Second

// pinner keeps this node's share of the replicas in its store.
func (s *Service) pinner() {
	defer s.wg.Done()
	t := time.NewTicker(pinRetry)
	defer t.Stop()
	for {
		s.pinPass()
		select {
		case <-s.ctx.Done():
			return
		case <-s.pinWake:
		case <-t.C:
		}
	}
}

// pinPass pins every chunk this node should hold and does not.
func (s *Service) pinPass() {
	if s.cfg.Replicas < 2 {
		return
	}
	titles, err := s.cat.List("")
	if err != nil {
		s.log.Warn("pin: catalog unreadable", "err", err)
		return
	}
	self := s.Peers.Self()
	alive := s.Peers.Alive()
	byName := map[string]Peer{}
	for _, p := range alive {
		byName[p.Name] = p
	}
	pinned, failed := 0, 0
	for _, tl := range titles {
		if tl.Origin == "" || tl.State != StateReady || s.ctx.Err() != nil {
			continue
		}
		t, err := s.cat.Get(tl.ID)
		if err != nil || t.Manifest == nil {
			continue
		}
		var others []string
		for _, p := range alive {
			if p.Name != t.Origin {
				others = append(others, p.Name)
			}
		}
		ds := manifestDigests(t.Manifest, t.Poster)
		if t.ManifestDigest != (Digest{}) {
			ds = append(ds, t.ManifestDigest)
		}
		for _, d := range ds {
			owners := Owners(d, others)
			if !slices.Contains(owners[:min(len(owners), s.cfg.Replicas-1)], self) || s.store.Has(d) {
				continue
			}
			if err := s.pinChunk(d, t.Origin, owners, byName); err != nil {
				failed++
				s.log.Debug("pin failed", "title", t.ID, "digest", d.String(), "err", err)
				continue
			}
			pinned++
		}
	}
	if pinned > 0 || failed > 0 {
		s.log.Info("pinned replica chunks", "pinned", pinned, "failed", failed)
	}
}

// pinChunk copies d into the store: from this node's cache when it has
// it, else from the origin, else from the chunk's other owners.
func (s *Service) pinChunk(d Digest, origin string, owners []string, peers map[string]Peer) error {
	if rs, _, err := s.cache.Open(d); err == nil {
		_, err := s.putVerified(d, rs)
		rs.Close()
		if err == nil {
			return nil
		}
	}
	var errs []error
	for _, name := range append([]string{origin}, owners...) {
		p, ok := peers[name]
		if !ok || name == s.Peers.Self() {
			continue
		}
		if err := s.pinFrom(d, p, origin); err != nil {
			errs = append(errs, err)
			continue
		}
		return nil
	}
	if len(errs) == 0 {
		return errors.New("no source alive")
	}
	return errors.Join(errs...)
}

func (s *Service) pinFrom(d Digest, p Peer, origin string) error {
	ctx, cancel := context.WithTimeout(s.ctx, time.Minute)
	defer cancel()
	body, err := s.peerGet(ctx, d, p, origin)
	if err != nil {
		return err
	}
	defer body.Close()
	_, err = s.putVerified(d, io.LimitReader(body, maxPinBytes))
	return err
}

// peerClient is the client for requests to peers: the fetcher's (its
// pooled keep-alive transport, its timeouts, overlay.peer_ca), not the
// process-wide default.
func (s *Service) peerClient() *http.Client {
	if s.fetch != nil {
		return s.fetch.client
	}
	return &http.Client{Transport: &http.Transport{TLSClientConfig: s.PeerTLS}}
}

// peerGet asks peer p for chunk d, signed with the cluster secret (the
// peer serves what it holds: its store or cache).
func (s *Service) peerGet(ctx context.Context, d Digest, p Peer, origin string) (io.ReadCloser, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, p.HTTPBase+"/internal/vod/chunks/"+d.String()+"?origin="+origin, nil)
	if err != nil {
		return nil, err
	}
	SignPeerRequest(req, s.Secret, s.Peers.Self())
	resp, err := s.peerClient().Do(req)
	if err != nil {
		return nil, fmt.Errorf("chunk %s from %s: %w", d, p.Name, err)
	}
	if resp.StatusCode != http.StatusOK {
		resp.Body.Close()
		return nil, fmt.Errorf("chunk %s from %s: %s", d, p.Name, resp.Status)
	}
	return resp.Body, nil
}

// fetchSmall gets a small chunk (a title's manifest) from the cluster:
// the origin, else the chunk's owners (replicas), else any member. The
// caller verifies the bytes against d.
func (s *Service) fetchSmall(ctx context.Context, d Digest, origin string) ([]byte, error) {
	alive := s.Peers.Alive()
	byName := map[string]Peer{}
	var names []string
	for _, p := range alive {
		byName[p.Name] = p
		names = append(names, p.Name)
	}
	var errs []error
	for _, name := range append([]string{origin}, Owners(d, names)...) {
		p, ok := byName[name]
		if !ok || name == s.Peers.Self() {
			continue
		}
		body, err := s.peerGet(ctx, d, p, origin)
		if err != nil {
			errs = append(errs, err)
			continue
		}
		b, err := io.ReadAll(io.LimitReader(body, maxSmallChunk+1))
		body.Close()
		switch {
		case err != nil:
			errs = append(errs, err)
		case len(b) > maxSmallChunk:
			errs = append(errs, fmt.Errorf("chunk %s from %s: over %d bytes", d, name, maxSmallChunk))
		default:
			return b, nil
		}
	}
	if len(errs) == 0 {
		return nil, fmt.Errorf("chunk %s: no member alive holds it", d)
	}
	return nil, errors.Join(errs...)
}

// maxSmallChunk bounds a manifest fetched from a peer (a few hundred bytes
// per minute of a rendition).
const maxSmallChunk = 16 << 20

// maxPinBytes bounds a pinned chunk's size: a peer cannot fill the disk
// with one answer.
const maxPinBytes = 512 << 20

// putVerified stores r in the store if its bytes hash to d.
func (s *Service) putVerified(d Digest, r io.Reader) (Chunk, error) {
	c, err := s.store.Put(r)
	if err != nil {
		return c, err
	}
	if c.Digest != d {
		// Bytes that are not d's: keep them only if some title names them.
		s.dropChunks([]Digest{c.Digest})
		return c, fmt.Errorf("chunk %s: got bytes of %s", d, c.Digest)
	}
	return c, nil
}

// dropCached removes the chunks of a removed title from the cache.
func (s *Service) dropCached(ds []Digest) {
	if s.cache == nil {
		return
	}
	for _, d := range ds {
		if err := s.cache.Remove(d); err != nil && !errors.Is(err, ErrChunkNotFound) {
			s.log.Warn("cached chunk not removed", "digest", d.String(), "err", err)
		}
	}
}

// CacheStatus is GET /api/v1/vod/cache.
type CacheStatus struct {
	// Cluster is false on a node alone (no cache, every chunk is local).
	Cluster bool `json:"cluster"`
	// Cache is the byte-bounded cache of other nodes' chunks.
	Cache CacheStats `json:"cache"`
	// HitRatio and ByteHitRatio: requests (bytes) served without an
	// upstream fetch, over all requests (bytes) the fetcher answered.
	HitRatio     float64    `json:"hit_ratio"`
	ByteHitRatio float64    `json:"byte_hit_ratio"`
	Fetch        FetchStats `json:"fetch"`
	// Fill is what the popularity-aware fill planner did (fill.go).
	Fill FillStatus `json:"fill"`
}

func (s *Service) cacheStatus() CacheStatus {
	st := CacheStatus{}
	if s.fetch == nil {
		return st
	}
	st.Cluster = true
	st.Fill = s.fillStatus()
	st.Cache = s.cache.Stats()
	st.Fetch = s.fetch.Stats()
	if n := st.Fetch.Hits + st.Fetch.Misses; n > 0 {
		st.HitRatio = float64(st.Fetch.Hits) / float64(n)
	}
	var all, up uint64
	for src, b := range st.Fetch.BytesServed {
		all += b
		if src == "peer" || src == "origin" {
			up += b
		}
	}
	if all > 0 {
		st.ByteHitRatio = 1 - float64(up)/float64(all)
	}
	return st
}

func (s *Service) serveCacheStatus(w http.ResponseWriter, r *http.Request) {
	writeJSON(w, http.StatusOK, s.cacheStatus())
}

// Collector exports the cluster chunk cache's metrics (gradient_vod_…):
// the fetcher's counters and the cache's bytes. It may be registered
// before Start; a node alone exports nothing.
func (s *Service) Collector() prometheus.Collector {
	return &serviceCollector{s: s, fc: newFetchCollector(nil),
		bytes:  prometheus.NewDesc("gradient_vod_cache_bytes", "Bytes of other nodes' chunks in this node's VoD cache.", nil, nil),
		chunks: prometheus.NewDesc("gradient_vod_cache_chunks", "Chunks in this node's VoD cache.", nil, nil),
		fill:   prometheus.NewDesc("gradient_vod_fill_bytes_total", "Bytes the popularity-aware fill fetched into this node's VoD cache.", nil, nil),
	}
}

type serviceCollector struct {
	s             *Service
	fc            *fetchCollector // its descriptions; Collect uses the started fetcher
	bytes, chunks *prometheus.Desc
	fill          *prometheus.Desc
}

func (c *serviceCollector) Describe(ch chan<- *prometheus.Desc) {
	c.fc.Describe(ch)
	ch <- c.bytes
	ch <- c.chunks
	ch <- c.fill
}

func (c *serviceCollector) Collect(ch chan<- prometheus.Metric) {
	s := c.s
	s.mu.Lock()
	started := s.started
	s.mu.Unlock()
	if !started || s.fetch == nil {
		return
	}
	fc := *c.fc
	fc.f = s.fetch
	fc.Collect(ch)
	st := s.cache.Stats()
	ch <- prometheus.MustNewConstMetric(c.bytes, prometheus.GaugeValue, float64(st.Bytes))
	ch <- prometheus.MustNewConstMetric(c.chunks, prometheus.GaugeValue, float64(st.Chunks))
	ch <- prometheus.MustNewConstMetric(c.fill, prometheus.CounterValue, float64(s.fillStatus().BytesFetched))
}
