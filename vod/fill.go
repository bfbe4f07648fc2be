package vod

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"math"
	"net/http"
	"slices"
	"strconv"
	"sync"
	"time"
)

// Popularity-aware fill (after CalVoD): every node of a cluster is a cache
// of the other nodes' titles, and between viewers' requests it fills that
// cache ahead of them with what its viewers are most likely to ask for.
//
// What it optimises. A cache that holds a byte earns a hit for every
// request of that byte; filling it with the bytes of highest expected
// request rate *at that cache* maximises the expected hit bytes, and so
// minimises what the node fetches from the cluster while viewers wait.
// Viewers watch prefixes: every view reads a title's first minutes and
// fewer and fewer read on (drop-off), so a title's first chunks are its
// most-requested bytes, and every byte of a title's prefix is requested
// about once per view. The expected hit bytes per byte of a prefix are
// then the title's expected view rate at this node, which is the score
// titles are ranked by.
//
// The score of a ready remote title t (planFill, fillScores):
//
//	score(t) = ½·local(t)/Σ local + ½·views(t)/Σ views
//
// local(t) is the views of t at this node (a viewer's first master
// playlist fetch, see viewCounter), exponentially decayed with a half-life
// of fillHalfLife: what this node's viewers ask for now. views(t) is the
// cluster-wide count of views gossiped with the title's entry: every node
// reports the views it served to the title's origin (POST
// /internal/vod/views/…), which adds them to its catalog and re-announces
// the entry at most once per vod.fill_interval when its count moved. The
// cluster-wide share is the prior for a node whose viewers have not asked
// yet (a new node, a quiet hour); the local share corrects it for what
// this node's audience actually watches. Each sum runs over the
// candidates, and a share with a zero sum is zero: a title nobody watched
// anywhere scores 0 and is never filled, so the fill never spends the
// cluster's bandwidth on it.
//
// The plan (every vod.fill_interval): the titles by score, highest first;
// for each, the first vod.fill_prefix of its lowest rendition (init
// section and the segments that start within the prefix), then, in a
// second round over the same order, the same prefix of its highest
// rendition. The lowest first because it is the cheapest prefix, so the
// share covers the most titles, and it is where a player starting cold or
// on a poor link begins; the highest (usually the source) with what is
// left, for the viewers with the bandwidth for it. Chunks the node holds
// are skipped: those in its store (its own titles and pinned replicas)
// cost the share nothing, those already in the cache count toward it. The
// plan stops taking a rendition's prefix at the first chunk that would
// take the planned bytes over vod.fill_cache_share of vod.cache_size, so
// that viewer-driven chunks keep the rest of the cache (and takes none of
// it when not even its first segment fits: an init section alone plays
// nothing).
//
// The fetch: the planned chunks in order through Fetcher.Prefetch (the
// same verified, collapsed flights as a viewer's miss), paced by a token
// bucket of vod.fill_mbps, kept from pass to pass, so that the bytes the
// fill starts over any span never exceed that rate plus one second's
// burst. A pass stops at the next interval; what it did not start is
// planned again.
//
// Pinned chunks are never evicted for the fill: they live in the node's
// store, which only a title's removal empties, and the fill only ever
// writes to the cache, whose evictions touch nothing else.

// fillHalfLife is the half-life of a node's local view counts.
const fillHalfLife = 10 * time.Minute

// maxViewReport bounds the views one report adds at an origin.
const maxViewReport = 1000

// fillTitle is what the planner knows of a ready remote title.
type fillTitle struct {
	ID, Origin string
	// Views is the cluster-wide count gossiped with the entry; Local the
	// decayed count of views at this node.
	Views    int64
	Local    float64
	Manifest *Manifest
}

// fillChunk is a chunk the plan fetches.
type fillChunk struct {
	Digest Digest
	Size   int64
	Origin string
}

// fillPlan is what one planning pass decided.
type fillPlan struct {
	// Titles are the ids of the titles with a chunk in the plan, by score.
	Titles []string
	// Fetch are the chunks to fetch, in order; FetchBytes their bytes.
	Fetch      []fillChunk
	FetchBytes int64
	// CachedBytes are the planned chunks' bytes already in the cache.
	CachedBytes int64
}

// fillScores are the titles' scores (see the package's fill comment), in
// the order of ts.
func fillScores(ts []fillTitle) []float64 {
	var sumLocal, sumViews float64
	for _, t := range ts {
		sumLocal += max(0, t.Local)
		sumViews += float64(max(0, t.Views))
	}
	out := make([]float64, len(ts))
	for i, t := range ts {
		if sumLocal > 0 {
			out[i] += 0.5 * max(0, t.Local) / sumLocal
		}
		if sumViews > 0 {
			out[i] += 0.5 * float64(max(0, t.Views)) / sumViews
		}
	}
	return out
}

// prefixChunks are a rendition's init section and the segments that start
// before prefix.
func prefixChunks(rd *Rendition, prefix time.Duration) []Chunk {
	out := []Chunk{rd.Init}
	for _, c := range rd.Segments {
		if c.Start >= prefix {
			break
		}
		out = append(out, c)
	}
	return out
}

// planFill plans a fill (see the package's fill comment): ts are the
// candidates, prefix the media time of each title to hold, share the bytes
// of the cache the fill may use; held tells where the node holds a chunk.
func planFill(ts []fillTitle, prefix time.Duration, share int64, held func(Digest) (store, cache bool)) fillPlan {
	scores := fillScores(ts)
	order := make([]int, 0, len(ts))
	for i, t := range ts {
		if scores[i] > 0 && t.Manifest != nil && len(t.Manifest.Renditions) > 0 {
			order = append(order, i)
		}
	}
	slices.SortStableFunc(order, func(a, b int) int {
		return cmp.Or(cmp.Compare(scores[b], scores[a]), cmp.Compare(ts[a].ID, ts[b].ID))
	})
	var p fillPlan
	seen := map[Digest]bool{}
	planned := map[string]bool{}
	used := int64(0)
	for round := range 2 {
		for _, i := range order {
			t := ts[i]
			rd := lowestRendition(t.Manifest)
			if round == 1 {
				if rd = highestRendition(t.Manifest); rd == lowestRendition(t.Manifest) {
					continue
				}
			}
			// The chunks of the prefix that fit, up to the first that
			// does not; an init section alone plays nothing and is left.
			type take struct {
				c      Chunk
				cached bool
			}
			var takes []take
			size, segments := int64(0), 0
			for j, c := range prefixChunks(rd, prefix) {
				if seen[c.Digest] {
					continue
				}
				inStore, inCache := held(c.Digest)
				if inStore {
					continue
				}
				if used+size+c.Size > share {
					break
				}
				size += c.Size
				takes = append(takes, take{c, inCache})
				if j > 0 {
					segments++
				}
			}
			if segments == 0 {
				continue
			}
			used += size
			if !planned[t.ID] {
				planned[t.ID] = true
				p.Titles = append(p.Titles, t.ID)
			}
			for _, x := range takes {
				seen[x.c.Digest] = true
				if x.cached {
					p.CachedBytes += x.c.Size
					continue
				}
				p.Fetch = append(p.Fetch, fillChunk{Digest: x.c.Digest, Size: x.c.Size, Origin: t.Origin})
				p.FetchBytes += x.c.Size
			}
		}
	}
	return p
}

// lowestRendition is the rendition of the lowest bitrate (the first of
// equals).
func lowestRendition(m *Manifest) *Rendition {
	lo := &m.Renditions[0]
	for i := range m.Renditions {
		if m.Renditions[i].Kbps < lo.Kbps {
			lo = &m.Renditions[i]
		}
	}
	return lo
}

// highestRendition is the rendition of the highest bitrate (the first of
// equals).
func highestRendition(m *Manifest) *Rendition {
	hi := &m.Renditions[0]
	for i := range m.Renditions {
		if m.Renditions[i].Kbps > hi.Kbps {
			hi = &m.Renditions[i]
		}
	}
	return hi
}

// tokenBucket paces bytes: over any span T, the bytes reserved are at most
// burst + rate·T. A reservation larger than what is left is granted and
// paid for by waiting (the bucket goes into debt), so a chunk larger than
// the burst still goes, later.
type tokenBucket struct {
	rate   float64 // bytes per second
	burst  float64
	tokens float64
	last   time.Time
}

func newTokenBucket(bytesPerSecond, burst float64, now time.Time) *tokenBucket {
	return &tokenBucket{rate: bytesPerSecond, burst: burst, tokens: burst, last: now}
}

// reserve takes n bytes at now and returns how long to wait before
// spending them.
func (b *tokenBucket) reserve(now time.Time, n int64) time.Duration {
	if dt := now.Sub(b.last); dt > 0 {
		b.tokens = min(b.burst, b.tokens+dt.Seconds()*b.rate)
		b.last = now
	}
	b.tokens -= float64(n)
	if b.tokens >= 0 {
		return 0
	}
	return time.Duration(math.Ceil(-b.tokens / b.rate * float64(time.Second)))
}

// decayCounts are per-title counts that halve every halfLife.
type decayCounts struct {
	halfLife time.Duration
	m        map[string]decayed
}

type decayed struct {
	v  float64
	at time.Time
}

func (c *decayCounts) add(id string, now time.Time) {
	if c.m == nil {
		c.m = map[string]decayed{}
	}
	c.m[id] = decayed{v: c.value(id, now) + 1, at: now}
}

func (c *decayCounts) value(id string, now time.Time) float64 {
	d, ok := c.m[id]
	if !ok {
		return 0
	}
	return d.v * math.Exp2(-now.Sub(d.at).Seconds()/c.halfLife.Seconds())
}

// prune forgets the counts decayed below 1/1000 of a view.
func (c *decayCounts) prune(now time.Time) {
	for id := range c.m {
		if c.value(id, now) < 1e-3 {
			delete(c.m, id)
		}
	}
}

// FillStatus is the fill planner's part of GET /api/v1/vod/cache.
type FillStatus struct {
	// Enabled is false on a node alone or with vod.fill_mbps negative.
	Enabled bool `json:"enabled"`
	// BudgetMbps is vod.fill_mbps; ShareBytes the bytes of the cache the
	// fill may use (vod.fill_cache_share of vod.cache_size).
	BudgetMbps float64 `json:"budget_mbps"`
	ShareBytes int64   `json:"share_bytes"`
	// LastPlan is when the last plan was made; Titles the ids it planned
	// by score; BytesPlanned what it had to fetch, BytesCached what of it
	// the cache already held.
	LastPlan     time.Time `json:"last_plan"`
	Titles       []string  `json:"titles"`
	BytesPlanned int64     `json:"bytes_planned"`
	BytesCached  int64     `json:"bytes_cached"`
	// BytesStarted counts the bytes of the fetches the fill started;
	// BytesFetched those found in the cache after (some may have failed,
	// or been rejected by the cache's admission policy).
	BytesStarted uint64 `json:"bytes_started"`
	BytesFetched uint64 `json:"bytes_fetched"`
}

// filler is the Service's fill and view bookkeeping, under its own lock.
type filler struct {
	mu sync.Mutex
	// local are the decayed views at this node by title; unreported the
	// views of remote titles not yet reported to their origins.
	local      decayCounts
	unreported map[string]int64
	// seq numbers this node's view reports; reportSeq is the last report
	// taken in from each other node (a replayed report is ignored).
	seq       int64
	reportSeq map[string]int64
	// started are the chunks the fill started and has not found in the
	// cache yet.
	started map[Digest]int64
	status  FillStatus
	// bucket paces the fill's fetches across passes (one second's burst),
	// so that the budget holds over any span, not only within a pass.
	// Only the fill goroutine uses it.
	bucket *tokenBucket
}

func newFiller() filler {
	return filler{local: decayCounts{halfLife: fillHalfLife}, unreported: map[string]int64{},
		seq: time.Now().UnixNano(), reportSeq: map[string]int64{}, started: map[Digest]int64{}}
}

// noteView counts a view of title t at this node (called by the HTTP on a
// viewer's first master playlist fetch).
func (s *Service) noteView(t Title) {
	s.fl.mu.Lock()
	defer s.fl.mu.Unlock()
	s.fl.local.add(t.ID, time.Now())
	if t.Origin != "" {
		s.fl.unreported[t.ID]++
	}
}

// fillEnabled tells whether the planner runs: in a cluster, with a budget.
func (s *Service) fillEnabled() bool { return s.fetch != nil && s.cfg.FillMbps > 0 }

// fillShare is the bytes of the cache the fill may use.
func (s *Service) fillShare() int64 { return int64(s.cfg.FillCacheShare * float64(s.cfg.CacheSize)) }

// startFill starts the goroutine that reports views and fills the cache;
// called by startChunks.
func (s *Service) startFill() {
	s.fl.mu.Lock()
	s.fl.status = FillStatus{Enabled: s.fillEnabled(), BudgetMbps: max(0, s.cfg.FillMbps), ShareBytes: s.fillShare()}
	s.fl.mu.Unlock()
	rate := max(0, s.cfg.FillMbps) * 1e6 / 8
	s.fl.bucket = newTokenBucket(rate, rate, time.Now())
	s.wg.Add(1)
	go s.fillLoop()
}

func (s *Service) fillLoop() {
	defer s.wg.Done()
	t := time.NewTicker(s.cfg.FillInterval)
	defer t.Stop()
	for {
		select {
		case <-s.ctx.Done():
			return
		case <-t.C:
		}
		s.reportViews()
		if s.fillEnabled() {
			ctx, cancel := context.WithTimeout(s.ctx, s.cfg.FillInterval)
			s.fillPass(ctx)
			cancel()
		}
	}
}

// fillPass plans and starts the fill of one interval; it returns when
// every planned chunk was started or ctx ends.
func (s *Service) fillPass(ctx context.Context) {
	s.countFilled()
	ts, err := s.fillCandidates()
	if err != nil {
		s.log.Warn("fill: catalog unreadable", "err", err)
		return
	}
	p := planFill(ts, s.cfg.FillPrefix, s.fillShare(), func(d Digest) (bool, bool) {
		if s.store.Has(d) {
			return true, false
		}
		return false, s.cache.Has(d)
	})
	s.fl.mu.Lock()
	st := &s.fl.status
	st.LastPlan, st.Titles, st.BytesPlanned, st.BytesCached = time.Now().UTC(), p.Titles, p.FetchBytes, p.CachedBytes
	s.fl.mu.Unlock()
	if len(p.Fetch) == 0 {
		return
	}
	s.log.Debug("fill planned", "titles", len(p.Titles), "chunks", len(p.Fetch), "bytes", p.FetchBytes)
	for _, c := range p.Fetch {
		if wait := s.fl.bucket.reserve(time.Now(), c.Size); wait > 0 {
			select {
			case <-ctx.Done():
				return
			case <-time.After(wait):
			}
		}
		if ctx.Err() != nil {
			return
		}
		s.fetch.Prefetch(c.Digest, c.Origin)
		s.fl.mu.Lock()
		s.fl.started[c.Digest] = c.Size
		s.fl.status.BytesStarted += uint64(c.Size)
		s.fl.mu.Unlock()
	}
}

// countFilled counts the started fill chunks that reached the cache, and
// forgets those that did not after a pass.
func (s *Service) countFilled() {
	s.fl.mu.Lock()
	defer s.fl.mu.Unlock()
	for d, n := range s.fl.started {
		if s.cache.Has(d) {
			s.fl.status.BytesFetched += uint64(n)
		}
		delete(s.fl.started, d)
	}
}

// fillCandidates are the ready remote titles with their manifests and
// view counts.
func (s *Service) fillCandidates() ([]fillTitle, error) {
	titles, err := s.cat.List("")
	if err != nil {
		return nil, err
	}
	now := time.Now()
	s.fl.mu.Lock()
	s.fl.local.prune(now)
	s.fl.mu.Unlock()
	var out []fillTitle
	for _, tl := range titles {
		if tl.Origin == "" || tl.State != StateReady {
			continue
		}
		s.fl.mu.Lock()
		local := s.fl.local.value(tl.ID, now)
		s.fl.mu.Unlock()
		if local <= 0 && tl.Views <= 0 {
			continue // scores 0 whatever the others: no manifest read
		}
		t, ok := s.manifests.get(tl.ID)
		if !ok || t.ManifestDigest != tl.ManifestDigest {
			if t, err = s.cat.Get(tl.ID); err != nil {
				continue
			}
			s.manifests.put(t)
		}
		if t.Manifest == nil {
			continue
		}
		out = append(out, fillTitle{ID: tl.ID, Origin: tl.Origin, Views: tl.Views, Local: local, Manifest: t.Manifest})
	}
	return out, nil
}

// viewsPath is the internal route of view reports between nodes.
const viewsPath = "/internal/vod/views/"

// reportViews sends the views this node served of remote titles to their
// origins, one signed request per title: POST
// /internal/vod/views/{id}/{seq}/{n}. The numbers are in the path, which
// the signature covers; seq grows with every report of this node, so a
// replayed report is ignored. Views whose origin is not alive or did not
// take them are kept for the next report.
func (s *Service) reportViews() {
	if s.Peers == nil {
		return
	}
	s.fl.mu.Lock()
	pending := s.fl.unreported
	s.fl.unreported = map[string]int64{}
	s.fl.mu.Unlock()
	if len(pending) == 0 {
		return
	}
	byName := map[string]Peer{}
	for _, p := range s.Peers.Alive() {
		byName[p.Name] = p
	}
	keep := map[string]int64{}
	for id, n := range pending {
		t, err := s.cat.Get(id)
		if err != nil || t.Origin == "" {
			continue // removed, or not remote
		}
		p, ok := byName[t.Origin]
		if !ok || s.ctx.Err() != nil {
			keep[id] = n
			continue
		}
		if err := s.sendViews(p, id, n); err != nil {
			s.log.Debug("views not reported to the origin: kept for the next report", "id", id, "origin", t.Origin, "err", err)
			keep[id] = n
		}
	}
	s.fl.mu.Lock()
	for id, n := range keep {
		s.fl.unreported[id] += n
	}
	s.fl.mu.Unlock()
}

func (s *Service) sendViews(p Peer, id string, n int64) error {
	s.fl.mu.Lock()
	s.fl.seq++
	seq := s.fl.seq
	s.fl.mu.Unlock()
	ctx, cancel := context.WithTimeout(s.ctx, 5*time.Second)
	defer cancel()
	u := p.HTTPBase + viewsPath + id + "/" + strconv.FormatInt(seq, 10) + "/" + strconv.FormatInt(n, 10)
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, u, nil)
	if err != nil {
		return err
	}
	SignPeerRequest(req, s.Secret, s.Peers.Self())
	resp, err := s.peerClient().Do(req)
	if err != nil {
		return fmt.Errorf("views of %s to %s: %w", id, p.Name, err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusNoContent {
		return fmt.Errorf("views of %s to %s: %s", id, p.Name, resp.Status)
	}
	return nil
}

// serveViews takes in another node's report of the views it served of a
// title of this node (see reportViews): 204 when taken (or a replay,
// ignored), 401 unsigned, 404 for a title not packaged here.
func (s *Service) serveViews(w http.ResponseWriter, r *http.Request) {
	node, err := VerifyPeerRequest(r, s.Secret, time.Now())
	if err != nil {
		w.Header().Set("WWW-Authenticate", PeerAuthScheme)
		http.Error(w, "unauthorized", http.StatusUnauthorized)
		return
	}
	id := r.PathValue("id")
	seq, err1 := strconv.ParseInt(r.PathValue("seq"), 10, 64)
	n, err2 := strconv.ParseInt(r.PathValue("n"), 10, 64)
	if err1 != nil || err2 != nil || n < 1 {
		http.Error(w, "bad view report", http.StatusBadRequest)
		return
	}
	t, err := s.cat.Get(id)
	if err != nil || t.Origin != "" {
		http.Error(w, "no such title packaged here", http.StatusNotFound)
		return
	}
	s.fl.mu.Lock()
	replay := seq <= s.fl.reportSeq[node]
	if !replay {
		s.fl.reportSeq[node] = seq
	}
	s.fl.mu.Unlock()
	if !replay {
		for range min(n, maxViewReport) {
			if err := s.cat.AddView(id); err != nil {
				if !errors.Is(err, ErrTitleNotFound) {
					s.log.Warn("reported views not counted", "id", id, "from", node, "err", err)
				}
				break
			}
		}
	}
	w.WriteHeader(http.StatusNoContent)
}

// fillStatus is the planner's status for CacheStatus.
func (s *Service) fillStatus() FillStatus {
	s.fl.mu.Lock()
	defer s.fl.mu.Unlock()
	st := s.fl.status
	st.Titles = slices.Clone(st.Titles)
	return st
}

// CacheHolds tells whether this node holds chunk d in its store (its own
// titles and pinned replicas) and in its cache (other nodes' chunks).
func (s *Service) CacheHolds(d Digest) (store, cache bool) {
	if s.store != nil {
		store = s.store.Has(d)
	}
	if s.cache != nil {
		cache = s.cache.Has(d)
	}
	return store, cache
}
