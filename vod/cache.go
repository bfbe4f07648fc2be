package vod

import (
	"container/list"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"log/slog"
	"math"
	"os"
	"path/filepath"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/maypok86/otter/v2"
)

// DefaultCacheBytes bounds the chunk cache on disk when the configuration
// gives no vod.cache_size.
const DefaultCacheBytes int64 = 10 << 30

// DiskCacheConfig configures a DiskCache.
type DiskCacheConfig struct {
	// Dir is the cache's folder (vod.cache_dir; the caller picks the
	// default, <data dir>/vod-cache). It has the ChunkStore layout and
	// belongs to the cache: files in it that do not name a chunk are
	// removed, and chunks are deleted when evicted, so it must not be the
	// folder of the catalog's own ChunkStore.
	Dir string
	// MaxBytes bounds the bytes of the chunks kept on disk (vod.cache_size);
	// 0 or less means DefaultCacheBytes.
	MaxBytes int64
	// MemoryBytes is the memory cache of verified chunks of the inner
	// ChunkStore (see NewChunkStore: 0 is its default, negative disables).
	MemoryBytes int64
}

// CacheStats is a snapshot of a DiskCache's counters.
type CacheStats struct {
	// Bytes and Chunks are what the cache holds now (files of chunks it
	// has just dropped may still be on disk until CleanUp).
	Bytes  int64 `json:"bytes"`
	Chunks int64 `json:"chunks"`
	// MaxBytes is the bound on Bytes.
	MaxBytes int64 `json:"max_bytes"`
	// Evictions counts chunks removed to stay within MaxBytes, Rejected
	// included.
	Evictions int64 `json:"evictions"`
	// Admitted counts Puts that added a chunk the cache did not hold.
	Admitted int64 `json:"admitted"`
	// Rejected counts the admitted chunks the policy dropped for space
	// before anyone read them: the one-hit wonders W-TinyLFU's frequency
	// filter kept from displacing chunks that are read.
	Rejected int64 `json:"rejected"`
}

// diskCacheEntry is a chunk in the index. Its pointer identity tells a chunk
// from a later copy of the same digest, so that the removal of an evicted
// chunk's file does not take the file of the copy that replaced it.
type diskCacheEntry struct {
	size int64
	// used: the chunk was read (or put again) since it was added, or was
	// found on disk at start; an eviction of an unused one is a rejection.
	used atomic.Bool
	// evicted: the admission duel chose it as a victim; its removal from
	// the main segment (an Invalidate) counts as an eviction.
	evicted atomic.Bool
	// elem is its place in the window's LRU list while it is in the
	// window, nil once in the main segment (guarded by DiskCache.mu).
	elem *list.Element
}

// defaultMaxPendingRemovals bounds the files of evicted chunks still on
// disk, and so how far Puts that outrun the remover take the folder above
// MaxBytes: about this many chunks, plus one per Put in flight.
const defaultMaxPendingRemovals = 256

// diskCacheRemoval is a chunk file to delete after its entry left the index.
type diskCacheRemoval struct {
	d Digest
	e *diskCacheEntry
}

// DiskCache keeps chunks a node fetched from its peers on disk, bounded in
// bytes. Every node of the cluster is a chunk cache: popular chunks stay
// near the viewers and the origin is asked once.
//
// The files are a ChunkStore's (one per chunk, written whole, every disk
// read verified against the digest); which chunks stay is decided by
// W-TinyLFU, byte-weighted, in two segments:
//
//   - the window: the chunks put last, in LRU order, bounded by
//     windowBytes = max(1 % of MaxBytes, 4 average chunks), at most a
//     quarter of MaxBytes. A new chunk always enters it, so it has a few
//     chunks' time to be read again before it has to prove itself;
//   - the main segment: an otter cache used as an index only (digest →
//     entry, weighed in bytes), whose own segmented LRU (window,
//     probation, protected) orders its victims (Coldest).
//
// A chunk the window pushes out is admitted to the main segment only if
// its frequency in this cache's TinyLFU sketch (freqSketch: every read
// of a held chunk and every Put counts) beats that of each victim it
// would displace; else it is dropped. The duel is done here, not by
// otter: otter's own window is a fixed 1 % of its weight, smaller than
// one chunk when the cache holds few, and it does not count reads of
// entries it does not hold, so in a cache of ~30 chunks it dropped almost
// every new chunk before a second viewer could read it. The main
// segment's victims are removed here before a chunk is added to it, so
// otter never has to evict for size (its bound is MaxBytes, above the
// main segment's). At production sizes (thousands of chunks) the window
// is 1 %, as in Caffeine's and otter's W-TinyLFU; the policy keeps chunks
// read often over a one-off scan of a title larger than the cache, which
// an LRU would let flush everything.
//
// When otter drops an entry (a victim of the duel, Remove, a corrupt
// file) its OnAtomicDeletion listener only queues the file's removal, as
// the drop of a chunk from the window (a lost duel) does: the listener runs under otter's locks, where a file system call
// with an fsync has no place and where this cache's per-digest locks would
// deadlock against Put. A goroutine deletes the queued files; CleanUp waits
// for them, so after CleanUp the bytes on disk are within MaxBytes. While
// Puts are in flight the folder may hold those chunks' bytes on top.
//
// The index is not persisted: NewDiskCache rebuilds it from the files in
// the folder (names and sizes, without hashing), and the inner ChunkStore
// verifies each chunk on its first read; a corrupt one leaves the disk and
// the index.
//
// A DiskCache is safe for concurrent use; one process holds a folder.
type DiskCache struct {
	store    *ChunkStore
	idx      *otter.Cache[Digest, *diskCacheEntry] // the main segment
	maxBytes int64
	log      *slog.Logger

	// mu guards the policy: the window, the sketch and the admission
	// duel. It is taken after a digest lock, never before one.
	mu        sync.Mutex
	window    map[Digest]*diskCacheEntry
	wlist     *list.List // of Digest, least recently used first
	winBytes  int64
	winMax    int64
	sketch    *freqSketch
	sizeSum   int64 // bytes and count of the chunks put, for the
	sizeN     int64 // average chunk that sizes the window
	mainBytes atomic.Int64

	// locks serialise, per digest, a Put's check that its file is in place
	// and its index insert against the removal of an evicted copy's file.
	locks [64]sync.Mutex

	bytes, chunks                 atomic.Int64
	evictions, admitted, rejected atomic.Int64
	qmu                           sync.Mutex
	queue                         []diskCacheRemoval
	pending                       int        // queued or being removed
	drained                       *sync.Cond // on qmu: pending fell
	// maxPending is how many removals Put lets queue up before it waits
	// for the remover (defaultMaxPendingRemovals; tests lower it).
	maxPending int
	wake       chan struct{}
	stop       chan struct{}
	done       chan struct{}
	closeOnce  sync.Once
}

// The Fetcher's ChunkCache: a DiskCache and a ChunkStore both serve it.
var _ interface {
	Open(d Digest) (io.ReadSeekCloser, int64, error)
	Put(r io.Reader) (Chunk, error)
} = (*DiskCache)(nil)

// NewDiskCache opens (creating if missing) the cache folder, indexes the
// chunks in it and trims them to cfg.MaxBytes, which may have shrunk
// since the last run: the chunks written last (file mtime) stay.
func NewDiskCache(cfg DiskCacheConfig, log *slog.Logger) (*DiskCache, error) {
	if log == nil {
		log = slog.Default()
	}
	log = log.With("component", "vod-cache")
	if cfg.Dir == "" {
		return nil, errors.New("vod cache: empty folder name")
	}
	if cfg.MaxBytes <= 0 {
		cfg.MaxBytes = DefaultCacheBytes
	}
	store, err := NewChunkStore(cfg.Dir, cfg.MemoryBytes, log)
	if err != nil {
		return nil, fmt.Errorf("vod cache: %w", err)
	}
	c := &DiskCache{
		store:    store,
		maxBytes: cfg.MaxBytes,
		log:      log,
		wake:     make(chan struct{}, 1),
		stop:     make(chan struct{}),
		done:     make(chan struct{}),

		maxPending: defaultMaxPendingRemovals,
		window:     map[Digest]*diskCacheEntry{},
		wlist:      list.New(),
		sketch:     newFreqSketch(64),
	}
	c.winMax = c.windowMax()
	c.drained = sync.NewCond(&c.qmu)
	// The weight is the size in bytes; a chunk is a media segment, far
	// below the 4 GiB a weight can say.
	idx, err := otter.New(&otter.Options[Digest, *diskCacheEntry]{
		MaximumWeight:    uint64(cfg.MaxBytes),
		Weigher:          func(_ Digest, e *diskCacheEntry) uint32 { return uint32(min(e.size, math.MaxUint32)) },
		OnAtomicDeletion: c.onDeletion,
		Logger:           otterLogger{log},
	})
	if err != nil {
		store.Close()
		return nil, fmt.Errorf("vod cache %s: index: %w", cfg.Dir, err)
	}
	c.idx = idx
	store.OnCorrupt = c.onCorrupt
	go c.remover()

	files, bytes, err := c.scan()
	if err != nil {
		c.Close()
		return nil, err
	}
	// Newest first, the chunks that fit are indexed and the rest removed:
	// a shrunk cache keeps the most recently fetched chunks. (Left to the
	// policy, which chunks stay would be arbitrary, as every chunk has the
	// same frequency.) They fill the main segment, then the window.
	slices.SortFunc(files, func(a, b diskCacheFile) int { return b.mtime.Compare(a.mtime) })
	for _, f := range files {
		c.sizeSum += f.size
		c.sizeN++
	}
	c.winMax = c.windowMax()
	c.sketch.ensure(len(files))
	for _, f := range files {
		e := &diskCacheEntry{size: f.size}
		e.used.Store(true)
		switch {
		case c.mainBytes.Load()+f.size <= c.maxBytes-c.winMax:
			if _, added := c.idx.SetIfAbsent(f.d, e); added {
				c.mainBytes.Add(f.size)
				c.bytes.Add(f.size)
				c.chunks.Add(1)
			}
		case c.winBytes+f.size <= c.winMax:
			c.addWindowLocked(f.d, e)
		default:
			if err := store.Remove(f.d); err != nil && !errors.Is(err, ErrChunkNotFound) {
				c.Close()
				return nil, fmt.Errorf("vod cache %s: trim: %w", cfg.Dir, err)
			}
			c.evictions.Add(1)
		}
	}
	c.CleanUp()
	st := c.Stats()
	log.Info("chunk cache opened", "dir", cfg.Dir, "max_bytes", cfg.MaxBytes,
		"chunks_found", len(files), "bytes_found", bytes,
		"chunks", st.Chunks, "bytes", st.Bytes, "trimmed", st.Evictions)
	return c, nil
}

type diskCacheFile struct {
	d     Digest
	size  int64
	mtime time.Time
}

// scan lists the chunk files of the folder. Files in its <hex[:2]>
// folders whose names are not the digest they belong under are removed:
// nothing could ever read them, and they would hold space outside the
// bound.
func (c *DiskCache) scan() ([]diskCacheFile, int64, error) {
	dir := c.store.Dir()
	tops, err := os.ReadDir(dir)
	if err != nil {
		return nil, 0, fmt.Errorf("vod cache %s: %w", dir, err)
	}
	var out []diskCacheFile
	var total int64
	for _, top := range tops {
		if !top.IsDir() || !isChunkShardName(top.Name()) {
			continue
		}
		sub := filepath.Join(dir, top.Name())
		entries, err := os.ReadDir(sub)
		if err != nil {
			return nil, 0, fmt.Errorf("vod cache %s: %w", dir, err)
		}
		for _, e := range entries {
			p := filepath.Join(sub, e.Name())
			d, perr := ParseDigest(e.Name())
			if perr != nil || d.String() != e.Name() || e.Name()[:2] != top.Name() || !e.Type().IsRegular() {
				if !e.Type().IsRegular() {
					c.log.Warn("not a chunk file: left alone", "path", p)
					continue
				}
				if err := os.Remove(p); err != nil && !errors.Is(err, fs.ErrNotExist) {
					return nil, 0, fmt.Errorf("vod cache %s: remove stray file: %w", dir, err)
				}
				c.log.Warn("stray file in the chunk cache: removed", "path", p)
				continue
			}
			fi, err := e.Info()
			if errors.Is(err, fs.ErrNotExist) {
				continue
			}
			if err != nil {
				return nil, 0, fmt.Errorf("vod cache %s: %w", dir, err)
			}
			out = append(out, diskCacheFile{d: d, size: fi.Size(), mtime: fi.ModTime()})
			total += fi.Size()
		}
	}
	return out, total, nil
}

// isChunkShardName reports whether name is a <hex[:2]> folder of the layout.
func isChunkShardName(name string) bool {
	if len(name) != 2 {
		return false
	}
	for _, r := range name {
		if !(r >= '0' && r <= '9' || r >= 'a' && r <= 'f') {
			return false
		}
	}
	return true
}

func (c *DiskCache) lock(d Digest) *sync.Mutex { return &c.locks[int(d[0])%len(c.locks)] }

// onDeletion is otter's OnAtomicDeletion: it runs under an index bucket
// lock, so it counts and queues, and touches neither the index nor files.
func (c *DiskCache) onDeletion(ev otter.DeletionEvent[Digest, *diskCacheEntry]) {
	if ev.Cause == otter.CauseReplacement {
		// The index is only written with SetIfAbsent; a replacement would
		// keep the (same) file anyway.
		return
	}
	c.mainBytes.Add(-ev.Value.size)
	c.dropped(ev.Key, ev.Value, ev.WasEvicted() || ev.Value.evicted.Load())
}

// dropped counts a chunk that left the index (the window or the main
// segment) and queues its file's removal.
func (c *DiskCache) dropped(d Digest, e *diskCacheEntry, evicted bool) {
	c.bytes.Add(-e.size)
	c.chunks.Add(-1)
	if evicted {
		c.evictions.Add(1)
		if !e.used.Load() {
			c.rejected.Add(1)
		}
	}
	c.qmu.Lock()
	c.queue = append(c.queue, diskCacheRemoval{d, e})
	c.pending++
	c.qmu.Unlock()
	select {
	case c.wake <- struct{}{}:
	default:
	}
}

// remover deletes the files of the chunks that left the index.
func (c *DiskCache) remover() {
	defer close(c.done)
	for {
		select {
		case <-c.wake:
		case <-c.stop:
			c.removeQueued()
			return
		}
		c.removeQueued()
	}
}

func (c *DiskCache) removeQueued() {
	for {
		c.qmu.Lock()
		batch := c.queue
		c.queue = nil
		c.qmu.Unlock()
		if len(batch) == 0 {
			return
		}
		for _, r := range batch {
			c.removeFile(r)
		}
		c.qmu.Lock()
		c.pending -= len(batch)
		c.drained.Broadcast()
		c.qmu.Unlock()
	}
}

// removeFile deletes the file of a chunk that left the index, unless the
// chunk was put again meanwhile: its file is then the new copy's. The
// entry itself may still be visible: OnAtomicDeletion runs before otter
// takes it out of its table.
func (c *DiskCache) removeFile(r diskCacheRemoval) {
	l := c.lock(r.d)
	l.Lock()
	defer l.Unlock()
	c.mu.Lock()
	cur := c.lookupLocked(r.d)
	c.mu.Unlock()
	if cur != nil && cur != r.e {
		return
	}
	if err := c.store.Remove(r.d); err != nil && !errors.Is(err, ErrChunkNotFound) {
		c.log.Error("remove an evicted chunk", "digest", r.d.String(), "err", err)
	}
}

// onCorrupt drops from the index a chunk the store found corrupt (and has
// removed): the cache no longer holds it.
func (c *DiskCache) onCorrupt(d Digest) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if e := c.window[d]; e != nil {
		c.removeWindowLocked(d, e)
		c.dropped(d, e, false)
		return
	}
	c.idx.Invalidate(d)
}

// lookupLocked is the entry the cache holds for d, in the window or the
// main segment, or nil.
func (c *DiskCache) lookupLocked(d Digest) *diskCacheEntry {
	if e := c.window[d]; e != nil {
		return e
	}
	if ent, ok := c.idx.GetEntryQuietly(d); ok {
		return ent.Value
	}
	return nil
}

// forgetLocked drops d's entry if it is still e (not a newer copy), without
// counting an eviction.
func (c *DiskCache) forgetLocked(d Digest, e *diskCacheEntry) {
	if w := c.window[d]; w != nil {
		if w == e {
			c.removeWindowLocked(d, e)
			c.dropped(d, e, false)
		}
		return
	}
	c.idx.ComputeIfPresent(d, func(old *diskCacheEntry) (*diskCacheEntry, otter.ComputeOp) {
		if old == e {
			return nil, otter.InvalidateOp
		}
		return old, otter.CancelOp
	})
}

// windowMax is the window's bound: 1 % of the cache, or 4 average chunks
// when that is more, and at most a quarter of the cache.
func (c *DiskCache) windowMax() int64 {
	w := c.maxBytes / 100
	if c.sizeN > 0 {
		w = max(w, 4*(c.sizeSum/c.sizeN))
	}
	return min(w, c.maxBytes/4)
}

func (c *DiskCache) addWindowLocked(d Digest, e *diskCacheEntry) {
	e.elem = c.wlist.PushBack(d)
	c.window[d] = e
	c.winBytes += e.size
	c.bytes.Add(e.size)
	c.chunks.Add(1)
}

// removeWindowLocked takes e out of the window (the caller counts it
// dropped, or moves it to the main segment).
func (c *DiskCache) removeWindowLocked(d Digest, e *diskCacheEntry) {
	c.wlist.Remove(e.elem)
	e.elem = nil
	delete(c.window, d)
	c.winBytes -= e.size
}

// balanceLocked moves the chunks the window no longer holds to the main
// segment, or out, and keeps the two within MaxBytes.
func (c *DiskCache) balanceLocked() {
	for c.winBytes > c.winMax && c.wlist.Len() > 0 {
		d := c.wlist.Front().Value.(Digest)
		e := c.window[d]
		c.removeWindowLocked(d, e)
		c.admitLocked(d, e)
	}
	// The window may have grown (a larger average chunk) into bytes the
	// main segment holds.
	for c.winBytes+c.mainBytes.Load() > c.maxBytes {
		victims, _ := c.victimsLocked(c.winBytes + c.mainBytes.Load() - c.maxBytes)
		if len(victims) == 0 {
			return
		}
		c.evictLocked(victims)
	}
}

type diskCacheVictim struct {
	d Digest
	e *diskCacheEntry
}

// victimsLocked lists the main segment's coldest chunks (otter's order:
// its window and probation segments, then protected) until they free need
// bytes, and how many bytes they free.
func (c *DiskCache) victimsLocked(need int64) ([]diskCacheVictim, int64) {
	var out []diskCacheVictim
	var freed int64
	for ent := range c.idx.Coldest() {
		if freed >= need {
			break
		}
		out = append(out, diskCacheVictim{ent.Key, ent.Value})
		freed += ent.Value.size
	}
	return out, freed
}

// evictLocked removes the victims from the main segment (unless replaced
// meanwhile): evictions.
func (c *DiskCache) evictLocked(victims []diskCacheVictim) {
	for _, v := range victims {
		v.e.evicted.Store(true)
		c.idx.ComputeIfPresent(v.d, func(old *diskCacheEntry) (*diskCacheEntry, otter.ComputeOp) {
			if old == v.e {
				return nil, otter.InvalidateOp
			}
			return old, otter.CancelOp
		})
	}
}

// admitLocked is TinyLFU's duel for a chunk leaving the window: it enters
// the main segment if it fits there, or if it was requested more often
// (per the sketch) than each chunk it would displace, which leave; else it
// is dropped.
func (c *DiskCache) admitLocked(d Digest, e *diskCacheEntry) {
	mainMax := c.maxBytes - c.winMax
	if e.size > mainMax {
		c.dropped(d, e, true)
		return
	}
	if need := c.mainBytes.Load() + e.size - mainMax; need > 0 {
		victims, freed := c.victimsLocked(need)
		if freed < need {
			c.dropped(d, e, true)
			return
		}
		f := c.sketch.frequency(d)
		for _, v := range victims {
			if c.sketch.frequency(v.d) >= f {
				c.dropped(d, e, true)
				return
			}
		}
		c.evictLocked(victims)
	}
	if _, added := c.idx.SetIfAbsent(d, e); added {
		c.mainBytes.Add(e.size)
	} else {
		// Not possible while mu is held (a digest is in one segment), but
		// the file must not leak if it were.
		c.dropped(d, e, false)
	}
}

// hotCopyRequests is how many requests at a node (per its frequency
// sketch, this one included) make a chunk the node is not an owner of
// worth a copy of its own.
const hotCopyRequests = 8

// Admits is the admission of a chunk that this node is not an owner of
// (its owners hold it, one hop away). It enters only once it is hot here
// (hotCopyRequests requests, per the sketch), and then only if the main
// segment has room for it or it was requested more often than each chunk
// it would displace (TinyLFU's duel); it skips the window. Admits counts
// the request when it answers false; when it answers true the caller
// Puts the chunk, which counts it.
//
// What it optimises: the cluster's caches are one cache partitioned by
// rendezvous owner, and every copy a non-owner keeps is bytes taken from
// that cache. A model of the VoD benchmark's Zipf(0.8) trace (4 edges of
// ~30 chunks, 10 % of the catalog, each chunk filled by its first owner)
// gives, as the share of bytes not fetched from the origin: an edge that
// keeps every chunk it serves 39 %, one that keeps none 45.5 %, this rule
// 43.4 % with 17 % of the bytes served by the edge itself (the hot chunks,
// where a copy near the viewer pays); a threshold of 4 gave 41 % and 21 %.
func (c *DiskCache) Admits(d Digest, size int64) bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	if cur := c.lookupLocked(d); cur != nil {
		return true // held: Put refreshes it
	}
	f := c.sketch.frequency(d) + 1 // this request
	mainMax := c.maxBytes - c.winMax
	ok := f >= hotCopyRequests && size <= mainMax
	if need := c.mainBytes.Load() + size - mainMax; ok && need > 0 {
		victims, freed := c.victimsLocked(need)
		ok = freed >= need
		for _, v := range victims {
			if !ok {
				break
			}
			ok = c.sketch.frequency(v.d) < f
		}
	}
	if !ok {
		c.sketch.increment(d)
		c.sketch.ensure(int(c.chunks.Load()))
	}
	return ok
}

// Open returns the chunk's bytes, verified against its digest, and its
// size, and counts the read for the eviction policy. It answers
// ErrChunkNotFound for a chunk the cache does not hold, and
// ErrChunkCorrupt for one whose file no longer matches (it is dropped: the
// next Open answers ErrChunkNotFound). The caller closes the reader.
func (c *DiskCache) Open(d Digest) (io.ReadSeekCloser, int64, error) {
	c.mu.Lock()
	e := c.window[d]
	if e != nil {
		c.wlist.MoveToBack(e.elem)
	} else if v, ok := c.idx.GetIfPresent(d); ok {
		e = v
	}
	if e != nil {
		// A miss is not counted here: the Fetcher puts what it fetches,
		// and Put counts it.
		c.sketch.increment(d)
	}
	c.mu.Unlock()
	if e == nil {
		return nil, 0, fmt.Errorf("vod cache: chunk %s: %w", d, ErrChunkNotFound)
	}
	e.used.Store(true)
	rc, n, err := c.store.Open(d)
	if errors.Is(err, ErrChunkNotFound) {
		// The file went behind the index's back (removed by hand, or by
		// the removal of an evicted copy racing a Put of the same chunk):
		// forget this entry, not a newer one.
		c.mu.Lock()
		c.forgetLocked(d, e)
		c.mu.Unlock()
	}
	if err != nil {
		return nil, 0, fmt.Errorf("vod cache: %w", err)
	}
	return rc, n, nil
}

// Put stores the bytes of r under their SHA-256 and offers the chunk to
// the policy, evicting to stay within MaxBytes. It returns the chunk's
// digest and size (zero media time, as ChunkStore.Put). A Put counts as a
// request of the chunk (the Fetcher puts each chunk it fetched for a
// miss). A chunk that is admitted may still be dropped soon after, when
// the window pushes it out and W-TinyLFU prefers the chunks it holds:
// Put's success says the bytes were good, Has says whether they are kept.
// An error is a failure to read r or to write.
func (c *DiskCache) Put(r io.Reader) (Chunk, error) {
	ch, err := c.store.Put(r)
	if err != nil {
		return Chunk{}, fmt.Errorf("vod cache: %w", err)
	}
	c.index(ch)
	// Writers faster than the remover wait for it (not holding a digest
	// lock: the remover takes them), so that evicted files do not pile up.
	c.qmu.Lock()
	for c.pending > c.maxPending {
		c.drained.Wait()
	}
	c.qmu.Unlock()
	return ch, nil
}

// index adds a chunk Put has just stored to the window.
func (c *DiskCache) index(ch Chunk) {
	d := ch.Digest
	l := c.lock(d)
	l.Lock()
	defer l.Unlock()
	// The file renamed into place may have been taken by the removal of
	// an evicted older copy of the same chunk, before this lock. Indexing
	// a chunk with no file would only cost a miss later; not doing it
	// keeps Has honest.
	if !c.store.Has(d) {
		c.log.Debug("chunk put while an older copy was evicted: not kept", "digest", d.String())
		return
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	c.sketch.increment(d)
	if cur := c.lookupLocked(d); cur != nil {
		cur.used.Store(true)
		if cur.elem != nil {
			c.wlist.MoveToBack(cur.elem)
		} else {
			c.idx.GetIfPresent(d)
		}
		return
	}
	c.admitted.Add(1)
	c.sizeSum += ch.Size
	c.sizeN++
	c.winMax = c.windowMax()
	c.addWindowLocked(d, &diskCacheEntry{size: ch.Size})
	c.sketch.ensure(int(c.chunks.Load()))
	c.balanceLocked()
}

// Has reports whether the cache holds the chunk. It does not count as a
// read, and does not verify the chunk (Open does).
func (c *DiskCache) Has(d Digest) bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.lookupLocked(d) != nil
}

// Remove drops the chunk from the cache and the disk (a title removed
// from the cluster drops its chunks): ErrChunkNotFound when the cache does
// not hold it.
func (c *DiskCache) Remove(d Digest) error {
	l := c.lock(d)
	l.Lock()
	defer l.Unlock()
	c.mu.Lock()
	held := false
	if e := c.window[d]; e != nil {
		c.removeWindowLocked(d, e)
		c.bytes.Add(-e.size)
		c.chunks.Add(-1)
		held = true
	} else {
		_, held = c.idx.Invalidate(d)
	}
	c.mu.Unlock()
	err := c.store.Remove(d)
	if errors.Is(err, ErrChunkNotFound) {
		if held {
			return nil
		}
		return fmt.Errorf("vod cache: %w", err)
	}
	if err != nil {
		return fmt.Errorf("vod cache: %w", err)
	}
	return nil
}

// CleanUp runs the index's pending maintenance (evictions) and waits until
// the files of every chunk that left it are deleted: then the chunks on
// disk are within MaxBytes, but for Puts still in flight.
func (c *DiskCache) CleanUp() {
	c.idx.CleanUp()
	c.qmu.Lock()
	for c.pending > 0 {
		c.drained.Wait()
	}
	c.qmu.Unlock()
}

// Stats is a snapshot of the cache's counters.
func (c *DiskCache) Stats() CacheStats {
	return CacheStats{
		Bytes:     c.bytes.Load(),
		Chunks:    c.chunks.Load(),
		MaxBytes:  c.maxBytes,
		Evictions: c.evictions.Load(),
		Admitted:  c.admitted.Load(),
		Rejected:  c.rejected.Load(),
	}
}

// Close finishes pending evictions and stops the cache's goroutines. The
// chunks stay on disk for the next NewDiskCache. The cache is not used
// after Close.
func (c *DiskCache) Close() error {
	c.closeOnce.Do(func() {
		c.CleanUp()
		close(c.stop)
		<-c.done
		c.idx.StopAllGoroutines()
		c.store.Close()
	})
	return nil
}
