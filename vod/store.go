package vod

import (
	"bytes"
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"hash"
	"io"
	"io/fs"
	"log/slog"
	"math"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"syscall"

	"github.com/maypok86/otter/v2"
)

// ErrChunkNotFound is returned for a digest the store does not hold.
var ErrChunkNotFound = errors.New("chunk not found")

// ErrChunkCorrupt is returned for a chunk whose bytes on disk no longer
// match its digest. The store has dropped it; it is never served.
var ErrChunkCorrupt = errors.New("chunk corrupt: bytes on disk do not match the digest")

// DefaultChunkMemoryBytes is the size of the verified-chunk memory cache
// when NewChunkStore is given 0.
const DefaultChunkMemoryBytes int64 = 256 << 20

// tempPrefix names the files Put writes before they are complete. Only
// they live at the top of the store's folder, so NewChunkStore can remove
// the ones a crash left behind.
const tempPrefix = ".tmp-chunk-"

// ChunkStore keeps chunks on disk under the SHA-256 of their bytes, as
// <dir>/<hex[:2]>/<hex>. A chunk is written to a temporary file, fsynced
// and renamed into place, so a chunk file is always whole.
//
// Reads only ever return bytes that match the digest: a chunk read from
// disk is hashed before it is served, and one that no longer matches is
// reported (log line and OnCorrupt), removed, and refused with
// ErrChunkCorrupt. So that hot chunks are not hashed on every request, the
// verified bytes of chunks up to 1/8 of the memory budget are kept in a
// byte-bounded W-TinyLFU cache (otter) and served from memory.
//
// A ChunkStore is safe for concurrent use. One process holds a folder:
// NewChunkStore removes the temporary files of writes in progress. Close
// stops the cache's maintenance goroutine.
type ChunkStore struct {
	// OnCorrupt, when set (after NewChunkStore, before the store is used),
	// is called with the digest of every chunk found corrupt on disk,
	// after the chunk has been removed. It must not block for long.
	OnCorrupt func(Digest)

	dir string
	log *slog.Logger

	// cache holds verified chunk bytes; nil when the memory budget is
	// negative (every read then hashes the file).
	cache *otter.Cache[Digest, []byte]
	// maxEntry is the largest chunk the cache takes.
	maxEntry int64

	mu      sync.Mutex
	corrupt map[Digest]struct{} // dropped as corrupt since start, until Put or Remove

	// wrapTemp, when set (tests), wraps the writer of a temporary chunk
	// file, to make writes fail as a full disk does.
	wrapTemp func(w io.Writer) io.Writer
}

var _ ChunkPutter = (*ChunkStore)(nil)

// NewChunkStore opens (creating if missing) the chunk folder dir and
// removes the temporary files a crash left in it. memoryBytes bounds the
// memory cache of verified chunks: 0 means DefaultChunkMemoryBytes, a
// negative value disables the cache.
func NewChunkStore(dir string, memoryBytes int64, log *slog.Logger) (*ChunkStore, error) {
	if log == nil {
		log = slog.Default()
	}
	log = log.With("component", "vod-store")
	if dir == "" {
		return nil, errors.New("chunk store: empty folder name")
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, fmt.Errorf("chunk store %s: %w", dir, err)
	}
	entries, err := os.ReadDir(dir)
	if err != nil {
		return nil, fmt.Errorf("chunk store %s: %w", dir, err)
	}
	removed := 0
	for _, e := range entries {
		if !e.Type().IsRegular() || !strings.HasPrefix(e.Name(), tempPrefix) {
			continue
		}
		if err := os.Remove(filepath.Join(dir, e.Name())); err != nil && !errors.Is(err, fs.ErrNotExist) {
			return nil, fmt.Errorf("chunk store %s: remove leftover temporary file: %w", dir, err)
		}
		removed++
	}
	if removed > 0 {
		log.Info("removed temporary chunk files left by an interrupted write", "dir", dir, "files", removed)
	}

	s := &ChunkStore{dir: dir, log: log, corrupt: map[Digest]struct{}{}}
	if memoryBytes == 0 {
		memoryBytes = DefaultChunkMemoryBytes
	}
	if memoryBytes > 0 {
		s.maxEntry = min(memoryBytes/8, math.MaxUint32)
		c, err := otter.New(&otter.Options[Digest, []byte]{
			MaximumWeight: uint64(memoryBytes),
			Weigher:       func(_ Digest, b []byte) uint32 { return uint32(len(b)) },
			Logger:        otterLogger{log},
		})
		if err != nil {
			return nil, fmt.Errorf("chunk store %s: memory cache: %w", dir, err)
		}
		s.cache = c
	}
	return s, nil
}

// Dir is the store's folder.
func (s *ChunkStore) Dir() string { return s.dir }

// Close stops the memory cache's background maintenance. The store's
// files are untouched; a closed store still reads and writes, uncached
// chunks then only being verified from disk.
func (s *ChunkStore) Close() error {
	if s.cache != nil {
		s.cache.InvalidateAll()
		s.cache.StopAllGoroutines()
	}
	return nil
}

func (s *ChunkStore) path(d Digest) string {
	h := d.String()
	return filepath.Join(s.dir, h[:2], h)
}

// Put stores the bytes of r under their SHA-256 and returns the chunk's
// digest and size. It streams r to a temporary file while hashing it,
// fsyncs it and renames it into place (fsyncing the folder), so the chunk
// is durable when Put returns. Storing bytes that are already stored is
// harmless and returns the same Chunk (the file is replaced by the new,
// identical copy, which repairs one damaged on disk). On any error
// (reading r, writing, a full disk) nothing is left behind; a full disk
// gives an error that says "no space" and wraps syscall.ENOSPC.
func (s *ChunkStore) Put(r io.Reader) (Chunk, error) {
	if r == nil {
		return Chunk{}, errors.New("chunk store: put: nil reader")
	}
	f, err := os.CreateTemp(s.dir, tempPrefix+"*")
	if err != nil {
		return Chunk{}, s.writeErr("create temporary file", err)
	}
	tmp := f.Name()
	done := false
	defer func() {
		if !done {
			f.Close()
			os.Remove(tmp)
		}
	}()

	h := sha256.New()
	var w io.Writer = f
	if s.wrapTemp != nil {
		w = s.wrapTemp(f)
	}
	n, err := copyHashing(w, h, r)
	if err != nil {
		return Chunk{}, err
	}
	// CreateTemp makes 0600; chunks are public bytes, and another server
	// (nginx in the serving benchmark, a backup) may read the folder.
	if err := f.Chmod(0o644); err != nil {
		return Chunk{}, s.writeErr("chmod", err)
	}
	if err := f.Sync(); err != nil {
		return Chunk{}, s.writeErr("fsync", err)
	}
	if err := f.Close(); err != nil {
		return Chunk{}, s.writeErr("close", err)
	}
	var d Digest
	h.Sum(d[:0])

	final := s.path(d)
	sub := filepath.Dir(final)
	created := false
	if _, err := os.Stat(sub); errors.Is(err, fs.ErrNotExist) {
		if err := os.Mkdir(sub, 0o755); err != nil && !errors.Is(err, fs.ErrExist) {
			return Chunk{}, s.writeErr("create folder", err)
		}
		created = true
	}
	if err := os.Rename(tmp, final); err != nil {
		return Chunk{}, s.writeErr("rename into place", err)
	}
	done = true
	if err := syncDir(sub); err != nil {
		return Chunk{}, s.writeErr("fsync folder", err)
	}
	if created {
		if err := syncDir(s.dir); err != nil {
			return Chunk{}, s.writeErr("fsync folder", err)
		}
	}
	s.mu.Lock()
	delete(s.corrupt, d)
	s.mu.Unlock()
	return Chunk{Digest: d, Size: n}, nil
}

// copyHashing copies r to w and h with a fixed buffer, telling read errors
// from write errors.
func copyHashing(w io.Writer, h hash.Hash, r io.Reader) (int64, error) {
	bp := copyBufs.Get().(*[]byte)
	defer copyBufs.Put(bp)
	buf := *bp
	if sr, ok := r.(*segmentReader); ok {
		// A packaged segment: large slices (video frames) go to the hash
		// and the file as they are; small ones are gathered in buf so
		// that audio frames do not cost a write each.
		hw := hashingWriter{w: w, h: h}
		var n int64
		pend := buf[:0]
		flush := func() error {
			if len(pend) == 0 {
				return nil
			}
			m, err := hw.Write(pend)
			n += int64(m)
			pend = pend[:0]
			return err
		}
		for _, b := range sr.bufs {
			var err error
			switch {
			case len(b) <= cap(pend)-len(pend) && len(b) < 64<<10:
				pend = append(pend, b...)
			default:
				if err = flush(); err == nil {
					var m int
					m, err = hw.Write(b)
					n += int64(m)
				}
			}
			if err == nil && cap(pend)-len(pend) < 64<<10 {
				err = flush()
			}
			if err != nil {
				return n, writeErr("chunk store: put: write", err)
			}
		}
		sr.bufs = nil
		if err := flush(); err != nil {
			return n, writeErr("chunk store: put: write", err)
		}
		return n, nil
	}
	var n int64
	for {
		m, rerr := r.Read(buf)
		if m > 0 {
			h.Write(buf[:m])
			wn, werr := w.Write(buf[:m])
			n += int64(wn)
			if werr == nil && wn != m {
				werr = io.ErrShortWrite
			}
			if werr != nil {
				return n, writeErr("chunk store: put: write", werr)
			}
		}
		if rerr == io.EOF {
			return n, nil
		}
		if rerr != nil {
			return n, fmt.Errorf("chunk store: put: read after %d bytes: %w", n, rerr)
		}
	}
}

var copyBufs = sync.Pool{New: func() any { b := make([]byte, 256<<10); return &b }}

// hashingWriter hashes what it writes.
type hashingWriter struct {
	w io.Writer
	h hash.Hash
}

func (hw hashingWriter) Write(p []byte) (int, error) {
	hw.h.Write(p)
	n, err := hw.w.Write(p)
	if err == nil && n != len(p) {
		err = io.ErrShortWrite
	}
	return n, err
}

func (s *ChunkStore) writeErr(op string, err error) error {
	return writeErr("chunk store "+s.dir+": put: "+op, err)
}

// writeErr names a full disk plainly: callers and users look for "no space".
func writeErr(what string, err error) error {
	if errors.Is(err, syscall.ENOSPC) {
		return fmt.Errorf("%s: no space left on device: %w", what, err)
	}
	return fmt.Errorf("%s: %w", what, err)
}

func syncDir(dir string) error {
	d, err := os.Open(dir)
	if err != nil {
		return err
	}
	err = d.Sync()
	if cerr := d.Close(); err == nil {
		err = cerr
	}
	return err
}

func (s *ChunkStore) isCorrupt(d Digest) bool {
	s.mu.Lock()
	_, ok := s.corrupt[d]
	s.mu.Unlock()
	return ok
}

// Has reports whether the store holds the chunk (it does not verify it:
// Open does).
func (s *ChunkStore) Has(d Digest) bool {
	if s.cache != nil {
		if _, ok := s.cache.GetIfPresent(d); ok {
			return true
		}
	}
	if s.isCorrupt(d) {
		return false
	}
	fi, err := os.Stat(s.path(d))
	return err == nil && fi.Mode().IsRegular()
}

// Size is the chunk's size in bytes: ErrChunkNotFound when it is not
// stored, ErrChunkCorrupt when it was dropped as corrupt.
func (s *ChunkStore) Size(d Digest) (int64, error) {
	if s.cache != nil {
		if b, ok := s.cache.GetIfPresent(d); ok {
			return int64(len(b)), nil
		}
	}
	if s.isCorrupt(d) {
		return 0, fmt.Errorf("chunk %s: %w", d, ErrChunkCorrupt)
	}
	fi, err := os.Stat(s.path(d))
	if errors.Is(err, fs.ErrNotExist) || (err == nil && !fi.Mode().IsRegular()) {
		return 0, fmt.Errorf("chunk %s: %w", d, ErrChunkNotFound)
	}
	if err != nil {
		return 0, fmt.Errorf("chunk %s: %w", d, err)
	}
	return fi.Size(), nil
}

// Remove deletes the chunk: ErrChunkNotFound when it is not stored. A
// chunk already dropped as corrupt is forgotten without error.
func (s *ChunkStore) Remove(d Digest) error {
	if s.cache != nil {
		s.cache.Invalidate(d)
	}
	s.mu.Lock()
	_, wasCorrupt := s.corrupt[d]
	delete(s.corrupt, d)
	s.mu.Unlock()
	p := s.path(d)
	err := os.Remove(p)
	if errors.Is(err, fs.ErrNotExist) {
		if wasCorrupt {
			return nil
		}
		return fmt.Errorf("chunk %s: %w", d, ErrChunkNotFound)
	}
	if err != nil {
		return fmt.Errorf("chunk %s: remove: %w", d, err)
	}
	if err := syncDir(filepath.Dir(p)); err != nil {
		return fmt.Errorf("chunk %s: remove: fsync folder: %w", d, err)
	}
	return nil
}

// Open returns the chunk's bytes, verified against its digest, and its
// size. A hot chunk comes from memory; otherwise the file is read and
// hashed first. It answers ErrChunkNotFound for a chunk the store does not
// hold, and ErrChunkCorrupt for one whose bytes on disk no longer match
// (which it reports and removes). The caller closes the reader.
func (s *ChunkStore) Open(d Digest) (io.ReadSeekCloser, int64, error) {
	if s.cache != nil {
		if b, ok := s.cache.GetIfPresent(d); ok {
			return newMemChunk(b), int64(len(b)), nil
		}
	}
	if s.isCorrupt(d) {
		return nil, 0, fmt.Errorf("chunk %s: %w", d, ErrChunkCorrupt)
	}
	p := s.path(d)
	fi, err := os.Stat(p)
	if errors.Is(err, fs.ErrNotExist) {
		return nil, 0, fmt.Errorf("chunk %s: %w", d, ErrChunkNotFound)
	}
	if err != nil {
		return nil, 0, fmt.Errorf("chunk %s: %w", d, err)
	}
	if !fi.Mode().IsRegular() {
		return nil, 0, fmt.Errorf("chunk %s: %s is not a regular file: %w", d, p, ErrChunkNotFound)
	}
	if s.cache != nil && fi.Size() <= s.maxEntry {
		// Concurrent misses of one chunk share one read (otter's loads are
		// single-flight).
		b, err := s.cache.Get(context.Background(), d, otter.LoaderFunc[Digest, []byte](s.load))
		if err != nil {
			return nil, 0, err
		}
		return newMemChunk(b), int64(len(b)), nil
	}
	return s.openFile(d, p)
}

// load reads the whole chunk and verifies it, for the memory cache.
func (s *ChunkStore) load(_ context.Context, d Digest) ([]byte, error) {
	p := s.path(d)
	b, err := os.ReadFile(p)
	if errors.Is(err, fs.ErrNotExist) {
		return nil, fmt.Errorf("chunk %s: %w", d, ErrChunkNotFound)
	}
	if err != nil {
		return nil, fmt.Errorf("chunk %s: read: %w", d, err)
	}
	if got := Digest(sha256.Sum256(b)); got != d {
		return nil, s.dropCorrupt(d, p, got, int64(len(b)))
	}
	return b, nil
}

// openFile hashes a chunk too big for the memory cache, then serves it
// from the same open file.
func (s *ChunkStore) openFile(d Digest, p string) (io.ReadSeekCloser, int64, error) {
	f, err := os.Open(p)
	if errors.Is(err, fs.ErrNotExist) {
		return nil, 0, fmt.Errorf("chunk %s: %w", d, ErrChunkNotFound)
	}
	if err != nil {
		return nil, 0, fmt.Errorf("chunk %s: %w", d, err)
	}
	h := sha256.New()
	n, err := io.Copy(h, f)
	if err != nil {
		f.Close()
		return nil, 0, fmt.Errorf("chunk %s: read: %w", d, err)
	}
	var got Digest
	h.Sum(got[:0])
	if got != d {
		f.Close()
		return nil, 0, s.dropCorrupt(d, p, got, n)
	}
	if _, err := f.Seek(0, io.SeekStart); err != nil {
		f.Close()
		return nil, 0, fmt.Errorf("chunk %s: seek: %w", d, err)
	}
	return f, n, nil
}

// dropCorrupt reports a chunk whose file no longer matches its digest,
// removes the file and remembers the digest as corrupt; it returns the
// error reads answer. It does not touch the cache (it may run inside the
// cache's loader, and a corrupt chunk is never in the cache).
func (s *ChunkStore) dropCorrupt(d Digest, p string, got Digest, size int64) error {
	s.mu.Lock()
	s.corrupt[d] = struct{}{}
	s.mu.Unlock()
	rmErr := os.Remove(p)
	if rmErr != nil && errors.Is(rmErr, fs.ErrNotExist) {
		rmErr = nil
	}
	s.log.Error("chunk corrupt on disk: removed, not served",
		"digest", d.String(), "path", p, "bytes", size, "sha256", got.String(), "remove_error", rmErr)
	if s.OnCorrupt != nil {
		s.OnCorrupt(d)
	}
	return fmt.Errorf("chunk %s: %w", d, ErrChunkCorrupt)
}

// memChunk serves cached bytes; there is nothing to close.
type memChunk struct {
	*bytes.Reader
	b []byte // the whole chunk, for ServeChunk's direct write
}

func newMemChunk(b []byte) memChunk { return memChunk{bytes.NewReader(b), b} }

func (memChunk) Close() error { return nil }

// otterLogger sends the cache's own warnings to the store's logger.
type otterLogger struct{ log *slog.Logger }

func (l otterLogger) Warn(ctx context.Context, msg string, err error) {
	l.log.WarnContext(ctx, "memory cache: "+msg, "err", err)
}

func (l otterLogger) Error(ctx context.Context, msg string, err error) {
	l.log.ErrorContext(ctx, "memory cache: "+msg, "err", err)
}
