package vod

import (
	"bytes"
	"crypto/sha256"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"math/rand/v2"
	"os"
	"path/filepath"
	"sync"
	"testing"
	"time"
)

func newTestDiskCache(t testing.TB, cfg DiskCacheConfig) *DiskCache {
	t.Helper()
	log, _ := bufferedLogger(t)
	c, err := NewDiskCache(cfg, log)
	if err != nil {
		t.Fatalf("NewDiskCache: %v", err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

// diskCacheFiles is the size of every regular file under dir, by path.
func diskCacheFiles(t testing.TB, dir string) (map[string]int64, int64) {
	t.Helper()
	files := map[string]int64{}
	var total int64
	err := filepath.WalkDir(dir, func(p string, e fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if e.Type().IsRegular() {
			fi, err := e.Info()
			if err != nil {
				return err
			}
			files[p] = fi.Size()
			total += fi.Size()
		}
		return nil
	})
	if err != nil {
		t.Fatalf("walk %s: %v", dir, err)
	}
	return files, total
}

func diskCachePath(dir string, d Digest) string {
	h := d.String()
	return filepath.Join(dir, h[:2], h)
}

func diskCachePut(t testing.TB, c *DiskCache, b []byte) Chunk {
	t.Helper()
	ch, err := c.Put(bytes.NewReader(b))
	if err != nil {
		t.Fatalf("Put: %v", err)
	}
	if ch.Digest != sha256.Sum256(b) || ch.Size != int64(len(b)) {
		t.Fatalf("Put = %s/%d, want %x/%d", ch.Digest, ch.Size, sha256.Sum256(b), len(b))
	}
	return ch
}

func diskCacheRead(c *DiskCache, d Digest) ([]byte, error) {
	rc, n, err := c.Open(d)
	if err != nil {
		return nil, err
	}
	defer rc.Close()
	b, err := io.ReadAll(rc)
	if err != nil {
		return nil, err
	}
	if int64(len(b)) != n {
		return nil, fmt.Errorf("read %d bytes, Open said %d", len(b), n)
	}
	return b, nil
}

// checkDiskCache asserts, after CleanUp, that the files on disk are
// within the bound and are exactly the chunks the index holds, and that
// Stats counts them.
func checkDiskCache(t testing.TB, c *DiskCache, dir string) {
	t.Helper()
	c.CleanUp()
	files, total := diskCacheFiles(t, dir)
	st := c.Stats()
	if total > st.MaxBytes {
		t.Errorf("%d bytes on disk, above the bound %d", total, st.MaxBytes)
	}
	if st.Bytes != total || st.Chunks != int64(len(files)) {
		t.Errorf("Stats: %d bytes in %d chunks, disk: %d bytes in %d files", st.Bytes, st.Chunks, total, len(files))
	}
	for p := range files {
		d, err := ParseDigest(filepath.Base(p))
		if err != nil {
			t.Errorf("file %s is not a chunk", p)
			continue
		}
		if !c.Has(d) {
			t.Errorf("file %s is not in the index (orphan beyond the bound)", p)
		}
	}
}

func TestDiskCacheByteBoundUnderPuts(t *testing.T) {
	dir := t.TempDir()
	const maxBytes = 4 << 20
	c := newTestDiskCache(t, DiskCacheConfig{Dir: dir, MaxBytes: maxBytes, MemoryBytes: -1})
	r := rand.New(rand.NewPCG(7, 7))
	var put int64
	for i := range 60 {
		n := 64<<10 + r.IntN(1<<20-64<<10+1)
		put += int64(n)
		diskCachePut(t, c, randomBytes(uint64(i), n))
		if i%10 == 9 {
			checkDiskCache(t, c, dir)
		}
	}
	checkDiskCache(t, c, dir)
	st := c.Stats()
	if put <= maxBytes || st.Evictions == 0 {
		t.Fatalf("the test put %d bytes and evicted %d chunks: it did not exercise the bound", put, st.Evictions)
	}
	if st.Admitted != 60 {
		t.Errorf("Admitted = %d, want 60", st.Admitted)
	}
	if st.Chunks+st.Evictions != st.Admitted {
		t.Errorf("Chunks %d + Evictions %d != Admitted %d", st.Chunks, st.Evictions, st.Admitted)
	}

	// A chunk larger than the whole cache is never kept.
	big := diskCachePut(t, c, randomBytes(1000, maxBytes+1))
	checkDiskCache(t, c, dir)
	if c.Has(big.Digest) {
		t.Error("a chunk larger than MaxBytes is kept")
	}
}

// A title watched by one viewer from start to end (a scan of chunks
// larger than the cache) must not flush the chunks everybody watches: an
// LRU would, W-TinyLFU rejects the one-off chunks. And it is frequency,
// not only incumbency, that decides: chunks that several viewers fetch
// then displace the ones read once, but not the hot ones.
func TestDiskCacheHotSetSurvivesScan(t *testing.T) {
	dir := t.TempDir()
	const chunk = 64 << 10
	const maxBytes = 32 * chunk
	c := newTestDiskCache(t, DiskCacheConfig{Dir: dir, MaxBytes: maxBytes, MemoryBytes: -1})

	// A warm cache: full of chunks read once.
	var warm []Chunk
	for i := range 32 {
		ch := diskCachePut(t, c, randomBytes(uint64(100+i), chunk))
		warm = append(warm, ch)
		if _, err := diskCacheRead(c, ch.Digest); err != nil {
			t.Fatalf("warm chunk %d: %v", i, err)
		}
	}
	// Hot chunks are watched as a Fetcher serves them: from the cache,
	// fetched and put again when it does not hold them (at first, W-TinyLFU
	// may prefer the chunks it holds).
	var hot []Chunk
	for i := range 8 {
		hot = append(hot, diskCachePut(t, c, randomBytes(uint64(200+i), chunk)))
	}
	readHot := func() {
		t.Helper()
		for i, h := range hot {
			_, err := diskCacheRead(c, h.Digest)
			if errors.Is(err, ErrChunkNotFound) {
				diskCachePut(t, c, randomBytes(uint64(200+i), chunk))
			} else if err != nil {
				t.Fatalf("hot chunk %d: %v", i, err)
			}
		}
		c.CleanUp()
	}
	for range 10 {
		readHot()
	}

	// The scan: 3× the cache, each chunk fetched and stored once (its one
	// viewer is served the fetched bytes), while the hot chunks go on
	// being watched.
	var scan []Chunk
	for i := range 96 {
		scan = append(scan, diskCachePut(t, c, randomBytes(uint64(1000+i), chunk)))
		if i%8 == 7 {
			readHot()
		}
	}
	checkDiskCache(t, c, dir)
	for i, h := range hot {
		if !c.Has(h.Digest) {
			t.Errorf("hot chunk %d evicted by the scan", i)
			continue
		}
		b, err := diskCacheRead(c, h.Digest)
		if err != nil || !bytes.Equal(b, randomBytes(uint64(200+i), chunk)) {
			t.Errorf("hot chunk %d: %v", i, err)
		}
	}
	st := c.Stats()
	t.Logf("stats after the scan: %+v", st)
	keptScan := 0
	for _, ch := range scan {
		if c.Has(ch.Digest) {
			keptScan++
		}
	}
	// Every scan chunk that left was never read: a rejection (and so may
	// be a hot chunk put again that lost its place before a read).
	if st.Rejected < int64(len(scan)-keptScan) || st.Rejected > st.Evictions {
		t.Errorf("Rejected = %d, want at least the %d scan chunks that left, at most Evictions %d",
			st.Rejected, len(scan)-keptScan, st.Evictions)
	}

	// Rising chunks, each fetched by 4 viewers: together with the hot set
	// more than the cache holds. Their frequency wins them places over the
	// one-off scan chunks (a policy that only kept what it holds would not
	// let them in); the hot chunks, read more, stay. (How many warm chunks
	// they displace depends on whether a warm chunk had been promoted to
	// the protected segment, which W-TinyLFU leaves alone while it fits.)
	var rising []Chunk
	for i := range 28 {
		b := randomBytes(uint64(3000+i), chunk)
		var ch Chunk
		for range 4 {
			ch = diskCachePut(t, c, b)
		}
		// Otter records reads in a lossy buffer that its maintenance
		// drains; on a loaded machine it may run late and drop some.
		c.CleanUp()
		rising = append(rising, ch)
		if i%4 == 3 {
			readHot()
		}
	}
	checkDiskCache(t, c, dir)
	for i, h := range hot {
		if !c.Has(h.Digest) {
			t.Errorf("hot chunk %d evicted by the rising chunks", i)
		}
	}
	keptRising, keptWarm := 0, 0
	for _, ch := range rising {
		if c.Has(ch.Digest) {
			keptRising++
		}
	}
	for _, ch := range warm {
		if c.Has(ch.Digest) {
			keptWarm++
		}
	}
	t.Logf("kept %d of 28 rising chunks, %d of 32 warm ones; stats %+v", keptRising, keptWarm, c.Stats())
	if keptRising < 8 {
		t.Errorf("kept %d of 28 rising chunks and %d of 32 warm ones: frequency did not win places", keptRising, keptWarm)
	}
}

func TestDiskCacheSurvivesRestart(t *testing.T) {
	dir := t.TempDir()
	c := newTestDiskCache(t, DiskCacheConfig{Dir: dir, MaxBytes: 8 << 20})
	var chunks []Chunk
	var want int64
	for i := range 12 {
		ch := diskCachePut(t, c, randomBytes(uint64(i), 100<<10+i*1000))
		chunks = append(chunks, ch)
		want += ch.Size
	}
	if err := c.Close(); err != nil {
		t.Fatal(err)
	}
	// Files a cache never wrote: a non-chunk in a chunk folder goes, a
	// folder outside the layout is left alone.
	stray := filepath.Join(dir, chunks[0].Digest.String()[:2], "notachunk")
	if err := os.WriteFile(stray, []byte("x"), 0o644); err != nil {
		t.Fatal(err)
	}
	other := filepath.Join(dir, "zz", "keep")
	os.MkdirAll(filepath.Dir(other), 0o755)
	if err := os.WriteFile(other, []byte("y"), 0o644); err != nil {
		t.Fatal(err)
	}

	c2 := newTestDiskCache(t, DiskCacheConfig{Dir: dir, MaxBytes: 8 << 20})
	if st := c2.Stats(); st.Chunks != 12 || st.Bytes != want || st.Evictions != 0 {
		t.Fatalf("reopened: %+v, want 12 chunks of %d bytes", st, want)
	}
	for i, ch := range chunks {
		b, err := diskCacheRead(c2, ch.Digest)
		if err != nil || !bytes.Equal(b, randomBytes(uint64(i), int(ch.Size))) {
			t.Fatalf("chunk %d after restart: %v", i, err)
		}
	}
	if _, err := os.Stat(stray); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("stray file in a chunk folder kept: %v", err)
	}
	if _, err := os.Stat(other); err != nil {
		t.Errorf("file outside the layout removed: %v", err)
	}
	os.RemoveAll(filepath.Dir(other))
	c2.Close()

	// A smaller cache_size trims the folder at start.
	const smaller = 500 << 10
	c3 := newTestDiskCache(t, DiskCacheConfig{Dir: dir, MaxBytes: smaller})
	checkDiskCache(t, c3, dir)
	st := c3.Stats()
	if st.Chunks == 0 || st.Chunks >= 12 || st.Evictions != 12-st.Chunks {
		t.Fatalf("trimmed to %d bytes: %+v", smaller, st)
	}
	for _, ch := range chunks {
		if c3.Has(ch.Digest) {
			if _, err := diskCacheRead(c3, ch.Digest); err != nil {
				t.Errorf("kept chunk unreadable: %v", err)
			}
		} else if _, err := os.Stat(diskCachePath(dir, ch.Digest)); !errors.Is(err, fs.ErrNotExist) {
			t.Errorf("trimmed chunk still on disk: %v", err)
		}
	}
}

func TestDiskCacheCorruptAfterRestart(t *testing.T) {
	dir := t.TempDir()
	c := newTestDiskCache(t, DiskCacheConfig{Dir: dir, MaxBytes: 8 << 20})
	bad := diskCachePut(t, c, randomBytes(1, 200<<10))
	good := diskCachePut(t, c, randomBytes(2, 300<<10))
	c.Close()

	p := diskCachePath(dir, bad.Digest)
	b, err := os.ReadFile(p)
	if err != nil {
		t.Fatal(err)
	}
	b[1234] ^= 0x40
	if err := os.WriteFile(p, b, 0o644); err != nil {
		t.Fatal(err)
	}

	c2 := newTestDiskCache(t, DiskCacheConfig{Dir: dir, MaxBytes: 8 << 20})
	before := c2.Stats()
	if before.Bytes != bad.Size+good.Size || !c2.Has(bad.Digest) {
		t.Fatalf("reopened: %+v (a chunk is not hashed at start)", before)
	}
	if _, err := diskCacheRead(c2, bad.Digest); !errors.Is(err, ErrChunkCorrupt) {
		t.Fatalf("first Open of the corrupt chunk: %v, want ErrChunkCorrupt", err)
	}
	if _, err := diskCacheRead(c2, bad.Digest); !errors.Is(err, ErrChunkNotFound) {
		t.Fatalf("second Open of the corrupt chunk: %v, want ErrChunkNotFound", err)
	}
	if c2.Has(bad.Digest) {
		t.Error("corrupt chunk still in the index")
	}
	checkDiskCache(t, c2, dir)
	if st := c2.Stats(); st.Bytes != good.Size || st.Chunks != 1 {
		t.Errorf("after the corrupt chunk: %+v, want %d bytes in 1 chunk", st, good.Size)
	}
	if _, err := diskCacheRead(c2, good.Digest); err != nil {
		t.Errorf("good chunk: %v", err)
	}
	// Fetched again, it is cached again.
	diskCachePut(t, c2, randomBytes(1, 200<<10))
	if _, err := diskCacheRead(c2, bad.Digest); err != nil {
		t.Errorf("chunk put again: %v", err)
	}
}

func TestDiskCacheRemove(t *testing.T) {
	dir := t.TempDir()
	c := newTestDiskCache(t, DiskCacheConfig{Dir: dir, MaxBytes: 8 << 20})
	a := diskCachePut(t, c, randomBytes(1, 100<<10))
	b := diskCachePut(t, c, randomBytes(2, 100<<10))
	if err := c.Remove(a.Digest); err != nil {
		t.Fatalf("Remove: %v", err)
	}
	// Remove is synchronous: the file is gone when it returns.
	if _, err := os.Stat(diskCachePath(dir, a.Digest)); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("removed chunk's file: %v", err)
	}
	if c.Has(a.Digest) {
		t.Error("Has after Remove")
	}
	if _, err := diskCacheRead(c, a.Digest); !errors.Is(err, ErrChunkNotFound) {
		t.Errorf("Open after Remove: %v", err)
	}
	if err := c.Remove(a.Digest); !errors.Is(err, ErrChunkNotFound) {
		t.Errorf("second Remove: %v, want ErrChunkNotFound", err)
	}
	checkDiskCache(t, c, dir)
	if st := c.Stats(); st.Bytes != b.Size || st.Chunks != 1 || st.Evictions != 0 {
		t.Errorf("Stats after Remove: %+v", st)
	}
	diskCachePut(t, c, randomBytes(1, 100<<10))
	if _, err := diskCacheRead(c, a.Digest); err != nil {
		t.Errorf("chunk put again after Remove: %v", err)
	}
	checkDiskCache(t, c, dir)
}

func TestDiskCacheConcurrentPutOpen(t *testing.T) {
	dir := t.TempDir()
	const maxBytes = 2 << 20
	c := newTestDiskCache(t, DiskCacheConfig{Dir: dir, MaxBytes: maxBytes, MemoryBytes: 1 << 20})
	c.maxPending = 1 // Puts wait for the remover
	// A pool of chunks put and read again and again, so that one digest is
	// put while an older copy of it is being evicted.
	const pool = 40
	data := make([][]byte, pool)
	digests := make([]Digest, pool)
	for i := range data {
		data[i] = randomBytes(uint64(i), 32<<10+i*(4<<10))
		digests[i] = sha256.Sum256(data[i])
	}
	var wg sync.WaitGroup
	errs := make(chan error, 16)
	for w := range 4 {
		wg.Go(func() {
			r := rand.New(rand.NewPCG(uint64(w), 3))
			for range 150 {
				i := r.IntN(pool)
				switch r.IntN(4) {
				case 0:
					if _, err := c.Put(bytes.NewReader(data[i])); err != nil {
						errs <- err
						return
					}
				case 1:
					if r.IntN(8) == 0 {
						if err := c.Remove(digests[i]); err != nil && !errors.Is(err, ErrChunkNotFound) {
							errs <- err
							return
						}
					}
				default:
					b, err := diskCacheRead(c, digests[i])
					if errors.Is(err, ErrChunkNotFound) {
						continue
					}
					if err != nil {
						errs <- err
						return
					}
					if !bytes.Equal(b, data[i]) {
						errs <- fmt.Errorf("chunk %d: wrong bytes", i)
						return
					}
				}
				_ = c.Stats()
			}
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
	checkDiskCache(t, c, dir)
	if st := c.Stats(); st.Evictions == 0 {
		t.Errorf("no evictions (%+v): the test did not exercise them", st)
	}
}

// The removal of an evicted entry's file runs after the entry left the
// index, on another goroutine: by then the chunk may have been put again,
// and the file is the new copy's.
func TestDiskCacheRemovalSparesANewCopy(t *testing.T) {
	dir := t.TempDir()
	c := newTestDiskCache(t, DiskCacheConfig{Dir: dir, MaxBytes: 8 << 20})
	ch := diskCachePut(t, c, randomBytes(1, 100<<10))
	evicted := &diskCacheEntry{size: ch.Size}
	c.removeFile(diskCacheRemoval{ch.Digest, evicted})
	if _, err := diskCacheRead(c, ch.Digest); err != nil {
		t.Fatalf("the new copy after the diskCacheRemoval of an older one: %v", err)
	}
	// The entry being deleted is still visible while OnAtomicDeletion
	// runs: its own removal takes the file.
	c.mu.Lock()
	cur := c.lookupLocked(ch.Digest)
	c.mu.Unlock()
	c.removeFile(diskCacheRemoval{ch.Digest, cur})
	if _, err := os.Stat(diskCachePath(dir, ch.Digest)); !errors.Is(err, fs.ErrNotExist) {
		t.Fatalf("file of the entry being deleted: %v", err)
	}
	// The index still has it (the test bypassed otter): Open finds no file
	// and forgets the entry.
	if _, err := diskCacheRead(c, ch.Digest); !errors.Is(err, ErrChunkNotFound) {
		t.Fatalf("Open of a chunk whose file went: %v", err)
	}
	if c.Has(ch.Digest) {
		t.Error("an entry without a file stays in the index")
	}
	checkDiskCache(t, c, dir)
}

// Trimmed at start, the cache keeps the chunks fetched last.
func TestDiskCacheRestartTrimKeepsNewest(t *testing.T) {
	dir := t.TempDir()
	c := newTestDiskCache(t, DiskCacheConfig{Dir: dir, MaxBytes: 8 << 20})
	const chunk = 100 << 10
	var chunks []Chunk
	base := time.Now().Add(-time.Hour)
	for i := range 20 {
		ch := diskCachePut(t, c, randomBytes(uint64(i), chunk))
		chunks = append(chunks, ch)
		at := base.Add(time.Duration(i) * time.Minute)
		if err := os.Chtimes(diskCachePath(dir, ch.Digest), at, at); err != nil {
			t.Fatal(err)
		}
	}
	c.Close()
	c2 := newTestDiskCache(t, DiskCacheConfig{Dir: dir, MaxBytes: 8 * chunk})
	checkDiskCache(t, c2, dir)
	var kept []int
	for i, ch := range chunks {
		if c2.Has(ch.Digest) {
			kept = append(kept, i)
		}
	}
	t.Logf("kept %v", kept)
	if len(kept) != 8 || kept[0] < 10 {
		t.Errorf("kept chunks %v of 0..19 (oldest first), want 8 of the newest", kept)
	}
}

// A few chunks, twice what the cache holds, put and read by many fetches
// at once: the same digest is put again while an older copy of it is being
// evicted and its file removed. No file may outlive its entry, and no entry
// may be served without its file.
func TestDiskCacheConcurrentSameChunks(t *testing.T) {
	dir := t.TempDir()
	const chunk = 64 << 10
	c := newTestDiskCache(t, DiskCacheConfig{Dir: dir, MaxBytes: 3 * chunk, MemoryBytes: -1})
	data := make([][]byte, 6)
	for i := range data {
		data[i] = randomBytes(uint64(i), chunk)
	}
	var wg sync.WaitGroup
	errs := make(chan error, 8)
	for w := range 4 {
		wg.Go(func() {
			r := rand.New(rand.NewPCG(uint64(w), 9))
			for range 200 {
				i := r.IntN(len(data))
				b, err := diskCacheRead(c, sha256.Sum256(data[i]))
				switch {
				case errors.Is(err, ErrChunkNotFound):
					if _, err := c.Put(bytes.NewReader(data[i])); err != nil {
						errs <- err
						return
					}
				case err != nil:
					errs <- err
					return
				case !bytes.Equal(b, data[i]):
					errs <- fmt.Errorf("chunk %d: wrong bytes", i)
					return
				}
			}
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
	checkDiskCache(t, c, dir)
	t.Logf("%+v", c.Stats())
}
