package vod

import (
	"bytes"
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"hash"
	"io"
	"path/filepath"
)

// OriginStore is where a cluster keeps the chunks of its packaged titles
// for good: the node's data dir (DirOrigin, the default: each title lives
// on the node that packaged it), or an S3-compatible object store
// (S3Origin: titles are written there, so the catalog may be far larger
// than the nodes' disks, and a chunk no node holds is read from there).
//
// Every implementation checks bytes against their digest both ways: Put
// refuses bytes that do not hash to d before the store can keep them, and
// Open's reader fails rather than deliver the last bytes of a copy that
// does not hash to d. A store is safe for concurrent use.
type OriginStore interface {
	// Put stores the chunk d (bytes r, size n) durably; the bytes must hash to d.
	Put(ctx context.Context, d Digest, r io.Reader, n int64) error
	// Open reads d from offset on; ErrChunkNotFound when absent. The size
	// is the whole chunk's. The reader's last Read fails (ErrChunkCorrupt)
	// instead of completing a copy that does not hash to d.
	Open(ctx context.Context, d Digest, offset int64) (io.ReadCloser, int64, error)
	// Has reports whether the store holds d (without verifying it).
	Has(ctx context.Context, d Digest) (bool, error)
	// Remove deletes d. Removing a chunk the store does not hold is not an
	// error: object stores cannot tell without an extra request, and a
	// delete that is retried must not fail the second time.
	Remove(ctx context.Context, d Digest) error
	// Name is "s3://bucket/prefix" or "file:///data/dir", for logs and stats.
	Name() string
}

// DirOrigin is the default OriginStore: the node's own ChunkStore.
type DirOrigin struct {
	store *ChunkStore
}

var _ OriginStore = (*DirOrigin)(nil)

// NewDirOrigin adapts the node's chunk store (its data dir) to an
// OriginStore.
func NewDirOrigin(store *ChunkStore) *DirOrigin { return &DirOrigin{store: store} }

// Put stores the chunk after checking, as it streams, that its n bytes
// hash to d: a mismatch fails the write before it is renamed into place,
// so nothing is left behind.
func (o *DirOrigin) Put(ctx context.Context, d Digest, r io.Reader, n int64) error {
	if err := ctx.Err(); err != nil {
		return fmt.Errorf("origin %s: put %s: %w", o.Name(), d, err)
	}
	if _, err := o.store.Put(newVerifyingReader(ctxReader{ctx, r}, d, n, 0)); err != nil {
		return fmt.Errorf("origin %s: put %s: %w", o.Name(), d, err)
	}
	return nil
}

// Open returns the chunk from offset on. ChunkStore.Open has verified the
// whole chunk (from memory or by hashing the file) before it returns.
func (o *DirOrigin) Open(ctx context.Context, d Digest, offset int64) (io.ReadCloser, int64, error) {
	if err := ctx.Err(); err != nil {
		return nil, 0, fmt.Errorf("origin %s: open %s: %w", o.Name(), d, err)
	}
	rs, size, err := o.store.Open(d)
	if err != nil {
		return nil, 0, err // names the chunk; wraps ErrChunkNotFound or ErrChunkCorrupt
	}
	if offset < 0 || offset > size {
		rs.Close()
		return nil, 0, fmt.Errorf("origin %s: open %s at %d: offset outside the chunk's %d bytes", o.Name(), d, offset, size)
	}
	if _, err := rs.Seek(offset, io.SeekStart); err != nil {
		rs.Close()
		return nil, 0, fmt.Errorf("origin %s: open %s: seek to %d: %w", o.Name(), d, offset, err)
	}
	return rs, size, nil
}

// Has reports whether the data dir holds d.
func (o *DirOrigin) Has(ctx context.Context, d Digest) (bool, error) {
	return o.store.Has(d), nil
}

// Remove deletes d from the data dir; an absent chunk is not an error.
func (o *DirOrigin) Remove(ctx context.Context, d Digest) error {
	if err := o.store.Remove(d); err != nil && !errors.Is(err, ErrChunkNotFound) {
		return fmt.Errorf("origin %s: %w", o.Name(), err)
	}
	return nil
}

// Name is file://<data dir>.
func (o *DirOrigin) Name() string {
	dir := o.store.Dir()
	if abs, err := filepath.Abs(dir); err == nil {
		dir = abs
	}
	return "file://" + filepath.ToSlash(dir)
}

// verifyingReader hashes a chunk as it is read and holds back the Read
// that would complete it until the whole hashes to the digest: a copy that
// does not match fails on that Read (ErrChunkCorrupt), so whoever reads it
// never receives the whole of a bad chunk, and an upload of it never
// completes. It reads exactly size bytes of the chunk; the first skip of
// them are hashed but not returned (a read from an offset still verifies
// the whole chunk).
type verifyingReader struct {
	r    io.Reader
	d    Digest
	size int64
	skip int64
	h    hash.Hash
	pos  int64 // bytes of the chunk read from r
	ok   bool  // the whole chunk was read and hashes to d
	err  error // sticky
}

func newVerifyingReader(r io.Reader, d Digest, size, skip int64) *verifyingReader {
	return &verifyingReader{r: r, d: d, size: size, skip: skip, h: sha256.New()}
}

func (v *verifyingReader) Read(p []byte) (int, error) {
	if v.err != nil {
		return 0, v.err
	}
	for v.pos < v.skip {
		bp := copyBufs.Get().(*[]byte)
		buf := (*bp)[:min(int64(len(*bp)), v.skip-v.pos)]
		m, err := v.r.Read(buf)
		v.h.Write(buf[:m])
		copyBufs.Put(bp)
		v.pos += int64(m)
		if err := v.check(err); err != nil {
			return 0, err
		}
	}
	if v.pos == v.size {
		if err := v.verify(); err != nil {
			return 0, err
		}
		v.err = io.EOF
		return 0, io.EOF
	}
	if int64(len(p)) > v.size-v.pos {
		p = p[:v.size-v.pos]
	}
	m, err := v.r.Read(p)
	v.h.Write(p[:m])
	v.pos += int64(m)
	if err := v.check(err); err != nil {
		return 0, err // the bytes of this Read are held back
	}
	if v.pos == v.size {
		if err := v.verify(); err != nil {
			return 0, err
		}
	}
	return m, nil
}

// verify checks the hash of the whole chunk, once.
func (v *verifyingReader) verify() error {
	if v.ok {
		return nil
	}
	var got Digest
	v.h.Sum(got[:0])
	if got != v.d {
		v.err = fmt.Errorf("chunk %s: its %d bytes hash to %s: %w", v.d, v.size, got, ErrChunkCorrupt)
		return v.err
	}
	v.ok = true
	return nil
}

// check turns the source's error into the reader's: an end before size
// bytes is a short chunk.
func (v *verifyingReader) check(err error) error {
	switch {
	case err == nil:
		return nil
	case err == io.EOF && v.pos < v.size:
		v.err = fmt.Errorf("chunk %s: ended after %d of %d bytes: %w", v.d, v.pos, v.size, io.ErrUnexpectedEOF)
	case err == io.EOF:
		return nil // the Read that reached size also said EOF
	default:
		v.err = fmt.Errorf("chunk %s: read after %d bytes: %w", v.d, v.pos, err)
	}
	return v.err
}

// ctxReader stops reading when ctx is done.
type ctxReader struct {
	ctx context.Context
	r   io.Reader
}

func (c ctxReader) Read(p []byte) (int, error) {
	if err := c.ctx.Err(); err != nil {
		return 0, err
	}
	return c.r.Read(p)
}

// OriginPutter is a ChunkPutter (what the packager writes to) over an
// origin store, for titles packaged straight to it: each chunk is read
// into memory to learn its digest (OriginStore.Put needs it first; a chunk
// is a media segment of a few MB), then put. Ctx bounds every upload.
type OriginPutter struct {
	Ctx    context.Context
	Origin OriginStore
}

var _ ChunkPutter = OriginPutter{}

// Put stores the bytes of r under their SHA-256 and returns the chunk's
// digest and size with zero media time.
func (p OriginPutter) Put(r io.Reader) (Chunk, error) {
	if r == nil {
		return Chunk{}, errors.New("origin put: nil reader")
	}
	b, err := io.ReadAll(io.LimitReader(r, maxFetchBytes+1))
	if err != nil {
		return Chunk{}, fmt.Errorf("origin %s: put: read after %d bytes: %w", p.Origin.Name(), len(b), err)
	}
	if len(b) > maxFetchBytes {
		return Chunk{}, fmt.Errorf("origin %s: put: chunk over the %d bytes a chunk may have", p.Origin.Name(), maxFetchBytes)
	}
	c := Chunk{Digest: sha256.Sum256(b), Size: int64(len(b))}
	ctx := p.Ctx
	if ctx == nil {
		ctx = context.Background()
	}
	if err := p.Origin.Put(ctx, c.Digest, bytes.NewReader(b), c.Size); err != nil {
		return Chunk{}, err
	}
	return c, nil
}
