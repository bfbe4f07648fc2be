package vod

import (
	"bytes"
	"crypto/sha256"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"log/slog"
	"math/rand/v2"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"sync"
	"syscall"
	"testing"

	"golang.org/x/sys/unix"

	"github.com/gradient-cdn/gradient/internal/testutil"
)

// lockedBuffer is a log sink the store's goroutines may write at once.
type lockedBuffer = testutil.LogBuffer

func bufferedLogger(t testing.TB) (*slog.Logger, *lockedBuffer) {
	buf := &lockedBuffer{}
	return slog.New(slog.NewTextHandler(buf, &slog.HandlerOptions{Level: slog.LevelDebug})), buf
}

func newTestStore(t testing.TB, dir string, memoryBytes int64) (*ChunkStore, *lockedBuffer) {
	t.Helper()
	log, buf := bufferedLogger(t)
	s, err := NewChunkStore(dir, memoryBytes, log)
	if err != nil {
		t.Fatalf("NewChunkStore: %v", err)
	}
	t.Cleanup(func() { s.Close() })
	return s, buf
}

func randomBytes(seed uint64, n int) []byte {
	r := rand.New(rand.NewPCG(seed, 1))
	b := make([]byte, n)
	for i := range b {
		b[i] = byte(r.Uint32())
	}
	return b
}

// listFiles is every regular file under dir, relative to it.
func listFiles(t testing.TB, dir string) []string {
	t.Helper()
	var out []string
	err := filepath.WalkDir(dir, func(p string, e fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if !e.IsDir() {
			rel, _ := filepath.Rel(dir, p)
			out = append(out, rel)
		}
		return nil
	})
	if err != nil {
		t.Fatalf("walk %s: %v", dir, err)
	}
	return out
}

func readAllOpen(t testing.TB, s *ChunkStore, d Digest) ([]byte, error) {
	t.Helper()
	rc, n, err := s.Open(d)
	if err != nil {
		return nil, err
	}
	defer rc.Close()
	b, err := io.ReadAll(rc)
	if err != nil {
		t.Fatalf("read chunk %s: %v", d, err)
	}
	if int64(len(b)) != n {
		t.Fatalf("Open said %d bytes, read %d", n, len(b))
	}
	return b, nil
}

// flipByte damages a stored chunk the way a bad disk does.
func flipByte(t testing.TB, s *ChunkStore, d Digest, at int64) {
	t.Helper()
	f, err := os.OpenFile(s.path(d), os.O_RDWR, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	var b [1]byte
	if _, err := f.ReadAt(b[:], at); err != nil {
		t.Fatal(err)
	}
	b[0] ^= 0x40
	if _, err := f.WriteAt(b[:], at); err != nil {
		t.Fatal(err)
	}
}

func TestChunkStorePutOpenRoundTrip(t *testing.T) {
	cases := []struct {
		name   string
		memory int64
		size   int
	}{
		{"memory cache", 8 << 20, 300 << 10},
		{"no cache", -1, 300 << 10},
		{"bigger than a cache entry", 1 << 20, 700 << 10}, // entry cap is 128 KiB: served from the file
		{"empty", 0, 0},
		{"one byte", 0, 1},
	}
	for i, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			dir := t.TempDir()
			s, _ := newTestStore(t, dir, tc.memory)
			data := randomBytes(uint64(i), tc.size)
			c, err := s.Put(bytes.NewReader(data))
			if err != nil {
				t.Fatalf("Put: %v", err)
			}
			if want := Digest(sha256.Sum256(data)); c.Digest != want {
				t.Fatalf("digest %s, want sha256 %s", c.Digest, want)
			}
			if c.Size != int64(len(data)) || c.Start != 0 || c.Duration != 0 {
				t.Fatalf("chunk %+v, want size %d and no media time", c, len(data))
			}
			hx := c.Digest.String()
			onDisk, err := os.ReadFile(filepath.Join(dir, hx[:2], hx))
			if err != nil || !bytes.Equal(onDisk, data) {
				t.Fatalf("file <dir>/%s/%s: err %v, equal %v", hx[:2], hx, err, bytes.Equal(onDisk, data))
			}
			if files := listFiles(t, dir); len(files) != 1 {
				t.Fatalf("files after Put: %v, want the chunk alone", files)
			}
			if fi, err := os.Stat(filepath.Join(dir, hx[:2], hx)); err != nil || fi.Mode().Perm() != 0o644 {
				t.Fatalf("chunk file mode %v (%v), want 0644: other servers read the folder", fi.Mode(), err)
			}
			if !s.Has(c.Digest) {
				t.Fatal("Has = false after Put")
			}
			if n, err := s.Size(c.Digest); err != nil || n != int64(len(data)) {
				t.Fatalf("Size = %d, %v; want %d", n, err, len(data))
			}
			for range 2 { // a miss, then (when cached) a hit
				got, err := readAllOpen(t, s, c.Digest)
				if err != nil {
					t.Fatalf("Open: %v", err)
				}
				if !bytes.Equal(got, data) {
					t.Fatal("Open returned other bytes than were Put")
				}
			}
			// Seekable: the tail read through Seek equals the tail.
			if len(data) > 10 {
				rc, _, err := s.Open(c.Digest)
				if err != nil {
					t.Fatal(err)
				}
				if _, err := rc.Seek(-10, io.SeekEnd); err != nil {
					t.Fatal(err)
				}
				tail, _ := io.ReadAll(rc)
				rc.Close()
				if !bytes.Equal(tail, data[len(data)-10:]) {
					t.Fatal("Seek then read: wrong bytes")
				}
			}
		})
	}
}

func TestChunkStorePutIdempotent(t *testing.T) {
	dir := t.TempDir()
	s, _ := newTestStore(t, dir, 0)
	data := randomBytes(7, 100<<10)
	c1, err := s.Put(bytes.NewReader(data))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := readAllOpen(t, s, c1.Digest); err != nil { // now cached too
		t.Fatal(err)
	}
	c2, err := s.Put(bytes.NewReader(data))
	if err != nil {
		t.Fatalf("second Put: %v", err)
	}
	if c1 != c2 {
		t.Fatalf("second Put gave %+v, first %+v", c2, c1)
	}
	if files := listFiles(t, dir); len(files) != 1 {
		t.Fatalf("files after two Puts of the same bytes: %v", files)
	}
	got, err := readAllOpen(t, s, c1.Digest)
	if err != nil || !bytes.Equal(got, data) {
		t.Fatalf("Open after second Put: %v", err)
	}
}

// failingReader yields n good bytes, then fails.
type failingReader struct {
	r   io.Reader
	err error
}

func (f *failingReader) Read(p []byte) (int, error) {
	n, err := f.r.Read(p)
	if err == io.EOF {
		return n, f.err
	}
	return n, err
}

var errUpstream = errors.New("upload connection reset")

func TestChunkStoreFailedPutLeavesNothing(t *testing.T) {
	dir := t.TempDir()
	s, _ := newTestStore(t, dir, 0)
	data := randomBytes(3, 600<<10) // more than one copy buffer
	_, err := s.Put(&failingReader{r: bytes.NewReader(data), err: errUpstream})
	if !errors.Is(err, errUpstream) {
		t.Fatalf("Put over a failing reader: err %v, want it to wrap the reader's error", err)
	}
	if files := listFiles(t, dir); len(files) != 0 {
		t.Fatalf("files left after a failed Put: %v", files)
	}
	if s.Has(Digest(sha256.Sum256(data))) {
		t.Fatal("Has the chunk whose Put failed")
	}
	// The store still works after it.
	if _, err := s.Put(bytes.NewReader(data)); err != nil {
		t.Fatalf("Put after a failed Put: %v", err)
	}
}

func TestChunkStorePutNilReader(t *testing.T) {
	dir := t.TempDir()
	s, _ := newTestStore(t, dir, 0)
	if _, err := s.Put(nil); err == nil {
		t.Fatal("Put(nil) succeeded")
	}
	if files := listFiles(t, dir); len(files) != 0 {
		t.Fatalf("files left: %v", files)
	}
}

// fullDisk accepts limit bytes and then fails as write(2) does on a full
// file system.
type fullDisk struct {
	w     io.Writer
	name  string
	limit int
}

func (f *fullDisk) Write(p []byte) (int, error) {
	if len(p) > f.limit {
		n, _ := f.w.Write(p[:f.limit])
		f.limit = 0
		return n, &os.PathError{Op: "write", Path: f.name, Err: syscall.ENOSPC}
	}
	f.limit -= len(p)
	return f.w.Write(p)
}

func TestChunkStorePutNoSpace(t *testing.T) {
	dir := t.TempDir()
	s, _ := newTestStore(t, dir, 0)
	var tempName string
	s.wrapTemp = func(w io.Writer) io.Writer {
		tempName = w.(*os.File).Name()
		return &fullDisk{w: w, name: tempName, limit: 300 << 10}
	}
	_, err := s.Put(bytes.NewReader(randomBytes(4, 1<<20)))
	if err == nil {
		t.Fatal("Put on a full disk succeeded")
	}
	if !errors.Is(err, syscall.ENOSPC) || !strings.Contains(err.Error(), "no space") {
		t.Fatalf("Put on a full disk: %v; want it to say \"no space\" and wrap ENOSPC", err)
	}
	if tempName == "" || filepath.Dir(tempName) != dir {
		t.Fatalf("temporary file %q not in the store folder", tempName)
	}
	if _, err := os.Stat(tempName); !errors.Is(err, fs.ErrNotExist) {
		t.Fatalf("temporary file still there after a full disk: %v", err)
	}
	if files := listFiles(t, dir); len(files) != 0 {
		t.Fatalf("files left after a full disk: %v", files)
	}
}

// TestChunkStorePutRealFullDisk fills a real 1 MiB tmpfs. The tmpfs is
// mounted in a mount namespace of one locked OS thread, which ends with its
// goroutine, so nothing is mounted for the rest of the machine. It needs
// root (CAP_SYS_ADMIN); elsewhere TestChunkStorePutNoSpace covers the same
// path with a writer that fails as write(2) does.
func TestChunkStorePutRealFullDisk(t *testing.T) {
	dir := t.TempDir()
	log, _ := bufferedLogger(t)
	type result struct {
		skip, fail string
		putErr     error
		files      []string
		smallOK    bool
	}
	done := make(chan result, 1)
	go func() {
		runtime.LockOSThread() // never unlocked: the thread and its namespace end with this goroutine
		var res result
		defer func() { done <- res }()
		if err := unix.Unshare(unix.CLONE_NEWNS); err != nil {
			res.skip = fmt.Sprintf("no mount namespace: %v", err)
			return
		}
		if err := unix.Mount("", "/", "", unix.MS_PRIVATE|unix.MS_REC, ""); err != nil {
			res.skip = fmt.Sprintf("make mounts private: %v", err)
			return
		}
		if err := unix.Mount("tmpfs", dir, "tmpfs", 0, "size=1m"); err != nil {
			res.skip = fmt.Sprintf("mount tmpfs: %v", err)
			return
		}
		s, err := NewChunkStore(dir, 0, log)
		if err != nil {
			res.fail = err.Error()
			return
		}
		defer s.Close()
		_, res.putErr = s.Put(bytes.NewReader(randomBytes(11, 3<<20)))
		err = filepath.WalkDir(dir, func(p string, e fs.DirEntry, err error) error {
			if err == nil && !e.IsDir() {
				res.files = append(res.files, p)
			}
			return err
		})
		if err != nil {
			res.fail = err.Error()
			return
		}
		// The space the failed Put took is free again.
		small := randomBytes(12, 600<<10)
		if c, err := s.Put(bytes.NewReader(small)); err == nil {
			rc, _, err := s.Open(c.Digest)
			if err == nil {
				got, _ := io.ReadAll(rc)
				rc.Close()
				res.smallOK = bytes.Equal(got, small)
			}
		}
	}()
	res := <-done
	if res.skip != "" {
		t.Skip(res.skip)
	}
	if res.fail != "" {
		t.Fatal(res.fail)
	}
	if !errors.Is(res.putErr, syscall.ENOSPC) || !strings.Contains(res.putErr.Error(), "no space") {
		t.Fatalf("Put of 3 MiB into a 1 MiB tmpfs: %v; want \"no space\" wrapping ENOSPC", res.putErr)
	}
	if len(res.files) != 0 {
		t.Fatalf("files left on the full disk: %v", res.files)
	}
	if !res.smallOK {
		t.Fatal("a chunk that fits could not be stored and read after the full-disk failure")
	}
}

func TestNewChunkStoreRemovesLeftoverTempFiles(t *testing.T) {
	dir := t.TempDir()
	s1, _ := newTestStore(t, dir, 0)
	data := randomBytes(5, 50<<10)
	c, err := s1.Put(bytes.NewReader(data))
	if err != nil {
		t.Fatal(err)
	}
	// What a kill -9 in the middle of a Put leaves.
	leftover := filepath.Join(dir, tempPrefix+"123456")
	if err := os.WriteFile(leftover, data[:1000], 0o644); err != nil {
		t.Fatal(err)
	}
	s2, log := newTestStore(t, dir, 0)
	if _, err := os.Stat(leftover); !errors.Is(err, fs.ErrNotExist) {
		t.Fatalf("leftover temporary file survived NewChunkStore: %v", err)
	}
	if !strings.Contains(log.String(), "temporary") {
		t.Errorf("no log line about the removed temporary file: %q", log.String())
	}
	got, err := readAllOpen(t, s2, c.Digest)
	if err != nil || !bytes.Equal(got, data) {
		t.Fatalf("stored chunk after restart: %v", err)
	}
	if files := listFiles(t, dir); len(files) != 1 {
		t.Fatalf("files after restart: %v", files)
	}
}

func TestNewChunkStoreCreatesFolderAndRejectsAFile(t *testing.T) {
	base := t.TempDir()
	dir := filepath.Join(base, "a", "b", "chunks")
	newTestStore(t, dir, 0)
	if fi, err := os.Stat(dir); err != nil || !fi.IsDir() {
		t.Fatalf("folder not created: %v", err)
	}
	file := filepath.Join(base, "file")
	if err := os.WriteFile(file, nil, 0o644); err != nil {
		t.Fatal(err)
	}
	if _, err := NewChunkStore(file, 0, nil); err == nil {
		t.Fatal("NewChunkStore over a regular file succeeded")
	}
	if _, err := NewChunkStore("", 0, nil); err == nil {
		t.Fatal("NewChunkStore with no folder succeeded")
	}
}

func TestChunkStoreUnknownDigest(t *testing.T) {
	s, _ := newTestStore(t, t.TempDir(), 0)
	d := Digest(sha256.Sum256([]byte("never stored")))
	if s.Has(d) {
		t.Fatal("Has an unknown digest")
	}
	if _, _, err := s.Open(d); !errors.Is(err, ErrChunkNotFound) {
		t.Fatalf("Open unknown: %v", err)
	}
	if _, err := s.Size(d); !errors.Is(err, ErrChunkNotFound) {
		t.Fatalf("Size unknown: %v", err)
	}
	if err := s.Remove(d); !errors.Is(err, ErrChunkNotFound) {
		t.Fatalf("Remove unknown: %v", err)
	}
	// A folder where the chunk file would be is not a chunk.
	if err := os.MkdirAll(s.path(d), 0o755); err != nil {
		t.Fatal(err)
	}
	if s.Has(d) {
		t.Fatal("Has a folder")
	}
	if _, _, err := s.Open(d); !errors.Is(err, ErrChunkNotFound) {
		t.Fatalf("Open of a folder: %v", err)
	}
	if _, err := s.Size(d); !errors.Is(err, ErrChunkNotFound) {
		t.Fatalf("Size of a folder: %v", err)
	}
}

func TestChunkStoreRemove(t *testing.T) {
	dir := t.TempDir()
	s, _ := newTestStore(t, dir, 0)
	data := randomBytes(6, 10<<10)
	c, err := s.Put(bytes.NewReader(data))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := readAllOpen(t, s, c.Digest); err != nil { // cached now
		t.Fatal(err)
	}
	if err := s.Remove(c.Digest); err != nil {
		t.Fatalf("Remove: %v", err)
	}
	if s.Has(c.Digest) {
		t.Fatal("Has after Remove")
	}
	if _, _, err := s.Open(c.Digest); !errors.Is(err, ErrChunkNotFound) {
		t.Fatalf("Open after Remove (the memory cache must forget it too): %v", err)
	}
	if err := s.Remove(c.Digest); !errors.Is(err, ErrChunkNotFound) {
		t.Fatalf("second Remove: %v, want ErrChunkNotFound", err)
	}
	if files := listFiles(t, dir); len(files) != 0 {
		t.Fatalf("files after Remove: %v", files)
	}
}

func TestChunkStoreCorruptOnDiskIsRefused(t *testing.T) {
	damage := []struct {
		name string
		do   func(t *testing.T, s *ChunkStore, d Digest, size int)
	}{
		{"flipped byte", func(t *testing.T, s *ChunkStore, d Digest, size int) { flipByte(t, s, d, int64(size/2)) }},
		{"truncated", func(t *testing.T, s *ChunkStore, d Digest, size int) {
			if err := os.Truncate(s.path(d), int64(size-1)); err != nil {
				t.Fatal(err)
			}
		}},
	}
	stores := []struct {
		name   string
		memory int64
		size   int
	}{
		{"cached size", 8 << 20, 200 << 10},
		{"no cache", -1, 200 << 10},
		{"bigger than a cache entry", 1 << 20, 500 << 10},
	}
	for _, dm := range damage {
		for _, st := range stores {
			t.Run(dm.name+"/"+st.name, func(t *testing.T) {
				dir := t.TempDir()
				s1, _ := newTestStore(t, dir, st.memory)
				data := randomBytes(9, st.size)
				c, err := s1.Put(bytes.NewReader(data))
				if err != nil {
					t.Fatal(err)
				}
				dm.do(t, s1, c.Digest, st.size)

				// A fresh store on the same folder: nothing of the chunk in memory.
				s, log := newTestStore(t, dir, st.memory)
				var reported []Digest
				var mu sync.Mutex
				s.OnCorrupt = func(d Digest) { mu.Lock(); reported = append(reported, d); mu.Unlock() }

				rc, _, err := s.Open(c.Digest)
				if !errors.Is(err, ErrChunkCorrupt) {
					if rc != nil {
						rc.Close()
					}
					t.Fatalf("Open of a corrupt chunk: %v, want ErrChunkCorrupt", err)
				}
				if rc != nil {
					t.Fatal("Open of a corrupt chunk returned a reader")
				}
				if _, err := os.Stat(s.path(c.Digest)); !errors.Is(err, fs.ErrNotExist) {
					t.Fatalf("corrupt file not removed: %v", err)
				}
				mu.Lock()
				if len(reported) != 1 || reported[0] != c.Digest {
					t.Fatalf("OnCorrupt calls %v, want one for %s", reported, c.Digest)
				}
				mu.Unlock()
				if !strings.Contains(log.String(), "corrupt") || !strings.Contains(log.String(), c.Digest.String()) {
					t.Fatalf("no log line naming the corrupt chunk: %q", log.String())
				}
				// Later reads keep refusing it, without reporting it again.
				if _, _, err := s.Open(c.Digest); !errors.Is(err, ErrChunkCorrupt) {
					t.Fatalf("second Open: %v, want ErrChunkCorrupt", err)
				}
				if s.Has(c.Digest) {
					t.Fatal("Has a chunk dropped as corrupt")
				}
				if _, err := s.Size(c.Digest); !errors.Is(err, ErrChunkCorrupt) {
					t.Fatalf("Size of a dropped chunk: %v", err)
				}
				if len(reported) != 1 {
					t.Fatalf("OnCorrupt called %d times", len(reported))
				}
				// Putting the good bytes again repairs it.
				if _, err := s.Put(bytes.NewReader(data)); err != nil {
					t.Fatal(err)
				}
				got, err := readAllOpen(t, s, c.Digest)
				if err != nil || !bytes.Equal(got, data) {
					t.Fatalf("Open after the repairing Put: %v", err)
				}
			})
		}
	}
}

// A chunk verified once is served from memory: damage on disk after that
// does not reach a client (the bytes served are the verified ones), and a
// store that has to read the file again refuses it.
func TestChunkStoreHotChunkServedFromVerifiedMemory(t *testing.T) {
	dir := t.TempDir()
	s, _ := newTestStore(t, dir, 8<<20)
	data := randomBytes(10, 100<<10)
	c, err := s.Put(bytes.NewReader(data))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := readAllOpen(t, s, c.Digest); err != nil {
		t.Fatal(err)
	}
	flipByte(t, s, c.Digest, 5)
	got, err := readAllOpen(t, s, c.Digest)
	if err != nil || !bytes.Equal(got, data) {
		t.Fatalf("hot chunk after damage on disk: err %v, equal %v", err, bytes.Equal(got, data))
	}
	s2, _ := newTestStore(t, dir, 8<<20)
	if _, _, err := s2.Open(c.Digest); !errors.Is(err, ErrChunkCorrupt) {
		t.Fatalf("cold read of the damaged file: %v", err)
	}
}

// The memory cache is bounded: many chunks through a small cache all read
// back right (evicted ones are re-read and re-verified).
func TestChunkStoreSmallCacheManyChunks(t *testing.T) {
	s, _ := newTestStore(t, t.TempDir(), 256<<10) // entries up to 32 KiB
	var chunks []Chunk
	var datas [][]byte
	for i := range 40 {
		data := randomBytes(uint64(100+i), 20<<10)
		c, err := s.Put(bytes.NewReader(data))
		if err != nil {
			t.Fatal(err)
		}
		chunks, datas = append(chunks, c), append(datas, data)
	}
	for round := range 3 {
		for i, c := range chunks {
			got, err := readAllOpen(t, s, c.Digest)
			if err != nil || !bytes.Equal(got, datas[i]) {
				t.Fatalf("round %d chunk %d: err %v", round, i, err)
			}
		}
	}
	s.cache.CleanUp()
	if w := s.cache.WeightedSize(); w > 256<<10 {
		t.Fatalf("cache holds %d bytes, budget %d", w, 256<<10)
	}
}

func TestChunkStoreConcurrentPutOpen(t *testing.T) {
	dir := t.TempDir()
	s, _ := newTestStore(t, dir, 1<<20)
	const workers, perWorker = 8, 6
	var wg sync.WaitGroup
	errs := make(chan error, workers*perWorker)
	for w := range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range perWorker {
				// Workers share half their chunks, so Puts of the same
				// digest and misses of the same chunk race.
				seed := uint64(i)
				if i%2 == 1 {
					seed = uint64(1000 + w*perWorker + i)
				}
				data := randomBytes(seed, 40<<10)
				c, err := s.Put(bytes.NewReader(data))
				if err != nil {
					errs <- err
					return
				}
				rc, _, err := s.Open(c.Digest)
				if err != nil {
					errs <- err
					return
				}
				got, err := io.ReadAll(rc)
				rc.Close()
				if err != nil || !bytes.Equal(got, data) {
					errs <- fmt.Errorf("chunk %s: read back wrong bytes (%v)", c.Digest, err)
					return
				}
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
	for _, f := range listFiles(t, dir) {
		if strings.Contains(f, tempPrefix) {
			t.Errorf("temporary file left: %s", f)
		}
	}
}
