package vod

import (
	"errors"
	"net/http"
	"strconv"
	"time"
)

// chunkCacheControl: a chunk's URL names its bytes, so it never changes.
const chunkCacheControl = "public, max-age=31536000, immutable"

// ServeChunk answers GET and HEAD for the chunk d with its verified bytes:
// ETag "<hex>", Repr-Digest (RFC 9530), an immutable Cache-Control,
// Content-Type contentType (application/octet-stream when empty), and
// Range (206, 416 past the end), If-None-Match (304) and If-Range handled
// by http.ServeContent. A chunk the store does not hold, or one found
// corrupt (logged by the store, never sent), answers 404; other methods
// 405.
func (s *ChunkStore) ServeChunk(w http.ResponseWriter, r *http.Request, d Digest, contentType string) {
	if r.Method != http.MethodGet && r.Method != http.MethodHead {
		w.Header().Set("Allow", "GET, HEAD")
		http.Error(w, "method not allowed", http.StatusMethodNotAllowed)
		return
	}
	rs, _, err := s.Open(d)
	if err != nil {
		switch {
		case errors.Is(err, ErrChunkNotFound):
			http.Error(w, "chunk not found", http.StatusNotFound)
		case errors.Is(err, ErrChunkCorrupt):
			// The store has logged and removed it; to a client it is gone.
			http.Error(w, "chunk not found", http.StatusNotFound)
		default:
			s.log.Error("serve chunk", "digest", d.String(), "err", err)
			http.Error(w, "chunk unreadable", http.StatusInternalServerError)
		}
		return
	}
	defer rs.Close()
	h := w.Header()
	setChunkHeaders(h, d, contentType)
	if m, ok := rs.(memChunk); ok && r.Header.Get("Range") == "" &&
		r.Header.Get("If-None-Match") == "" && r.Header.Get("If-Match") == "" {
		// The common request for a hot chunk: the whole of it, no
		// condition. One write from the cached bytes, where ServeContent
		// would copy them through a 32 KiB buffer.
		h.Set("Content-Length", strconv.Itoa(len(m.b)))
		w.WriteHeader(http.StatusOK)
		if r.Method != http.MethodHead {
			w.Write(m.b)
		}
		return
	}
	http.ServeContent(w, r, "", time.Time{}, rs)
}
