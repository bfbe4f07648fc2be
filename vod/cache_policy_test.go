package vod

import (
	"bytes"
	"container/list"
	"crypto/sha256"
	"errors"
	"math"
	"math/rand/v2"
	"testing"

	"github.com/maypok86/otter/v2"
)

// zipfVodTrace is a VoD trace: viewers pick a title by Zipf(0.8)
// popularity and watch a random prefix of its chunks. It returns the
// chunk of each request (an index into sizes) and each chunk's size.
func zipfVodTrace(seed uint64, titles, chunksPerTitle, viewers int) (seq []int, sizes []int64) {
	r := rand.New(rand.NewPCG(seed, 11))
	for range titles * chunksPerTitle {
		sizes = append(sizes, int64(1500+r.IntN(3000)))
	}
	// Zipf(0.8) by inverse CDF (math/rand's Zipf needs s > 1).
	w := make([]float64, titles)
	var sum float64
	for i := range w {
		sum += 1 / math.Pow(float64(i+1), 0.8)
		w[i] = sum
	}
	for range viewers {
		u := r.Float64() * sum
		t := 0
		for w[t] < u {
			t++
		}
		n := 1 + r.IntN(chunksPerTitle)
		for k := range n {
			seq = append(seq, t*chunksPerTitle+k)
		}
	}
	return seq, sizes
}

// TestDiskCachePolicySmallCache: with a cache of ~30 chunks, the DiskCache
// (window + TinyLFU duel in front of otter) keeps more of a Zipf VoD trace's
// bytes than a plain LRU of the same bytes and than the configuration it
// replaced (otter alone, whose 1 % window is smaller than a chunk), all
// three replaying the same trace as the Fetcher does: Open, and on a miss
// Put the fetched bytes.
func TestDiskCachePolicySmallCache(t *testing.T) {
	const titles, perTitle, viewers = 200, 40, 1500
	seq, sizes := zipfVodTrace(5, titles, perTitle, viewers)
	var mean int64
	for _, s := range sizes {
		mean += s
	}
	mean /= int64(len(sizes))
	capacity := 30 * mean
	var total int64
	for _, i := range seq {
		total += sizes[i]
	}
	chunkBytes := func(i int) []byte { return randomBytes(uint64(1_000_000+i), int(sizes[i])) }
	digests := make([]Digest, len(sizes))
	for i := range sizes {
		digests[i] = sha256.Sum256(chunkBytes(i))
	}

	// The DiskCache.
	dir := t.TempDir()
	c := newTestDiskCache(t, DiskCacheConfig{Dir: dir, MaxBytes: capacity, MemoryBytes: -1})
	var hitNew int64
	for _, i := range seq {
		rc, _, err := c.Open(digests[i])
		switch {
		case err == nil:
			rc.Close()
			hitNew += sizes[i]
		case errors.Is(err, ErrChunkNotFound):
			if _, err := c.Put(bytes.NewReader(chunkBytes(i))); err != nil {
				t.Fatalf("Put: %v", err)
			}
		default:
			t.Fatalf("Open: %v", err)
		}
	}
	checkDiskCache(t, c, dir)

	// Plain LRU, every miss admitted.
	var hitLRU, held int64
	ll := list.New()
	at := map[int]*list.Element{}
	for _, i := range seq {
		if e, ok := at[i]; ok {
			hitLRU += sizes[i]
			ll.MoveToBack(e)
			continue
		}
		at[i] = ll.PushBack(i)
		held += sizes[i]
		for held > capacity {
			old := ll.Remove(ll.Front()).(int)
			delete(at, old)
			held -= sizes[old]
		}
	}

	// The old configuration: otter alone, byte-weighted.
	old, err := otter.New(&otter.Options[int, int64]{
		MaximumWeight: uint64(capacity),
		Weigher:       func(_ int, v int64) uint32 { return uint32(v) },
	})
	if err != nil {
		t.Fatal(err)
	}
	var hitOld int64
	peakOld := 0
	for _, i := range seq {
		peakOld = max(peakOld, old.EstimatedSize())
		if _, ok := old.GetIfPresent(i); ok {
			hitOld += sizes[i]
			continue
		}
		old.SetIfAbsent(i, sizes[i])
		// Held to its bound, as the DiskCache holds itself (left alone,
		// otter's maintenance runs late and it holds many times more).
		old.CleanUp()
	}
	old.StopAllGoroutines()

	st := c.Stats()
	ratio := func(h int64) float64 { return float64(h) / float64(total) }
	t.Logf("%d requests, %d bytes, cache %d bytes (~30 chunks): byte hit ratio DiskCache %.3f, LRU %.3f, otter alone %.3f; stats %+v",
		len(seq), total, capacity, ratio(hitNew), ratio(hitLRU), ratio(hitOld), st)
	t.Logf("otter alone held up to %d chunks", peakOld)
	if hitNew <= hitLRU {
		t.Errorf("DiskCache byte hit ratio %.3f not above LRU's %.3f", ratio(hitNew), ratio(hitLRU))
	}
	if hitNew <= hitOld {
		t.Errorf("DiskCache byte hit ratio %.3f not above otter alone's %.3f", ratio(hitNew), ratio(hitOld))
	}
}
